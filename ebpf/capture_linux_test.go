package ebpf

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/meshlet/meshlet/internal/cgrouptest"
)

// clientEnv makes the test binary an unmodified TCP client: it dials the
// address, then prints the peer address the kernel reports (getpeername)
// and the line the server sent.
const clientEnv = "MESHLET_EBPF_DIAL"

// markEnv makes that client set SO_MARK 0x539 on its socket first.
const markEnv = "MESHLET_EBPF_MARK"

func TestMain(m *testing.M) {
	if addr := os.Getenv(clientEnv); addr != "" {
		os.Exit(dialClient(addr))
	}
	if os.Getenv(pairEnv) != "" {
		os.Exit(pingPong())
	}
	// The client must be executable by uid 1000: go test's build
	// directory is not.
	dir, err := os.MkdirTemp("", "meshlet-ebpf")
	if err == nil {
		clientExe = filepath.Join(dir, "client")
		err = copyExe(os.Args[0], clientExe)
		_ = os.Chmod(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "client copy:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var clientExe string

func copyExe(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

func dialClient(addr string) int {
	d := net.Dialer{Timeout: 2 * time.Second}
	if os.Getenv(markEnv) != "" {
		// The proxy's own upstream sockets carry this mark.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, 0x539) })
			return errors.Join(err, serr)
		}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		fmt.Println("dial error:", err)
		return 1
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("read error:", err)
		return 1
	}
	fmt.Printf("%s %s", c.RemoteAddr(), line)
	return 0
}

// pairEnv makes the test binary connect to itself over loopback, exchange
// messages with read/write loops, print "ready" and hold the pair open
// until stdin closes.
const pairEnv = "MESHLET_EBPF_PAIR"

func pingPong() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return 1
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return 1
	}
	s, err := ln.Accept()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("ping over the fast path\n")
	buf := make([]byte, len(msg))
	for i := range 100 {
		from, to := c, s
		if i%2 == 1 {
			from, to = s, c
		}
		if _, err := from.Write(msg); err != nil {
			fmt.Println("write:", err)
			return 1
		}
		if _, err := io.ReadFull(to, buf); err != nil || string(buf) != string(msg) {
			fmt.Printf("read %d: %q %v\n", i, buf, err)
			return 1
		}
	}
	fmt.Printf("ready %s %s\n", c.LocalAddr(), c.RemoteAddr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// testNetns is a network namespace of the test's own, with lo up holding
// 10.99.0.1 and fd00::1.
type testNetns struct {
	path string
}

func newTestNetns(t *testing.T) *testNetns {
	t.Helper()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	name := "mebp" + hex.EncodeToString(b)
	for _, args := range [][]string{
		{"ip", "netns", "add", name},
		{"ip", "-n", name, "link", "set", "lo", "up"},
		{"ip", "-n", name, "addr", "add", "10.99.0.1/32", "dev", "lo"},
		{"ip", "-n", name, "addr", "add", "fd00::1/128", "dev", "lo", "nodad"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		if args[2] == "add" {
			t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
		}
	}
	return &testNetns{path: filepath.Join("/var/run/netns", name)}
}

// do runs fn on a thread inside the namespace; the thread dies with it.
func (n *testNetns) do(fn func() error) error {
	f, err := os.Open(n.path)
	if err != nil {
		return err
	}
	defer f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// serve answers every connection on addr inside n with a line made by
// answer.
func (n *testNetns) serve(t *testing.T, addr string, answer func(c *net.TCPConn) string) {
	t.Helper()
	var ln net.Listener
	if err := n.do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = io.WriteString(c, answer(c.(*net.TCPConn))+"\n")
			c.Close()
		}
	}()
}

// dial runs the client in cgroup and namespace as uid; uid 0 marks its
// socket 0x539 (SO_MARK needs CAP_NET_ADMIN).
func (n *testNetns) dial(t *testing.T, cgroup string, uid uint32, addr string) string {
	t.Helper()
	var out []byte
	_ = n.do(func() error {
		cmd := exec.Command(clientExe, "-test.run=^$")
		cmd.Env = append(os.Environ(), clientEnv+"="+addr)
		if uid == 0 {
			cmd.Env = append(cmd.Env, markEnv+"=1")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		release := cgrouptest.InCgroup(t, cmd, cgroup)
		var err error
		out, err = cmd.CombinedOutput()
		release()
		if err != nil {
			out = fmt.Appendf(out, " (%v)", err)
		}
		return nil
	})
	return strings.TrimSpace(string(out))
}

func requireSupport(t *testing.T) {
	t.Helper()
	cgrouptest.Require(t)
	cgrouptest.Feature(t, Supported(), ErrNotSupported)
}

const testPort = 15001

// TestCapture attaches the programs to a test cgroup and runs unmodified
// clients inside it: a TCP connect to another address goes to the proxy
// port with its original destination found by the proxy and shown to the
// client by getpeername; excluded ports and the proxy's own uid go
// direct; a crashed owner's pins keep the capture until Unpin, after
// which nothing is attached.
func TestCapture(t *testing.T) {
	requireSupport(t)
	mnt := cgrouptest.Mount(t)
	app := cgrouptest.NewCgroup(t, mnt.Cgroup, "app")
	ns := newTestNetns(t)

	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := spec.Load(Config{
		OutboundPort: testPort, ProxyUID: 1337, ProxyGID: 1337, ProxyMark: 0x539,
		ExcludePorts: []uint16{81},
		ExcludeCIDRs: []netip.Prefix{netip.MustParsePrefix("10.99.0.2/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			objs.Close()
		}
	})

	// The proxy reports what the map says about each accepted connection.
	// objsMu orders the lookups with the simulated crash's Close below (a
	// lookup on a map being closed is a data race inside cilium/ebpf).
	var objsMu sync.Mutex
	proxy := func(c *net.TCPConn) string {
		objsMu.Lock()
		defer objsMu.Unlock()
		if closed {
			return "proxy ? closed"
		}
		od, ok, err := objs.OriginalDst(c)
		if err != nil || !ok {
			return fmt.Sprintf("proxy ? %v %v", ok, err)
		}
		return "proxy " + od.String()
	}
	ns.serve(t, fmt.Sprintf("127.0.0.1:%d", testPort), proxy)
	ns.serve(t, fmt.Sprintf("[::1]:%d", testPort), proxy)
	ns.serve(t, "10.99.0.1:81", func(*net.TCPConn) string { return "direct81" })
	ns.serve(t, "10.99.0.1:82", func(*net.TCPConn) string { return "direct82" })

	if err := objs.Attach(app, ""); err != nil {
		t.Fatal(err)
	}
	pins := filepath.Join(mnt.BPFFS, "meshlet", "test")
	if err := os.MkdirAll(filepath.Dir(pins), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := objs.Pin(pins); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		uid  uint32
		addr string
		want string
	}{
		{"captured v4", 1000, "10.99.0.1:82", "10.99.0.1:82 proxy 10.99.0.1:82"},
		{"captured v6", 1000, "[fd00::1]:82", "[fd00::1]:82 proxy [fd00::1]:82"},
		{"v4-mapped on a v6 socket", 1000, "[::ffff:10.99.0.1]:82", "10.99.0.1:82 proxy 10.99.0.1:82"},
		{"excluded port", 1000, "10.99.0.1:81", "10.99.0.1:81 direct81"},
		{"proxy uid", 1337, "10.99.0.1:82", "10.99.0.1:82 direct82"},
		{"proxy mark", 0, "10.99.0.1:82", "10.99.0.1:82 direct82"},
		{"loopback", 1000, "127.0.0.1:15001", "127.0.0.1:15001 proxy ? false <nil>"},
		// Not captured, so it meets the namespace's lack of a route.
		{"excluded CIDR", 1000, "10.99.0.2:82", "dial error: dial tcp 10.99.0.2:82: connect: network is unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ns.dial(t, app, tc.uid, tc.addr); !strings.HasPrefix(got, tc.want) {
				t.Errorf("dial %s as %d: %q, want %q", tc.addr, tc.uid, got, tc.want)
			}
		})
	}
	if n, err := AttachedPrograms(app); err != nil || n != 6 {
		t.Fatalf("attached programs = %d, %v; want 6", n, err)
	}
	if st, err := objs.Stats(); err != nil || st.Captured != 3 {
		t.Errorf("captured %d connects (%v), want 3", st.Captured, err)
	}

	// A crash: this process lets go of everything, the pins keep capturing.
	objsMu.Lock()
	objs.Close()
	closed = true
	objsMu.Unlock()
	if got, want := ns.dial(t, app, 1000, "10.99.0.1:82"), "10.99.0.1:82 proxy ? "; !strings.HasPrefix(got, want) {
		t.Errorf("after close with pins: %q, want prefix %q", got, want)
	}
	if err := Unpin(pins); err != nil {
		t.Fatal(err)
	}
	if n, err := AttachedPrograms(app); err != nil || n != 0 {
		t.Errorf("after Unpin: %d programs attached (%v), want 0", n, err)
	}
	if _, err := os.Stat(pins); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir still there: %v", err)
	}
	if got, want := ns.dial(t, app, 1000, "10.99.0.1:82"), "10.99.0.1:82 direct82"; got != want {
		t.Errorf("after Unpin: %q, want %q", got, want)
	}
}

// TestFastPath: with the fast path on, both ends of a same-node connection
// in the cgroup land in the sockhash and data still flows both ways through
// plain reads and writes.
func TestFastPath(t *testing.T) {
	requireSupport(t)
	mnt := cgrouptest.Mount(t)
	app := cgrouptest.NewCgroup(t, mnt.Cgroup, "fast")
	ns := newTestNetns(t)
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := spec.Load(Config{OutboundPort: testPort, ProxyUID: 1337, ProxyGID: 1337, FastPath: true})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	if err := objs.Attach(app, ""); err != nil {
		t.Fatal(err)
	}
	defer objs.Detach()

	var (
		cmd   *exec.Cmd
		stdin io.WriteCloser
		lines *bufio.Reader
	)
	if err := ns.do(func() error {
		cmd = exec.Command(clientExe, "-test.run=^$")
		cmd.Env = append(os.Environ(), pairEnv+"=1")
		cmd.Stderr = os.Stderr
		release := cgrouptest.InCgroup(t, cmd, app)
		defer release()
		var err error
		if stdin, err = cmd.StdinPipe(); err != nil {
			return err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		lines = bufio.NewReader(out)
		return cmd.Start()
	}); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := lines.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("pair: %q %v", line, err)
	}
	var (
		k      captureSockKey
		cookie uint64
		n      int
	)
	it := objs.objs.Fastpath.Iterate()
	for it.Next(&k, &cookie) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("sockhash holds %d sockets, want the 2 ends of the pair", n)
	}
	// 100 messages, each redirected to its peer by sk_msg.
	if st, err := objs.Stats(); err != nil || st.FastPath < 100 {
		t.Errorf("fast path redirected %d messages (%v), want >= 100", st.FastPath, err)
	}
}

// TestAccelerated: sockets made inside a fast-path cgroup are reported as
// accelerated (their readers must not splice), sockets made outside are
// not.
func TestAccelerated(t *testing.T) {
	requireSupport(t)
	mnt := cgrouptest.Mount(t)
	app := cgrouptest.NewCgroup(t, mnt.Cgroup, "acc")
	spec, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := spec.Load(Config{OutboundPort: testPort, ProxyUID: 1337, ProxyGID: 1337, FastPath: true})
	if err != nil {
		t.Fatal(err)
	}
	defer objs.Close()
	if err := objs.Attach(app, ""); err != nil {
		t.Fatal(err)
	}
	defer objs.Detach()

	// A socket belongs to the cgroup of the process that made it: move this
	// process into app for the first pair, then back.
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var home string
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			home = filepath.Join(mnt.Cgroup, p)
		}
	}
	move := func(dir string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pair := func() (c, s *net.TCPConn) {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		cc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close(); sc.Close() })
		return cc.(*net.TCPConn), sc.(*net.TCPConn)
	}
	move(app)
	fc, fs := pair()
	move(home)
	pc, ps := pair()
	for _, tc := range []struct {
		name string
		c    *net.TCPConn
		want bool
	}{
		{"client in cgroup", fc, true}, {"server in cgroup", fs, true},
		{"client outside", pc, false}, {"server outside", ps, false},
	} {
		if got := objs.Accelerated(tc.c); got != tc.want {
			t.Errorf("%s: Accelerated = %v, want %v", tc.name, got, tc.want)
		}
	}
	// Data still flows between the accelerated pair through read/write.
	if _, err := fc.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = fs.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1)
	if _, err := io.ReadFull(fs, buf); err != nil {
		t.Fatalf("read on the fast path: %v", err)
	}
}
