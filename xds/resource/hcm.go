package resource

import (
	"errors"
	"fmt"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

const (
	routerFilterName = "envoy.filters.http.router"
	typeRouter       = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
	// defaultServerName replaces Envoy's "envoy" for the server header.
	defaultServerName = "meshlet"
	// defaultDownstreamH2Streams is our cap when http2_protocol_options
	// leaves max_concurrent_streams unset (Envoy's 2^31-1 invites abuse).
	defaultDownstreamH2Streams = 1024
	maxRequestHeadersKB        = 8192
)

func decodeHCM(a *anypb.Any) (*state.HTTPConnectionManager, error) {
	var h hcmv3.HttpConnectionManager
	if err := a.UnmarshalTo(&h); err != nil {
		return nil, err
	}
	out := &state.HTTPConnectionManager{
		StatPrefix:                h.GetStatPrefix(),
		UseRemoteAddress:          h.GetUseRemoteAddress().GetValue(),
		XffNumTrustedHops:         h.GetXffNumTrustedHops(),
		SkipXffAppend:             h.GetSkipXffAppend(),
		GenerateRequestID:         true,
		PreserveExternalRequestID: h.GetPreserveExternalRequestId(),
		ServerName:                h.GetServerName(),
		MaxRequestHeadersKB:       state.DefaultMaxRequestHeadersKB,
		MaxHeadersCount:           state.DefaultMaxHeadersCount,
		HTTP2MaxConcurrentStreams: defaultDownstreamH2Streams,
	}
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
		out.Codec = state.CodecAuto
	case hcmv3.HttpConnectionManager_HTTP1:
		out.Codec = state.CodecHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		out.Codec = state.CodecHTTP2
	default:
		return nil, errAt("codec_type", "%v is not supported", h.GetCodecType())
	}

	switch rs := h.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if rs.Rds.GetRouteConfigName() == "" {
			return nil, errAt("rds.route_config_name", "is required")
		}
		out.RDSName = rs.Rds.GetRouteConfigName()
	case *hcmv3.HttpConnectionManager_RouteConfig:
		rc, err := decodeRouteConfig(rs.RouteConfig)
		if err != nil {
			return nil, at("route_config", err)
		}
		out.RouteConfig = rc
	case *hcmv3.HttpConnectionManager_ScopedRoutes:
		return nil, errAt("scoped_routes", "is not supported")
	default:
		return nil, errors.New("route_specifier (rds or route_config) is required")
	}

	var err error
	if out.StreamIdleTimeout, err = durationField("stream_idle_timeout", h.GetStreamIdleTimeout(), state.DefaultStreamIdleTimeout); err != nil {
		return nil, err
	}
	if out.RequestTimeout, err = durationField("request_timeout", h.GetRequestTimeout(), 0); err != nil {
		return nil, err
	}
	if out.RequestHeadersTimeout, err = durationField("request_headers_timeout", h.GetRequestHeadersTimeout(), 0); err != nil {
		return nil, err
	}
	out.HTTP1Trailers = h.GetHttpProtocolOptions().GetEnableTrailers()
	common := h.GetCommonHttpProtocolOptions()
	if out.IdleTimeout, err = durationField("common_http_protocol_options.idle_timeout", common.GetIdleTimeout(), state.DefaultHTTPIdleTimeout); err != nil {
		return nil, err
	}
	if v := common.GetMaxRequestsPerConnection(); v != nil {
		out.MaxRequestsPerConnection = v.GetValue()
	}
	if out.MaxStreamDuration, err = durationField("common_http_protocol_options.max_stream_duration", common.GetMaxStreamDuration(), 0); err != nil {
		return nil, err
	}
	if out.MaxConnectionDuration, err = durationField("common_http_protocol_options.max_connection_duration", common.GetMaxConnectionDuration(), 0); err != nil {
		return nil, err
	}
	// Unset stays zero (Envoy's 5 s); an explicit 0s
	// is no grace at all, which state spells negative.
	if out.DrainTimeout, err = durationField("drain_timeout", h.GetDrainTimeout(), 0); err != nil {
		return nil, err
	}
	if h.GetDrainTimeout() != nil && out.DrainTimeout == 0 {
		out.DrainTimeout = -1
	}
	if common.GetMaxHeadersCount() != nil {
		if common.GetMaxHeadersCount().GetValue() == 0 {
			return nil, errAt("common_http_protocol_options.max_headers_count", "must be at least 1")
		}
		out.MaxHeadersCount = common.GetMaxHeadersCount().GetValue()
	}
	if v := h.GetMaxRequestHeadersKb(); v != nil {
		if v.GetValue() == 0 || v.GetValue() > maxRequestHeadersKB {
			return nil, errAt("max_request_headers_kb", "%d is out of range (1..%d)", v.GetValue(), maxRequestHeadersKB)
		}
		out.MaxRequestHeadersKB = v.GetValue()
	}
	if gen := h.GetGenerateRequestId(); gen != nil {
		out.GenerateRequestID = gen.GetValue()
	}
	if out.ServerName == "" {
		out.ServerName = defaultServerName
	}
	switch h.GetServerHeaderTransformation() {
	case hcmv3.HttpConnectionManager_OVERWRITE:
	case hcmv3.HttpConnectionManager_PASS_THROUGH:
		out.ServerHeaderPassThrough = true
	default:
		return nil, errAt("server_header_transformation", "%v is not supported", h.GetServerHeaderTransformation())
	}
	if v := h.GetHttp2ProtocolOptions().GetMaxConcurrentStreams(); v != nil {
		if v.GetValue() == 0 {
			return nil, errAt("http2_protocol_options.max_concurrent_streams", "must be at least 1")
		}
		out.HTTP2MaxConcurrentStreams = v.GetValue()
	}

	if out.Path, err = decodePathNormalization(&h); err != nil {
		return nil, err
	}
	// strip_matching_host_port is a plain field beside the strip_port_mode
	// oneof; Envoy rejects a config that sets both.
	switch anyPort, matching := h.GetStripAnyHostPort(), h.GetStripMatchingHostPort(); {
	case anyPort && matching:
		return nil, errAt("strip_matching_host_port", "cannot be set with strip_any_host_port")
	case anyPort:
		out.StripHostPort = state.StripHostPortAny
	case matching:
		out.StripHostPort = state.StripHostPortMatching
	}
	if out.AccessLogs, err = decodeAccessLogs(h.GetAccessLog()); err != nil {
		return nil, err
	}
	if out.ForwardClientCert, err = decodeForwardClientCert(h.GetForwardClientCertDetails()); err != nil {
		return nil, err
	}
	if d := h.GetSetCurrentClientCertDetails(); d != nil {
		out.ClientCertDetails = state.ClientCertDetails{
			Subject: d.GetSubject().GetValue(),
			Cert:    d.GetCert(),
			Chain:   d.GetChain(),
			URI:     d.GetUri(),
			DNS:     d.GetDns(),
		}
	}

	filters := h.GetHttpFilters()
	for i, f := range filters {
		name, hf, err := httpFilter(f, i == len(filters)-1)
		if err != nil {
			return nil, atIndex("http_filters", i, err)
		}
		if name != "" {
			out.HTTPFilters = append(out.HTTPFilters, name)
		}
		if hf != nil {
			out.Filters = append(out.Filters, hf)
		}
	}
	if len(out.HTTPFilters) == 0 {
		return nil, errAt("http_filters", "%s is required as the last filter", routerFilterName)
	}
	return out, nil
}

