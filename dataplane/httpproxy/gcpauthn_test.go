package httpproxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// fakeMetadata is a GCE metadata server issuing unsigned JWTs whose exp is
// lifetime after its clock. It counts identity calls per audience and can
// be made to fail or to hold requests.
type fakeMetadata struct {
	*httptest.Server
	lifetime time.Duration
	clock    func() time.Time

	mu    sync.Mutex
	calls map[string]int
	// status, when not 200, is what the server answers.
	status int
	// hold, when set, blocks each call until it is closed.
	hold chan struct{}
}

func newFakeMetadata(t testing.TB, lifetime time.Duration, clock func() time.Time) *fakeMetadata {
	t.Helper()
	m := &fakeMetadata{lifetime: lifetime, clock: clock, calls: map[string]int{}, status: 200}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

// uri is the identity endpoint in the form http_uri takes.
func (m *fakeMetadata) uri() string {
	return m.URL + "/computeMetadata/v1/instance/service-accounts/default/identity?audience=" + state.GCPAudiencePlaceholder
}

func (m *fakeMetadata) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "missing Metadata-Flavor", http.StatusForbidden)
		return
	}
	aud := r.URL.Query().Get("audience")
	m.mu.Lock()
	m.calls[aud]++
	n, status, hold := m.calls[aud], m.status, m.hold
	m.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if status != 200 {
		http.Error(w, "down", status)
		return
	}
	_, _ = io.WriteString(w, fakeJWT(aud, n, m.clock().Add(m.lifetime)))
}

func (m *fakeMetadata) callsFor(aud string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[aud]
}

func (m *fakeMetadata) setStatus(s int) {
	m.mu.Lock()
	m.status = s
	m.mu.Unlock()
}

// fakeJWT is an unsigned JWT for aud; seq tells tokens of one audience apart.
func fakeJWT(aud string, seq int, exp time.Time) string {
	enc := base64.RawURLEncoding
	payload, _ := json.Marshal(map[string]any{"aud": aud, "seq": seq, "exp": exp.Unix()})
	return enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc.EncodeToString(payload) + ".c2ln"
}

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func gcpConfig(uri string, cacheSize int) *state.GCPAuthnFilter {
	return &state.GCPAuthnFilter{URI: uri, Timeout: 2 * time.Second, CacheSize: cacheSize,
		Header: state.DefaultGCPAuthnHeader, Prefix: state.DefaultGCPAuthnPrefix}
}

// gcpHCM routes /a to cluster "ca" and /b to "cb" behind one gcp_authn filter.
func gcpHCM(f *state.GCPAuthnFilter) *state.HTTPConnectionManager {
	h := simpleHCM("ca")
	vh := h.RouteConfig.VirtualHosts[0]
	mk := func(path, cluster string) *state.Route {
		return &state.Route{Name: path, Match: state.RouteMatch{Kind: state.PathPrefix, Path: path, CaseSensitive: true},
			Action: &state.RouteAction{Cluster: cluster, Timeout: 5 * time.Second}}
	}
	vh.Routes = []*state.Route{mk("/a", "ca"), mk("/b", "cb"), mk("/plain", "plain")}
	h.Filters = []*state.HTTPFilter{{Name: state.FilterGCPAuthn, GCPAuthn: f}}
	return h
}

// authBackend records the authorization header of every request.
type authBackend struct {
	*backend
	mu   sync.Mutex
	seen map[string]int
}

func newAuthBackend(t *testing.T) *authBackend {
	b := &authBackend{seen: map[string]int{}}
	b.backend = newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.seen[r.Header.Get("Authorization")]++
		b.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	return b
}

func (b *authBackend) auths() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.seen {
		out[k] = v
	}
	return out
}

func audCluster(name, addr, aud string) *state.Cluster {
	c := h1Cluster(name, addr)
	if aud != "" {
		c.GCPAudiences = state.GCPAudiences{state.FilterGCPAuthn: aud}
	}
	return c
}

