package hbone

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestForwardedFor(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" = no address
	}{
		{"for=10.0.0.1", "10.0.0.1"},
		{`for="[2001:db8::1]"`, "2001:db8::1"},
		{`for="[2001:db8::1]:4711"`, "2001:db8::1"},
		{"for=10.0.0.1:5555;proto=https", "10.0.0.1"},
		{"proto=http; For=192.0.2.60, for=198.51.100.17", "192.0.2.60"},
		{"for=_hidden", ""},
		{"for=unknown", ""},
		{"by=10.0.0.1", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, ok := parseForwardedFor(tt.in)
		if (tt.want == "") == ok || (ok && got.String() != tt.want) {
			t.Errorf("parseForwardedFor(%q) = %v, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
	for _, a := range []string{"10.1.2.3", "2001:db8::7", "::ffff:10.9.9.9"} {
		addr := netip.MustParseAddr(a)
		got, ok := parseForwardedFor(forwardedFor(addr))
		if !ok || got != addr.Unmap() {
			t.Errorf("round trip of %s via %q = %v", a, forwardedFor(addr), got)
		}
	}
}

func TestTraceParent(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", true},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", true},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", false},
		{"garbage", false},
	}
	for _, tt := range tests {
		if got := validTraceParent(tt.in); got != tt.want {
			t.Errorf("validTraceParent(%q) = %v", tt.in, got)
		}
	}
	a, b := NewTraceParent(), NewTraceParent()
	if !validTraceParent(a) || a == b {
		t.Errorf("NewTraceParent: %q, %q", a, b)
	}
	// An invalid traceparent is replaced rather than forwarded.
	h := http.Header{}
	Meta{TraceParent: "bogus"}.write(h)
	if tp := h.Get("traceparent"); !validTraceParent(tp) {
		t.Errorf("written traceparent %q", tp)
	}
	if m := readMeta(http.Header{"Traceparent": {"bogus"}}); m.TraceParent != "" {
		t.Errorf("read invalid traceparent as %q", m.TraceParent)
	}
}

func TestBaggage(t *testing.T) {
	b := Baggage{ClusterID: "c1", Namespace: "ns", WorkloadType: "daemonset", WorkloadName: "ds", Service: "svc", Revision: "v2"}
	want := "k8s.cluster.name=c1,k8s.namespace.name=ns,k8s.daemonset.name=ds,service.name=svc,service.version=v2"
	if b.String() != want {
		t.Errorf("String() = %q, want %q", b.String(), want)
	}
	if got := ParseBaggage(want); got != b {
		t.Errorf("ParseBaggage = %+v", got)
	}
	got := ParseBaggage(" k8s.namespace.name = ns ;p=1, other=x,broken")
	if got != (Baggage{Namespace: "ns"}) {
		t.Errorf("ParseBaggage with noise = %+v", got)
	}
	if (Baggage{}).String() != "" {
		t.Error("empty baggage renders members")
	}
}

func TestTrustDomain(t *testing.T) {
	tests := []struct{ in, want string }{
		{"spiffe://cluster.local/ns/a/sa/b", "cluster.local"},
		{"spiffe://Example.ORG/x", "example.org"},
		{"https://cluster.local/ns/a", ""},
		{"spiffe:///ns/a", ""},
		{"spiffe://td:8080/x", ""},
	}
	for _, tt := range tests {
		got, err := TrustDomain(tt.in)
		if (err != nil) != (tt.want == "") || got != tt.want {
			t.Errorf("TrustDomain(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}
