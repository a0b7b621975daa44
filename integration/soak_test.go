//go:build soak

package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// soakBackend is an HTTP/1.1 server on a fixed address that can be killed
// (listener and every connection closed) and restarted on the same port.
type soakBackend struct {
	name string
	addr string
	hits atomic.Int64

	mu  sync.Mutex
	srv *http.Server
}

func startSoakBackend(t *testing.T, name string) *soakBackend {
	t.Helper()
	b := &soakBackend{name: name, addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.kill)
	return b
}

func (b *soakBackend) start() error {
	lis, err := net.Listen("tcp", b.addr)
	if err != nil {
		return fmt.Errorf("backend %s: listen %s: %w", b.name, b.addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("x-backend", b.name)
		fmt.Fprintf(w, "%s %s", b.name, r.URL.Path)
	})}
	b.mu.Lock()
	b.srv = srv
	b.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
	return nil
}

// kill closes the listener and all connections at once, in-flight
// requests included: what a crashed backend looks like to the proxy.
func (b *soakBackend) kill() {
	b.mu.Lock()
	srv := b.srv
	b.srv = nil
	b.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// procSample is one reading of the proxy's resource use.
type procSample struct {
	at         time.Duration
	goroutines int
	fds        int
	rssKiB     int
}

func (s procSample) String() string {
	return fmt.Sprintf("t=%s goroutines=%d fds=%d rss=%dKiB", s.at.Round(time.Second), s.goroutines, s.fds, s.rssKiB)
}

// sampleProxy reads /proc/PID (fds, VmRSS) and the admin goroutine profile.
func sampleProxy(pid int, admin string) (procSample, error) {
	var s procSample
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(ents)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.SplitSeq(string(st), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	resp, err := http.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	// First line: "goroutine profile: total N".
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return s, fmt.Errorf("goroutine profile: %w", err)
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return s, fmt.Errorf("goroutine profile: first line %q", line)
	}
	if s.goroutines, err = strconv.Atoi(f[len(f)-1]); err != nil {
		return s, fmt.Errorf("goroutine profile: first line %q: %w", line, err)
	}
	return s, nil
}

func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv("SOAK_DURATION")
	if v == "" {
		return 10 * time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 10*time.Second {
		t.Fatalf("SOAK_DURATION=%q: want a duration of at least 10s", v)
	}
	return d
}

// TestSoak drives the real ztunnel binary at a fixed request rate for
// SOAK_DURATION while the control plane pushes a new route every second
// (alternating weights) and one backend is killed and later restarted.
// With retries on, no request may fail; goroutines, fds and RSS of the
// proxy must stay flat from the warmed-up baseline to the end.
//
// The traffic crosses a mesh hop: the proxy under test reaches the backends
// through a second proxy over mTLS, both holding built-in-CA certificates
// that live for a tenth of the run, so both rotate several times under
// load.
func TestSoak(t *testing.T) {
	dur := soakDuration(t)
	const rps = 1000
	cp := startControlPlane(t)
	backends := map[string][]*soakBackend{
		"v1": {startSoakBackend(t, "v1a"), startSoakBackend(t, "v1b")},
		"v2": {startSoakBackend(t, "v2a"), startSoakBackend(t, "v2b")},
	}
	caDir := t.TempDir()
	lifetime := max(dur/10, 20*time.Second).Round(time.Second)
	idArgs := []string{"--ca-dir", caDir, "--cert-lifetime", lifetime.String(), "--rotation-fraction", "0.5"}
	// The server-side proxy: one STRICT mTLS inbound per backend.
	inbound := map[*soakBackend]string{}
	server := "static_resources:\n  listeners:\n"
	clusters := "  clusters:\n"
	for _, bs := range backends {
		for _, b := range bs {
			inbound[b] = loopAddr(t)
			server += listenerYAML("in-"+b.name, inbound[b], serverChain(mtlsClientID, b.name))
			clusters += staticCluster(b.name, b.addr, "")
		}
	}
	runMTLSProxy(t, server+clusters, []string{"SERVICE_ACCOUNT=server"}, idArgs...)
	listener := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	resources := func(w1 uint32) []types.Resource {
		rt := weightedRoute(map[string]uint32{"v1": w1, "v2": 100 - w1}, "v1", "v2")
		p := retryPolicy("connect-failure,refused-stream,reset,5xx", 5)
		p.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}
		p.HostSelectionRetryMaxAttempts = 5
		rt.GetRoute().RetryPolicy = p
		res := []types.Resource{httpListener(t, "http", listener, "local"), routeConfig("local", rt)}
		for _, name := range []string{"v1", "v2"} {
			c := edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, false)
			c.TransportSocket = soakMeshTLS(t)
			// Envoy's defaults (1024 requests, 3 concurrent retries) would
			// turn the kill's burst of retries into overflows.
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				MaxRetries: wrapperspb.UInt32(100000), MaxRequests: wrapperspb.UInt32(100000),
				MaxConnections: wrapperspb.UInt32(100000), MaxPendingRequests: wrapperspb.UInt32(100000),
			}}}
			var addrs []string
			for _, b := range backends[name] {
				addrs = append(addrs, inbound[b])
			}
			res = append(res, c, endpoints(t, name, addrs...))
		}
		return res
	}
	cp.set(resources(50)...)
	px := startProxy(t, cp, proxyOpts{args: idArgs, env: []string{"SERVICE_ACCOUNT=client"}})
	firstSerial := certSerial(t, px.admin)
	url := "http://" + listener + "/soak"
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 256, MaxIdleConnsPerHost: 256, ForceAttemptHTTP2: false}}
	eventually(t, 10*time.Second, func() error {
		code, be, _, err := get(client, url, nil)
		if err != nil || be == "" {
			return fmt.Errorf("status %d backend %q err %v", code, be, err)
		}
		return nil
	})

	stop := make(chan struct{})
	var wg sync.WaitGroup

	// Load: a pacer hands out one token per request; workers spend them.
	// A token not taken within its tick is counted as a missed send, so a
	// proxy that slows down shows as a lower achieved rate, not as a hang.
	var ok, failed, missed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	tokens := make(chan struct{}, rps)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(tokens)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for range rps / 100 {
					select {
					case tokens <- struct{}{}:
					default:
						missed.Add(1)
					}
				}
			}
		}
	}()
	for range 128 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tokens {
				code, be, _, err := get(client, url, nil)
				if err == nil && code == 200 && be != "" {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				failMu.Lock()
				if len(failures) < 20 {
					failures = append(failures, fmt.Sprintf("status %d backend %q err %v", code, be, err))
				}
				failMu.Unlock()
			}
		}()
	}

	// xDS pushes every second, alternating the split.
	var pushes atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				w := uint32(80)
				if i%2 == 1 {
					w = 20
				}
				cp.set(resources(w)...)
				pushes.Add(1)
			}
		}
	}()

	// Timeline: warm up, baseline, kill v1a at 40%, restart at 60%, end.
	start := time.Now()
	warm := max(dur/10, 3*time.Second)
	sampleEvery := max(dur/20, 2*time.Second)
	pid := px.cmd.Process.Pid
	var samples []procSample
	sample := func() {
		s, err := sampleProxy(pid, px.admin)
		if err != nil {
			t.Errorf("sampling proxy: %v", err)
			return
		}
		s.at = time.Since(start)
		samples = append(samples, s)
		t.Logf("sample %s ok=%d failed=%d", s, ok.Load(), failed.Load())
	}
	killed, restarted := false, false
	victim := backends["v1"][0]
	for time.Since(start) < dur {
		time.Sleep(min(sampleEvery, time.Second))
		el := time.Since(start)
		if !killed && el >= dur*4/10 {
			killed = true
			victim.kill()
			t.Logf("killed backend %s at %s", victim.name, el.Round(time.Second))
		}
		if killed && !restarted && el >= dur*6/10 {
			restarted = true
			if err := victim.start(); err != nil {
				t.Errorf("restarting backend: %v", err)
			}
			t.Logf("restarted backend %s at %s", victim.name, el.Round(time.Second))
		}
		if el >= warm && (len(samples) == 0 || el-samples[len(samples)-1].at >= sampleEvery) {
			sample()
		}
	}
	sample() // still under load: compare like with like
	close(stop)
	wg.Wait()

	elapsed := time.Since(start)
	total := ok.Load() + failed.Load()
	t.Logf("soak %s: %d requests (%.0f rps achieved, %d sends missed), %d failed, %d xDS pushes, victim %s served %d requests",
		elapsed.Round(time.Second), total, float64(total)/elapsed.Seconds(), missed.Load(), failed.Load(), pushes.Load(), victim.name, victim.hits.Load())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d requests failed; first ones:\n  %s", n, total, strings.Join(failures, "\n  "))
	}
	if float64(total) < 0.9*rps*elapsed.Seconds()*0.9 {
		t.Errorf("achieved %d requests in %s, want about %d rps", total, elapsed.Round(time.Second), rps)
	}
	if !restarted {
		t.Errorf("backend kill/restart did not happen within %s", dur)
	}
	if last := certSerial(t, px.admin); last == firstSerial {
		t.Errorf("certificate %s was not rotated in %s (lifetime %s)", last, elapsed.Round(time.Second), lifetime)
	} else {
		t.Logf("certificate rotated: serial %s -> %s", firstSerial, last)
	}
	if len(samples) < 2 {
		t.Fatalf("only %d resource samples; run longer", len(samples))
	}
	base, last := samples[0], samples[len(samples)-1]
	// Flat within a tolerance: pooled connections and their goroutines
	// legitimately vary with load; a leak grows with time and requests.
	if limit := base.goroutines*3/2 + 100; last.goroutines > limit {
		t.Errorf("goroutines grew from %d to %d (limit %d)", base.goroutines, last.goroutines, limit)
	}
	if limit := base.fds*3/2 + 64; last.fds > limit {
		t.Errorf("fds grew from %d to %d (limit %d)", base.fds, last.fds, limit)
	}
	if limit := base.rssKiB*2 + 64<<10; last.rssKiB > limit {
		t.Errorf("RSS grew from %d KiB to %d KiB (limit %d)", base.rssKiB, last.rssKiB, limit)
	}
	t.Logf("growth: goroutines %d -> %d, fds %d -> %d, RSS %d -> %d KiB", base.goroutines, last.goroutines, base.fds, last.fds, base.rssKiB, last.rssKiB)
}

