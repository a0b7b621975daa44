package policy

import (
	"fmt"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// simpleConfig is a typical sidecar outbound route configuration: a few
// service vhosts with exact and port domains, one wildcard, a default.
func simpleConfig() *state.RouteConfig {
	rc := &state.RouteConfig{Name: "80"}
	for i := range 20 {
		svc := fmt.Sprintf("svc%d.ns.svc.cluster.local", i)
		rc.VirtualHosts = append(rc.VirtualHosts, &state.VirtualHost{
			Name:    svc,
			Domains: []string{svc, svc + ":80", fmt.Sprintf("svc%d", i)},
			Routes: []*state.Route{
				{Name: "api", Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/api/", CaseSensitive: true,
					Headers: []state.HeaderMatcher{{Name: "x-canary", Kind: state.HeaderPresent, Present: true}}}},
				{Name: "default", Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true}},
			},
		})
	}
	rc.VirtualHosts = append(rc.VirtualHosts,
		&state.VirtualHost{Name: "wild", Domains: []string{"*.example.com"}, Routes: []*state.Route{{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true}}}},
		&state.VirtualHost{Name: "default", Domains: []string{"*"}, Routes: []*state.Route{{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true}}}},
	)
	return rc
}

func TestSelectRouteNoAlloc(t *testing.T) {
	rc := simpleConfig()
	reqs := []*req{
		get("svc7.ns.svc.cluster.local", "/api/x"),
		get("SVC7.ns.svc.cluster.local:80", "/"),
		get("svc3:8080", "/api/v1?x=1", "x-canary", "1"),
		get("a.example.com", "/"),
		get("unknown", "/"),
	}
	SelectRoute(rc, reqs[0]) // build the index outside the measurement
	for _, r := range reqs {
		allocs := testing.AllocsPerRun(200, func() {
			if _, rt := SelectRoute(rc, r); rt == nil {
				t.Fatalf("%s%s: no route", r.authority, r.path)
			}
		})
		if allocs != 0 {
			t.Errorf("SelectRoute(%s%s) allocates %.1f per call, want 0", r.authority, r.path, allocs)
		}
	}
}

func BenchmarkSelectRoute(b *testing.B) {
	rc := simpleConfig()
	for _, bc := range []struct {
		name string
		r    *req
	}{
		{"exact", get("svc7.ns.svc.cluster.local", "/index.html")},
		{"exact-port-upper", get("SVC7.ns.svc.cluster.local:80", "/index.html")},
		{"wildcard", get("a.example.com", "/")},
		{"default", get("unknown.host", "/")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			SelectRoute(rc, bc.r)
			b.ReportAllocs()
			for b.Loop() {
				SelectRoute(rc, bc.r)
			}
		})
	}
}

func BenchmarkFormatValue(b *testing.B) {
	fc := &FormatContext{Protocol: "HTTP/1.1"}
	b.ReportAllocs()
	for b.Loop() {
		FormatValue("no formatters here", fc)
	}
}
