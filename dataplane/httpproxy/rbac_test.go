package httpproxy

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// pathBackend answers 200 with the request path it received.
type pathBackend struct {
	*backend
	mu    sync.Mutex
	paths []string
}

func newPathBackend(t *testing.T) *pathBackend {
	b := &pathBackend{}
	b.backend = newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.paths = append(b.paths, r.RequestURI)
		b.mu.Unlock()
		_, _ = io.WriteString(w, r.RequestURI)
	}))
	return b
}

func (b *pathBackend) seen() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.paths...)
}

func pathStr(kind state.StringMatchKind, v string) *state.StringMatcher {
	return &state.StringMatcher{Kind: kind, Value: v}
}

// denyAdmin is Istio's DENY for paths ["/admin", "/admin/*"].
func denyAdmin() *state.HTTPRBAC {
	return &state.HTTPRBAC{Rules: &state.RBACRules{Action: state.RBACDeny, Policies: []state.RBACPolicy{{
		Name: "ns[x]-policy[deny-admin]-rule[0]",
		Permissions: []state.Permission{{Kind: state.PermOr, Rules: []state.Permission{
			{Kind: state.PermURLPath, String: pathStr(state.StringExact, "/admin")},
			{Kind: state.PermURLPath, String: pathStr(state.StringPrefix, "/admin/")},
		}}},
		Principals: []state.Principal{{Kind: state.PrincipalAny}},
	}}}}
}

func rbacHCM(cfg *state.HTTPRBAC, path state.PathNormalization) *state.HTTPConnectionManager {
	h := filterHCM(&state.HTTPFilter{Name: state.FilterRBAC, RBAC: cfg})
	h.Path = path
	return h
}

var istioPaths = state.PathNormalization{NormalizePath: true, MergeSlashes: true, EscapedSlashes: state.UnescapeAndForward}

// TestRBACPathBypass: no spelling of /admin gets past a DENY on /admin once
// the connection manager normalizes paths, and what the backend receives is
// the path the policy judged.
func TestRBACPathBypass(t *testing.T) {
	be := newPathBackend(t)
	cfg := denyAdmin()
	e := newProxyEnv(t, rbacHCM(cfg, istioPaths), h1Cluster("be", be.hostport()))
	for _, p := range []string{"/admin", "//admin", "/x/../admin", "/%61dmin", "/admin%2F", "/admin%2fx", "/./admin",
		"/%2e%2e/admin", "/x%2F..%2Fadmin", "/ADMIN/../admin", "/admin?x=1", "/x\\..\\admin"} {
		c := e.dial()
		resp, body := c.roundTrip(t, "GET "+p+" HTTP/1.1\r\nHost: svc\r\n\r\n")
		if resp.StatusCode != 403 || body != BodyRBACDenied {
			t.Errorf("%s: %d %q, want 403 %q", p, resp.StatusCode, body, BodyRBACDenied)
		}
	}
	if got := be.seen(); len(got) != 0 {
		t.Fatalf("backend saw %q", got)
	}
	for _, tc := range []struct{ in, want string }{
		{"/public", "/public"}, {"/admin/../public", "/public"}, {"//a//b?q=//", "/a/b?q=//"},
		{"/%7Euser", "/~user"}, {"/administrator", "/administrator"},
	} {
		c := e.dial()
		resp, body := c.roundTrip(t, "GET "+tc.in+" HTTP/1.1\r\nHost: svc\r\n\r\n")
		if resp.StatusCode != 200 || body != tc.want {
			t.Errorf("%s: %d %q, want 200 %q", tc.in, resp.StatusCode, body, tc.want)
		}
	}
	if st := RBACStats(cfg); st.Denied.Load() != 12 || st.Allowed.Load() != 5 {
		t.Errorf("stats denied=%d allowed=%d", st.Denied.Load(), st.Allowed.Load())
	}
}

// TestPathNormalizationActions covers REJECT_REQUEST (400),
// UNESCAPE_AND_REDIRECT (307 to the unescaped path) and a path the
// normalizer refuses; none of them reach the backend or the filters.
func TestPathNormalizationActions(t *testing.T) {
	be := newPathBackend(t)
	for _, tc := range []struct {
		name     string
		path     state.PathNormalization
		in       string
		code     int
		location string
	}{
		{"reject escaped slash", state.PathNormalization{EscapedSlashes: state.RejectEscapedSlashes}, "/a%2Fb", 400, ""},
		{"redirect escaped slash", state.PathNormalization{NormalizePath: true, EscapedSlashes: state.UnescapeAndRedirect}, "/a%2F..%2Fb?q", 307, "/b?q"},
		{"fragment", istioPaths, "/a#frag", 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// An ALLOW with no policies would deny everything: a 400/307
			// shows the filters did not run.
			e := newProxyEnv(t, rbacHCM(&state.HTTPRBAC{Rules: &state.RBACRules{Action: state.RBACAllow}}, tc.path), h1Cluster("be", be.hostport()))
			resp, _ := e.dial().roundTrip(t, "GET "+tc.in+" HTTP/1.1\r\nHost: svc\r\n\r\n")
			if resp.StatusCode != tc.code || resp.Header.Get("Location") != tc.location {
				t.Fatalf("%d location %q, want %d %q", resp.StatusCode, resp.Header.Get("Location"), tc.code, tc.location)
			}
		})
	}
	if got := be.seen(); len(got) != 0 {
		t.Fatalf("backend saw %q", got)
	}
}

