package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// pacedLoad sends GETs at rate per second until stopped, half on a
// keep-alive client and half on fresh connections (so that a refused
// connect during the switch would show), and counts the outcomes.
type pacedLoad struct {
	ok, failed, refused atomic.Int64
	mu                  sync.Mutex
	errs                []string
	stop                chan struct{}
	wg                  sync.WaitGroup
}

func startPacedLoad(url string, rate int) *pacedLoad {
	l := &pacedLoad{stop: make(chan struct{})}
	keep := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	fresh := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer keep.CloseIdleConnections()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		sem := make(chan struct{}, 64) // bounded in flight
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			c := keep
			if i%2 == 1 {
				c = fresh
			}
			sem <- struct{}{}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				defer func() { <-sem }()
				l.one(c, url)
			}()
		}
	}()
	return l
}

func (l *pacedLoad) one(c *http.Client, url string) {
	resp, err := c.Get(url)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	if err == nil {
		l.ok.Add(1)
		return
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		l.refused.Add(1)
	}
	l.failed.Add(1)
	l.mu.Lock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err.Error())
	}
	l.mu.Unlock()
}

func (l *pacedLoad) finish() {
	close(l.stop)
	l.wg.Wait()
}

// TestUpgradeUnderLoad replaces a running ztunnel with a second one that
// takes over its listening sockets (--upgrade-from) while 200 requests per
// second flow through it: no connection is refused, no request fails, the
// old process drains and exits 0 and the new one keeps serving.
func TestUpgradeUnderLoad(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	be.delay.Store(int64(20 * time.Millisecond)) // requests in flight during the switch
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(httpListener(t, "web", lAddr, "web-routes"), routeConfig("web-routes", routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr))
	sock := filepath.Join(t.TempDir(), "upgrade.sock")

	old := startZtunnel(t, cp, proxyOpts{}, "--upgrade-socket", sock, "--drain-time", "5s")
	eventually(t, 10*time.Second, func() error {
		code, _, _, err := get(h1Client(), "http://"+lAddr+"/", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("listener not serving yet: %d %v", code, err)
		}
		return nil
	})

	load := startPacedLoad("http://"+lAddr+"/", 200)
	time.Sleep(time.Second)
	before := load.ok.Load()
	next := startZtunnel(t, cp, proxyOpts{}, "--upgrade-from", sock, "--upgrade-socket", sock, "--drain-time", "5s")
	if code := old.waitExit(15 * time.Second); code != 0 {
		t.Errorf("old process exit code %d, want 0", code)
	}
	time.Sleep(time.Second) // the new process alone
	load.finish()

	t.Logf("requests: %d ok (%d before the upgrade), %d failed, %d refused", load.ok.Load(), before, load.failed.Load(), load.refused.Load())
	if n := load.refused.Load(); n != 0 {
		t.Errorf("%d connections refused during the upgrade", n)
	}
	if n := load.failed.Load(); n != 0 {
		t.Errorf("%d requests failed during the upgrade: %v", n, load.errs)
	}
	if load.ok.Load() < 300 {
		t.Errorf("only %d requests succeeded; the load did not run", load.ok.Load())
	}
	if out := next.out.String(); !strings.Contains(out, "listener inherited") {
		t.Errorf("new process did not inherit the listener:\n%s", out)
	}
	if out := old.out.String(); !strings.Contains(out, "upgraded; draining") {
		t.Errorf("old process did not drain for an upgrade:\n%s", out)
	}
	// The new process serves new connections alone and can be upgraded
	// again: its socket is at the same path.
	code, _, _, err := get(&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+lAddr+"/", nil)
	if err != nil || code != 200 {
		t.Fatalf("after the upgrade: %d %v", code, err)
	}
	third := startZtunnel(t, cp, proxyOpts{}, "--upgrade-from", sock)
	if code := next.waitExit(15 * time.Second); code != 0 {
		t.Errorf("second process exit code %d, want 0", code)
	}
	code, _, _, err = get(h1Client(), "http://"+lAddr+"/", nil)
	if err != nil || code != 200 {
		t.Fatalf("after the second upgrade: %d %v\n%s", code, err, third.out.String())
	}
}

// TestUpgradeKeepsAdminAndMetricsPorts: both processes are configured with
// the same admin, metrics, readiness (--status) and gateway addresses, as in
// production. The successor
// inherits those sockets too, so it starts (instead of failing to bind the
// admin port) and the ports answer throughout and after the switch.
func TestUpgradeKeepsAdminAndMetricsPorts(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(httpListener(t, "web", lAddr, "web-routes"), routeConfig("web-routes", routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr))
	sock := filepath.Join(t.TempDir(), "upgrade.sock")
	o := proxyOpts{adminPort: freePort(t)}
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	status := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	gateway := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	old := startZtunnel(t, cp, o, "--upgrade-socket", sock, "--drain-time", "2s", "--metrics", metrics, "--status", status, "--gateway", gateway)
	next := startZtunnel(t, cp, o, "--upgrade-from", sock, "--drain-time", "2s", "--metrics", metrics, "--status", status, "--gateway", gateway)
	if code := old.waitExit(15 * time.Second); code != 0 {
		t.Fatalf("old process exit code %d, want 0", code)
	}
	if code, body := adminDo(t, next, "GET", "/ready"); code != 200 {
		t.Errorf("admin /ready after the upgrade = %d %q", code, body)
	}
	if body := httpGetBody(t, "http://"+metrics+"/stats/prometheus"); !strings.Contains(body, "istio_build") {
		t.Errorf("metrics port after the upgrade does not serve istio_build")
	}
	if body := httpGetBody(t, "http://"+status+"/healthz/ready"); !strings.Contains(body, "ready") {
		t.Errorf("status port after the upgrade answered %q", body)
	}
	// The gateway port still accepts (and, without TLS, closes) connections.
	if c, err := net.DialTimeout("tcp", gateway, 2*time.Second); err != nil {
		t.Errorf("gateway port after the upgrade: %v", err)
	} else {
		c.Close()
	}
	if out := next.out.String(); !strings.Contains(out, "sni gateway listening") {
		t.Errorf("new process did not start the gateway:\n%s", out)
	}
	if out := next.out.String(); strings.Contains(out, "metrics disabled") {
		t.Errorf("new process could not serve metrics:\n%s", out)
	}
}

// TestUpgradeFromNothingFails: --upgrade-from a path nobody serves exits
// with an error instead of binding its own sockets next to a running one.
func TestUpgradeFromNothingFails(t *testing.T) {
	p := startZtunnel(t, nil, proxyOpts{noReadyWait: true}, "--upgrade-from", filepath.Join(t.TempDir(), "none.sock"))
	if code := p.waitExit(10 * time.Second); code != 1 {
		t.Fatalf("exit code %d, want 1:\n%s", code, p.out.String())
	}
	if !strings.Contains(p.out.String(), "upgrade from") {
		t.Errorf("error does not name the upgrade:\n%s", p.out.String())
	}
}
