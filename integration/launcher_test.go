package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// launchAppSource is the application the launcher starts: an unmodified
// net/http client (it honours HTTP_PROXY like any Go program) that fetches
// $APP_URL once, prints what it got, then either exits with $APP_EXIT or
// reports the signals it receives until SIGTERM, on which it exits 42.
const launchAppSource = `package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	fmt.Printf("app: started at %d\n", time.Now().UnixNano())
	if url := os.Getenv("APP_URL"); url != "" {
		resp, err := http.Get(url)
		if err != nil {
			fmt.Println("app: request failed:", err)
			os.Exit(3)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("app: status=%d backend=%s body=%q\n", resp.StatusCode, resp.Header.Get("x-backend"), body)
	}
	if os.Getenv("APP_WAIT") == "" {
		code, _ := strconv.Atoi(os.Getenv("APP_EXIT"))
		os.Exit(code)
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT)
	fmt.Println("app: waiting for signals")
	for s := range sigs {
		fmt.Println("app: got", s)
		if s == syscall.SIGTERM {
			os.Exit(42)
		}
	}
}
`

var (
	launchAppOnce sync.Once
	launchAppPath string
	launchAppErr  error
)

// launchApp builds launchAppSource once per test binary.
func launchApp(t *testing.T) string {
	t.Helper()
	launchAppOnce.Do(func() {
		dir := filepath.Dir(binPath) // removed by TestMain
		src := filepath.Join(dir, "launchapp.go")
		if launchAppErr = os.WriteFile(src, []byte(launchAppSource), 0o600); launchAppErr != nil {
			return
		}
		launchAppPath = filepath.Join(dir, "launchapp")
		out, err := exec.Command("go", "build", "-o", launchAppPath, src).CombinedOutput()
		if err != nil {
			launchAppErr = fmt.Errorf("go build launchapp: %v\n%s", err, out)
		}
	})
	if launchAppErr != nil {
		t.Fatal(launchAppErr)
	}
	return launchAppPath
}

// launched is a running `ztunnel run ... -- APP`.
type launched struct {
	cmd  *exec.Cmd
	out  *lockedBuf
	done chan struct{}
}

func startLaunched(t *testing.T, env []string, name string, args ...string) *launched {
	t.Helper()
	l := &launched{out: &lockedBuf{}, done: make(chan struct{})}
	l.cmd = exec.Command(name, args...)
	l.cmd.Env = append(os.Environ(), env...)
	l.cmd.Stdout, l.cmd.Stderr = l.out, l.out
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = l.cmd.Wait(); close(l.done) }()
	t.Cleanup(func() {
		select {
		case <-l.done:
		default:
			_ = l.cmd.Process.Kill()
			<-l.done
		}
		if t.Failed() {
			t.Logf("launcher output:\n%s", l.out.String())
		}
	})
	return l
}

// waitOutput waits until the output contains s.
func (l *launched) waitOutput(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(l.out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the output after %v", s, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait returns the exit code once the launcher has exited.
func (l *launched) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-l.done:
		return l.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("launcher still running after %v", timeout)
		return -1
	}
}

