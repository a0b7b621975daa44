package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/meshlet/meshlet/capture"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/whitebox"
)

// parseLaunch parses args with the launcher's flags and the capture and
// whitebox flags it adjusts, as run does.
func parseLaunch(t *testing.T, args ...string) (*launchOptions, *captureOptions, *whiteboxOptions, error) {
	t.Helper()
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var lao launchOptions
	var co captureOptions
	var wbo whiteboxOptions
	co.register(fs)
	wbo.register(fs)
	lao.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, nil, nil, err
	}
	if err := lao.takeApp(args, fs.Args()); err != nil {
		return &lao, &co, &wbo, err
	}
	return &lao, &co, &wbo, nil
}

func TestLaunchFlags(t *testing.T) {
	notMe := 4242 // a uid/gid the test never runs as, so sidecar mode accepts it
	for _, tc := range []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, lao *launchOptions, cfg *proxyConfig, co *captureOptions, wbo *whiteboxOptions)
	}{
		{
			name: "no app: a plain proxy, marked",
			args: nil,
			check: func(t *testing.T, lao *launchOptions, cfg *proxyConfig, co *captureOptions, wbo *whiteboxOptions) {
				if lao.launching() || cfg.ProxyMark != capture.DefaultProxyMark || co.backend != "none" || wbo.Addr != "" {
					t.Errorf("launching %v mark %#x capture %q whitebox %q", lao.launching(), cfg.ProxyMark, co.backend, wbo.Addr)
				}
			},
		},
		{
			name: "whitebox app gets the default proxy",
			args: []string{"--mode", "whitebox", "--", "curl", "-s", "http://web"},
			check: func(t *testing.T, lao *launchOptions, _ *proxyConfig, co *captureOptions, wbo *whiteboxOptions) {
				if !slices.Equal(lao.app, []string{"curl", "-s", "http://web"}) {
					t.Errorf("app %q", lao.app)
				}
				if wbo.Addr != whitebox.DefaultAddr || co.backend != "none" {
					t.Errorf("whitebox %q capture %q", wbo.Addr, co.backend)
				}
			},
		},
		{
			name: "app flags stay the app's",
			args: []string{"--mode=whitebox", "--whitebox", "127.0.0.1:0", "--", "app", "--mode", "x", "--"},
			check: func(t *testing.T, lao *launchOptions, _ *proxyConfig, _ *captureOptions, wbo *whiteboxOptions) {
				if !slices.Equal(lao.app, []string{"app", "--mode", "x", "--"}) || wbo.Addr != "127.0.0.1:0" {
					t.Errorf("app %q whitebox %q", lao.app, wbo.Addr)
				}
			},
		},
		{
			name: "sidecar defaults to iptables capture",
			args: []string{"--mode", "sidecar", "--capture-uid", "4242", "--capture-gid", "4242", "--", "app"},
			check: func(t *testing.T, _ *launchOptions, _ *proxyConfig, co *captureOptions, _ *whiteboxOptions) {
				if co.backend != capture.BackendIPTables || co.uid != notMe {
					t.Errorf("capture %q uid %d", co.backend, co.uid)
				}
			},
		},
		{
			name: "sidecar keeps an explicit backend",
			args: []string{"--mode", "sidecar", "--capture", "nftables", "--capture-uid", "4242", "--capture-gid", "4242", "--", "app"},
			check: func(t *testing.T, _ *launchOptions, _ *proxyConfig, co *captureOptions, _ *whiteboxOptions) {
				if co.backend != capture.BackendNFTables {
					t.Errorf("capture %q", co.backend)
				}
			},
		},
		{
			name: "proxy mark in hex, or off",
			args: []string{"--proxy-mark", "0x2a"},
			check: func(t *testing.T, _ *launchOptions, cfg *proxyConfig, _ *captureOptions, _ *whiteboxOptions) {
				if cfg.ProxyMark != 0x2a {
					t.Errorf("mark %#x", cfg.ProxyMark)
				}
			},
		},
		{
			name: "tproxy inbound makes 15006 transparent",
			args: []string{"--capture", "iptables", "--capture-inbound", "tproxy"},
			check: func(t *testing.T, _ *launchOptions, cfg *proxyConfig, _ *captureOptions, _ *whiteboxOptions) {
				if cfg.Transparent == nil {
					t.Fatal("no transparent selector")
				}
				in := &state.Listener{Name: "virtualInbound", BindToPort: true, Address: netip.MustParseAddrPort("0.0.0.0:15006")}
				out := &state.Listener{Name: "virtualOutbound", BindToPort: true, Address: netip.MustParseAddrPort("0.0.0.0:15001")}
				if !cfg.Transparent(in) || cfg.Transparent(out) {
					t.Errorf("transparent: inbound %v outbound %v", cfg.Transparent(in), cfg.Transparent(out))
				}
			},
		},
		{
			name: "redirect inbound opens ordinary sockets",
			args: []string{"--capture", "iptables"},
			check: func(t *testing.T, _ *launchOptions, cfg *proxyConfig, _ *captureOptions, _ *whiteboxOptions) {
				if cfg.Transparent != nil {
					t.Error("transparent selector without tproxy")
				}
			},
		},
		{name: "stray argument", args: []string{"extra"}, wantErr: "put the application to launch after --"},
		{name: "nothing after --", args: []string{"--mode", "whitebox", "--"}, wantErr: "must be followed by the application"},
		{name: "mode without app", args: []string{"--mode", "sidecar"}, wantErr: "add -- APP ARGS"},
		{name: "unknown mode", args: []string{"--mode", "gateway", "--", "app"}, wantErr: `--mode "gateway"`},
		{name: "whitebox with capture", args: []string{"--mode", "whitebox", "--capture", "iptables", "--", "app"}, wantErr: "needs no capture"},
		{name: "sidecar in another netns", args: []string{"--mode", "sidecar", "--capture-netns", "/var/run/netns/x", "--capture-uid", "4242", "--capture-gid", "4242", "--", "app"}, wantErr: "drop --capture-netns"},
		{name: "sidecar without mark", args: []string{"--mode", "sidecar", "--proxy-mark", "0", "--capture-uid", "4242", "--capture-gid", "4242", "--", "app"}, wantErr: "--proxy-mark 0"},
		{name: "sidecar as the excluded uid", args: []string{"--mode", "sidecar", "--capture-uid", "-1", "--", "app"}, wantErr: "which capture excludes"},
		{name: "bad mark", args: []string{"--proxy-mark", "mark"}, wantErr: "want a number"},
		{name: "zero ready timeout", args: []string{"--ready-timeout", "0s", "--", "app"}, wantErr: "--ready-timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.name == "sidecar as the excluded uid" {
				// The launcher's own uid is the excluded one.
				args = slices.Clone(args)
				args[3] = strconv.Itoa(os.Geteuid())
			}
			lao, co, wbo, err := parseLaunch(t, args...)
			var cfg proxyConfig
			if err == nil {
				err = lao.prepare(&cfg, co, wbo)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, lao, &cfg, co, wbo)
		})
	}
}

