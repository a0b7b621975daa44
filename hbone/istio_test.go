package hbone

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// istioStore holds Istio's HBONE origination shape as decoded state:
// service cluster "svc" (EDS) whose endpoint dest is an internal address
// of listener connect_originate, tunneling through cluster
// connect_originate (ORIGINAL_DST, port override = the HBONE port).
func istioStore(dest string, hbonePort uint16, san *state.SANMatcher, mod func(*state.Snapshot)) *state.Store {
	st := state.NewStore()
	st.Update(func(s *state.Snapshot) bool {
		s.Clusters["svc"] = &state.Cluster{Name: "svc", Type: state.ClusterEDS, EDSServiceName: "svc",
			HBONE: &state.HBONE{Internal: true, Cluster: "svc"}}
		s.Endpoints["svc"] = &state.ClusterLoadAssignment{ClusterName: "svc", Localities: []state.LocalityEndpoints{{
			Endpoints: []state.Endpoint{
				{Address: dest, Internal: &state.InternalEndpoint{Listener: "connect_originate"}},
			},
		}}}
		s.Listeners["connect_originate"] = &state.Listener{Name: "connect_originate", Internal: &state.InternalListener{
			Cluster: "connect_originate", Hostname: hostnameLocalAddress,
			Headers: []state.TunnelHeader{{Name: "x-origin", Value: "sidecar"}},
		}}
		tls := &state.UpstreamTLS{SDS: state.SDSRef{Certificate: "default", Validation: "ROOTCA", Agent: true}}
		if san != nil {
			tls.SANMatchers = []state.SANMatcher{*san}
		}
		s.Clusters["connect_originate"] = &state.Cluster{Name: "connect_originate", Type: state.ClusterOriginalDst,
			OriginalDstPortOverride: uint32(hbonePort), OriginalDstWaypointKey: true, TLS: tls}
		if mod != nil {
			mod(s)
		}
		return true
	})
	return st
}

func TestIstioShapeDial(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	_, p, _ := net.SplitHostPort(f.addr)
	port, _ := strconv.Atoi(p)
	prefix := func(v string) *state.SANMatcher {
		return &state.SANMatcher{Type: state.SANURI, Match: state.StringMatcher{Kind: state.StringPrefix, Value: v}}
	}
	tests := []struct {
		name    string
		san     *state.SANMatcher
		mod     func(*state.Snapshot)
		target  string
		wantErr error // nil: the echo must work
		anyErr  bool
	}{
		{name: "sidecar to ambient pod", san: prefix("spiffe://cluster.local/ns/default/sa/"), target: echo},
		{name: "no san matchers", target: echo},
		{name: "san rejects the server", san: prefix("spiffe://cluster.local/ns/other/"), target: echo, wantErr: ErrIdentityMismatch},
		{name: "internal listener missing", target: echo, wantErr: ErrNotTunneled,
			mod: func(s *state.Snapshot) { delete(s.Listeners, "connect_originate") }},
		{name: "tunnel cluster without tls", target: echo, wantErr: ErrNotTunneled,
			mod: func(s *state.Snapshot) {
				c := *s.Clusters["connect_originate"]
				c.TLS = nil
				s.Clusters["connect_originate"] = &c
			}},
		{name: "waypoint overrides the tunnel address", target: echo, anyErr: true,
			// The waypoint IP has nothing on the HBONE port: the dial
			// must go there rather than to the destination.
			mod: func(s *state.Snapshot) {
				cla := *s.Endpoints["svc"]
				eps := []state.Endpoint{cla.Localities[0].Endpoints[0]}
				eps[0].Internal = &state.InternalEndpoint{Listener: "connect_originate", Waypoint: "127.0.0.2"}
				cla.Localities = []state.LocalityEndpoints{{Endpoints: eps}}
				s.Endpoints["svc"] = &cla
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.client(t, clientID)
			store := istioStore(tt.target, uint16(port), tt.san, tt.mod)
			ct := &ClusterTunnel{Client: c, Src: "unused", Store: store, Local: f.ca.source(t, clientID)}
			conn, err := ct.DialTunnel(ctx(t), store.Load().Clusters["svc"].HBONE, tt.target)
			if tt.wantErr != nil || tt.anyErr {
				if err == nil {
					conn.Close()
					t.Fatal("dial succeeded")
				}
				if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 4)
			if _, err := io.ReadFull(conn, b); err != nil || string(b) != "ping" {
				t.Fatalf("echo %q, %v", b, err)
			}
			f.mu.Lock()
			r := f.lastReq
			f.mu.Unlock()
			if r.Target.String() != tt.target || r.Peer.ID != clientID {
				t.Fatalf("server saw target %s peer %s", r.Target, r.Peer.ID)
			}
		})
	}
}

// An endpoint of a tunneled cluster that is not an internal address (a
// cluster mixing sidecar and ambient endpoints) is dialed directly.
func TestIstioShapeDirectEndpoint(t *testing.T) {
	echo := startEcho(t)
	store := istioStore("127.0.0.1:1", 1, nil, func(s *state.Snapshot) {
		s.Endpoints["svc"] = &state.ClusterLoadAssignment{ClusterName: "svc", Localities: []state.LocalityEndpoints{{
			Endpoints: []state.Endpoint{{Address: echo}},
		}}}
	})
	ct := &ClusterTunnel{Client: &Client{}, Store: store}
	defer ct.Client.Close()
	conn, err := ct.DialTunnel(ctx(t), store.Load().Clusters["svc"].HBONE, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, ok := conn.(*net.TCPConn); !ok {
		t.Fatalf("conn is %T, want a direct TCP connection", conn)
	}
}

// TestClusterTunnelMeta: what the data plane attaches to the dial context
// reaches the server as forwarded/baggage/traceparent, and the server's
// Request.Source reports the forwarded client.
func TestClusterTunnelMeta(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	tp := NewTraceParent()
	type ctxKey struct{}
	ct := &ClusterTunnel{Client: f.client(t, clientID), Src: clientID,
		Meta: func(ctx context.Context) Meta {
			m := Meta{Baggage: Baggage{Namespace: "default", Service: "client"}.String()}
			if src, ok := ctx.Value(ctxKey{}).(netip.Addr); ok {
				m.ForwardedFor, m.TraceParent = src, tp
			}
			return m
		}}
	dctx := context.WithValue(ctx(t), ctxKey{}, netip.MustParseAddr("10.9.8.7"))
	conn, err := ct.DialTunnel(dctx, &state.HBONE{Address: f.addr}, echo)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	f.mu.Lock()
	r := f.lastReq
	f.mu.Unlock()
	if r.Meta.ForwardedFor != netip.MustParseAddr("10.9.8.7") || r.Source() != r.Meta.ForwardedFor {
		t.Errorf("forwarded %v, source %v; want 10.9.8.7", r.Meta.ForwardedFor, r.Source())
	}
	if r.Meta.TraceParent != tp {
		t.Errorf("traceparent %q, want the downstream's %q", r.Meta.TraceParent, tp)
	}
	if b := ParseBaggage(r.Meta.Baggage); b.Namespace != "default" || b.Service != "client" {
		t.Errorf("baggage %+v", b)
	}
	// Without forwarded the source is the tunnel peer.
	r2 := &Request{RemoteAddr: "127.0.0.1:4000"}
	if r2.Source() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("Source without forwarded = %v", r2.Source())
	}
}
