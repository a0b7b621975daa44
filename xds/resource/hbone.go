package resource

import (
	"net/netip"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/state"
)

// hboneMetadataKey is the cluster filter_metadata namespace that asks for
// HBONE tunneling, meshlet's shortcut for what Istio expresses with an
// internal listener and tunneling_config (also supported: hbone_istio.go):
//
//	metadata:
//	  filter_metadata:
//	    meshlet.hbone:
//	      port: 15008          # HBONE port on each host (default 15008)
//	      address: 10.0.0.9:15008   # optional fixed tunnel endpoint
//	      identity: spiffe://cluster.local/ns/x/sa/y   # expected peer
const hboneMetadataKey = "meshlet.hbone"

// decodeHBONE reads either form of HBONE tunneling: Istio's (an
// internal_upstream transport socket, see hbone_istio.go) or the
// meshlet.hbone metadata shortcut.
func decodeHBONE(c *clusterv3.Cluster) (*state.HBONE, error) {
	s := c.GetMetadata().GetFilterMetadata()[hboneMetadataKey]
	if clusterIsInternal(c) {
		if s != nil {
			return nil, errAt("filter_metadata."+hboneMetadataKey, "cannot be combined with an internal_upstream transport socket")
		}
		return &state.HBONE{Internal: true, Cluster: c.GetName()}, nil
	}
	if s == nil {
		return nil, nil
	}
	out := &state.HBONE{}
	path := "filter_metadata." + hboneMetadataKey
	for k, v := range s.GetFields() {
		switch k {
		case "port":
			n, ok := v.GetKind().(*structpb.Value_NumberValue)
			if !ok || n.NumberValue < 1 || n.NumberValue > 65535 || n.NumberValue != float64(int(n.NumberValue)) {
				return nil, errAt(path+".port", "must be a port number")
			}
			out.Port = uint32(n.NumberValue)
		case "address":
			if _, err := netip.ParseAddrPort(v.GetStringValue()); err != nil {
				return nil, errAt(path+".address", "must be ip:port: %v", err)
			}
			out.Address = v.GetStringValue()
		case "identity":
			id := v.GetStringValue()
			if len(id) < len("spiffe://x") || id[:len("spiffe://")] != "spiffe://" {
				return nil, errAt(path+".identity", "must be a spiffe:// ID")
			}
			out.Identity = id
		default:
			return nil, errAt(path+"."+k, "unknown field")
		}
	}
	return out, nil
}
