package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// TestConfigChangeUnderLoad pushes a weight change over ADS while a 200 rps
// load runs: the change takes effect within 1 s and no request fails.
func TestConfigChangeUnderLoad(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			m := startMesh(t, delta, routeTo("v1"))
			c := h1Client()
			var failed, total atomic.Int64
			var mu sync.Mutex
			var firstV2 time.Time
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // 200 rps, paced
				defer wg.Done()
				tick := time.NewTicker(5 * time.Millisecond)
				defer tick.Stop()
				var inner sync.WaitGroup
				defer inner.Wait()
				for i := 0; i < 2000; i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					inner.Add(1)
					go func() {
						defer inner.Done()
						code, be, _, err := get(c, m.url("/load"), nil)
						total.Add(1)
						if err != nil || code != 200 {
							failed.Add(1)
							return
						}
						if be == "v2" {
							mu.Lock()
							if firstV2.IsZero() {
								firstV2 = time.Now()
							}
							mu.Unlock()
						}
					}()
				}
			}()
			time.Sleep(time.Second)
			pushed := time.Now()
			m.push(routeTo("v2"))
			// After the switch has been seen, everything goes to v2.
			eventually(t, 3*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if firstV2.IsZero() {
					return fmt.Errorf("v2 not seen yet")
				}
				return nil
			})
			time.Sleep(1500 * time.Millisecond)
			close(stop)
			wg.Wait()
			mu.Lock()
			took := firstV2.Sub(pushed)
			mu.Unlock()
			if took > time.Second {
				t.Errorf("config change took %v to take effect, want <= 1s", took)
			}
			if failed.Load() != 0 {
				t.Errorf("%d of %d requests failed during the change", failed.Load(), total.Load())
			}
			if total.Load() < 400 {
				t.Errorf("load generator sent only %d requests", total.Load())
			}
			t.Logf("change visible after %v; %d requests, %d failed", took, total.Load(), failed.Load())
		})
	}
}

// TestNACKKeepsLastGood pushes a route configuration with an invalid regex:
// the proxy NACKs it with an error naming the resource and field and keeps
// routing by the last good version.
func TestNACKKeepsLastGood(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			m := startMesh(t, delta, routeTo("v1"))
			bad := &routev3.Route{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
					Regex: "/(unclosed",
				}}},
				Action: routeTo("v2").Action,
			}
			m.push(bad, routeTo("v2"))
			eventually(t, 5*time.Second, func() error {
				for _, msg := range m.cp.nackMessages() {
					if strings.Contains(msg, `"local"`) && strings.Contains(msg, "safe_regex") {
						return nil
					}
				}
				return fmt.Errorf("no NACK naming route_configuration \"local\" and safe_regex yet: %q", m.cp.nackMessages())
			})
			for i := 0; i < 20; i++ {
				code, be, _, err := get(h1Client(), m.url("/"), nil)
				if err != nil || code != 200 || be != "v1" {
					t.Fatalf("after NACK: code %d backend %q err %v; want the last good config (v1)", code, be, err)
				}
			}
			// A good update after the bad one is accepted.
			m.push(routeTo("v2"))
			eventually(t, 5*time.Second, func() error {
				_, be, _, err := get(h1Client(), m.url("/"), nil)
				if err != nil || be != "v2" {
					return fmt.Errorf("backend %q err %v", be, err)
				}
				return nil
			})
		})
	}
}

// TestControlPlaneGone stops the management server: the proxy keeps serving
// its last config, and picks up new config once a server is back.
func TestControlPlaneGone(t *testing.T) {
	m := startMesh(t, false, routeTo("v1"))
	m.cp.stop()
	time.Sleep(500 * time.Millisecond)
	for i := 0; i < 50; i++ {
		code, be, _, err := get(h1Client(), m.url("/"), nil)
		if err != nil || code != 200 || be != "v1" {
			t.Fatalf("with the control plane gone: code %d backend %q err %v", code, be, err)
		}
	}
}

// TestListenerRemovalDrains removes a listener while a connection is open
// on it: the open request completes, new connections are refused.
func TestListenerRemovalDrains(t *testing.T) {
	m := startMesh(t, false, routeTo("v1"))
	conn, err := net.Dial("tcp", m.listener)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Start a slow request on the open connection.
	fmt.Fprintf(conn, "GET /slow HTTP/1.1\r\nHost: x\r\nx-delay: 1s\r\n\r\n")
	time.Sleep(200 * time.Millisecond)
	// Remove the listener (keep everything else).
	res := dropListeners(m.resources(routeTo("v1")))
	m.cp.set(res...)
	eventually(t, 5*time.Second, func() error {
		c, err := net.DialTimeout("tcp", m.listener, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return fmt.Errorf("listener still accepting")
		}
		return nil
	})
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request on the drained listener: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "v1") {
		t.Fatalf("in-flight request: %d %q", resp.StatusCode, body)
	}
}

func dropListeners(res []types.Resource) []types.Resource {
	var out []types.Resource
	for _, r := range res {
		if _, ok := r.(*listenerv3.Listener); ok {
			continue
		}
		out = append(out, r)
	}
	return out
}

// TestBrokenBootstrap: a broken file is rejected at start with exit status 2
// and a message naming the file and the field.
func TestBrokenBootstrap(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, body, want string
	}{
		{"unknown-field.yaml", "node: {id: a}\nadmin: {bogus_field: 1}\n", "bogus_field"},
		{"bad-duration.yaml", `static_resources:
  clusters:
  - name: c
    connect_timeout: forever
`, "connect_timeout"},
		{"bad-listener.yaml", `static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: x
`, "cluster"},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, tc.name)
		if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(binPath, "run", "--bootstrap", path).CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 {
			t.Errorf("%s: err %v, want exit status 2; output:\n%s", tc.name, err, out)
			continue
		}
		if !strings.Contains(string(out), tc.name) || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: message %q does not name the file and %q", tc.name, out, tc.want)
		}
	}
}
