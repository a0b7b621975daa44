package resource

import (
	"encoding/hex"
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/meshlet/meshlet/state"
)

const defaultNoTrafficInterval = 60 * time.Second

// decodeHealthChecks converts cluster.health_checks. Envoy runs at most one
// health checker per cluster and rejects more.
func decodeHealthChecks(hcs []*corev3.HealthCheck) ([]state.HealthCheck, error) {
	if len(hcs) == 0 {
		return nil, nil
	}
	if len(hcs) > 1 {
		return nil, errAt("health_checks", "only one health check per cluster is supported, got %d", len(hcs))
	}
	hc, err := decodeHealthCheck(hcs[0])
	if err != nil {
		return nil, atIndex("health_checks", 0, err)
	}
	return []state.HealthCheck{hc}, nil
}

func decodeHealthCheck(h *corev3.HealthCheck) (state.HealthCheck, error) {
	var out state.HealthCheck
	var err error
	required := func(name string, d time.Duration) error {
		if d <= 0 {
			return errAt(name, "is required and must be greater than 0")
		}
		return nil
	}
	if out.Timeout, err = durationField("timeout", h.GetTimeout(), 0); err != nil {
		return out, err
	}
	if err := required("timeout", out.Timeout); err != nil {
		return out, err
	}
	if out.Interval, err = durationField("interval", h.GetInterval(), 0); err != nil {
		return out, err
	}
	if err := required("interval", out.Interval); err != nil {
		return out, err
	}
	if out.InitialJitter, err = durationField("initial_jitter", h.GetInitialJitter(), 0); err != nil {
		return out, err
	}
	if out.IntervalJitter, err = durationField("interval_jitter", h.GetIntervalJitter(), 0); err != nil {
		return out, err
	}
	out.IntervalJitterPercent = h.GetIntervalJitterPercent()
	if out.NoTrafficInterval, err = durationField("no_traffic_interval", h.GetNoTrafficInterval(), defaultNoTrafficInterval); err != nil {
		return out, err
	}
	if out.NoTrafficHealthyInterval, err = durationField("no_traffic_healthy_interval", h.GetNoTrafficHealthyInterval(), 0); err != nil {
		return out, err
	}
	if out.UnhealthyInterval, err = durationField("unhealthy_interval", h.GetUnhealthyInterval(), out.Interval); err != nil {
		return out, err
	}
	if out.UnhealthyEdgeInterval, err = durationField("unhealthy_edge_interval", h.GetUnhealthyEdgeInterval(), out.UnhealthyInterval); err != nil {
		return out, err
	}
	if out.HealthyEdgeInterval, err = durationField("healthy_edge_interval", h.GetHealthyEdgeInterval(), out.Interval); err != nil {
		return out, err
	}
	if h.GetUnhealthyThreshold() == nil {
		return out, errAt("unhealthy_threshold", "is required")
	}
	if h.GetHealthyThreshold() == nil {
		return out, errAt("healthy_threshold", "is required")
	}
	out.UnhealthyThreshold = max(h.GetUnhealthyThreshold().GetValue(), 1)
	out.HealthyThreshold = max(h.GetHealthyThreshold().GetValue(), 1)
	// A different port or TLS for checks than for traffic would probe
	// something other than what traffic reaches.
	if h.GetAltPort() != nil {
		return out, errAt("alt_port", "is not supported")
	}
	if h.GetTlsOptions() != nil || len(h.GetTransportSocketMatchCriteria().GetFields()) > 0 {
		return out, errAt("tls_options", "per-check TLS settings are not supported")
	}
	switch c := h.GetHealthChecker().(type) {
	case *corev3.HealthCheck_HttpHealthCheck_:
		out.Kind = state.HealthCheckHTTP
		out.HTTP, err = decodeHTTPHealthCheck(c.HttpHealthCheck)
		err = at("http_health_check", err)
	case *corev3.HealthCheck_GrpcHealthCheck_:
		out.Kind = state.HealthCheckGRPC
		g := c.GrpcHealthCheck
		if len(g.GetInitialMetadata()) > 0 {
			err = errAt("grpc_health_check.initial_metadata", "is not supported")
		}
		out.GRPC = &state.GRPCHealthCheck{ServiceName: g.GetServiceName(), Authority: g.GetAuthority()}
	case *corev3.HealthCheck_TcpHealthCheck_:
		out.Kind = state.HealthCheckTCP
		out.TCP, err = decodeTCPHealthCheck(c.TcpHealthCheck)
		err = at("tcp_health_check", err)
	case *corev3.HealthCheck_CustomHealthCheck_:
		err = errAt("custom_health_check", "is not supported")
	default:
		err = errAt("health_checker", "one of http_health_check, grpc_health_check, tcp_health_check is required")
	}
	return out, err
}

