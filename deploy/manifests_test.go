package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/meshlet/meshlet/config"
)

// Ports and names the manifests must agree on with the binary.
const (
	metricsPort   = 15020
	readinessPort = 15021
	readyPath     = "/healthz/ready"
	proxyMark     = "0x539"
	inPodSockDir  = "/var/run/ztunnel"
)

// externalConfigMaps are created by istiod, not by these manifests.
var externalConfigMaps = []string{"istio-ca-root-cert"}

// doc is one decoded YAML document.
type doc struct {
	file string
	kind string
	obj  any
}

// splitDocs splits a multi-document YAML file on "---" lines, dropping
// documents that hold only comments.
func splitDocs(raw []byte) [][]byte {
	var out [][]byte
	for _, part := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		empty := true
		for _, line := range strings.Split(part, "\n") {
			if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			out = append(out, []byte(part))
		}
	}
	return out
}

// decodeDoc decodes one document into the API type its kind names; unknown
// fields, unknown kinds and wrong apiVersions are errors.
func decodeDoc(raw []byte) (string, any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return "", nil, err
	}
	want := map[string]struct {
		apiVersion string
		mk         func() any
	}{
		"ServiceAccount":     {"v1", func() any { return new(corev1.ServiceAccount) }},
		"ConfigMap":          {"v1", func() any { return new(corev1.ConfigMap) }},
		"Pod":                {"v1", func() any { return new(corev1.Pod) }},
		"DaemonSet":          {"apps/v1", func() any { return new(appsv1.DaemonSet) }},
		"Deployment":         {"apps/v1", func() any { return new(appsv1.Deployment) }},
		"ClusterRole":        {"rbac.authorization.k8s.io/v1", func() any { return new(rbacv1.ClusterRole) }},
		"ClusterRoleBinding": {"rbac.authorization.k8s.io/v1", func() any { return new(rbacv1.ClusterRoleBinding) }},
	}
	w, ok := want[tm.Kind]
	if !ok {
		return tm.Kind, nil, fmt.Errorf("kind %q is not one these manifests use", tm.Kind)
	}
	if tm.APIVersion != w.apiVersion {
		return tm.Kind, nil, fmt.Errorf("%s: apiVersion %q, want %q", tm.Kind, tm.APIVersion, w.apiVersion)
	}
	obj := w.mk()
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		return tm.Kind, nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return tm.Kind, obj, nil
}

// loadAll decodes every YAML document under the deploy directory.
func loadAll(t *testing.T) []doc {
	t.Helper()
	var files []string
	for _, pat := range []string{"*/*.yaml", "*.yaml"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 2 {
		t.Fatalf("found only %v", files)
	}
	var docs []doc
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range splitDocs(raw) {
			kind, obj, err := decodeDoc(d)
			if err != nil {
				t.Errorf("%s document %d: %v", f, i, err)
				continue
			}
			docs = append(docs, doc{file: f, kind: kind, obj: obj})
		}
	}
	return docs
}

