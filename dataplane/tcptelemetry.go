package dataplane

import (
	"time"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
)

// tcpRec collects the telemetry record of one tcp_proxy connection. It is
// nil when no sink is configured; every method is a no-op on nil.
type tcpRec struct {
	sink telemetry.Sink
	rec  telemetry.TCPRecord
}

// tcpRecord starts the record of a tcp_proxy connection, or returns nil
// when telemetry is off.
func (s *Server) tcpRecord(info *httpproxy.ConnInfo, tp *state.TCPProxy) *tcpRec {
	sink := s.opts.Sink
	if sink == nil {
		return nil
	}
	if info.PeerPrincipal == "" && info.TLS != nil {
		info.PeerPrincipal = telemetry.PeerPrincipal(info.TLS)
	}
	return &tcpRec{sink: sink, rec: telemetry.TCPRecord{
		Conn: telemetry.Conn{
			Remote:        info.Remote,
			Local:         info.Local,
			PeerPrincipal: info.PeerPrincipal,
			TLS:           info.TLS != nil,
			Listener:      info.Listener,
			FilterChain:   info.FilterChain,
		},
		Start: time.Now(),
		TCP:   tp,
	}}
}

func (t *tcpRec) cluster(name string) {
	if t != nil {
		t.rec.UpstreamCluster = name
	}
}

func (t *tcpRec) fail(flag string) {
	if t != nil {
		t.rec.ResponseFlags = flag
	}
}

// connected marks the upstream connection established and tells a sink
// that counts opened connections (telemetry.TCPOpener).
func (t *tcpRec) connected(host string) {
	if t == nil {
		return
	}
	t.rec.Connected = true
	t.rec.UpstreamHost = host
	if o, ok := t.sink.(telemetry.TCPOpener); ok {
		o.TCPOpened(&t.rec)
	}
}

func (t *tcpRec) bytes(received, sent int64) {
	if t != nil {
		t.rec.BytesReceived, t.rec.BytesSent = received, sent
	}
}

// finish hands the record to the sink.
func (t *tcpRec) finish() {
	if t == nil {
		return
	}
	t.rec.Duration = time.Since(t.rec.Start)
	t.sink.TCPDone(&t.rec)
}
