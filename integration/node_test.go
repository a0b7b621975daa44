package integration

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/node"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
	"github.com/meshlet/meshlet/xds/workloadtest"
)

// ambientNode is one node of the node-mode test: its own store fed over
// delta xDS, its node proxy, and an HBONE server per local HBONE workload
// (the in-pod layout, here on loopback addresses instead of netns).
type ambientNode struct {
	name    string
	store   *state.Store
	proxy   *node.Proxy
	servers map[string]*hbone.Server // by workload uid
}

// ambientMesh is what the nodes share: the control plane, the CA and
// where each workload's HBONE server listens.
type ambientMesh struct {
	t   *testing.T
	cp  *workloadtest.Server
	ca  *identity.CA
	mu  sync.Mutex
	hb  map[string]netip.AddrPort
	ctx context.Context
}

func (m *ambientMesh) tunnelAddr(w *state.Workload) (netip.AddrPort, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.hb[w.UID]; ok {
		return a, nil
	}
	return netip.AddrPort{}, errors.New("no HBONE server for " + w.UID)
}

func (m *ambientMesh) startNode(name string) *ambientNode {
	t := m.t
	t.Helper()
	n := &ambientNode{name: name, store: state.NewStore(), servers: map[string]*hbone.Server{}}
	c := xds.New(xds.Config{Address: m.cp.Addr, Store: n.store,
		Node:    xds.Node{ID: "ztunnel~127.0.0.1~" + name + ".istio-system~istio-system.svc.cluster.local"},
		Backoff: xds.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}})
	ctx, cancel := context.WithCancel(m.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("node %s: xDS not ready", name)
	}
	ids := node.NewCAIdentities(m.ca, time.Hour)
	t.Cleanup(func() { ids.Close() })
	n.proxy = &node.Proxy{Store: n.store, NodeName: name, Identities: ids, TunnelAddr: m.tunnelAddr, ConnectTimeout: 5 * time.Second}
	t.Cleanup(func() { n.proxy.Close() })
	for _, w := range n.store.Load().Ambient.Workloads {
		if w.Node != name || w.Tunnel != state.TunnelHBONE {
			continue
		}
		srv, err := n.proxy.InboundServer(ctx, w)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", netip.AddrPortFrom(w.Addresses[0], 0).String())
		if err != nil {
			t.Fatal(err)
		}
		m.mu.Lock()
		m.hb[w.UID] = netip.MustParseAddrPort(ln.Addr().String())
		m.mu.Unlock()
		n.servers[w.UID] = srv
		sdone := make(chan struct{})
		go func() { defer close(sdone); _ = srv.Serve(ln) }()
		t.Cleanup(func() { srv.Close(); <-sdone })
	}
	return n
}

// captured stands in for the capture listener of workload src: each
// accepted connection is proxied as if src had dialed origDst.
func (n *ambientNode) captured(t *testing.T, srcUID string, origDst netip.AddrPort) string {
	t.Helper()
	src := n.proxy.Workload(srcUID)
	if src == nil {
		t.Fatalf("node %s: no workload %s", n.name, srcUID)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); _ = n.proxy.HandleOutbound(context.Background(), c, src, origDst) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// nodeBackend serves "name:" + request on ip, closing after the answer.
func nodeBackend(t *testing.T, ip, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte(name+":"), b...))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

func nodeCall(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	_ = c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestNodeModeWorkloadAPI: workloads, a service and a DENY policy pushed
// over delta xDS with our Istio protos to two node proxies; a same-node
// and a cross-node call (by pod IP and by service VIP) go over HBONE, a
// workload without HBONE is dialed directly, and a denied identity is
// refused by the destination node.
func TestNodeModeWorkloadAPI(t *testing.T) {
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

	bAddr := nodeBackend(t, "127.0.0.52", "b")
	cAddr := nodeBackend(t, "127.0.0.53", "c")
	dAddr := nodeBackend(t, "127.0.0.54", "d")
	csvc := workloadtest.Service("csvc", "default", "127.0.0.250", 80, uint32(cAddr.Port()))
	c := workloadtest.Workload("c", "default", "c", "node-2", "127.0.0.53", true)
	c.Services = map[string]*workloadpb.PortList{csvc.GetNamespace() + "/" + csvc.GetHostname(): {}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cp.SetWorkloads(
		workloadtest.Workload("a", "default", "a", "node-1", "127.0.0.51", true),
		workloadtest.Workload("b", "default", "b", "node-1", "127.0.0.52", true),
		c,
		workloadtest.Workload("d", "default", "d", "node-2", "127.0.0.54", false),
		workloadtest.Workload("e", "default", "e", "node-1", "127.0.0.55", true),
	))
	must(cp.SetServices(csvc))
	must(cp.SetPolicies(workloadtest.DenyPrincipal("deny-e", "default", "cluster.local/ns/default/sa/e")))

	n1 := m.startNode("node-1")
	n2 := m.startNode("node-2")

	cases := []struct {
		name    string
		from    *ambientNode
		src     string
		dst     netip.AddrPort
		msg     string
		want    string
		server  *hbone.Server // the HBONE server that must carry it; nil: none
		refused bool
	}{
		{"same node over HBONE", n1, "a", bAddr, "same", "b:same", n1.servers["b"], false},
		{"cross node by VIP over HBONE", n1, "a", netip.MustParseAddrPort("127.0.0.250:80"), "vip", "c:vip", n2.servers["c"], false},
		{"cross node by pod IP over HBONE", n1, "a", cAddr, "pod", "c:pod", n2.servers["c"], false},
		{"direct to non-HBONE workload", n1, "a", dAddr, "direct", "d:direct", nil, false},
		{"DENY enforced at destination", n1, "e", cAddr, "x", "", n2.servers["c"], true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var before, beforeOK int64
			if tc.server != nil {
				before, beforeOK = tc.server.Stats().Streams.Load(), tc.server.Stats().StreamsConnected.Load()
			}
			got, err := nodeCall(tc.from.captured(t, tc.src, tc.dst), tc.msg)
			if tc.refused {
				if got != "" {
					t.Fatalf("denied call answered %q", got)
				}
			} else if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
			if tc.server == nil {
				return
			}
			streams, ok := tc.server.Stats().Streams.Load()-before, tc.server.Stats().StreamsConnected.Load()-beforeOK
			if streams != 1 {
				t.Errorf("HBONE streams at the destination = %d, want 1", streams)
			}
			if wantOK := map[bool]int64{true: 0, false: 1}[tc.refused]; ok != wantOK {
				t.Errorf("HBONE streams connected = %d, want %d", ok, wantOK)
			}
		})
	}
	if n1.proxy.HBONE.Handshakes() == 0 {
		t.Error("node-1 made no mTLS handshake")
	}
	if n2.proxy.Stats().InboundDenied.Load() != 1 {
		t.Errorf("node-2 denied %d, want 1", n2.proxy.Stats().InboundDenied.Load())
	}

	// Policies follow xDS: once the DENY is withdrawn e gets through.
	must(cp.RemovePolicies("default/deny-e"))
	deadline := time.Now().Add(5 * time.Second)
	for len(n2.store.Load().Ambient.Policies) != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got, err := nodeCall(n1.captured(t, "e", cAddr), "now"); err != nil || got != "c:now" {
		t.Fatalf("after DENY removal: %q %v", got, err)
	}
}
