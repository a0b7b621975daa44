package resource

import (
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/meshlet/meshlet/state"
)

// defaultOriginalDstHeader is the header Envoy reads the destination from
// when use_http_header is set without http_header_name.
const defaultOriginalDstHeader = "x-envoy-original-dst-host"

// decodeOriginalDst reads cleanup_interval and original_dst_lb_config for
// ORIGINAL_DST clusters; Envoy ignores both on other cluster types.
func decodeOriginalDst(out *state.Cluster, c *clusterv3.Cluster) error {
	if out.Type != state.ClusterOriginalDst {
		return nil
	}
	if ci := c.GetCleanupInterval(); ci != nil {
		d, err := durationField("cleanup_interval", ci, 0)
		if err != nil {
			return err
		}
		if d <= 0 {
			return errAt("cleanup_interval", "must be greater than 0")
		}
		out.OriginalDstCleanupInterval = d
	}
	cfg := c.GetOriginalDstLbConfig()
	if cfg == nil {
		return nil
	}
	if err := decodeOriginalDstTunnel(out, cfg); err != nil { // hbone_istio.go
		return err
	}
	if cfg.GetUseHttpHeader() {
		name := strings.ToLower(cfg.GetHttpHeaderName())
		if name == "" {
			name = defaultOriginalDstHeader
		}
		out.OriginalDstHeader = name
	}
	return nil
}
