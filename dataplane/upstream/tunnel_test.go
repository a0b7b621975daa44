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
