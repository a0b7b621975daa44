package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/xds/istiopb/securitypb"
	"github.com/meshlet/meshlet/xds/workloadtest"
)

// nodeHTTPBackend answers every request with "name METHOD URI".
func nodeHTTPBackend(t *testing.T, ip, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", name, r.Method, r.URL.RequestURI())
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// TestNodeModeL7Authorization: Authorization policies with the meshlet L7
// extension fields, pushed over delta xDS, make the destination node
// terminate HTTP on the HBONE stream between two node proxies and judge
// each request on its normalized path and its method; a workload with an
// L4-only policy on the same node keeps the byte-copy path.
func TestNodeModeL7Authorization(t *testing.T) {
	cp, err := workloadtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	m := &ambientMesh{t: t, cp: cp, ca: ca, hb: map[string]netip.AddrPort{}, ctx: context.Background()}

	bAddr := nodeHTTPBackend(t, "127.0.0.72", "b")
	cAddr := nodeBackend(t, "127.0.0.73", "c")
	b := workloadtest.Workload("b", "default", "b", "node-2", "127.0.0.72", true)
	b.AuthorizationPolicies = []string{"default/deny-admin", "default/allow-get"}
	c := workloadtest.Workload("c", "default", "c", "node-2", "127.0.0.73", true)
	c.AuthorizationPolicies = []string{"default/allow-a"}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cp.SetWorkloads(workloadtest.Workload("a", "default", "a", "node-1", "127.0.0.71", true), b, c))
	selector := func(name string, action securitypb.Action, m *securitypb.Match) *securitypb.Authorization {
		return &securitypb.Authorization{Name: name, Namespace: "default", Scope: securitypb.Scope_WORKLOAD_SELECTOR, Action: action,
			Groups: []*securitypb.Group{{Rules: []*securitypb.Rules{{Matches: []*securitypb.Match{m}}}}}}
	}
	must(cp.SetPolicies(
		selector("deny-admin", securitypb.Action_DENY, &securitypb.Match{Paths: []string{"/admin*"}}),
		selector("allow-get", securitypb.Action_ALLOW, &securitypb.Match{Methods: []string{"GET"}}),
		selector("allow-a", securitypb.Action_ALLOW, &securitypb.Match{Principals: []*securitypb.StringMatch{
			{MatchType: &securitypb.StringMatch_Exact{Exact: "cluster.local/ns/default/sa/a"}}}}),
	))
	n1 := m.startNode("node-1")
	n2 := m.startNode("node-2")
	if len(n2.store.Load().Ambient.Policies) != 3 {
		t.Fatalf("node-2 has %d policies, want 3", len(n2.store.Load().Ambient.Policies))
	}

	conn, err := net.DialTimeout("tcp", n1.captured(t, "a", bAddr), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	for _, tc := range []struct{ req, want string }{
		{"GET /public", "200 b GET /public"},
		{"GET /admin", "403 RBAC: access denied"},
		{"GET //admin", "403 RBAC: access denied"},
		{"GET /%61dmin", "403 RBAC: access denied"},
		{"POST /public", "403 RBAC: access denied"},
		{"GET /public/../public/./x", "200 b GET /public/x"},
	} {
		// One kept-alive connection: each request is judged on its own.
		if _, err := fmt.Fprintf(conn, "%s HTTP/1.1\r\nHost: b.default.svc.cluster.local\r\nContent-Length: 0\r\n\r\n", tc.req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.req, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := fmt.Sprintf("%d %s", resp.StatusCode, body); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.req, got, tc.want)
		}
	}
	conn.Close()
	st := n2.proxy.Stats()
	if st.InboundHTTP.Load() != 1 || st.Requests.Load() != 2 || st.RequestsDenied.Load() != 4 {
		t.Errorf("node-2 HTTP connections %d, requests %d, denied %d; want 1, 2, 4",
			st.InboundHTTP.Load(), st.Requests.Load(), st.RequestsDenied.Load())
	}
	if n1.proxy.HBONE.Handshakes() == 0 {
		t.Error("node-1 made no mTLS handshake")
	}

	// c's policy is L4 only: not HTTP (the echo would not answer one), a
	// half-close carried through, no HTTP termination counted.
	if got, err := nodeCall(n1.captured(t, "a", cAddr), "raw bytes"); err != nil || got != "c:raw bytes" {
		t.Fatalf("L4-only destination: %q %v", got, err)
	}
	if n := n2.proxy.Stats().InboundHTTP.Load(); n != 1 {
		t.Errorf("L4-only connection was served with HTTP (%d HTTP connections)", n)
	}
}
