package main

import (
	"net"
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/telemetry"
	"github.com/meshlet/meshlet/xds"
)

func TestHBONEAllowList(t *testing.T) {
	tests := []struct {
		list   string
		target string
		want   bool
	}{
		{"", "127.0.0.1:8080", true},
		{"", "[::1]:80", true},
		{"", "10.0.0.5:80", false},
		{"10.0.0.0/24", "10.0.0.5:80", true},
		{"10.0.0.0/24", "10.0.1.5:80", false},
		{"10.0.0.5", "10.0.0.5:9999", true},
		{"10.0.0.5:80, 10.0.0.6:81", "10.0.0.5:80", true},
		{"10.0.0.5:80", "10.0.0.5:81", false},
		{"10.0.0.5:80", "127.0.0.1:80", false},
	}
	for _, tt := range tests {
		a, err := parseAllowList(tt.list)
		if err != nil {
			t.Fatalf("%q: %v", tt.list, err)
		}
		if got := a.allows(netip.MustParseAddrPort(tt.target)); got != tt.want {
			t.Errorf("allow %q, target %s = %v, want %v", tt.list, tt.target, got, tt.want)
		}
	}
	for _, bad := range []string{"example.com", "10.0.0.0/33", "10.0.0.5:"} {
		if _, err := parseAllowList(bad); err == nil {
			t.Errorf("parseAllowList(%q) accepted", bad)
		}
	}
}

func TestHBONEFlagsNeedIdentity(t *testing.T) {
	o := &hboneOptions{Inbound: "127.0.0.1:0"}
	if !o.enabled() {
		t.Fatal("--hbone-inbound alone should enable HBONE")
	}
	if _, err := startHBONE(o, nil, nil, hboneEnv{}, nil); err == nil {
		t.Fatal("started without certificate files")
	}
	if (*hboneOptions)(nil).enabled() {
		t.Fatal("nil options enabled")
	}
}

// recordSink keeps the TCP records it is given.
type recordSink struct {
	opened, done []telemetry.TCPRecord
}

func (s *recordSink) HTTPDone(*telemetry.HTTPRecord) {}
func (s *recordSink) TCPDone(r *telemetry.TCPRecord) { s.done = append(s.done, *r) }
func (s *recordSink) TCPOpened(r *telemetry.TCPRecord) {
	s.opened = append(s.opened, *r)
}

// TestHBONEInboundTelemetrySource: a delivered tunnel is recorded with the
// forwarded client as its downstream address and the tunnel peer as its
// principal; without forwarded the tunnel peer's address is reported.
func TestHBONEInboundTelemetrySource(t *testing.T) {
	tests := []struct {
		name      string
		forwarded string
		want      netip.AddrPort
	}{
		{"forwarded for", "10.1.2.3", netip.MustParseAddrPort("10.1.2.3:0")},
		{"no forwarded", "", netip.MustParseAddrPort("127.0.0.9:4444")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := &recordSink{}
			done := hboneEnv{Sink: sink}.streamDone(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15008})
			r := &hbone.Request{
				Target:     netip.MustParseAddrPort("127.0.0.1:8080"),
				Peer:       hbone.Peer{ID: "spiffe://cluster.local/ns/default/sa/client"},
				RemoteAddr: "127.0.0.9:4444",
			}
			if tt.forwarded != "" {
				r.Meta.ForwardedFor = netip.MustParseAddr(tt.forwarded)
			}
			done(r, hbone.StreamStats{Received: 5, Sent: 7})
			if len(sink.done) != 1 || len(sink.opened) != 1 {
				t.Fatalf("records: opened %d done %d, want 1 each", len(sink.opened), len(sink.done))
			}
			rec := sink.done[0]
			if rec.Remote != tt.want || rec.PeerPrincipal != r.Peer.ID || rec.UpstreamHost != "127.0.0.1:8080" ||
				rec.BytesReceived != 5 || rec.BytesSent != 7 || !rec.Connected || rec.Listener != hboneInboundListener {
				t.Fatalf("record = %+v", rec)
			}
		})
	}
}

func TestHBONEBaggageFromNode(t *testing.T) {
	env := hboneEnv{Node: xds.Node{Metadata: map[string]string{
		"CLUSTER_ID": "Kubernetes", "NAMESPACE": "shop", "WORKLOAD_NAME": "cart",
		"CANONICAL_SERVICE": "cart", "CANONICAL_REVISION": "v2",
	}}}
	got := hbone.ParseBaggage(env.baggage())
	want := hbone.Baggage{ClusterID: "Kubernetes", Namespace: "shop", WorkloadType: "deployment", WorkloadName: "cart", Service: "cart", Revision: "v2"}
	if got != want {
		t.Fatalf("baggage = %+v, want %+v", got, want)
	}
	if (hboneEnv{}).baggage() != "" {
		t.Fatal("baggage without node metadata should be empty")
	}
}
