package node

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
)

// mesh is a test world: one CA, one store, echo backends and per-workload
// HBONE servers on 127.0.0.x.
type mesh struct {
	t     *testing.T
	ca    *identity.CA
	ids   *Cache
	store *state.Store

	mu      sync.Mutex
	tunnels map[string]netip.AddrPort // workload uid -> its HBONE server
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	m := &mesh{t: t, ca: ca, ids: NewCAIdentities(ca, time.Hour), store: state.NewStore(), tunnels: map[string]netip.AddrPort{}}
	t.Cleanup(func() { m.ids.Close() })
	return m
}

func (m *mesh) set(ws []*state.Workload, ss []*state.Service, ps []*state.Authorization) {
	m.store.Update(func(n *state.Snapshot) bool {
		n.Ambient = (*state.Ambient)(nil).Apply(state.AmbientDelta{Workloads: ws, Services: ss, Policies: ps})
		return true
	})
}

func (m *mesh) tunnelAddr(w *state.Workload) (netip.AddrPort, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.tunnels[w.UID]
	if !ok {
		return netip.AddrPort{}, errors.New("no tunnel server for " + w.UID)
	}
	return a, nil
}

// proxy returns a node proxy for node name over the mesh's store.
func (m *mesh) proxy(name string) *Proxy {
	p := &Proxy{Store: m.store, NodeName: name, Identities: m.ids, TunnelAddr: m.tunnelAddr, ConnectTimeout: 5 * time.Second}
	m.t.Cleanup(func() { p.Close() })
	return p
}

// serveInbound starts p's HBONE server for local workload w on w's
// address, as in-pod mode does.
func (m *mesh) serveInbound(p *Proxy, w *state.Workload) {
	m.t.Helper()
	srv, err := p.InboundServer(context.Background(), w)
	if err != nil {
		m.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(w.Addresses[0], 0).String())
	if err != nil {
		m.t.Fatal(err)
	}
	m.mu.Lock()
	m.tunnels[w.UID] = netip.MustParseAddrPort(ln.Addr().String())
	m.mu.Unlock()
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	m.t.Cleanup(func() { srv.Close(); <-done })
}

// echo starts a backend on ip that answers "name:" + what it read, then
// closes; it returns the backend's address.
func echo(t *testing.T, ip, name string) netip.AddrPort {
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
				c.Write(append([]byte(name+":"), b...))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// capture is a stand-in for a capture listener: every connection accepted
// is handed to HandleOutbound as if it came from src and was headed to
// origDst. Errors are reported on errs.
func capture(t *testing.T, p *Proxy, src *state.Workload, origDst netip.AddrPort) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
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
				if err := p.HandleOutbound(context.Background(), c, src, origDst); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.Close(); wg.Wait() })
	return ln.Addr().String(), errs
}

// roundTrip sends msg through addr, half-closes, and returns the answer.
func roundTrip(t *testing.T, addr, msg string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	c.(*net.TCPConn).CloseWrite()
	b, err := io.ReadAll(c)
	return string(b), err
}

func wl(uid, ip, node string, tunnel state.TunnelProtocol) *state.Workload {
	return &state.Workload{
		UID: uid, Name: uid, Namespace: "default", Addresses: []netip.Addr{netip.MustParseAddr(ip)},
		Tunnel: tunnel, TrustDomain: "cluster.local", ServiceAccount: uid, Node: node, Capacity: 1,
	}
}