// TestLauncherWhitebox runs `ztunnel run --mode whitebox -- app` without
// root against a control plane that is not up yet: the app does not start
// until the proxy has its configuration, then its first request (an
// ordinary net/http client, HTTP_PROXY set by the launcher) reaches a mesh
// service that is not in DNS. SIGHUP and SIGINT are forwarded to the app;
// SIGTERM makes it exit 42, which becomes the launcher's exit code, and the
// proxy's ports are closed afterwards.
func TestLauncherWhitebox(t *testing.T) {
	t.Parallel()
	app := launchApp(t)
	cp := startControlPlane(t)
	v1 := startBackend(t, "v1")
	rc := &routev3.RouteConfiguration{Name: "8080", VirtualHosts: []*routev3.VirtualHost{{
		Name:    wbWeb + ":8080",
		Domains: []string{wbWeb, wbWeb + ":8080"},
		Routes:  []*routev3.Route{routeTo("v1")},
	}}}
	web := httpListener(t, "0.0.0.0_8080", "0.0.0.0:8080", "8080")
	web.BindToPort = wrapperspb.Bool(false)
	cp.set(web, rc, edsCluster("v1", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "v1", v1.addr))

	// The control plane's address is known, but nothing listens there yet.
	reserve, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	xdsAddr := reserve.Addr().String()
	reserve.Close()

	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(boot, fmt.Appendf(nil, `node: {id: sidecar~127.0.0.1~launch.default~default.svc.cluster.local, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{google_grpc: {target_uri: "%s", stat_prefix: ads}}]
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
`, freePort(t), xdsAddr), 0o600); err != nil {
		t.Fatal(err)
	}
	wbAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	l := startLaunched(t, []string{"APP_URL=http://" + wbWeb + ":8080/hello", "APP_WAIT=1"},
		binPath, "run", "--mode", "whitebox", "--whitebox", wbAddr, "--bootstrap", boot,
		"--metrics", "", "--proxy-mark", "0", "--drain-time", "1s", "--ready-timeout", "30s", "--", app)

	// No control plane: the app must not run, however long we wait.
	time.Sleep(1500 * time.Millisecond)
	if out := l.out.String(); strings.Contains(out, "app:") {
		t.Fatalf("the app started before the proxy was ready:\n%s", out)
	}
	select {
	case <-l.done:
		t.Fatalf("launcher exited while waiting for the control plane:\n%s", l.out.String())
	default:
	}

	cpUp := time.Now()
	lis, err := net.Listen("tcp", xdsAddr)
	if err != nil {
		t.Fatalf("control plane address taken meanwhile: %v", err)
	}
	go func() { _ = cp.grpc.Serve(lis) }()

	l.waitOutput(t, "app: waiting for signals", 20*time.Second)
	out := l.out.String()
	if !strings.Contains(out, `app: status=200 backend=v1 body="v1 HTTP/1.1 GET /hello`) {
		t.Fatalf("the app's first request did not go through the mesh:\n%s", out)
	}
	var startedNS int64
	if _, err := fmt.Sscanf(out[strings.Index(out, "app: started at "):], "app: started at %d", &startedNS); err != nil {
		t.Fatal(err)
	}
	if started := time.Unix(0, startedNS); started.Before(cpUp) {
		t.Fatalf("the app started at %v, before the control plane came up at %v", started, cpUp)
	}

	for _, tc := range []struct {
		sig  syscall.Signal
		want string
	}{
		{syscall.SIGHUP, "app: got hangup"},
		{syscall.SIGINT, "app: got interrupt"},
	} {
		if err := l.cmd.Process.Signal(tc.sig); err != nil {
			t.Fatal(err)
		}
		l.waitOutput(t, tc.want, 5*time.Second)
	}
	if c, err := net.DialTimeout("tcp", wbAddr, time.Second); err != nil {
		t.Fatalf("the whitebox proxy stopped while the app runs: %v", err)
	} else {
		c.Close()
	}
	if err := l.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := l.wait(t, 15*time.Second); code != 42 {
		t.Fatalf("launcher exit code %d, want the app's 42\n%s", code, l.out.String())
	}
	if !strings.Contains(l.out.String(), "app: got terminated") {
		t.Fatalf("SIGTERM was not forwarded to the app:\n%s", l.out.String())
	}
	if c, err := net.DialTimeout("tcp", wbAddr, time.Second); err == nil {
		c.Close()
		t.Fatal("the whitebox proxy still accepts after the launcher exited")
	}
}

// TestLauncherSidecar runs `ztunnel run --mode sidecar -- app` as root in a
// pod namespace: capture is installed before the app starts, the app's
// connection to a service address is redirected and served by the proxy's
// per-destination listener, a connection to an unknown destination is
// passed through to where it was headed (the proxy's own upstream sockets
// carry the 0x539 mark, so they are not captured again: the launcher and
// the app share uid 0), the app's exit code is the launcher's, and no rule
// is left afterwards.
func TestLauncherSidecar(t *testing.T) {
	requireCapturePriv(t)
	requireNetns(t)
	t.Parallel()
	p := newNSPair(t) // a: the pod, b: another host
	serveNS := func(addr, answer string) {
		var ln net.Listener
		if err := inNetns(p.b, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
			netnsFatal(t, "listen in %s: %v", p.b, err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "%s from %s\n", answer, host)
				c.Close()
			}
		}()
	}
	serveNS(p.bIP+":80", "plain80")   // reached only if capture failed
	serveNS(p.bIP+":81", "direct81")  // passthrough target
	serveNS(p.bIP+":82", "viamesh82") // where the mesh sends :80

	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(boot, fmt.Appendf(nil, `node: {id: sidecar~%[1]s~app.default~default.svc.cluster.local, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
static_resources:
  clusters:
  - name: svc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: svc
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %[2]s, port_value: 82}}}}]}]
  - name: PassthroughCluster
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: PassthroughCluster, cluster: PassthroughCluster}
  - name: %[2]s_80
    address: {socket_address: {address: %[2]s, port_value: 80}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: svc, cluster: svc}
`, p.aIP, p.bIP), 0o600); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`for port in 80 81; do exec 3<>/dev/tcp/%s/$port && cat <&3; exec 3<&-; done; exit 5`, p.bIP)
	l := startLaunched(t, nil, "ip", "netns", "exec", p.a, binPath, "run", "--mode", "sidecar", "--bootstrap", boot,
		"--capture-inbound", "none", "--metrics", "", "--drain-time", "1s", "--ready-timeout", "15s",
		"--", "timeout", "10", "bash", "-c", script)
	if code := l.wait(t, 30*time.Second); code != 5 {
		t.Fatalf("launcher exit code %d, want the app's 5\n%s", code, l.out.String())
	}
	out := l.out.String()
	for _, want := range []string{
		"viamesh82 from " + p.aIP, // captured, served by the per-destination listener
		"direct81 from " + p.aIP,  // captured, passed through, not looped
		"capture installed", "app started", "capture removed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out, "plain80") {
		t.Error("the app reached :80 directly: not captured")
	}
	if strings.Index(out, "capture installed") > strings.Index(out, "app started") {
		t.Error("the app started before capture was installed")
	}
	if left := run(t, "ip", "netns", "exec", p.a, "sh", "-c", "iptables-save; ip6tables-save"); strings.Contains(left, "MESHLET") {
		t.Fatalf("rules left after the launcher exited:\n%s", left)
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}
