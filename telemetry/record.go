package telemetry

import (
	"crypto/tls"
	"net/netip"
	"time"

	"github.com/meshlet/meshlet/state"
)

// Sink consumes finished requests and connections. The data plane calls it
// synchronously on the request goroutine, so implementations must be fast,
// must not block and must not allocate in steady state.
//
// A record, and every string in it, is valid only during the call: the
// record is reused for the next request on the same connection and its
// request-derived strings (Method, Authority, Path, RequestID, UserAgent)
// may alias the connection's read buffer. A sink that keeps anything past
// the call must copy it (strings.Clone).
type Sink interface {
	HTTPDone(*HTTPRecord)
	TCPDone(*TCPRecord)
}

// TCPOpener is implemented by sinks that count connections when they open
// (istio_tcp_connections_opened_total) rather than when they end. The data
// plane calls TCPOpened once the upstream connection is established, with
// the same record TCPDone later receives.
type TCPOpener interface {
	TCPOpened(*TCPRecord)
}

// NoGRPCStatus is HTTPRecord.GRPCStatus when the response carried none.
const NoGRPCStatus = -1

// Conn is the downstream part shared by HTTP and TCP records.
type Conn struct {
	// Remote is the downstream peer; Local is the address the connection
	// arrived on (the original destination under capture).
	Remote netip.AddrPort
	Local  netip.AddrPort
	// PeerPrincipal is the SPIFFE ID (URI SAN) of the peer's verified
	// client certificate, "" without mTLS. See PeerPrincipal.
	PeerPrincipal string
	// TLS reports whether the downstream connection was TLS-terminated.
	TLS bool
	// Listener and FilterChain name what accepted the connection.
	Listener    string
	FilterChain string
}

// HTTPRecord describes one finished HTTP request (one HTTP/1.1 exchange or
// one HTTP/2 stream). It lives in the session or stream struct and is
// Reset per request.
type HTTPRecord struct {
	Conn

	// Start is when the first byte of the request head arrived; Duration
	// runs from Start to the last byte of the response (or the reset).
	Start    time.Time
	Duration time.Duration

	// Protocol is "HTTP/1.0", "HTTP/1.1" or "HTTP/2"; GRPC marks a request
	// with content-type application/grpc*.
	Protocol string
	GRPC     bool

	// Request head as received (before route rewrites).
	Method    string
	Authority string
	Path      string
	RequestID string
	UserAgent string

	// ResponseCode is the status sent downstream (0 when no response was
	// sent, e.g. the client went away first). GRPCStatus is the grpc-status
	// sent (header or trailer), NoGRPCStatus when none.
	ResponseCode int
	GRPCStatus   int
	// ResponseFlags are Envoy's short response flags ("UF,URX"), "" for
	// none.
	ResponseFlags string

	// RouteName is the matched route's name; UpstreamCluster the cluster
	// picked (after weighted clusters); UpstreamHost the endpoint address
	// ("ip:port") of the last attempt, "" when none was picked.
	RouteName       string
	UpstreamCluster string
	UpstreamHost    string
	// Attempts counts upstream tries (1 + retries); 0 for local replies.
	Attempts int

	// BytesReceived is the request body bytes read from downstream,
	// BytesSent the response body bytes written to it.
	BytesReceived int64
	BytesSent     int64
	// RequestMessages and ResponseMessages count gRPC messages (length-
	// prefixed frames) each way on gRPC streams.
	RequestMessages, ResponseMessages uint64

	// HealthCheck marks a request answered by a health-check filter.
	HealthCheck bool

	// HCM is the connection manager config that served the request, for
	// per-HCM sinks (access_log); nil when unknown.
	HCM *state.HTTPConnectionManager

	// Headers looks up any other request or response header (%REQ(X)%,
	// %RESP(X)%); nil when the protocol path does not provide it. Same
	// validity rule as the record.
	Headers Headers
}

// Headers gives a sink access to the recorded request's headers. Names are
// lower-case; a missing header is "". Lookups must not allocate.
type Headers interface {
	RequestHeader(name string) string
	ResponseHeader(name string) string
}

// Reset clears r for the next request, keeping nothing from the last one.
// The downstream connection part is kept: it is the same for every
// request on the connection.
func (r *HTTPRecord) Reset() {
	c := r.Conn
	*r = HTTPRecord{Conn: c, GRPCStatus: NoGRPCStatus}
}

// TCPRecord describes one finished tcp_proxy connection.
type TCPRecord struct {
	Conn

	// Start is when the connection was accepted; Duration runs until both
	// directions finished.
	Start    time.Time
	Duration time.Duration

	// UpstreamCluster and UpstreamHost ("ip:port") as picked; either may be
	// "" when the connection failed before.
	UpstreamCluster string
	UpstreamHost    string
	// Connected reports whether the upstream connection was established.
	// A record with Connected false is a failed connection
	// (istio_tcp_connections_failed_total); ResponseFlags says why (UF, UH,
	// NR, UO).
	Connected     bool
	ResponseFlags string

	// BytesReceived were read from downstream, BytesSent written to it.
	BytesReceived int64
	BytesSent     int64

	// TCP is the tcp_proxy config that served the connection; nil when
	// unknown.
	TCP *state.TCPProxy
}

// PeerPrincipal returns the SPIFFE ID of the verified peer certificate of
// cs: the leaf's single spiffe:// URI SAN, or "" when there is none. It
// allocates; call it once per connection.
func PeerPrincipal(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	for _, u := range cs.PeerCertificates[0].URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return ""
}

// multi fans records out to several sinks.
type multi []Sink

func (m multi) HTTPDone(r *HTTPRecord) {
	for _, s := range m {
		s.HTTPDone(r)
	}
}

func (m multi) TCPDone(r *TCPRecord) {
	for _, s := range m {
		s.TCPDone(r)
	}
}

// TCPOpened forwards to the sinks that count opened connections.
func (m multi) TCPOpened(r *TCPRecord) {
	for _, s := range m {
		if o, ok := s.(TCPOpener); ok {
			o.TCPOpened(r)
		}
	}
}

// Multi returns a Sink that hands each record to every non-nil sink in
// order, or nil when there is none (nil means telemetry is off).
func Multi(sinks ...Sink) Sink {
	var m multi
	for _, s := range sinks {
		if s != nil {
			m = append(m, s)
		}
	}
	switch len(m) {
	case 0:
		return nil
	case 1:
		return m[0]
	}
	return m
}