// TestRBACFilterVariants: ALLOW on a header, LOG, shadow rules and the
// per-route override (RBACPerRoute without rbac disables the filter).
func TestRBACFilterVariants(t *testing.T) {
	be := newPathBackend(t)
	allowTeam := &state.HTTPRBAC{Rules: &state.RBACRules{Action: state.RBACAllow, Policies: []state.RBACPolicy{{
		Name: "team",
		Permissions: []state.Permission{{Kind: state.PermHeader, Header: &state.HeaderMatcher{Name: ":method", Kind: state.HeaderExact,
			String: state.StringMatcher{Kind: state.StringExact, Value: "GET"}}}},
		Principals: []state.Principal{{Kind: state.PrincipalHeader, Header: &state.HeaderMatcher{Name: "x-team", Kind: state.HeaderExact,
			String: state.StringMatcher{Kind: state.StringExact, Value: "blue"}}}},
	}}}}
	logAll := &state.HTTPRBAC{Rules: &state.RBACRules{Action: state.RBACLog, Policies: []state.RBACPolicy{{
		Name: "log", Permissions: []state.Permission{{Kind: state.PermAny}}, Principals: []state.Principal{{Kind: state.PrincipalAny}},
	}}}, ShadowRules: denyAdmin().Rules}

	h := rbacHCM(allowTeam, state.PathNormalization{})
	h.Filters = append(h.Filters, &state.HTTPFilter{Name: "log", RBAC: logAll})
	// Route "a" turns the team check off; route "b" replaces it with a
	// deny-admin that cannot match /b.
	vh := h.RouteConfig.VirtualHosts[0]
	vh.Routes[0].FilterOverrides = map[string]*state.FilterOverride{state.FilterRBAC: {Disabled: true}}
	vh.Routes[1].FilterOverrides = map[string]*state.FilterOverride{state.FilterRBAC: {RBAC: denyAdmin()}}
	e := newProxyEnv(t, h, h1Cluster("be", be.hostport()))

	for _, tc := range []struct {
		method, path, team string
		code               int
	}{
		{"GET", "/x", "blue", 200},
		{"GET", "/x", "red", 403},
		{"POST", "/x", "blue", 403},
		{"GET", "/x", "", 403},
		{"GET", "/a", "red", 200},
		{"POST", "/b", "", 200},
	} {
		raw := tc.method + " " + tc.path + " HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\n"
		if tc.team != "" {
			raw += "X-Team: " + tc.team + "\r\n"
		}
		resp, body := e.dial().roundTrip(t, raw+"\r\n")
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s team=%q: %d %q, want %d", tc.method, tc.path, tc.team, resp.StatusCode, body, tc.code)
		}
		if tc.code == 403 && (body != BodyRBACDenied || !strings.Contains(resp.Header.Get(HeaderResponseFlags), "-")) {
			t.Errorf("403 body %q flags %q", body, resp.Header.Get(HeaderResponseFlags))
		}
	}
	// The LOG filter ran on the three requests that got past the first
	// filter and allowed them; its shadow DENY on /admin matched none.
	st := RBACStats(logAll)
	if st.Logged.Load() != 3 || st.Allowed.Load() != 3 || st.Denied.Load() != 0 || st.ShadowAllowed.Load() != 3 {
		t.Fatalf("log filter stats: logged=%d allowed=%d denied=%d shadow_allowed=%d",
			st.Logged.Load(), st.Allowed.Load(), st.Denied.Load(), st.ShadowAllowed.Load())
	}
}

// TestRBACPathBypassH2: the same guarantees over HTTP/2 (h2c): the :path is
// normalized before routing and RBAC, and the upstream gets that path.
func TestRBACPathBypassH2(t *testing.T) {
	be := newPathBackend(t)
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, Path: istioPaths,
		Filters: []*state.HTTPFilter{{Name: state.FilterRBAC, RBAC: denyAdmin()}}}
	e := newH2Env(t, h2EnvOpts{hcm: hcm, rc: routeAll("be"), clusters: []*state.Cluster{h1Cluster("be", be.hostport())}})
	client, _ := h2cClient(t)
	do := func(path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", "http://"+e.addr+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		// Opaque ("//host/path" form) sends the path exactly as written.
		req.URL.Opaque = "//" + e.addr + path
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"//admin", "/x/../admin", "/%61dmin", "/admin%2F"} {
		if code, body := do(p); code != 403 || body != BodyRBACDenied {
			t.Errorf("%s: %d %q, want 403", p, code, body)
		}
	}
	if code, body := do("/x/..//public"); code != 200 || body != "/public" {
		t.Errorf("public: %d %q", code, body)
	}
	if got := be.seen(); len(got) != 1 {
		t.Fatalf("backend saw %q", got)
	}
}
