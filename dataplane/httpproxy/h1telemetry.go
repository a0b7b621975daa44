package httpproxy

import (
	"time"

	"github.com/meshlet/meshlet/telemetry"
)

// next returns the next piece of the body and counts it (n feeds the
// telemetry record's byte counts).
func (b *bodyReader) next() ([]byte, error) {
	p, err := b.nextPiece()
	b.n += int64(len(p))
	return p, err
}

// serveOne serves one request and, when a sink is configured, hands its
// record to the sink. A connection that closes before a request head
// arrived records nothing.
func (s *h1Session) serveOne() bool {
	s.reqRead = false
	s.sent = 0
	s.resp.status = 0
	s.headStart = time.Time{}
	s.body = bodyReader{}
	keep := s.serveRequest()
	if sink := s.p.opts.Sink; sink != nil && (s.reqRead || s.resp.status != 0) {
		s.record(sink)
	}
	return keep
}

// record fills s.rec from the finished request and hands it to sink.
// Strings alias the session's buffers: valid for the call only.
func (s *h1Session) record(sink telemetry.Sink) {
	r := &s.rec
	info := s.info
	*r = telemetry.HTTPRecord{
		Conn: telemetry.Conn{
			Remote:        info.Remote,
			Local:         info.Local,
			PeerPrincipal: info.PeerPrincipal,
			TLS:           info.TLS != nil,
			Listener:      info.Listener,
			FilterChain:   info.FilterChain,
		},
		Start:        s.headStart,
		Protocol:     protoName(s.req.minor),
		ResponseCode: s.resp.status,
		GRPCStatus:   telemetry.NoGRPCStatus,
		HCM:          s.hcm,
		Headers:      s,
	}
	if !s.headStart.IsZero() {
		r.Duration = time.Since(s.headStart)
	}
	if s.reqRead {
		q := &s.req
		r.Method = bstr(q.method)
		r.Authority = bstr(q.authority)
		r.Path = bstr(q.path)
		r.RequestID = s.RequestHeader("x-request-id")
		r.UserAgent = s.RequestHeader("user-agent")
		r.GRPC = isGRPCContentType(s.RequestHeader("content-type"))
		r.BytesReceived = s.body.n
	}
	if r.GRPC {
		r.GRPCStatus = parseGRPCStatus(s.ResponseHeader("grpc-status"))
	}
	r.BytesSent = s.sent
	d := &s.d
	r.ResponseFlags = d.flags
	if d.route != nil {
		r.RouteName = d.route.Name
	}
	r.UpstreamCluster = d.clusterName
	if d.host != nil {
		r.UpstreamHost = d.host.Address
	}
	r.Attempts = s.rs.attempts
	sink.HTTPDone(r)
}

// RequestHeader implements telemetry.Headers over the parsed request: the
// first field named name.
func (s *h1Session) RequestHeader(name string) string {
	if !s.reqRead {
		return ""
	}
	v, _ := s.req.hdr.get(name)
	return bstr(v)
}

// ResponseHeader implements telemetry.Headers over the response head
// sent downstream.
func (s *h1Session) ResponseHeader(name string) string {
	if s.resp.status == 0 {
		return ""
	}
	v, _ := s.resp.hdr.get(name)
	return bstr(v)
}

// parseGRPCStatus parses a grpc-status value; NoGRPCStatus when absent or
// malformed.
func parseGRPCStatus(v string) int {
	if v == "" || len(v) > 3 {
		return telemetry.NoGRPCStatus
	}
	n := 0
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return telemetry.NoGRPCStatus
		}
		n = n*10 + int(c-'0')
	}
	return n
}