// podChecks is what every pod template must satisfy.
func podChecks(name string, meta metav1.ObjectMeta, spec *corev1.PodSpec, configMaps map[string]bool) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(name+": "+format, args...)) }

	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		if volumes[v.Name] != nil {
			fail("volume %q defined twice", v.Name)
		}
		volumes[v.Name] = v
		if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] && !slices.Contains(externalConfigMaps, v.ConfigMap.Name) {
			fail("volume %q: ConfigMap %q is neither in the manifests nor created by istiod", v.Name, v.ConfigMap.Name)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if tok := s.ServiceAccountToken; tok != nil && tok.Audience != "istio-ca" {
					fail("volume %q: token audience %q, want istio-ca", v.Name, tok.Audience)
				}
			}
		}
	}
	mounted := map[string]bool{}
	all := slices.Concat(spec.InitContainers, spec.Containers)
	var proxy *corev1.Container
	for i := range all {
		c := &all[i]
		if c.Image == "" {
			fail("container %q: no image", c.Name)
		} else if _, tag, ok := strings.Cut(c.Image[strings.LastIndex(c.Image, "/")+1:], ":"); !ok || tag == "" || tag == "latest" {
			fail("container %q: image %q needs a pinned tag", c.Name, c.Image)
		}
		for _, m := range c.VolumeMounts {
			if volumes[m.Name] == nil {
				fail("container %q: mount %q has no volume", c.Name, m.Name)
			}
			mounted[m.Name] = true
		}
		if slices.Contains(c.Args, "run") {
			if proxy != nil {
				fail("two proxy containers (%q, %q)", proxy.Name, c.Name)
			}
			proxy = c
		}
	}
	for n := range volumes {
		if !mounted[n] {
			fail("volume %q is never mounted", n)
		}
	}
	if proxy == nil {
		fail("no container runs the proxy (args starting with run)")
		return errs
	}

	ports := map[int32]bool{}
	for _, p := range proxy.Ports {
		ports[p.ContainerPort] = true
	}
	for _, p := range []int32{metricsPort, readinessPort} {
		if !ports[p] {
			fail("proxy container %q does not declare port %d", proxy.Name, p)
		}
	}
	flags := map[string]string{}
	for _, a := range proxy.Args {
		if k, v, ok := strings.Cut(a, "="); ok {
			flags[k] = v
		}
	}
	if flags["--status"] != fmt.Sprintf(":%d", readinessPort) {
		fail("proxy must serve readiness with --status=:%d, has %q", readinessPort, flags["--status"])
	}
	if flags["--metrics"] != fmt.Sprintf(":%d", metricsPort) {
		fail("proxy must serve metrics with --metrics=:%d, has %q", metricsPort, flags["--metrics"])
	}
	if meta.Annotations["prometheus.io/scrape"] != "true" || meta.Annotations["prometheus.io/port"] != fmt.Sprint(metricsPort) {
		fail("pod annotations must have Prometheus scrape port %d: %v", metricsPort, meta.Annotations)
	}
	probes := map[string]*corev1.Probe{"readinessProbe": proxy.ReadinessProbe, "startupProbe": proxy.StartupProbe}
	for n, p := range probes {
		if p == nil || p.HTTPGet == nil {
			fail("proxy %s: want an httpGet probe", n)
			continue
		}
		if p.HTTPGet.Path != readyPath || p.HTTPGet.Port != intstr.FromInt32(readinessPort) {
			fail("proxy %s: %s on %s, want %s on %d", n, p.HTTPGet.Path, p.HTTPGet.Port.String(), readyPath, readinessPort)
		}
	}
	sc := proxy.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		fail("proxy container has no securityContext.capabilities")
	} else {
		if !slices.Contains(sc.Capabilities.Drop, "ALL") {
			fail("proxy container must drop ALL capabilities, drops %v", sc.Capabilities.Drop)
		}
		if !slices.Contains(sc.Capabilities.Add, "NET_ADMIN") {
			fail("proxy container needs NET_ADMIN (capture, SO_MARK), adds %v", sc.Capabilities.Add)
		}
		if sc.Privileged != nil && *sc.Privileged {
			fail("proxy container must not be privileged")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			fail("proxy container must set allowPrivilegeEscalation: false")
		}
	}
	env := map[string]*corev1.EnvVar{}
	for i := range proxy.Env {
		env[proxy.Env[i].Name] = &proxy.Env[i]
	}
	for name, field := range map[string]string{
		"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "NODE_NAME": "spec.nodeName",
		"INSTANCE_IP": "status.podIP", "SERVICE_ACCOUNT": "spec.serviceAccountName",
	} {
		e := env[name]
		if e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			fail("proxy env %s must come from the downward API field %s", name, field)
		}
	}
	for _, name := range []string{"XDS_ADDRESS", "CA_ADDRESS"} {
		if e := env[name]; e == nil || !strings.HasPrefix(e.Value, "istiod.istio-system.svc:") {
			fail("proxy env %s must name istiod", name)
		}
	}
	return errs
}

