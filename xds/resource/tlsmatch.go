package resource

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/state"
)

// decodeTransportSocketMatches decodes a cluster's
// transport_socket_matches: Istio sends one matching endpoints labelled
// tlsMode: istio (mTLS) and one with an empty match (plaintext). The
// newer transport_socket_matcher is rejected: ignoring it could send
// plaintext where the control plane asked for mTLS.
func decodeTransportSocketMatches(c *clusterv3.Cluster) ([]state.TransportSocketMatch, error) {
	if c.GetTransportSocketMatcher() != nil {
		return nil, errAt("transport_socket_matcher", "is not supported")
	}
	var out []state.TransportSocketMatch
	for i, m := range c.GetTransportSocketMatches() {
		path := fmt.Sprintf("transport_socket_matches[%d]", i)
		match, err := stringStruct(m.GetMatch())
		if err != nil {
			return nil, at(path+".match", err)
		}
		t, err := decodeUpstreamTLS(m.GetTransportSocket())
		if err != nil {
			return nil, at(path+".transport_socket", err)
		}
		out = append(out, state.TransportSocketMatch{Name: m.GetName(), Match: match, TLS: t})
	}
	return out, nil
}

// stringStruct flattens a Struct whose values are strings, the only form
// Envoy's transport socket match compares usefully (Istio's tlsMode).
func stringStruct(s *structpb.Struct) (map[string]string, error) {
	if len(s.GetFields()) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(s.GetFields()))
	for k, v := range s.GetFields() {
		sv, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, errAt(k, "only string values are supported")
		}
		out[k] = sv.StringValue
	}
	return out, nil
}

// transportSocketMatchMetadata returns an endpoint's
// filter_metadata["envoy.transport_socket_match"] string values; other
// values cannot match a decoded match and are left out.
func transportSocketMatchMetadata(md *corev3.Metadata) map[string]string {
	s := md.GetFilterMetadata()[state.TransportSocketMatchKey]
	if len(s.GetFields()) == 0 {
		return nil
	}
	out := make(map[string]string, len(s.GetFields()))
	for k, v := range s.GetFields() {
		if sv, ok := v.GetKind().(*structpb.Value_StringValue); ok {
			out[k] = sv.StringValue
		}
	}
	return out
}