// TestGCPAuthnOneFetchPerAudience sends 1000 concurrent requests over two
// audiences: the metadata server is asked once per audience, every request
// reaches the backend with its audience's token, and a cluster without an
// audience gets no header.
func TestGCPAuthnOneFetchPerAudience(t *testing.T) {
	md := newFakeMetadata(t, time.Hour, time.Now)
	be := newAuthBackend(t)
	const audA, audB = "https://a.example.run.app", "https://b.example.run.app"
	e := newProxyEnv(t, gcpHCM(gcpConfig(md.uri(), 10)),
		audCluster("ca", be.hostport(), audA), audCluster("cb", be.hostport(), audB), audCluster("plain", be.hostport(), ""))

	const n, workers = 1000, 16
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	cl := e.client()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= n; i = next.Add(1) {
				path := "/a"
				if i%2 == 0 {
					path = "/b"
				}
				resp, err := cl.Get("http://" + e.addr + path)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed", f, n)
	}
	for _, aud := range []string{audA, audB} {
		if got := md.callsFor(aud); got != 1 {
			t.Errorf("metadata calls for %s = %d, want 1", aud, got)
		}
	}
	auths := be.auths()
	for aud, want := range map[string]int{audA: n / 2, audB: n / 2} {
		found := 0
		for h, c := range auths {
			if strings.HasPrefix(h, "Bearer ") && jwtAudience(t, strings.TrimPrefix(h, "Bearer ")) == aud {
				found += c
			}
		}
		if found != want {
			t.Errorf("backend saw %d requests with a Bearer token for %s, want %d (headers %v)", found, aud, want, auths)
		}
	}
	if resp, _ := e.get(t, "/plain"); resp.StatusCode != 200 {
		t.Fatalf("/plain: %d", resp.StatusCode)
	}
	if c := be.auths()[""]; c != 1 {
		t.Errorf("requests to a cluster without audience carrying no authorization = %d, want 1", c)
	}
}

func jwtAudience(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Aud string }
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.Aud
}

// TestGCPAuthnHeaderOptions covers token_header and preserve_existing and
// the filter-level audience.
func TestGCPAuthnHeaderOptions(t *testing.T) {
	md := newFakeMetadata(t, time.Hour, time.Now)
	var got atomic.Value
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("X-Serverless-Authorization") + "|" + r.Header.Get("Authorization"))
	}))
	tests := []struct {
		name string
		cfg  func(*state.GCPAuthnFilter)
		hdr  []string
		want string // X-Serverless-Authorization|Authorization, with TOKEN for the fetched token
	}{
		{"default header overwrites", func(*state.GCPAuthnFilter) {}, []string{"Authorization", "Basic x"}, "|Bearer TOKEN"},
		{"custom header and prefix", func(c *state.GCPAuthnFilter) { c.Header, c.Prefix = "x-serverless-authorization", "" },
			[]string{"Authorization", "Basic x"}, "TOKEN|Basic x"},
		{"preserve existing", func(c *state.GCPAuthnFilter) { c.PreserveExisting = true }, []string{"Authorization", "Basic x"}, "|Basic x"},
		{"preserve existing absent", func(c *state.GCPAuthnFilter) { c.PreserveExisting = true }, nil, "|Bearer TOKEN"},
		{"filter audience overrides cluster", func(c *state.GCPAuthnFilter) { c.Audience = "https://override" }, nil, "|Bearer TOKEN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := gcpConfig(md.uri(), 10)
			tc.cfg(cfg)
			e := newProxyEnv(t, gcpHCM(cfg), audCluster("ca", be.hostport(), "https://cluster-aud"))
			resp, body := e.get(t, "/a", tc.hdr...)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			wantAud := "https://cluster-aud"
			if cfg.Audience != "" {
				wantAud = cfg.Audience
			}
			g := got.Load().(string)
			if strings.Contains(tc.want, "TOKEN") {
				tok := strings.TrimPrefix(strings.TrimPrefix(g, "|Bearer "), "")
				tok, _, _ = strings.Cut(tok, "|")
				if a := jwtAudience(t, tok); a != wantAud {
					t.Fatalf("token audience %q, want %q", a, wantAud)
				}
				g = strings.Replace(g, tok, "TOKEN", 1)
			}
			if g != tc.want {
				t.Fatalf("upstream headers %q, want %q", g, tc.want)
			}
		})
	}
}

