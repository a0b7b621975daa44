package policy

import (
	"regexp"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestRedirectLocation(t *testing.T) {
	prefixRoute := &state.Route{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/old", CaseSensitive: true}}
	tests := []struct {
		name   string
		rd     state.RedirectAction
		scheme string
		r      *req
		want   string
	}{
		{"https redirect", state.RedirectAction{SchemeRedirect: "https"}, "http", get("a.com", "/p?q=1"), "https://a.com/p?q=1"},
		{"https drops :80", state.RedirectAction{SchemeRedirect: "https"}, "http", get("a.com:80", "/p"), "https://a.com/p"},
		{"https keeps :8080", state.RedirectAction{SchemeRedirect: "https"}, "http", get("a.com:8080", "/p"), "https://a.com:8080/p"},
		{"same scheme keeps :80", state.RedirectAction{PathRedirect: "/n"}, "http", get("a.com:80", "/p"), "http://a.com:80/n"},
		{"http drops :443", state.RedirectAction{SchemeRedirect: "http"}, "https", get("a.com:443", "/p"), "http://a.com/p"},
		{"http keeps :80 from https", state.RedirectAction{SchemeRedirect: "http"}, "https", get("a.com:80", "/p"), "http://a.com:80/p"},
		{"xfp decides port stripping", state.RedirectAction{SchemeRedirect: "https"}, "http", get("a.com:80", "/p", "x-forwarded-proto", "https"), "https://a.com:80/p"},
		{"port redirect replaces port", state.RedirectAction{PortRedirect: 8443}, "http", get("a.com:80", "/p"), "http://a.com:8443/p"},
		{"port redirect adds port", state.RedirectAction{PortRedirect: 8443, SchemeRedirect: "https"}, "http", get("a.com", "/p"), "https://a.com:8443/p"},
		{"port redirect ipv6", state.RedirectAction{PortRedirect: 81}, "http", get("[::1]:80", "/p"), "http://[::1]:81/p"},
		{"ipv6 no port", state.RedirectAction{PortRedirect: 81}, "http", get("[::1]", "/p"), "http://[::1]:81/p"},
		{"host redirect drops request port", state.RedirectAction{HostRedirect: "b.com"}, "http", get("a.com:8080", "/p"), "http://b.com/p"},
		{"host and port redirect", state.RedirectAction{HostRedirect: "b.com", PortRedirect: 9}, "http", get("a.com", "/p"), "http://b.com:9/p"},
		{"path redirect keeps query", state.RedirectAction{PathRedirect: "/new"}, "http", get("a.com", "/old/x?q=1"), "http://a.com/new?q=1"},
		{"path redirect own query wins", state.RedirectAction{PathRedirect: "/new?z=9"}, "http", get("a.com", "/old?q=1"), "http://a.com/new?z=9"},
		{"path redirect own query not stripped", state.RedirectAction{PathRedirect: "/new?z=9", StripQuery: true}, "http", get("a.com", "/old?q=1"), "http://a.com/new?z=9"},
		{"strip query", state.RedirectAction{PathRedirect: "/new", StripQuery: true}, "http", get("a.com", "/old?q=1"), "http://a.com/new"},
		{"strip query plain", state.RedirectAction{StripQuery: true}, "https", get("a.com", "/old?q=1"), "https://a.com/old"},
		{"path gets leading slash", state.RedirectAction{PathRedirect: "new"}, "http", get("a.com", "/x"), "http://a.com/new"},
		{"prefix rewrite", state.RedirectAction{PrefixRewrite: "/new"}, "http", get("a.com", "/old/x?q"), "http://a.com/new/x?q"},
		{"prefix rewrite strip query", state.RedirectAction{PrefixRewrite: "/new", StripQuery: true}, "http", get("a.com", "/old/x?q"), "http://a.com/new/x"},
		{"regex rewrite", state.RedirectAction{RegexRewrite: regexp.MustCompile(`^/old/(.*)$`), RegexSubstitution: "/v2/${1}"}, "http", get("a.com", "/old/x?q"), "http://a.com/v2/x?q"},
		{"everything", state.RedirectAction{SchemeRedirect: "https", HostRedirect: "b.com", PortRedirect: 444, PathRedirect: "/z", StripQuery: true}, "http", get("a.com:80", "/p?q"), "https://b.com:444/z"},
	}
	for _, tt := range tests {
		got := RedirectLocation(prefixRoute, &tt.rd, tt.scheme, tt.r)
		if got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := RedirectLocation(prefixRoute, nil, "http", get("a", "/")); got != "" {
		t.Errorf("nil redirect: got %q", got)
	}
}
