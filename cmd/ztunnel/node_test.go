package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/capture"
	"github.com/meshlet/meshlet/inpod"
)

func TestInpodFlags(t *testing.T) {
	for _, tc := range []struct {
		name       string
		args       []string
		wantOn     bool
		wantSocket string
		wantErr    string
		wantIn     capture.InboundMode
	}{
		{name: "off by default"},
		{name: "--mode node uses ztunnel's socket", args: []string{"--mode", "node"}, wantOn: true, wantSocket: inpod.DefaultSocketPath},
		{name: "explicit socket", args: []string{"--inpod-socket", "/run/x.sock"}, wantOn: true, wantSocket: "/run/x.sock"},
		{name: "--mode node keeps an explicit socket", args: []string{"--mode", "node", "--inpod-socket", "/run/x.sock"}, wantOn: true, wantSocket: "/run/x.sock"},
		{name: "other modes leave it off", args: []string{"--mode", "sidecar"}},
		{name: "unknown mode", args: []string{"--mode", "nodes"}, wantErr: "--mode"},
		{name: "tproxy inbound", args: []string{"--inpod-socket", "/s", "--inpod-inbound", "tproxy"}, wantOn: true, wantSocket: "/s", wantIn: capture.InboundTProxy},
		{name: "bad inbound", args: []string{"--inpod-socket", "/s", "--inpod-inbound", "nat"}, wantErr: "--inpod-inbound"},
		{name: "bad capture", args: []string{"--inpod-socket", "/s", "--inpod-capture", "ebpf-maybe"}, wantErr: "--inpod-capture"},
		{name: "bad drain", args: []string{"--inpod-socket", "/s", "--inpod-drain-time", "0s"}, wantErr: "--inpod-drain-time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var o inpodOptions
			o.register(fs, func(string) string { return "" })
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			cfg, on, err := o.resolve()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if on != tc.wantOn || o.socket != tc.wantSocket {
				t.Fatalf("on = %v socket %q, want %v %q", on, o.socket, tc.wantOn, tc.wantSocket)
			}
			if on && (cfg.Inbound != tc.wantIn || !cfg.DisableDNS) {
				t.Fatalf("capture config %+v", cfg)
			}
		})
	}
}

// TestInpodRuntimeForward: with --inpod-forward the runtime serves the
// socket without any mesh configuration and stops cleanly; the agent's
// requests are acked.
func TestInpodRuntimeForward(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "z.sock")
	o := &inpodOptions{socket: sock, forward: true, capture: capture.BackendNone, inbound: "redirect", drain: time.Second}
	rt, err := startInpod(o, &identityOptions{}, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := inpod.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Del("unknown"); err != nil {
		t.Fatalf("del: %v", err)
	}
	if err := cl.SnapshotSent(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	cl.Close()
	rt.stop(ctx, slog.New(slog.DiscardHandler))
	if _, err := inpod.Dial(ctx, sock); err == nil {
		t.Fatal("socket still served after stop")
	}
}

// TestConnQueue: the per-pod HBONE listener hands pushed connections to
// Accept, refuses them once closed, and a handed connection reports its
// close (the pod's drain waits for it).
func TestConnQueue(t *testing.T) {
	a, b := inpodTCPPair(t)
	defer b.Close()
	q := newConnQueue(a.LocalAddr())
	done := make(chan struct{})
	nc := &notifyConn{TCPConn: a, done: done}
	go func() {
		c, err := q.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		c.Close()
	}()
	if !q.push(nc) {
		t.Fatal("push refused while open")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("close not reported")
	}
	_ = nc.Close() // twice is fine
	q.Close()
	if _, err := q.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if q.push(nc) {
		t.Fatal("push accepted after Close")
	}
}

func inpodTCPPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), s.(*net.TCPConn)
}