// bootstrapChecks parses every bootstrap.yaml a ConfigMap carries the way
// the binary will.
func bootstrapChecks(cm *corev1.ConfigMap) []error {
	var errs []error
	for k, v := range cm.Data {
		if !strings.HasSuffix(k, ".yaml") {
			continue
		}
		if _, err := config.Parse(cm.Name+"/"+k, []byte(v)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// TestManifests decodes every document strictly and checks the pod
// templates, RBAC references and bootstraps.
func TestManifests(t *testing.T) {
	docs := loadAll(t)
	configMaps := map[string]bool{}
	serviceAccounts := map[string]bool{}
	clusterRoles := map[string]bool{}
	kinds := map[string]int{}
	for _, d := range docs {
		kinds[d.kind]++
		switch o := d.obj.(type) {
		case *corev1.ConfigMap:
			configMaps[o.Name] = true
			for _, err := range bootstrapChecks(o) {
				t.Errorf("%s: ConfigMap %s: %v", d.file, o.Name, err)
			}
		case *corev1.ServiceAccount:
			serviceAccounts[o.Namespace+"/"+o.Name] = true
		case *rbacv1.ClusterRole:
			clusterRoles[o.Name] = true
		}
	}
	for _, k := range []string{"DaemonSet", "Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in the manifests", k)
		}
	}
	for _, d := range docs {
		switch o := d.obj.(type) {
		case *appsv1.DaemonSet:
			checkSelector(t, d.file, o.Name, o.Spec.Selector, o.Spec.Template.Labels)
			for _, err := range podChecks(d.file+": DaemonSet "+o.Name, o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, configMaps) {
				t.Error(err)
			}
			for _, err := range nodeChecks(o, serviceAccounts) {
				t.Error(err)
			}
		case *appsv1.Deployment:
			checkSelector(t, d.file, o.Name, o.Spec.Selector, o.Spec.Template.Labels)
			for _, err := range podChecks(d.file+": Deployment "+o.Name, o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec, configMaps) {
				t.Error(err)
			}
			for _, err := range sidecarChecks(&o.Spec.Template.Spec) {
				t.Errorf("%s: Deployment %s: %v", d.file, o.Name, err)
			}
		case *rbacv1.ClusterRoleBinding:
			if o.RoleRef.Kind != "ClusterRole" || !clusterRoles[o.RoleRef.Name] {
				t.Errorf("%s: ClusterRoleBinding %s: roleRef %s %q is not in the manifests", d.file, o.Name, o.RoleRef.Kind, o.RoleRef.Name)
			}
			for _, s := range o.Subjects {
				if s.Kind != "ServiceAccount" || !serviceAccounts[s.Namespace+"/"+s.Name] {
					t.Errorf("%s: ClusterRoleBinding %s: subject %s %s/%s is not in the manifests", d.file, o.Name, s.Kind, s.Namespace, s.Name)
				}
			}
		}
	}
}

func checkSelector(t *testing.T, file, name string, sel *metav1.LabelSelector, labels map[string]string) {
	t.Helper()
	if sel == nil || len(sel.MatchLabels) == 0 {
		t.Errorf("%s: %s: no selector", file, name)
		return
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			t.Errorf("%s: %s: selector %s=%s does not match the template's labels %v", file, name, k, v, labels)
		}
	}
}

// nodeChecks: the node proxy's DaemonSet as Istio's ztunnel has it.
func nodeChecks(ds *appsv1.DaemonSet, serviceAccounts map[string]bool) []error {
	var errs []error
	spec := &ds.Spec.Template.Spec
	if spec.HostNetwork {
		errs = append(errs, errors.New("node proxy must not use the host network (it works inside pods' namespaces)"))
	}
	if !serviceAccounts[ds.Namespace+"/"+spec.ServiceAccountName] {
		errs = append(errs, fmt.Errorf("service account %s/%s is not in the manifests", ds.Namespace, spec.ServiceAccountName))
	}
	var sock *corev1.Volume
	for i := range spec.Volumes {
		if hp := spec.Volumes[i].HostPath; hp != nil && hp.Path == inPodSockDir {
			sock = &spec.Volumes[i]
		}
	}
	if sock == nil {
		errs = append(errs, fmt.Errorf("no hostPath volume for %s (the in-pod socket)", inPodSockDir))
	}
	for _, c := range spec.Containers {
		if sock != nil && !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
			return m.Name == sock.Name && m.MountPath == inPodSockDir
		}) {
			errs = append(errs, fmt.Errorf("container %q does not mount %s at %s", c.Name, sock.Name, inPodSockDir))
		}
		if c.SecurityContext != nil && c.SecurityContext.Capabilities != nil {
			for _, cap := range []corev1.Capability{"NET_ADMIN", "SYS_ADMIN", "NET_RAW"} {
				if !slices.Contains(c.SecurityContext.Capabilities.Add, cap) {
					errs = append(errs, fmt.Errorf("container %q lacks capability %s", c.Name, cap))
				}
			}
		}
		if !slices.Contains(c.Args, "--inpod-socket="+inPodSockDir+"/ztunnel.sock") {
			errs = append(errs, fmt.Errorf("container %q does not serve pods over the in-pod socket in %s", c.Name, inPodSockDir))
		}
	}
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		errs = append(errs, errors.New("updates must never leave a node without its proxy (maxUnavailable: 0)"))
	}
	return errs
}

