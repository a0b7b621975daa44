package inpod

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/capture"
)

// openConn is a connection opened before the pod was added, with the
// server's greeting read.
type openConn struct {
	c net.Conn
	r *bufio.Reader
}

func open(t *testing.T, c net.Conn, got string) *openConn {
	t.Helper()
	if c == nil || !strings.HasPrefix(got, "saw ") {
		t.Fatalf("open: %q", got)
	}
	return &openConn{c: c, r: bufio.NewReader(c)}
}

// ping sends a line and reads its echo.
func (o *openConn) ping(msg string) string {
	_ = o.c.SetDeadline(time.Now().Add(3 * time.Second))
	defer o.c.SetDeadline(time.Time{})
	if _, err := o.c.Write([]byte(msg + "\n")); err != nil {
		return "write: " + err.Error()
	}
	line, err := o.r.ReadString('\n')
	if err != nil {
		return "read: " + err.Error()
	}
	return strings.TrimSpace(line)
}

// TestPodAddKeepsOpenConnections: connections a pod already had when the
// agent adds it keep working, both ways. Capture redirects only SYNs, so a
// connection conntrack first sees mid-stream (it predates the rules) is
// neither NATed to 15001/15006 nor TPROXY-diverted, either of which would
// reset or drop it; the next new connections are captured.
func TestPodAddKeepsOpenConnections(t *testing.T) {
	for _, tc := range []struct {
		backend string
		inbound capture.InboundMode
	}{
		{capture.BackendIPTables, capture.InboundRedirect},
		{capture.BackendNFTables, capture.InboundRedirect},
		{capture.BackendIPTables, capture.InboundTProxy},
		{capture.BackendNFTables, capture.InboundTProxy},
	} {
		name := tc.backend + map[capture.InboundMode]string{capture.InboundRedirect: "", capture.InboundTProxy: "/tproxy"}[tc.inbound]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			requireRoot(t, "ip", "iptables", "nft")
			_, pod, _, peer := podAndPeer(t)
			serveIn(t, peer, "10.66.0.3:80")
			serveIn(t, pod, "10.66.0.2:8080")

			got, _, c := dialFrom(t, pod, "10.66.0.3:80")
			out := open(t, c, got)
			got, _, c = dialFrom(t, peer, "10.66.0.2:8080")
			in := open(t, c, got)
			if e := out.ping("before"); e != "before" {
				t.Fatalf("outbound before add: %q", e)
			}
			if e := in.ping("before"); e != "before" {
				t.Fatalf("inbound before add: %q", e)
			}

			srv, cl := startServer(t, tc.backend, tc.inbound)
			if err := cl.Add("pod-uid", WorkloadInfo{Name: "p", Namespace: "ns"}, pod); err != nil {
				t.Fatalf("add: %v", err)
			}
			// Several round trips: each direction's packets are seen by
			// the new rules mid-stream.
			for i, msg := range []string{"after-1", "after-2", "after-3"} {
				if e := out.ping(msg); e != msg {
					t.Fatalf("outbound connection from before the add, round %d: %q", i, e)
				}
				if e := in.ping(msg); e != msg {
					t.Fatalf("inbound connection from before the add, round %d: %q", i, e)
				}
			}
			// New connections are captured.
			got, local, _ := dialFrom(t, pod, "10.66.0.3:80")
			if !strings.HasPrefix(got, "saw 10.66.0.2:") || got == "saw "+local {
				t.Fatalf("new outbound: %q from %s, want the proxy's socket", got, local)
			}
			if got, _, _ := dialFrom(t, peer, "10.66.0.2:8080"); !strings.HasPrefix(got, "saw 10.66.0.3:") {
				t.Fatalf("new inbound: %q", got)
			}
			if st := srv.Pods(); len(st) != 1 || st[0].Outbound != 1 || st[0].Inbound != 1 {
				t.Fatalf("pod status %+v: want exactly the two new connections through the proxy", st)
			}
		})
	}
}