// soakMeshTLS is the client side of the mesh hop: the proxy's own SDS
// identity, the mesh root, and the server's SPIFFE ID.
func soakMeshTLS(t *testing.T) *corev3.TransportSocket {
	t.Helper()
	sds := func(name string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
				ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"}}}},
			}},
		}}
	}
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: "outbound_.80_._.server.default.svc.cluster.local",
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"istio-peer-exchange", "istio"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("default")},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext: &tlsv3.CertificateValidationContext{
						MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
							SanType: tlsv3.SubjectAltNameMatcher_URI,
							Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: mtlsServerID}},
						}},
					},
					ValidationContextSdsSecretConfig: sds("ROOTCA"),
				},
			},
		},
	}
	a, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
}

// certSerial is the serial number of the proxy's workload certificate, read
// from its admin /certs.
func certSerial(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/certs")
	if err != nil {
		t.Fatalf("/certs: %v", err)
	}
	defer resp.Body.Close()
	var out struct {
		Certificates []struct {
			CertChain []struct {
				SerialNumber string `json:"serialNumber"`
			} `json:"certChain"`
		} `json:"certificates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("/certs: %v", err)
	}
	if len(out.Certificates) == 0 || len(out.Certificates[0].CertChain) == 0 {
		t.Fatal("/certs: no workload certificate")
	}
	return out.Certificates[0].CertChain[0].SerialNumber
}
