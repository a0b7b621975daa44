package state

// AutoSNI mirrors upstream_http_protocol_options of a cluster's
// HttpProtocolOptions. For each HTTP request the name is the request's
// host (after a route's literal or header host rewrite) without its port,
// or the value of Header when the request carries it; an IP address gives
// no name. Connections are then pooled per name.
type AutoSNI struct {
	// SNI (auto_sni) sends the name as the TLS server name, in place of the
	// context's sni.
	SNI bool
	// SANValidation (auto_san_validation) requires a DNS SAN of the
	// server certificate to match the name, on top of the context's SAN
	// matchers (only where the chain is verified).
	SANValidation bool
	// Header is override_auto_sni_header, lower case ("" = none).
	Header string
}

// Enabled reports whether requests to the cluster derive a per-request
// name at all.
func (a AutoSNI) Enabled() bool { return a.SNI || a.SANValidation }
