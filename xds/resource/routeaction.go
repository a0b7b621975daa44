//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"errors"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshlet/meshlet/state"
)

// decodeRouteAction decodes the forwarding part of a route. rate_limits,
// cors, priority, hedge_policy and internal_redirect_policy are accepted
// and not yet acted on.
func decodeRouteAction(a *routev3.RouteAction) (*state.RouteAction, error) {
	out := &state.RouteAction{}
	switch cs := a.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_Cluster:
		if cs.Cluster == "" {
			return nil, errAt("cluster", "must not be empty")
		}
		out.Cluster = cs.Cluster
	case *routev3.RouteAction_ClusterHeader:
		h := strings.ToLower(cs.ClusterHeader)
		if h == "" {
			return nil, errAt("cluster_header", "must not be empty")
		}
		out.ClusterHeader = h
	case *routev3.RouteAction_WeightedClusters:
		if err := decodeWeightedClusters(out, cs.WeightedClusters); err != nil {
			return nil, at("weighted_clusters", err)
		}
	case *routev3.RouteAction_ClusterSpecifierPlugin, *routev3.RouteAction_InlineClusterSpecifierPlugin:
		return nil, errAt("cluster_specifier", "cluster specifier plugins are not supported")
	default:
		return nil, errors.New("cluster_specifier (cluster, cluster_header or weighted_clusters) is required")
	}
	switch a.GetClusterNotFoundResponseCode() {
	case routev3.RouteAction_SERVICE_UNAVAILABLE:
		out.ClusterNotFoundCode = 503
	case routev3.RouteAction_NOT_FOUND:
		out.ClusterNotFoundCode = 404
	case routev3.RouteAction_INTERNAL_SERVER_ERROR:
		out.ClusterNotFoundCode = 500
	default:
		return nil, errAt("cluster_not_found_response_code", "unknown value %d", a.GetClusterNotFoundResponseCode())
	}
	if a.GetMetadataMatch() != nil {
		return nil, errAt("metadata_match", "subset load balancing is not supported")
	}

	out.PrefixRewrite = a.GetPrefixRewrite()
	if rr := a.GetRegexRewrite(); rr != nil {
		if out.PrefixRewrite != "" {
			return nil, errAt("regex_rewrite", "cannot be combined with prefix_rewrite")
		}
		re, err := compileSearchRegex(rr.GetPattern())
		if err != nil {
			return nil, at("regex_rewrite.pattern", err)
		}
		out.RegexRewrite, out.RegexSubstitution = re, convertSubstitution(rr.GetSubstitution())
	}
	if a.GetPathRewritePolicy() != nil {
		return nil, errAt("path_rewrite_policy", "is not supported")
	}
	switch h := a.GetHostRewriteSpecifier().(type) {
	case *routev3.RouteAction_HostRewriteLiteral:
		out.HostRewriteLiteral = h.HostRewriteLiteral
	case *routev3.RouteAction_AutoHostRewrite:
		out.AutoHostRewrite = h.AutoHostRewrite.GetValue()
	case *routev3.RouteAction_HostRewriteHeader:
		out.HostRewriteHeader = strings.ToLower(h.HostRewriteHeader)
	case *routev3.RouteAction_HostRewritePathRegex:
		return nil, errAt("host_rewrite_path_regex", "is not supported")
	case *routev3.RouteAction_HostRewrite:
		return nil, errAt("host_rewrite", "is not supported")
	}

	var err error
	if out.Timeout, err = durationField("timeout", a.GetTimeout(), state.DefaultRouteTimeout); err != nil {
		return nil, err
	}
	if out.IdleTimeout, err = durationField("idle_timeout", a.GetIdleTimeout(), 0); err != nil {
		return nil, err
	}
	if err := decodeMaxStreamDuration(out, a); err != nil {
		return nil, err
	}
	for i, hp := range a.GetHashPolicy() {
		p, err := decodeHashPolicy(hp)
		if err != nil {
			return nil, atIndex("hash_policy", i, err)
		}
		out.HashPolicies = append(out.HashPolicies, p)
	}
	for i, u := range a.GetUpgradeConfigs() {
		if u.GetUpgradeType() == "" {
			return nil, errAt(fmt.Sprintf("upgrade_configs[%d].upgrade_type", i), "is required")
		}
		if strings.EqualFold(u.GetUpgradeType(), "websocket") && u.GetEnabled() != nil && !u.GetEnabled().GetValue() {
			out.UpgradeWebSocketDisabled = true
		}
	}
	if out.RetryPolicy, err = decodeRetryPolicy(a.GetRetryPolicy()); err != nil {
		return nil, at("retry_policy", err)
	}
	if out.MirrorPolicies, err = decodeMirrorPolicies(a.GetRequestMirrorPolicies()); err != nil {
		return nil, err
	}
	return out, nil
}