// httpFilter returns the name to record for f, or "" when f is an optional
// filter we do not implement, and the decoded filter when it is one we run
// (fault, local rate limit). The router must come last: filters after it
// would never run, and a chain without it would never reach an upstream.
func httpFilter(f *hcmv3.HttpFilter, last bool) (string, *state.HTTPFilter, error) {
	if f.GetConfigDiscovery() != nil {
		return "", nil, errAt("config_discovery", "is not supported (filter %q)", f.GetName())
	}
	isRouter := f.GetName() == routerFilterName
	if tc := f.GetTypedConfig(); tc != nil {
		isRouter = tc.GetTypeUrl() == typeRouter
	}
	if isRouter {
		if !last {
			return "", nil, fmt.Errorf("%s must be the last HTTP filter", routerFilterName)
		}
		return routerFilterName, nil, nil
	}
	if last {
		return "", nil, fmt.Errorf("the last HTTP filter must be %s, not %q", routerFilterName, f.GetName())
	}
	if tc := f.GetTypedConfig(); tc != nil {
		hf := &state.HTTPFilter{Name: f.GetName(), Disabled: f.GetDisabled()}
		ok, err := decodeHTTPFilterConfig(hf, tc)
		if err != nil {
			return "", nil, at("typed_config", err)
		}
		if ok {
			if hf.Name == "" {
				return "", nil, errAt("name", "is required")
			}
			return hf.Name, hf, nil
		}
	}
	if f.GetIsOptional() || f.GetDisabled() {
		return "", nil, nil
	}
	typ := ""
	if tc := f.GetTypedConfig(); tc != nil {
		typ = " (" + tc.GetTypeUrl() + ")"
	}
	return "", nil, fmt.Errorf("HTTP filter %q%s is not supported (mark it is_optional to skip it)", f.GetName(), typ)
}

// decodeForwardClientCert maps forward_client_cert_details; a value this
// build does not know is rejected rather than read as the default, since
// SANITIZE and the forwarding modes differ in what the upstream may trust.
func decodeForwardClientCert(v hcmv3.HttpConnectionManager_ForwardClientCertDetails) (state.ForwardClientCert, error) {
	switch v {
	case hcmv3.HttpConnectionManager_SANITIZE:
		return state.ForwardClientCertSanitize, nil
	case hcmv3.HttpConnectionManager_FORWARD_ONLY:
		return state.ForwardClientCertForwardOnly, nil
	case hcmv3.HttpConnectionManager_APPEND_FORWARD:
		return state.ForwardClientCertAppendForward, nil
	case hcmv3.HttpConnectionManager_SANITIZE_SET:
		return state.ForwardClientCertSanitizeSet, nil
	case hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		return state.ForwardClientCertAlwaysForwardOnly, nil
	}
	return 0, errAt("forward_client_cert_details", "%d is not a known value", int32(v))
}