func decodeHTTPHealthCheck(h *corev3.HealthCheck_HttpHealthCheck) (*state.HTTPHealthCheck, error) {
	out := &state.HTTPHealthCheck{Host: h.GetHost(), Path: h.GetPath()}
	if out.Path == "" {
		return nil, errAt("path", "is required")
	}
	if h.GetSend() != nil || len(h.GetReceive()) > 0 {
		return nil, errAt("send", "HTTP body payload checks are not supported")
	}
	if h.GetServiceNameMatcher() != nil {
		return nil, errAt("service_name_matcher", "is not supported")
	}
	switch h.GetMethod() {
	case corev3.RequestMethod_METHOD_UNSPECIFIED, corev3.RequestMethod_GET:
	default:
		return nil, errAt("method", "only GET is supported, got %v", h.GetMethod())
	}
	switch h.GetCodecClientType() {
	case typev3.CodecClientType_HTTP1:
	case typev3.CodecClientType_HTTP2:
		out.HTTP2 = true
	default:
		return nil, errAt("codec_client_type", "%v is not supported", h.GetCodecClientType())
	}
	var err error
	if out.ExpectedStatuses, err = statusRanges("expected_statuses", h.GetExpectedStatuses()); err != nil {
		return nil, err
	}
	if out.RetriableStatuses, err = statusRanges("retriable_statuses", h.GetRetriableStatuses()); err != nil {
		return nil, err
	}
	if out.RequestHeadersToAdd, err = headerAdds("request_headers_to_add", h.GetRequestHeadersToAdd()); err != nil {
		return nil, err
	}
	out.RequestHeadersToRemove = h.GetRequestHeadersToRemove()
	return out, nil
}

// statusRanges validates [start, end) ranges within 100..600 as Envoy does.
func statusRanges(field string, rs []*typev3.Int64Range) ([]state.StatusRange, error) {
	var out []state.StatusRange
	for i, r := range rs {
		if r.GetStart() < 100 || r.GetEnd() > 600 || r.GetStart() >= r.GetEnd() {
			return nil, atIndex(field, i, fmt.Errorf("range [%d, %d) must lie within [100, 600) and not be empty", r.GetStart(), r.GetEnd()))
		}
		out = append(out, state.StatusRange{Start: int(r.GetStart()), End: int(r.GetEnd())})
	}
	return out, nil
}

func decodeTCPHealthCheck(t *corev3.HealthCheck_TcpHealthCheck) (*state.TCPHealthCheck, error) {
	out := &state.TCPHealthCheck{}
	if s := t.GetSend(); s != nil {
		b, err := payload(s)
		if err != nil {
			return nil, at("send", err)
		}
		out.Send = b
	}
	for i, r := range t.GetReceive() {
		b, err := payload(r)
		if err != nil {
			return nil, atIndex("receive", i, err)
		}
		out.Receive = append(out.Receive, b)
	}
	return out, nil
}

// payload decodes a Payload: text is hex ("000000FF"), binary is raw.
func payload(p *corev3.HealthCheck_Payload) ([]byte, error) {
	switch v := p.GetPayload().(type) {
	case *corev3.HealthCheck_Payload_Text:
		b, err := hex.DecodeString(v.Text)
		if err != nil {
			return nil, errAt("text", "is not hex: %v", err)
		}
		if len(b) == 0 {
			return nil, errAt("text", "must not be empty")
		}
		return b, nil
	case *corev3.HealthCheck_Payload_Binary:
		if len(v.Binary) == 0 {
			return nil, errAt("binary", "must not be empty")
		}
		return v.Binary, nil
	}
	return nil, errAt("payload", "one of text, binary is required")
}
