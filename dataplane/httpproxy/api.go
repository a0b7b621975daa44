package httpproxy

import (
	"crypto/tls"
	"net/netip"

	"github.com/meshlet/meshlet/telemetry"
)

// ConnInfo describes an accepted downstream connection. dataplane fills it.
type ConnInfo struct {
	// Remote and Local are the downstream peer and the local address the
	// connection arrived on; OriginalDst is the original destination when
	// it differs (capture), else equal to Local.
	Remote      netip.AddrPort
	Local       netip.AddrPort
	OriginalDst netip.AddrPort
	// TLS is set when the filter chain terminated TLS; TLS.NegotiatedProtocol
	// "h2" selects the HTTP/2 codec under CodecAuto.
	TLS *tls.ConnectionState
	// PeerID is the downstream's SPIFFE ID (identity.PeerID) when it
	// presented a certificate carrying one, else "".
	PeerID string
	// LocalURISANs are the URI SANs of the certificate this side presented
	// in the TLS handshake (the "By" of an x-forwarded-client-cert
	// element). dataplane fills them when the connection manager appends
	// or sets that header.
	LocalURISANs []string
	// Listener and FilterChain names, for logs and stats.
	Listener    string
	FilterChain string
	// PeerPrincipal is the SPIFFE ID of the verified client certificate
	// (telemetry.PeerPrincipal of TLS); ServeConn fills it when empty.
	PeerPrincipal string
}

// Options are process-wide settings of the HTTP proxy.
type Options struct {
	// DebugHeaders adds x-meshlet-response-flags (Envoy response flags, "-"
	// when none) and x-meshlet-upstream (picked endpoint) to every response.
	DebugHeaders bool
	// Hostname for %HOSTNAME%.
	Hostname string
	// Sink receives a record of every finished request (metrics, access
	// logs); nil turns recording off.
	Sink telemetry.Sink
	// Overload, when set and active, answers new requests 503 (overload.go).
	Overload *Overload
}

// Response flag header names written when Options.DebugHeaders is on.
const (
	HeaderResponseFlags = "x-meshlet-response-flags"
	HeaderUpstreamHost  = "x-meshlet-upstream"
)