// TestGCPAuthnServerDown: with the metadata server failing or unreachable
// the request fails with 503 (gRPC: UNAVAILABLE) instead of going out
// without its token, and the log names the audience.
func TestGCPAuthnServerDown(t *testing.T) {
	md := newFakeMetadata(t, time.Hour, time.Now)
	md.setStatus(http.StatusInternalServerError)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURI := "http://" + ln.Addr().String() + "/identity?audience=" + state.GCPAudiencePlaceholder
	ln.Close()
	be := newAuthBackend(t)
	tests := []struct {
		name      string
		uri       string
		retries   uint32
		wantCalls int
		wantErr   string
	}{
		{"500 no retry policy", md.uri(), 0, 1, "500"},
		{"500 with retries", md.uri(), 2, 3, "after 3 attempts"},
		{"connection refused", closedURI, 0, 0, "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const aud = "https://down.example"
			before := md.callsFor(aud)
			cfg := gcpConfig(tc.uri, 10)
			cfg.Retries, cfg.RetryBase, cfg.RetryMax = tc.retries, time.Millisecond, 5*time.Millisecond
			e := newProxyEnv(t, gcpHCM(cfg), audCluster("ca", be.hostport(), aud))
			var logs bytes.Buffer
			var logMu sync.Mutex
			e.proxy.log = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
			resp, body := e.get(t, "/a")
			if resp.StatusCode != 503 || body != BodyGCPAuthnFailed {
				t.Fatalf("got %d %q, want 503 %q", resp.StatusCode, body, BodyGCPAuthnFailed)
			}
			if got := md.callsFor(aud) - before; got != tc.wantCalls {
				t.Errorf("metadata calls = %d, want %d", got, tc.wantCalls)
			}
			logMu.Lock()
			l := logs.String()
			logMu.Unlock()
			if !strings.Contains(l, "audience="+aud) || !strings.Contains(l, tc.wantErr) {
				t.Errorf("log %q does not name the audience and %q", l, tc.wantErr)
			}
			if n := len(be.auths()); n != 0 {
				t.Errorf("backend got requests: %v", be.auths())
			}
		})
	}
	// The server recovering makes requests succeed again: failures are
	// not cached.
	md.setStatus(200)
	e := newProxyEnv(t, gcpHCM(gcpConfig(md.uri(), 10)), audCluster("ca", be.hostport(), "https://down.example"))
	if resp, body := e.get(t, "/a"); resp.StatusCode != 200 {
		t.Fatalf("after recovery: %d %s", resp.StatusCode, body)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestGCPAuthnH2 runs the filter on the HTTP/2 codec: the token reaches
// the upstream, and a gRPC request whose token cannot be fetched ends with
// grpc-status 14 UNAVAILABLE (A83).
func TestGCPAuthnH2(t *testing.T) {
	md := newFakeMetadata(t, time.Hour, time.Now)
	be := newAuthBackend(t)
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2,
		Filters: []*state.HTTPFilter{{Name: state.FilterGCPAuthn, GCPAuthn: gcpConfig(md.uri(), 10)}}}
	e := newH2Env(t, h2EnvOpts{hcm: hcm, rc: routeAll("ca"),
		clusters: []*state.Cluster{audCluster("ca", be.hostport(), "https://h2.example")}})
	client, _ := h2cClient(t)
	do := func(grpc bool) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+e.addr+"/svc/M", strings.NewReader(""))
		if grpc {
			req.Header.Set("Content-Type", "application/grpc")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := do(false); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var tok string
	for h := range be.auths() {
		tok = strings.TrimPrefix(h, "Bearer ")
	}
	if a := jwtAudience(t, tok); a != "https://h2.example" {
		t.Fatalf("upstream token audience %q", a)
	}

	md.setStatus(http.StatusServiceUnavailable)
	e2 := newH2Env(t, h2EnvOpts{hcm: &state.HTTPConnectionManager{Codec: state.CodecHTTP2,
		Filters: []*state.HTTPFilter{{Name: state.FilterGCPAuthn, GCPAuthn: gcpConfig(md.uri(), 10)}}},
		rc: routeAll("ca"), clusters: []*state.Cluster{audCluster("ca", be.hostport(), "https://down.example")}})
	e = e2
	resp := do(true)
	if resp.StatusCode != 200 || resp.Header.Get("Grpc-Status") != "14" {
		t.Fatalf("got %d grpc-status %q (headers %v trailers %v), want 200 with grpc-status 14", resp.StatusCode, resp.Header.Get("Grpc-Status"), resp.Header, resp.Trailer)
	}
}