// sidecarChecks: the injected proxy is a native sidecar that captures with
// the proxy's traffic excluded by its mark, and app containers are never
// the excluded uid.
func sidecarChecks(spec *corev1.PodSpec) []error {
	var errs []error
	var proxy *corev1.Container
	for i := range spec.InitContainers {
		if slices.Contains(spec.InitContainers[i].Args, "run") {
			proxy = &spec.InitContainers[i]
		}
	}
	if proxy == nil {
		return []error{errors.New("the proxy must be an init container (native sidecar)")}
	}
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		errs = append(errs, errors.New("the proxy init container needs restartPolicy: Always (native sidecar)"))
	}
	if proxy.StartupProbe == nil {
		errs = append(errs, errors.New("without a startupProbe the app would start before the proxy is ready"))
	}
	for _, want := range []string{"--capture=iptables", "--proxy-mark=" + proxyMark} {
		if !slices.Contains(proxy.Args, want) {
			errs = append(errs, fmt.Errorf("proxy args lack %s", want))
		}
	}
	for _, c := range spec.Containers {
		if sc := c.SecurityContext; sc != nil && sc.RunAsUser != nil && *sc.RunAsUser == 1337 {
			errs = append(errs, fmt.Errorf("app container %q runs as uid 1337, which capture excludes", c.Name))
		}
	}
	return errs
}

// TestChecksCatchMistakes: the checks above reject broken manifests, so
// TestManifests passing means something.
func TestChecksCatchMistakes(t *testing.T) {
	raw, err := os.ReadFile("node/ztunnel.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var dsDoc []byte
	for _, d := range splitDocs(raw) {
		if bytes.Contains(d, []byte("kind: DaemonSet")) {
			dsDoc = d
		}
	}
	if dsDoc == nil {
		t.Fatal("no DaemonSet in node/ztunnel.yaml")
	}
	cms := map[string]bool{"meshlet-ztunnel-bootstrap": true}
	sas := map[string]bool{"istio-system/ztunnel": true}
	check := func(doc []byte) error {
		_, obj, err := decodeDoc(doc)
		if err != nil {
			return err
		}
		ds := obj.(*appsv1.DaemonSet)
		return errors.Join(append(podChecks("ds", ds.Spec.Template.ObjectMeta, &ds.Spec.Template.Spec, cms), nodeChecks(ds, sas)...)...)
	}
	if err := check(dsDoc); err != nil {
		t.Fatalf("the real DaemonSet fails its checks: %v", err)
	}
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"unknown field", "imagePullPolicy: IfNotPresent", "imagePullPolicyy: IfNotPresent", "unknown field"},
		{"mount without volume", "- name: tmp\n          mountPath: /tmp", "- name: scratch\n          mountPath: /tmp", `mount "scratch" has no volume`},
		{"wrong probe port", "path: /healthz/ready\n            port: 15021\n          periodSeconds: 10", "path: /healthz/ready\n            port: 15000\n          periodSeconds: 10", "readinessProbe"},
		{"floating image", "ghcr.io/meshlet/ztunnel:0.1.0", "ghcr.io/meshlet/ztunnel:latest", "pinned tag"},
		{"missing capability", `add: ["NET_ADMIN", "SYS_ADMIN", "NET_RAW"]`, `add: ["NET_ADMIN", "NET_RAW"]`, "SYS_ADMIN"},
		{"host network", "serviceAccountName: ztunnel", "serviceAccountName: ztunnel\n      hostNetwork: true", "host network"},
		{"no metrics annotation", `prometheus.io/port: "15020"`, `prometheus.io/port: "9090"`, "Prometheus"},
		{"env not from downward API", "- name: INSTANCE_IP\n          valueFrom:\n            fieldRef:\n              fieldPath: status.podIP", "- name: INSTANCE_IP\n          valueFrom:\n            fieldRef:\n              fieldPath: status.hostIP", "INSTANCE_IP"},
		{"wrong apiVersion", "apiVersion: apps/v1", "apiVersion: extensions/v1beta1", "apiVersion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(dsDoc, []byte(tc.from)) {
				t.Fatalf("fixture drifted: %q not in the DaemonSet", tc.from)
			}
			err := check(bytes.Replace(dsDoc, []byte(tc.from), []byte(tc.to), 1))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
