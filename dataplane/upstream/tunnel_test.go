package upstream

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

type recordingTunnel struct {
	cfg    *state.HBONE
	target string
}

var errTunnelUsed = errors.New("tunnel used")

func (r *recordingTunnel) DialTunnel(_ context.Context, cfg *state.HBONE, target string) (net.Conn, error) {
	r.cfg, r.target = cfg, target
	return nil, errTunnelUsed
}

func TestHBONEClusterDialsThroughTunnel(t *testing.T) {
	store := state.NewStore()
	m := NewManager(store, nilLogger())
	defer m.Close()
	hb := &state.HBONE{Identity: "spiffe://cluster.local/ns/a/sa/b"}
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["tunneled"] = &state.Cluster{Name: "tunneled", HBONE: hb}
		return true
	})
	c := m.Cluster("tunneled")
	host := &lb.Host{Address: "10.0.0.7:8080"}

	// Without a dialer the connection fails instead of bypassing the tunnel.
	if _, err := c.Dial(context.Background(), host); err == nil || !strings.Contains(err.Error(), "no tunnel dialer") {
		t.Fatalf("no dialer: err = %v", err)
	}
	rt := &recordingTunnel{}
	m.SetTunnel(rt)
	if _, err := c.Dial(context.Background(), host); !errors.Is(err, errTunnelUsed) {
		t.Fatalf("err = %v, want the tunnel's", err)
	}
	if rt.cfg != hb || rt.target != "10.0.0.7:8080" {
		t.Errorf("tunnel got %+v %q", rt.cfg, rt.target)
	}
}

// TestInternalEndpointWithoutTunnelNeverDialsDirectly: an EDS update with
// envoy_internal_address endpoints that lands before its internal_upstream
// cluster must fail the connect (UF), not reach the address around the
// tunnel; a regular endpoint of the same cluster still dials.
func TestInternalEndpointWithoutTunnelNeverDialsDirectly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		if c, err := plain.Accept(); err == nil {
			c.Close()
		}
	}()

	store := state.NewStore()
	m := NewManager(store, nilLogger())
	defer m.Close()
	m.SetTunnel(&recordingTunnel{}) // present, but the cluster has no HBONE config
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["eds"] = &state.Cluster{Name: "eds", Type: state.ClusterEDS, EDSServiceName: "eds"}
		s.Endpoints["eds"] = &state.ClusterLoadAssignment{ClusterName: "eds", Localities: []state.LocalityEndpoints{{Endpoints: []state.Endpoint{
			{Address: ln.Addr().String(), Weight: 1, Internal: &state.InternalEndpoint{Listener: "connect_originate"}},
			{Address: plain.Addr().String(), Weight: 1},
		}}}}
		return true
	})
	c := m.Cluster("eds")
	_, err = c.Dial(context.Background(), &lb.Host{Address: ln.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "connect_originate") || !strings.Contains(err.Error(), "envoy_internal_address") {
		t.Fatalf("internal endpoint: err = %v, want a connect failure naming the internal listener", err)
	}
	conn, err := c.Dial(context.Background(), &lb.Host{Address: plain.Addr().String()})
	if err != nil {
		t.Fatalf("regular endpoint: %v", err)
	}
	conn.Close()
	select {
	case c := <-accepted:
		c.Close()
		t.Fatal("the internal endpoint's address was dialed directly")
	default:
	}
}
