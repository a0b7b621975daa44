package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func cla(name string, addrs ...string) *state.ClusterLoadAssignment {
	l := state.LocalityEndpoints{}
	for _, a := range addrs {
		l.Endpoints = append(l.Endpoints, state.Endpoint{Address: a, Weight: 1})
	}
	return &state.ClusterLoadAssignment{ClusterName: name, Localities: []state.LocalityEndpoints{l}}
}

func hostAddrs(c *Cluster) map[string]bool {
	m := map[string]bool{}
	for _, h := range c.LB.Hosts() {
		m[h.Address] = true
	}
	return m
}

type closer struct{ closed atomic.Bool }

func (c *closer) Close() error { c.closed.Store(true); return nil }

// TestManagerFollowsStore: clusters appear with their endpoints, EDS updates
// replace hosts and close the pools of removed hosts, removed clusters go.
func TestManagerFollowsStore(t *testing.T) {
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["static"] = &state.Cluster{Name: "static", Type: state.ClusterStatic, LoadAssignment: cla("static", "127.0.0.1:1")}
		s.Clusters["eds"] = &state.Cluster{Name: "eds", Type: state.ClusterEDS, EDSServiceName: "eds"}
		s.Endpoints["eds"] = cla("eds", "127.0.0.1:2", "127.0.0.1:3")
		return true
	})
	if m.Cluster("missing") != nil {
		t.Fatal("unknown cluster must be nil (NC)")
	}
	if got := hostAddrs(m.Cluster("static")); !got["127.0.0.1:1"] || len(got) != 1 {
		t.Fatalf("static hosts %v", got)
	}
	eds := m.Cluster("eds")
	if got := hostAddrs(eds); len(got) != 2 {
		t.Fatalf("eds hosts %v", got)
	}
	// Give 127.0.0.1:3 a pool, then remove that host over EDS.
	var gone *lb.Host
	for _, h := range eds.LB.Hosts() {
		if h.Address == "127.0.0.1:3" {
			gone = h
		}
	}
	pool := &closer{}
	eds.Endpoint(gone).Pool(PoolHTTP1, func(*Endpoint) io.Closer { return pool })
	store.Update(func(s *state.Snapshot) bool {
		s.Endpoints["eds"] = cla("eds", "127.0.0.1:2")
		return true
	})
	if m.Cluster("eds") != eds {
		t.Fatal("an EDS update must keep the cluster runtime")
	}
	if got := hostAddrs(eds); got["127.0.0.1:3"] || len(got) != 1 {
		t.Fatalf("after EDS update hosts %v", got)
	}
	if !pool.closed.Load() {
		t.Fatal("the removed host's pool was not closed")
	}
	store.Update(func(s *state.Snapshot) bool {
		delete(s.Clusters, "eds")
		return true
	})
	if m.Cluster("eds") != nil {
		t.Fatal("removed cluster still present")
	}
}

// TestEndpointPoolCreatedOnce: concurrent first use creates one pool.
func TestEndpointPoolCreatedOnce(t *testing.T) {
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["c"] = &state.Cluster{Name: "c", LoadAssignment: cla("c", "127.0.0.1:1")}
		return true
	})
	c := m.Cluster("c")
	h, err := c.Pick(&lb.PickInfo{})
	if err != nil {
		t.Fatal(err)
	}
	var made atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Endpoint(h).Pool(PoolHTTP2, func(*Endpoint) io.Closer { made.Add(1); return &closer{} })
		}()
	}
	wg.Wait()
	if made.Load() != 1 {
		t.Fatalf("pool made %d times, want 1", made.Load())
	}
}

// TestDialConnectTimeout: a dial that cannot complete fails within the
// cluster's connect_timeout.
func TestDialConnectTimeout(t *testing.T) {
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	// 192.0.2.0/24 (TEST-NET-1) is never routed; with no route the dial
	// fails fast, with a blackhole it times out: both must be < timeout+slack.
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["c"] = &state.Cluster{Name: "c", ConnectTimeout: 200 * time.Millisecond, LoadAssignment: cla("c", "192.0.2.1:9")}
		return true
	})
	c := m.Cluster("c")
	h, _ := c.Pick(&lb.PickInfo{})
	start := time.Now()
	conn, err := c.Dial(context.Background(), h)
	if err == nil {
		conn.Close()
		t.Fatal("dial to TEST-NET-1 succeeded")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("dial took %v with connect_timeout 200ms", el)
	}
	// And a real listener connects.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["c"] = &state.Cluster{Name: "c", LoadAssignment: cla("c", lis.Addr().String())}
		return true
	})
	h, _ = m.Cluster("c").Pick(&lb.PickInfo{})
	conn, err = m.Cluster("c").Dial(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

// TestDNSClusters: STRICT_DNS keeps every address, LOGICAL_DNS the first;
// a failed re-resolution keeps the last good hosts.
func TestDNSClusters(t *testing.T) {
	var fail atomic.Bool
	var mu sync.Mutex
	answers := map[string][]netip.Addr{
		"svc.test": {netip.MustParseAddr("127.0.0.10"), netip.MustParseAddr("127.0.0.11")},
	}
	old := lookupHost
	lookupHost = func(_ context.Context, _ string, host string) ([]netip.Addr, error) {
		if fail.Load() {
			return nil, errors.New("servfail")
		}
		mu.Lock()
		defer mu.Unlock()
		return answers[host], nil
	}
	defer func() { lookupHost = old }()

	dnsCLA := &state.ClusterLoadAssignment{ClusterName: "d", Localities: []state.LocalityEndpoints{{
		Endpoints: []state.Endpoint{{Hostname: "svc.test", Port: 8080, Weight: 1}},
	}}}
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["strict"] = &state.Cluster{Name: "strict", Type: state.ClusterStrictDNS, DNSRefreshRate: 20 * time.Millisecond, LoadAssignment: dnsCLA}
		s.Clusters["logical"] = &state.Cluster{Name: "logical", Type: state.ClusterLogicalDNS, DNSRefreshRate: 20 * time.Millisecond, LoadAssignment: dnsCLA}
		return true
	})
	waitHosts := func(name string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			got := hostAddrs(m.Cluster(name))
			ok := len(got) == len(want)
			for _, w := range want {
				ok = ok && got[w]
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s hosts %v, want %v", name, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitHosts("strict", "127.0.0.10:8080", "127.0.0.11:8080")
	waitHosts("logical", "127.0.0.10:8080")

	mu.Lock()
	answers["svc.test"] = []netip.Addr{netip.MustParseAddr("127.0.0.12")}
	mu.Unlock()
	waitHosts("strict", "127.0.0.12:8080")

	fail.Store(true)
	time.Sleep(100 * time.Millisecond) // several failed refreshes
	waitHosts("strict", "127.0.0.12:8080")
}
