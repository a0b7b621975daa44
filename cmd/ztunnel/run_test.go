package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshlet/meshlet/controlplane"
	"github.com/meshlet/meshlet/examples/demo"
	"github.com/meshlet/meshlet/internal/echo"
)

func TestRunBrokenBootstrap(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content string // "" = file does not exist
		want    []string
	}{
		{"missing file", "", []string{"missing.yaml"}},
		{"bad duration", "static_resources:\n  clusters:\n  - name: c\n    connect_timeout: banana\n", []string{"bad-duration.yaml", "connect_timeout"}},
		{"unknown field", "static_resources:\n  clusterz: []\n", []string{"unknown-field.yaml", "clusterz"}},
		{"not yaml", "node: [unclosed\n", []string{"not-yaml.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-")+".yaml")
			if tt.content == "" {
				path = filepath.Join(dir, "missing.yaml")
			} else if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := runBinary(t, 10*time.Second, nil, "run", "--bootstrap", path)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// running is a `ztunnel run` process whose admin address was read from its
// log.
type running struct {
	cmd   *exec.Cmd
	admin string
	done  chan error
}

var adminLogRE = regexp.MustCompile(`msg="admin listening" addr=(\S+)`)

func startRun(t *testing.T, bootstrap string, env []string) *running {
	t.Helper()
	cmd := exec.Command(binary, "run", "--bootstrap", bootstrap, "--drain-time", "1s")
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, done: make(chan error, 1)}
	addr := make(chan string, 1)
	var logs strings.Builder
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := adminLogRE.FindStringSubmatch(sc.Text()); m != nil {
				addr <- m[1]
			}
		}
	}()
	go func() {
		<-logDone // Wait must follow the last read of the pipe
		r.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-r.done
		}
		if t.Failed() {
			t.Logf("ztunnel log:\n%s", logs.String())
		}
	})
	select {
	case r.admin = <-addr:
	case err := <-r.done:
		r.done <- err
		t.Fatalf("ztunnel run exited early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no admin address logged")
	}
	return r
}

func httpGet(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (r *running) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, body := httpGet(t, "http://"+r.admin+"/ready")
		if resp.StatusCode == 200 && body == "LIVE\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready = %d %q after 10s", resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// listenerAddr learns a listener's bound address from /listeners.
func (r *running) listenerAddr(t *testing.T, name string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+r.admin+"/listeners")
	for _, line := range strings.Split(body, "\n") {
		if addr, ok := strings.CutPrefix(line, name+"::"); ok {
			return addr
		}
	}
	t.Fatalf("listener %q not in /listeners:\n%s", name, body)
	return ""
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		if err != nil {
			t.Errorf("after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("did not exit within 10s of SIGTERM")
	}
}

func startEcho(t *testing.T, version string) *echo.Server {
	t.Helper()
	s, err := echo.Start(version)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func expectVersion(t *testing.T, url, want string) {
	t.Helper()
	resp, body := httpGet(t, url)
	if resp.StatusCode != 200 || resp.Header.Get(echo.HeaderVersion) != want {
		t.Errorf("GET %s = %d %s=%q %s, want 200 from %s", url, resp.StatusCode, echo.HeaderVersion,
			resp.Header.Get(echo.HeaderVersion), body, want)
	}
}

// TestRunStaticBootstrap proxies through a static listener and cluster,
// then drains on SIGTERM and exits 0.
func TestRunStaticBootstrap(t *testing.T) {
	backend := startEcho(t, "static")
	bootstrap := filepath.Join(t.TempDir(), "bootstrap.yaml")
	err := os.WriteFile(bootstrap, []byte(`
node: {id: "sidecar~127.0.0.1~test.default~default.svc.cluster.local", cluster: test}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
static_resources:
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: `+strconv.Itoa(backend.HTTPAddr.Port)+`}}}
  listeners:
  - name: http
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: backend}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, bootstrap, nil)
	r.waitReady(t)
	expectVersion(t, "http://"+r.listenerAddr(t, "http")+"/x", "static")

	_, dump := httpGet(t, "http://"+r.admin+"/config_dump")
	if !strings.Contains(dump, `"backend"`) || !strings.Contains(dump, `"http"`) {
		t.Errorf("config_dump lacks the static resources:\n%.2000s", dump)
	}
	r.stop(t)
}

// TestRunXDSAddressEnv gets everything from the embedded control plane
// named by XDS_ADDRESS; the bootstrap only sets the admin address.
func TestRunXDSAddressEnv(t *testing.T) {
	v1, v2 := startEcho(t, "v1"), startEcho(t, "v2")
	dir := t.TempDir()
	ents, _ := demo.Files.ReadDir(".")
	for _, e := range ents {
		b, _ := demo.Files.ReadFile(e.Name())
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cp, err := controlplane.New(dir, map[string]string{
		"LISTENER_PORT":     "0",
		"ECHO_V1_HTTP_PORT": strconv.Itoa(v1.HTTPAddr.Port), "ECHO_V2_HTTP_PORT": strconv.Itoa(v2.HTTPAddr.Port),
		"ECHO_V1_GRPC_PORT": strconv.Itoa(v1.GRPCAddr.Port), "ECHO_V2_GRPC_PORT": strconv.Itoa(v2.GRPCAddr.Port),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cpAddr, err := cp.Start("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)

	bootstrap := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(bootstrap, []byte("admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, bootstrap, []string{"XDS_ADDRESS=" + cpAddr.String(), "POD_NAME=app", "POD_NAMESPACE=test"})
	r.waitReady(t)
	url := "http://" + r.listenerAddr(t, demoListener) + "/"
	req, _ := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	req.Header.Set("x-canary", "true")
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get(echo.HeaderVersion) != "v2" {
		t.Errorf("x-canary request answered by %q, want v2", resp.Header.Get(echo.HeaderVersion))
	}
	_, info := httpGet(t, "http://"+r.admin+"/server_info")
	if !strings.Contains(info, "app.test") {
		t.Errorf("server_info node id does not come from POD_NAME/POD_NAMESPACE:\n%s", info)
	}
	r.stop(t)
}