func decodeWeightedClusters(out *state.RouteAction, wc *routev3.WeightedCluster) error {
	if len(wc.GetClusters()) == 0 {
		return errAt("clusters", "at least one cluster is required")
	}
	if wc.GetHeaderName() != "" || wc.GetUseHashPolicy() != nil {
		return errors.New("header_name and use_hash_policy are not supported")
	}
	for i, c := range wc.GetClusters() {
		err := func() error {
			if c.GetName() == "" {
				return errAt("name", "is required")
			}
			if c.GetClusterHeader() != "" {
				return errAt("cluster_header", "is not supported")
			}
			if c.GetHostRewriteSpecifier() != nil {
				return errAt("host_rewrite_literal", "is not supported")
			}
			if c.GetMetadataMatch() != nil {
				return errAt("metadata_match", "subset load balancing is not supported")
			}
			h, err := decodeHeaderMutation(c)
			if err != nil {
				return err
			}
			fo, err := decodeFilterOverrides(c.GetTypedPerFilterConfig())
			if err != nil {
				return err
			}
			w := c.GetWeight().GetValue()
			out.WeightedClusters = append(out.WeightedClusters, state.WeightedCluster{Name: c.GetName(), Weight: w, Headers: h, FilterOverrides: fo})
			out.TotalWeight += uint64(w)
			return nil
		}()
		if err != nil {
			return atIndex("clusters", i, err)
		}
	}
	if tw := wc.GetTotalWeight(); tw != nil && uint64(tw.GetValue()) != out.TotalWeight {
		return errAt("total_weight", "%d does not equal the sum of the cluster weights %d", tw.GetValue(), out.TotalWeight)
	}
	if out.TotalWeight == 0 {
		return errAt("clusters", "total weight must be greater than 0")
	}
	return nil
}

func decodeMaxStreamDuration(out *state.RouteAction, a *routev3.RouteAction) error {
	msd := a.GetMaxStreamDuration()
	out.MaxStreamDurationSet = msd != nil
	var err error
	if out.MaxStreamDuration, err = durationField("max_stream_duration.max_stream_duration", msd.GetMaxStreamDuration(), 0); err != nil {
		return err
	}
	maxHdr, offHdr := msd.GetGrpcTimeoutHeaderMax(), msd.GetGrpcTimeoutHeaderOffset()
	maxPath, offPath := "max_stream_duration.grpc_timeout_header_max", "max_stream_duration.grpc_timeout_header_offset"
	// The deprecated route-level fields mean the same thing; use them only
	// when the new message leaves the value unset.
	if maxHdr == nil && a.GetMaxGrpcTimeout() != nil {
		maxHdr, maxPath = a.GetMaxGrpcTimeout(), "max_grpc_timeout"
	}
	if offHdr == nil && a.GetGrpcTimeoutOffset() != nil {
		offHdr, offPath = a.GetGrpcTimeoutOffset(), "grpc_timeout_offset"
	}
	if maxHdr != nil {
		d, err := durationField(maxPath, maxHdr, 0)
		if err != nil {
			return err
		}
		out.GrpcTimeoutHeaderMax = &d
	}
	if out.GrpcTimeoutHeaderOffset, err = durationField(offPath, offHdr, 0); err != nil {
		return err
	}
	return nil
}

func decodeHashPolicy(hp *routev3.RouteAction_HashPolicy) (state.HashPolicy, error) {
	out := state.HashPolicy{Terminal: hp.GetTerminal()}
	switch {
	case hp.GetHeader() != nil:
		h := hp.GetHeader()
		if h.GetRegexRewrite() != nil {
			return out, errAt("header.regex_rewrite", "is not supported")
		}
		out.Kind, out.Name = state.HashHeader, strings.ToLower(h.GetHeaderName())
		if out.Name == "" {
			return out, errAt("header.header_name", "is required")
		}
	case hp.GetCookie() != nil:
		c := hp.GetCookie()
		out.Kind, out.Name, out.CookiePath = state.HashCookie, c.GetName(), c.GetPath()
		if out.Name == "" {
			return out, errAt("cookie.name", "is required")
		}
		var err error
		if out.CookieTTL, err = durationField("cookie.ttl", c.GetTtl(), 0); err != nil {
			return out, err
		}
	case hp.GetConnectionProperties() != nil:
		if !hp.GetConnectionProperties().GetSourceIp() {
			return out, errAt("connection_properties.source_ip", "must be true")
		}
		out.Kind = state.HashSourceIP
	case hp.GetQueryParameter() != nil:
		out.Kind, out.Name = state.HashQueryParam, hp.GetQueryParameter().GetName()
		if out.Name == "" {
			return out, errAt("query_parameter.name", "is required")
		}
	case hp.GetFilterState() != nil:
		out.Kind, out.Name = state.HashFilterState, hp.GetFilterState().GetKey()
		if out.Name == "" {
			return out, errAt("filter_state.key", "is required")
		}
	default:
		return out, errors.New("policy_specifier is required")
	}
	return out, nil
}
