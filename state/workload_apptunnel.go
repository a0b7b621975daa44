package state

// AppTunnelProtocol is how a node proxy wraps connections it delivers to
// a workload that terminates its own tunnel (Workload application_tunnel).
type AppTunnelProtocol uint8

const (
	// AppTunnelNone: plain TCP (only the port may be overridden).
	AppTunnelNone AppTunnelProtocol = iota
	// AppTunnelPROXY: each delivered connection starts with a PROXY
	// protocol v2 header carrying the original source, the HBONE target
	// and the client's SPIFFE identity, so a workload such as a waypoint
	// learns its real peer.
	AppTunnelPROXY
)

func (p AppTunnelProtocol) String() string {
	if p == AppTunnelPROXY {
		return "PROXY"
	}
	return "NONE"
}

// MarshalText makes dumps show the protocol's name.
func (p AppTunnelProtocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// AppTunnel is a workload's application_tunnel: the protocol inbound
// deliveries speak and the port they go to.
type AppTunnel struct {
	Protocol AppTunnelProtocol
	// Port receives tunneled connections; 0 keeps the original port.
	Port uint16
}
