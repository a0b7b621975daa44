// Command ebpfbench helps bench/ebpf.sh:
//
//	ebpfbench stats PIN_DIR    counters of a pinned eBPF capture (map_stats
//	                           under --capture-bpffs), to show the sockmap
//	                           fast path really carried the traffic
//	ebpfbench pingpong [-n N]  round trips of a 64-byte message over one
//	                           loopback TCP connection made by this process
//	                           (read/write loops, so the fast path works):
//	                           p50/p90/p99 in microseconds
//	ebpfbench connect -addr A [-n N]
//	                           sequential TCP connects to A (each closed
//	                           at once): p50/p90/p99 of connect(2) in
//	                           microseconds, which is where capture costs
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	cebpf "github.com/cilium/ebpf"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "stats":
		if len(os.Args) != 3 {
			usage()
		}
		err = stats(os.Args[2])
	case "pingpong":
		fs := flag.NewFlagSet("pingpong", flag.ExitOnError)
		n := fs.Int("n", 20000, "round trips")
		_ = fs.Parse(os.Args[2:])
		err = pingpong(*n)
	case "connect":
		fs := flag.NewFlagSet("connect", flag.ExitOnError)
		n := fs.Int("n", 2000, "connects")
		addr := fs.String("addr", "", "address to dial")
		_ = fs.Parse(os.Args[2:])
		err = connect(*addr, *n)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ebpfbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: ebpfbench stats PIN_DIR | ebpfbench pingpong [-n N] | ebpfbench connect -addr A [-n N]")
	os.Exit(2)
}

func stats(dir string) error {
	pins, _ := filepath.Glob(filepath.Join(dir, "cg-*", "map_stats"))
	if len(pins) == 0 {
		return fmt.Errorf("no map_stats pin under %s", dir)
	}
	for _, pin := range pins {
		m, err := cebpf.LoadPinnedMap(pin, nil)
		if err != nil {
			return err
		}
		var sums [2]uint64
		for i := range sums {
			var per []uint64
			if err := m.Lookup(uint32(i), &per); err != nil {
				m.Close()
				return err
			}
			for _, v := range per {
				sums[i] += v
			}
		}
		m.Close()
		fmt.Printf("%s captured=%d fastpath_msgs=%d\n", filepath.Base(filepath.Dir(pin)), sums[0], sums[1])
	}
	return nil
}

func pingpong(n int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	errc := make(chan error, 1)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			errc <- err
			return
		}
		defer s.Close()
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(s, buf); err != nil {
				errc <- nil // the client closed
				return
			}
			if _, err := s.Write(buf); err != nil {
				errc <- err
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return err
	}
	msg, buf := make([]byte, 64), make([]byte, 64)
	lat := make([]time.Duration, 0, n)
	for i := range n + n/10 {
		t0 := time.Now()
		if _, err := c.Write(msg); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if i >= n/10 { // the first tenth warms up
			lat = append(lat, time.Since(t0))
		}
	}
	c.Close()
	if err := <-errc; err != nil {
		return err
	}
	printQuantiles(lat)
	return nil
}

func connect(addr string, n int) error {
	lat := make([]time.Duration, 0, n)
	for i := range n + n/10 {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		d := time.Since(t0)
		// RST rather than FIN: no TIME_WAIT pile-up on the client side.
		_ = c.(*net.TCPConn).SetLinger(0)
		c.Close()
		if i >= n/10 {
			lat = append(lat, d)
		}
	}
	printQuantiles(lat)
	return nil
}

func printQuantiles(lat []time.Duration) {
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	fmt.Printf(`{"p50": %.2f, "p90": %.2f, "p99": %.2f}`+"\n", q(0.5), q(0.9), q(0.99))
}
