package upstream

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// socketMark reads SO_MARK back from a dialed connection.
func socketMark(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var mark int
	var gerr error
	if err := rc.Control(func(fd uintptr) { mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return mark
}

// TestClusterDialMarksSockets: a cluster's upstream sockets carry the
// Manager's mark (what capture rules exclude), and none when it is 0. Both
// the cluster dialer and DialControl for foreign dialers apply it.
func TestClusterDialMarksSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		// SO_MARK needs CAP_NET_ADMIN; the unprivileged path is
		// TestMarkFailureLoggedOnce.
		if os.Getenv("CI") == "true" {
			t.Fatal("needs CAP_NET_ADMIN (root) to set SO_MARK")
		}
		t.Skip("needs CAP_NET_ADMIN (root) to set SO_MARK")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["c"] = &state.Cluster{Name: "c", Type: state.ClusterStatic, LoadAssignment: cla("c", ln.Addr().String())}
		return true
	})
	for _, tc := range []struct {
		name string
		mark uint32
	}{
		{"off", 0},
		{"istio mark", 0x539},
		{"other mark", 0x2a},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.SetMark(tc.mark)
			c, err := m.Cluster("c").Dial(context.Background(), &lb.Host{Address: ln.Addr().String()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := socketMark(t, c); got != int(tc.mark) {
				t.Errorf("cluster dial: SO_MARK %#x, want %#x", got, tc.mark)
			}
			d := net.Dialer{Control: m.DialControl()}
			c2, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c2.Close()
			if got := socketMark(t, c2); got != int(tc.mark) {
				t.Errorf("DialControl: SO_MARK %#x, want %#x", got, tc.mark)
			}
		})
	}
}

// TestMarkControl: the stand-alone Control marks like the Manager's, and
// mark 0 means no Control at all.
func TestMarkControl(t *testing.T) {
	if MarkControl(0, nil) != nil {
		t.Fatal("mark 0 must return no Control")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs CAP_NET_ADMIN (root) to set SO_MARK")
		}
		t.Skip("needs CAP_NET_ADMIN (root) to set SO_MARK")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: MarkControl(0x539, nil)}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := socketMark(t, c); got != 0x539 {
		t.Fatalf("SO_MARK %#x, want 0x539", got)
	}
}

// badRawConn hands Control an invalid descriptor, so setting the mark fails
// the way it does without CAP_NET_ADMIN.
type badRawConn struct{}

func (badRawConn) Control(f func(uintptr)) error  { f(^uintptr(0)); return nil }
func (badRawConn) Read(func(uintptr) bool) error  { return nil }
func (badRawConn) Write(func(uintptr) bool) error { return nil }

var _ syscall.RawConn = badRawConn{}

// TestMarkFailureLoggedOnce: a mark that cannot be set never fails the dial
// and is logged once, not per connection.
func TestMarkFailureLoggedOnce(t *testing.T) {
	var buf bytes.Buffer
	s := &markState{log: slog.New(slog.NewTextHandler(&buf, nil))}
	s.mark.Store(0x539)
	for range 3 {
		if err := s.control("tcp4", "127.0.0.1:1", badRawConn{}); err != nil {
			t.Fatalf("control failed the dial: %v", err)
		}
	}
	if n := strings.Count(buf.String(), "cannot mark upstream sockets"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, buf.String())
	}
	s.mark.Store(0)
	var clean bytes.Buffer
	s2 := &markState{log: slog.New(slog.NewTextHandler(&clean, nil))}
	if err := s2.control("tcp4", "", badRawConn{}); err != nil || clean.Len() != 0 {
		t.Fatalf("mark 0 must not touch the socket: err %v, log %q", err, clean.String())
	}
}