func newTestCache(t *testing.T, md *fakeMetadata, size int, clk *fakeClock) *tokenCache {
	t.Helper()
	cfg := gcpConfig(md.uri(), size)
	c := newTokenCache(cfg, newTokenFetcher(cfg).fetch)
	c.now = clk.now
	return c
}

func mustToken(t *testing.T, c *tokenCache, aud string) string {
	t.Helper()
	tok, _, err := c.get(context.Background(), aud)
	if err != nil {
		t.Fatalf("get %s: %v", aud, err)
	}
	return tok.mut.RequestAdd[0].Value
}

// TestTokenCacheExpiry: a token is reused until shortly before its exp,
// then fetched again.
func TestTokenCacheExpiry(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	md := newFakeMetadata(t, time.Hour, clk.now)
	c := newTestCache(t, md, 10, clk)
	const aud = "https://exp.example"
	first := mustToken(t, c, aud)
	steps := []struct {
		advance   time.Duration
		wantCalls int
		wantSame  bool
	}{
		{0, 1, true},
		{59 * time.Minute, 1, true},                 // 1 min before exp: still cached
		{30*time.Second - time.Second, 1, true},     // 31 s before exp
		{2 * time.Second, 2, false},                 // inside the 30 s margin: refetched
		{59*time.Minute + 29*time.Second, 2, false}, // the new token is cached
	}
	for i, s := range steps {
		clk.advance(s.advance)
		tok := mustToken(t, c, aud)
		if got := md.callsFor(aud); got != s.wantCalls {
			t.Fatalf("step %d: metadata calls = %d, want %d", i, got, s.wantCalls)
		}
		if (tok == first) != s.wantSame {
			t.Fatalf("step %d: token reused = %v, want %v", i, tok == first, s.wantSame)
		}
	}
}

// TestTokenCacheShortLived: a token living less than twice the margin is
// refreshed at half its lifetime.
func TestTokenCacheShortLived(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	md := newFakeMetadata(t, 40*time.Second, clk.now)
	c := newTestCache(t, md, 10, clk)
	mustToken(t, c, "a")
	clk.advance(19 * time.Second)
	mustToken(t, c, "a")
	if got := md.callsFor("a"); got != 1 {
		t.Fatalf("calls at 19s = %d, want 1", got)
	}
	clk.advance(2 * time.Second)
	mustToken(t, c, "a")
	if got := md.callsFor("a"); got != 2 {
		t.Fatalf("calls at 21s = %d, want 2", got)
	}
}

// TestTokenCacheEviction: the cache holds at most size audiences and
// evicts the least recently used.
func TestTokenCacheEviction(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	md := newFakeMetadata(t, time.Hour, clk.now)
	c := newTestCache(t, md, 2, clk)
	for _, aud := range []string{"a", "b", "a", "c"} { // c evicts b (a was used after b)
		mustToken(t, c, aud)
	}
	if n := c.len(); n != 2 {
		t.Fatalf("cache holds %d audiences, want 2", n)
	}
	mustToken(t, c, "a") // still cached
	mustToken(t, c, "b") // evicted: fetched again, evicts c
	mustToken(t, c, "c")
	want := map[string]int{"a": 1, "b": 2, "c": 2}
	for aud, n := range want {
		if got := md.callsFor(aud); got != n {
			t.Errorf("calls for %s = %d, want %d", aud, got, n)
		}
	}

	// cache_size 0 caches nothing.
	c0 := newTestCache(t, md, 0, clk)
	mustToken(t, c0, "z")
	mustToken(t, c0, "z")
	if got := md.callsFor("z"); got != 2 || c0.len() != 0 {
		t.Errorf("size 0: calls %d, cached %d; want 2, 0", got, c0.len())
	}
}

