package dataplane

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/telemetry"
)

// tcpSink keeps copies of the TCP records it sees.
type tcpSink struct {
	mu     sync.Mutex
	opened []telemetry.TCPRecord
	done   []telemetry.TCPRecord
}

func (s *tcpSink) HTTPDone(*telemetry.HTTPRecord) {}
func (s *tcpSink) TCPOpened(r *telemetry.TCPRecord) {
	s.mu.Lock()
	s.opened = append(s.opened, *r)
	s.mu.Unlock()
}
func (s *tcpSink) TCPDone(r *telemetry.TCPRecord) {
	s.mu.Lock()
	s.done = append(s.done, *r)
	s.mu.Unlock()
}

func (s *tcpSink) records() ([]telemetry.TCPRecord, []telemetry.TCPRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]telemetry.TCPRecord(nil), s.opened...), append([]telemetry.TCPRecord(nil), s.done...)
}

func TestTCPRecord(t *testing.T) {
	sink := &tcpSink{}
	e := newEnv(t, Options{Sink: sink})
	be := startBackend(t, func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("reply:" + string(req)))
		_ = c.(*net.TCPConn).CloseWrite()
	})
	e.cluster("be", be)
	e.listener(tcpListener("l", tcpChain("tcp", "be")))
	c := dial(t, e.addr("l"))
	if _, err := c.Write([]byte("ping!")); err != nil {
		t.Fatal(err)
	}
	_ = c.CloseWrite()
	if got, _ := io.ReadAll(c); string(got) != "reply:ping!" {
		t.Fatalf("got %q", got)
	}
	eventually(t, "record", func() bool { _, d := sink.records(); return len(d) == 1 })
	opened, done := sink.records()
	r := done[0]
	if len(opened) != 1 || opened[0].UpstreamHost != be {
		t.Errorf("opened = %+v", opened)
	}
	if !r.Connected || r.UpstreamCluster != "be" || r.UpstreamHost != be || r.Listener != "l" || r.ResponseFlags != "" {
		t.Errorf("record = %+v", r)
	}
	if r.BytesReceived != 5 || r.BytesSent != int64(len("reply:ping!")) {
		t.Errorf("bytes received %d sent %d", r.BytesReceived, r.BytesSent)
	}
	if r.Duration <= 0 || !r.Remote.IsValid() || r.TCP == nil || r.TCP.Cluster != "be" {
		t.Errorf("duration %v remote %v tcp %+v", r.Duration, r.Remote, r.TCP)
	}
}

func TestTCPRecordFailures(t *testing.T) {
	sink := &tcpSink{}
	e := newEnv(t, Options{Sink: sink})
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	e.cluster("dead", dead)
	e.cluster("empty")
	cases := []struct{ name, cluster, flag string }{
		{"uf", "dead", "UF"},
		{"uh", "empty", "UH"},
		{"nc", "missing", "NC"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.listener(tcpListener(tc.name, tcpChain("tcp", tc.cluster)))
			c := dial(t, e.addr(tc.name))
			expectClosed(t, c, 3*time.Second)
			eventually(t, "record", func() bool { _, d := sink.records(); return len(d) == i+1 })
			opened, done := sink.records()
			r := done[i]
			if len(opened) != 0 || r.Connected || r.ResponseFlags != tc.flag || r.UpstreamCluster != tc.cluster ||
				!strings.EqualFold(r.Listener, tc.name) {
				t.Errorf("record = %+v (opened %d)", r, len(opened))
			}
		})
	}
}