func TestAppEnv(t *testing.T) {
	base := []string{"PATH=/bin", "HTTP_PROXY=http://old:1", "no_proxy=localhost", "GRPC_XDS_BOOTSTRAP=/etc/xds.json"}
	for _, tc := range []struct {
		name, mode, addr string
		want             []string
		absent           []string
	}{
		{"whitebox sets both spellings", modeWhitebox, "127.0.0.1:15007",
			[]string{"PATH=/bin", "no_proxy=localhost", "GRPC_XDS_BOOTSTRAP=/etc/xds.json", "HTTP_PROXY=http://127.0.0.1:15007", "http_proxy=http://127.0.0.1:15007", "HTTPS_PROXY=http://127.0.0.1:15007", "https_proxy=http://127.0.0.1:15007"},
			[]string{"HTTP_PROXY=http://old:1"}},
		{"sidecar leaves the environment alone", modeSidecar, "", base, nil},
		{"no mode leaves it alone", "", "127.0.0.1:15007", base, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := appEnv(base, tc.mode, tc.addr)
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("missing %q in %q", w, got)
				}
			}
			for _, a := range tc.absent {
				if slices.Contains(got, a) {
					t.Errorf("%q still in %q", a, got)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("got %d variables %q, want %d", len(got), got, len(tc.want))
			}
		})
	}
	if base[1] != "HTTP_PROXY=http://old:1" {
		t.Fatal("appEnv modified its input")
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -TERM $$", 128 + 15},
		{"kill -KILL $$", 128 + 9},
	} {
		cmd := exec.Command("sh", "-c", tc.script)
		_ = cmd.Run()
		if got := exitCode(cmd.ProcessState); got != tc.want {
			t.Errorf("%q: exit code %d, want %d", tc.script, got, tc.want)
		}
	}
}