// TestTokenCacheSingleflight: concurrent misses for one audience make one
// metadata call, and a waiter whose request goes away stops waiting
// without failing the others.
func TestTokenCacheSingleflight(t *testing.T) {
	md := newFakeMetadata(t, time.Hour, time.Now)
	hold := make(chan struct{})
	md.mu.Lock()
	md.hold = hold
	md.mu.Unlock()
	c := newTestCache(t, md, 10, &fakeClock{t: time.Now()})
	c.now = time.Now

	const n = 50
	var wg sync.WaitGroup
	toks := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, _, err := c.get(context.Background(), "sf")
			errs[i] = err
			if err == nil {
				toks[i] = tok.mut.RequestAdd[0].Value
			}
		}()
	}
	waitFor(t, "the first metadata call", func() bool { return md.callsFor("sf") == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := c.get(ctx, "sf"); err == nil || !strings.Contains(err.Error(), "canceled") {
		t.Fatalf("cancelled waiter: err = %v, want context canceled", err)
	}
	close(hold)
	wg.Wait()
	for i := range n {
		if errs[i] != nil || toks[i] != toks[0] {
			t.Fatalf("caller %d: err %v token %q, want the shared token", i, errs[i], toks[i])
		}
	}
	if got := md.callsFor("sf"); got != 1 {
		t.Fatalf("metadata calls = %d, want 1", got)
	}
}

func TestJWTExpiry(t *testing.T) {
	enc := base64.RawURLEncoding.EncodeToString
	hdr := enc([]byte(`{"alg":"RS256"}`))
	tests := []struct {
		name    string
		tok     string
		want    int64
		wantErr string
	}{
		{"integer exp", hdr + "." + enc([]byte(`{"exp":1700000000}`)) + ".sig", 1700000000, ""},
		{"float exp", hdr + "." + enc([]byte(`{"exp":1700000000.5,"aud":"x"}`)) + ".sig", 1700000000, ""},
		{"padded payload", hdr + "." + base64.URLEncoding.EncodeToString([]byte(`{"exp":1700000001}`)) + ".sig", 1700000001, ""},
		{"no exp", hdr + "." + enc([]byte(`{"aud":"x"}`)) + ".sig", 0, "no exp"},
		{"two parts", hdr + "." + enc([]byte(`{"exp":1}`)), 0, "not a JWT"},
		{"bad base64", hdr + ".!!!.sig", 0, "payload"},
		{"not json", hdr + "." + enc([]byte(`exp`)) + ".sig", 0, "payload"},
		{"string exp", hdr + "." + enc([]byte(`{"exp":"soon"}`)) + ".sig", 0, "payload"},
		{"negative exp", hdr + "." + enc([]byte(`{"exp":-5}`)) + ".sig", 0, "not a valid time"},
		{"opaque token", "ya29.opaque", 0, "not a JWT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := jwtExpiry(tc.tok)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got.Unix() != tc.want {
				t.Fatalf("got %v, %v; want %d", got.Unix(), err, tc.want)
			}
		})
	}
}

// TestTokenFetcherRequest checks what the metadata server sees: the
// Metadata-Flavor header and the escaped audience in the query.
func TestTokenFetcherRequest(t *testing.T) {
	var gotQuery, gotFlavor string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotQuery, gotFlavor = r.URL.RawQuery, r.Header.Get("Metadata-Flavor")
		_, _ = fmt.Fprint(w, fakeJWT("x", 1, time.Now().Add(time.Hour)), "\n")
	}))
	defer srv.Close()
	cfg := gcpConfig(srv.URL+"/identity?audience="+state.GCPAudiencePlaceholder, 1)
	if _, _, err := newTokenFetcher(cfg).fetch(context.Background(), "https://svc.run.app/p?q=1&r"); err != nil {
		t.Fatal(err)
	}
	if want := "audience=https%3A%2F%2Fsvc.run.app%2Fp%3Fq%3D1%26r"; gotQuery != want || gotFlavor != "Google" {
		t.Fatalf("query %q flavor %q, want %q Google", gotQuery, gotFlavor, want)
	}
}
