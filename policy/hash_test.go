package policy

import (
	"math/bits"
	"net/netip"
	"strconv"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/meshlet/meshlet/state"
)

func TestHashRequest(t *testing.T) {
	src := netip.MustParseAddr("10.1.2.3")
	h := xxhash.Sum64String
	combine := func(a, b uint64) uint64 { return bits.RotateLeft64(a, 1) ^ b }
	r := get("h", "/p?user=alice&x=1", "x-user", "bob", "cookie", "a=1; session=s1; b=2")
	tests := []struct {
		name     string
		policies []state.HashPolicy
		r        *req
		want     uint64
		ok       bool
	}{
		{"none", nil, r, 0, false},
		{"header", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-user"}}, r, h("bob"), true},
		{"header missing", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-none"}}, r, 0, false},
		{"header joined", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-m"}}, get("h", "/", "x-m", "a", "x-m", "b"), h("a,b"), true},
		{"cookie", []state.HashPolicy{{Kind: state.HashCookie, Name: "session"}}, r, h("s1"), true},
		{"cookie missing", []state.HashPolicy{{Kind: state.HashCookie, Name: "nope"}}, r, 0, false},
		{"cookie missing ttl", []state.HashPolicy{{Kind: state.HashCookie, Name: "nope", CookieTTL: 1}}, r, h(CookieValue(src)), true},
		{"source ip", []state.HashPolicy{{Kind: state.HashSourceIP}}, r, h("10.1.2.3"), true},
		{"query", []state.HashPolicy{{Kind: state.HashQueryParam, Name: "user"}}, r, h("alice"), true},
		{"query missing", []state.HashPolicy{{Kind: state.HashQueryParam, Name: "nope"}}, r, 0, false},
		{"filter state unsupported", []state.HashPolicy{{Kind: state.HashFilterState, Name: "k"}}, r, 0, false},
		{"two combine", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-user"}, {Kind: state.HashQueryParam, Name: "user"}}, r,
			combine(h("bob"), h("alice")), true},
		// The rotation keeps equal policies from cancelling out (x ^ x == 0).
		{"same twice", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-user"}, {Kind: state.HashHeader, Name: "x-user"}}, r,
			combine(h("bob"), h("bob")), true},
		{"missing first skipped", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-none"}, {Kind: state.HashSourceIP}}, r, h("10.1.2.3"), true},
		{"terminal stops", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-user", Terminal: true}, {Kind: state.HashSourceIP}}, r, h("bob"), true},
		{"terminal without value continues", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-none", Terminal: true}, {Kind: state.HashSourceIP}}, r, h("10.1.2.3"), true},
		{"terminal later stops after combine", []state.HashPolicy{{Kind: state.HashHeader, Name: "x-user"}, {Kind: state.HashSourceIP, Terminal: true}, {Kind: state.HashQueryParam, Name: "user"}}, r,
			combine(h("bob"), h("10.1.2.3")), true},
	}
	for _, tt := range tests {
		got, ok := HashRequest(tt.policies, tt.r, src)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %#x, %v; want %#x, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := HashRequest([]state.HashPolicy{{Kind: state.HashSourceIP}}, r, netip.Addr{}); ok {
		t.Error("source ip policy with unknown source produced a hash")
	}
}

func TestCookie(t *testing.T) {
	tests := []struct {
		header, name, want string
		ok                 bool
	}{
		{"a=1; b=2", "b", "2", true},
		{"a=1;b=2", "b", "2", true},
		{"a=1, b=2", "b", "2", true}, // two HTTP/2 cookie headers joined
		{`a="quoted"`, "a", "quoted", true},
		{"ab=1", "a", "", false},
		{"a", "a", "", false},
		{"a=", "a", "", true},
		{"x=1; a=first; a=second", "a", "first", true},
	}
	for _, tt := range tests {
		got, ok := Cookie(get("h", "/", "cookie", tt.header), tt.name)
		if got != tt.want || ok != tt.ok {
			t.Errorf("Cookie(%q, %q) = %q, %v; want %q, %v", tt.header, tt.name, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := Cookie(get("h", "/"), "a"); ok {
		t.Error("no cookie header: found a cookie")
	}
}

func TestCookieValueStable(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if first, again := CookieValue(a), CookieValue(a); first != again || first == CookieValue(b) {
		t.Error("CookieValue must be stable per address and differ between addresses")
	}
	if _, err := strconv.ParseUint(CookieValue(a), 16, 64); err != nil {
		t.Errorf("CookieValue %q is not hex: %v", CookieValue(a), err)
	}
}

func TestHashRequestNoAlloc(t *testing.T) {
	r := get("h", "/p?user=alice", "x-user", "bob", "cookie", "session=s1")
	src := netip.MustParseAddr("2001:db8::1")
	ps := []state.HashPolicy{{Kind: state.HashHeader, Name: "x-user"}, {Kind: state.HashCookie, Name: "session"}, {Kind: state.HashSourceIP}, {Kind: state.HashQueryParam, Name: "user"}}
	allocs := testing.AllocsPerRun(100, func() { HashRequest(ps, r, src) })
	if allocs != 0 {
		t.Errorf("HashRequest allocates %.1f per call, want 0", allocs)
	}
}
