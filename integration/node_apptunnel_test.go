package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
	"github.com/meshlet/meshlet/xds/workloadtest"
)

// TestNodeModeAppTunnelPROXY: a workload pushed over delta xDS with
// application_tunnel {protocol: PROXY, port} receives HBONE deliveries on
// that port, each opened by a PROXY v2 header with the client's address,
// the CONNECT target and the client's SPIFFE ID (TLV 0xD0), as ztunnel
// sends to waypoints; a workload without it still gets plain bytes.
func TestNodeModeAppTunnelPROXY(t *testing.T) {
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

	tunnelPort, headers := proxyHeaderBackend(t, "127.0.0.72")
	plainAddr := nodeBackend(t, "127.0.0.73", "plain")
	wp := workloadtest.Workload("wp", "default", "waypoint", "node-2", "127.0.0.72", true)
	wp.ApplicationTunnel = &workloadpb.ApplicationTunnel{Protocol: workloadpb.ApplicationTunnel_PROXY, Port: uint32(tunnelPort)}
	if err := cp.SetWorkloads(
		workloadtest.Workload("a", "default", "a", "node-1", "127.0.0.71", true),
		wp,
		workloadtest.Workload("p", "default", "p", "node-2", "127.0.0.73", true),
	); err != nil {
		t.Fatal(err)
	}
	n1 := m.startNode("node-1")
	n2 := m.startNode("node-2")
	if got := n2.proxy.Workload("wp"); got == nil || got.AppTunnel == nil || got.AppTunnel.Port != tunnelPort {
		t.Fatalf("node-2 decoded application_tunnel as %+v", got)
	}

	// The original destination's port (8080) has no listener: only the
	// tunnel port can answer.
	target := netip.MustParseAddrPort("127.0.0.72:8080")
	got, err := nodeCall(n1.captured(t, "a", target), "hello")
	if err != nil {
		t.Fatal(err)
	}
	if got != "tunnel:hello" {
		t.Fatalf("answer %q, want tunnel:hello", got)
	}
	select {
	case h := <-headers:
		want := fmt.Sprintf("dst=%s id=spiffe://cluster.local/ns/default/sa/a", target)
		if h.err != nil || fmt.Sprintf("dst=%s id=%s", h.dst, h.id) != want || !h.src.Addr().IsLoopback() || h.src.Port() == 0 {
			t.Fatalf("header %+v, want %s from a loopback address", h, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the tunnel port saw no connection")
	}

	if got, err := nodeCall(n1.captured(t, "a", plainAddr), "raw"); err != nil || got != "plain:raw" {
		t.Fatalf("plain workload: %q %v", got, err)
	}
}

type ppSeen struct {
	src, dst netip.AddrPort
	id       string
	err      error
}

// proxyHeaderBackend listens on ip for PROXY v2 connections: it reports
// each header on the channel and answers "tunnel:" + the rest.
func proxyHeaderBackend(t *testing.T, ip string) (uint16, <-chan ppSeen) {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan ppSeen, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			h := readPP2(c)
			select {
			case seen <- h:
			default:
			}
			if h.err == nil {
				b, _ := io.ReadAll(c)
				_, _ = c.Write(append([]byte("tunnel:"), b...))
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return uint16(ln.Addr().(*net.TCPAddr).Port), seen
}

// readPP2 reads an IPv4 TCP PROXY v2 header (the only kind this test
// expects) with its TLVs.
func readPP2(r io.Reader) (h ppSeen) {
	fixed := make([]byte, 16)
	if _, h.err = io.ReadFull(r, fixed); h.err != nil {
		return h
	}
	if string(fixed[:12]) != "\r\n\r\n\x00\r\nQUIT\n" || fixed[12] != 0x21 || fixed[13] != 0x11 {
		h.err = fmt.Errorf("not a v2 PROXY TCP4 header: %x", fixed)
		return h
	}
	body := make([]byte, binary.BigEndian.Uint16(fixed[14:]))
	if _, h.err = io.ReadFull(r, body); h.err != nil {
		return h
	}
	if len(body) < 12 {
		h.err = fmt.Errorf("body of %d bytes", len(body))
		return h
	}
	h.src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:]))
	h.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:]))
	for rest := body[12:]; len(rest) >= 3; {
		n := int(binary.BigEndian.Uint16(rest[1:]))
		if len(rest) < 3+n {
			h.err = fmt.Errorf("truncated TLV 0x%02x", rest[0])
			return h
		}
		if rest[0] == 0xD0 {
			h.id = string(rest[3 : 3+n])
		}
		rest = rest[3+n:]
	}
	return h
}
