package resource

import (
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

const typeNetConnectionLimit = "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit"

// decodeConnectionLimit decodes the network connection_limit filter. A nil
// result with no error means the filter is switched off
// (runtime_enabled.default_value false).
func decodeConnectionLimit(a *anypb.Any) (*state.ConnectionLimit, error) {
	var l connlimitv3.ConnectionLimit
	if err := a.UnmarshalTo(&l); err != nil {
		return nil, err
	}
	if l.GetStatPrefix() == "" {
		return nil, errAt("stat_prefix", "is required")
	}
	// Envoy's validation: max_connections is required and at least 1.
	if l.GetMaxConnections() == nil || l.GetMaxConnections().GetValue() < 1 {
		return nil, errAt("max_connections", "is required and must be at least 1")
	}
	d, err := durationField("delay", l.GetDelay(), 0)
	if err != nil {
		return nil, err
	}
	if re := l.GetRuntimeEnabled(); re != nil && !re.GetDefaultValue().GetValue() {
		return nil, nil
	}
	return &state.ConnectionLimit{StatPrefix: l.GetStatPrefix(), MaxConnections: l.GetMaxConnections().GetValue(), Delay: d}, nil
}
