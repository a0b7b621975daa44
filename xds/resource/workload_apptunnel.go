package resource

import (
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
)

// decodeAppTunnel decodes Workload.application_tunnel. A protocol newer
// than our proto is rejected like tunnel_protocol: delivering plain TCP to
// a port that expects a PROXY header (or the reverse) breaks the workload
// or misattributes its peers, so guessing is worse than refusing.
func decodeAppTunnel(m *workloadpb.ApplicationTunnel) (*state.AppTunnel, error) {
	if m == nil {
		return nil, nil
	}
	t := &state.AppTunnel{}
	switch m.GetProtocol() {
	case workloadpb.ApplicationTunnel_NONE:
		t.Protocol = state.AppTunnelNone
	case workloadpb.ApplicationTunnel_PROXY:
		t.Protocol = state.AppTunnelPROXY
	default:
		return nil, errAt("protocol", "unknown value %d", m.GetProtocol())
	}
	if m.GetPort() > 65535 {
		return nil, errAt("port", "%d is not a port", m.GetPort())
	}
	t.Port = uint16(m.GetPort())
	return t, nil
}