// TestLaunchNotReady: with a control plane that never answers, the app is
// not started; the launcher gives up after --ready-timeout with a message
// saying why, and exits 1.
func TestLaunchNotReady(t *testing.T) {
	dir := t.TempDir()
	boot := filepath.Join(dir, "bootstrap.yaml")
	// 127.0.0.1:1 refuses connections: xDS never syncs.
	if err := os.WriteFile(boot, []byte(`admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{google_grpc: {target_uri: "127.0.0.1:1", stat_prefix: ads}}]
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "started")
	start := time.Now()
	code, _, stderr := runBinary(t, 20*time.Second, nil, "run", "--bootstrap", boot, "--metrics", "", "--proxy-mark", "0",
		"--ready-timeout", "1s", "--", "sh", "-c", "touch "+marker)
	if code != exitFailure {
		t.Errorf("exit code %d, want %d\n%s", code, exitFailure, stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the app ran although the proxy never became ready")
	}
	if !strings.Contains(stderr, "not starting sh") || !strings.Contains(stderr, "xDS") {
		t.Errorf("stderr does not say why:\n%s", stderr)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("took %v; --ready-timeout is 1s", d)
	}
}

// TestLaunchExitCode: a static proxy is ready at once; the app runs, its
// exit code becomes ours, and app-not-found is 127.
func TestLaunchExitCode(t *testing.T) {
	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(boot, []byte("admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		app  []string
		want int
	}{
		{[]string{"sh", "-c", "exit 0"}, 0},
		{[]string{"sh", "-c", "exit 7"}, 7},
		{[]string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
		{[]string{"/nonexistent/app"}, exitAppNotFound},
	} {
		args := append([]string{"run", "--bootstrap", boot, "--metrics", "", "--proxy-mark", "0", "--drain-time", "100ms", "--"}, tc.app...)
		code, _, stderr := runBinary(t, 20*time.Second, nil, args...)
		if code != tc.want {
			t.Errorf("%q: exit code %d, want %d\n%s", tc.app, code, tc.want, stderr)
		}
	}
}

// TestLaunchWithIstioCA: the launcher waits for the workload certificate
// from the Istio CA (reached through the marked dialer: marking never fails
// a dial), then runs the app, which sees the proxy's /certs.
func TestLaunchWithIstioCA(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	srv := &identity.CAServer{CA: ca, Authenticate: func(context.Context, string) (identity.ID, error) {
		return identity.ID{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "app"}, nil
	}}
	gs := grpc.NewServer()
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	dir := t.TempDir()
	adminPort := freeTCPPort(t)
	boot := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(boot, fmt.Appendf(nil, "admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\n", adminPort), 0o600); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "token")
	if err := os.WriteFile(tok, []byte("t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The app asks the admin for the proxy's certificate: it must already
	// be there when the app starts.
	code, _, stderr := runBinary(t, 20*time.Second, []string{"POD_NAMESPACE=ns1", "SERVICE_ACCOUNT=app"},
		"run", "--bootstrap", boot, "--metrics", "", "--drain-time", "100ms",
		"--ca-address", lis.Addr().String(), "--ca-token-file", tok, "--cert-lifetime", "1h",
		"--", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && printf 'GET /certs HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q spiffe://cluster.local/ns/ns1/sa/app <&3", adminPort))
	if code != 0 {
		t.Fatalf("exit code %d: the app did not see the certificate\n%s", code, stderr)
	}
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
