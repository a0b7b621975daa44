//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"math"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/meshlet/meshlet/state"
)

const (
	httpProtocolOptionsKey  = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	typeHTTPProtocolOptions = typeURLPrefix + httpProtocolOptionsKey
	// defaultUpstreamH2Streams is Envoy's max_concurrent_streams default.
	defaultUpstreamH2Streams = math.MaxInt32
)

// decodeUpstreamProtocol reads the upstream HTTP protocol from the typed
// HttpProtocolOptions extension, falling back to the deprecated cluster
// fields that older control planes still send.
func decodeUpstreamProtocol(out *state.Cluster, c *clusterv3.Cluster) error {
	out.Protocol = state.UpstreamHTTP1
	out.HTTP2MaxConcurrentStreams = defaultUpstreamH2Streams
	out.UpstreamIdleTimeout = state.DefaultHTTPIdleTimeout

	if a, ok := c.GetTypedExtensionProtocolOptions()[httpProtocolOptionsKey]; ok {
		path := "typed_extension_protocol_options[" + httpProtocolOptionsKey + "]"
		if a.GetTypeUrl() != typeHTTPProtocolOptions {
			return errAt(path, "type %s is not %s", a.GetTypeUrl(), typeHTTPProtocolOptions)
		}
		var o httpv3.HttpProtocolOptions
		if err := a.UnmarshalTo(&o); err != nil {
			return errAt(path, "%v", err)
		}
		if err := autoSNI(out, o.GetUpstreamHttpProtocolOptions()); err != nil {
			return at(path+".upstream_http_protocol_options", err)
		}
		return at(path, httpProtocolOptions(out, &o))
	}
	if err := autoSNI(out, c.GetUpstreamHttpProtocolOptions()); err != nil {
		return at("upstream_http_protocol_options", err)
	}

	out.HTTP1Trailers = c.GetHttpProtocolOptions().GetEnableTrailers()
	if h2 := c.GetHttp2ProtocolOptions(); h2 != nil {
		out.Protocol = state.UpstreamHTTP2
		if err := h2Streams(out, h2); err != nil {
			return at("http2_protocol_options", err)
		}
	}
	if c.GetProtocolSelection() == clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL {
		out.Protocol = state.UpstreamUseDownstream
	}
	if err := commonHTTPOptions(out, c.GetCommonHttpProtocolOptions()); err != nil {
		return at("common_http_protocol_options", err)
	}
	if v := c.GetMaxRequestsPerConnection(); v != nil {
		out.MaxRequestsPerConnection = v.GetValue()
	}
	return nil
}

func httpProtocolOptions(out *state.Cluster, o *httpv3.HttpProtocolOptions) error {
	switch pc := o.GetUpstreamProtocolOptions().(type) {
	case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		switch e := pc.ExplicitHttpConfig.GetProtocolConfig().(type) {
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
			out.Protocol = state.UpstreamHTTP1
			out.HTTP1Trailers = e.HttpProtocolOptions.GetEnableTrailers()
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
			out.Protocol = state.UpstreamHTTP2
			if err := h2Streams(out, e.Http2ProtocolOptions); err != nil {
				return at("explicit_http_config.http2_protocol_options", err)
			}
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions:
			return errAt("explicit_http_config.http3_protocol_options", "HTTP/3 is not supported")
		default:
			return errAt("explicit_http_config", "a protocol is required")
		}
	case *httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig:
		out.Protocol = state.UpstreamUseDownstream
		out.HTTP1Trailers = pc.UseDownstreamProtocolConfig.GetHttpProtocolOptions().GetEnableTrailers()
		if err := h2Streams(out, pc.UseDownstreamProtocolConfig.GetHttp2ProtocolOptions()); err != nil {
			return at("use_downstream_protocol_config.http2_protocol_options", err)
		}
	case *httpv3.HttpProtocolOptions_AutoConfig:
		return errAt("auto_config", "ALPN-based protocol selection is not supported")
	case nil:
		return errAt("upstream_protocol_options", "is required")
	}
	return at("common_http_protocol_options", commonHTTPOptions(out, o.GetCommonHttpProtocolOptions()))
}

func h2Streams(out *state.Cluster, h2 *corev3.Http2ProtocolOptions) error {
	if v := h2.GetMaxConcurrentStreams(); v != nil {
		if v.GetValue() == 0 {
			return errAt("max_concurrent_streams", "must be at least 1")
		}
		out.HTTP2MaxConcurrentStreams = v.GetValue()
	}
	return nil
}

func commonHTTPOptions(out *state.Cluster, o *corev3.HttpProtocolOptions) error {
	if o == nil {
		return nil
	}
	var err error
	if out.UpstreamIdleTimeout, err = durationField("idle_timeout", o.GetIdleTimeout(), state.DefaultHTTPIdleTimeout); err != nil {
		return err
	}
	if v := o.GetMaxRequestsPerConnection(); v != nil {
		out.MaxRequestsPerConnection = v.GetValue()
	}
	if out.UpstreamMaxConnectionDuration, err = durationField("max_connection_duration", o.GetMaxConnectionDuration(), 0); err != nil {
		return err
	}
	if out.UpstreamMaxStreamDuration, err = durationField("max_stream_duration", o.GetMaxStreamDuration(), 0); err != nil {
		return err
	}
	return nil
}

// autoSNI reads upstream_http_protocol_options: the per-request TLS server
// name and its SAN check (state.AutoSNI says how the name is derived).
func autoSNI(out *state.Cluster, o *corev3.UpstreamHttpProtocolOptions) error {
	if o == nil {
		return nil
	}
	h := strings.ToLower(o.GetOverrideAutoSniHeader())
	if h != "" && !validHeaderName(h) {
		return errAt("override_auto_sni_header", "%q is not a valid header name", o.GetOverrideAutoSniHeader())
	}
	out.AutoSNI = state.AutoSNI{SNI: o.GetAutoSni(), SANValidation: o.GetAutoSanValidation(), Header: h}
	return nil
}
