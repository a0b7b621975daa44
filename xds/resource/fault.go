package resource

import (
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

const typeFault = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

// decodeFault decodes an HTTPFault, from http_filters or from a route's
// typed_per_filter_config (the same message in both places).
func decodeFault(a *anypb.Any) (*state.FaultFilter, error) {
	var f faultv3.HTTPFault
	if err := a.UnmarshalTo(&f); err != nil {
		return nil, err
	}
	out := &state.FaultFilter{
		UpstreamCluster: f.GetUpstreamCluster(),
		DownstreamNodes: f.GetDownstreamNodes(),
	}
	if v := f.GetMaxActiveFaults(); v != nil {
		out.MaxActiveFaults, out.HasMaxActive = v.GetValue(), true
	}
	// Runtime keys name overrides in Envoy's runtime, which we do not have;
	// the configured values are what Envoy uses when the keys are absent.
	if f.GetResponseRateLimit() != nil {
		return nil, errAt("response_rate_limit", "is not supported")
	}
	for i, h := range f.GetHeaders() {
		hm, err := decodeHeaderMatcher(h)
		if err != nil {
			return nil, atIndex("headers", i, err)
		}
		out.Headers = append(out.Headers, hm)
	}
	if d := f.GetDelay(); d != nil {
		fd, err := decodeFaultDelay(d)
		if err != nil {
			return nil, at("delay", err)
		}
		out.Delay = fd
	}
	if ab := f.GetAbort(); ab != nil {
		fa, err := decodeFaultAbort(ab)
		if err != nil {
			return nil, at("abort", err)
		}
		out.Abort = fa
	}
	return out, nil
}

func decodeFaultDelay(d *faultcommonv3.FaultDelay) (*state.FaultDelay, error) {
	out := &state.FaultDelay{}
	switch s := d.GetFaultDelaySecifier().(type) {
	case *faultcommonv3.FaultDelay_FixedDelay:
		v, err := durationField("fixed_delay", s.FixedDelay, 0)
		if err != nil {
			return nil, err
		}
		out.Fixed = v
	case *faultcommonv3.FaultDelay_HeaderDelay_:
		out.FromHeader = true
	default:
		return nil, errAt("fault_delay_secifier", "fixed_delay or header_delay is required")
	}
	p, err := fraction("percentage", d.GetPercentage())
	if err != nil {
		return nil, err
	}
	out.Percentage = p
	return out, nil
}

func decodeFaultAbort(a *faultv3.FaultAbort) (*state.FaultAbort, error) {
	out := &state.FaultAbort{}
	switch s := a.GetErrorType().(type) {
	case *faultv3.FaultAbort_HttpStatus:
		// Envoy's validation: [200, 600).
		if s.HttpStatus < 200 || s.HttpStatus >= 600 {
			return nil, errAt("http_status", "%d is not in [200, 600)", s.HttpStatus)
		}
		out.HTTPStatus = int(s.HttpStatus)
	case *faultv3.FaultAbort_GrpcStatus:
		out.GRPCStatus, out.HasGRPCStatus = s.GrpcStatus, true
	case *faultv3.FaultAbort_HeaderAbort_:
		out.FromHeader = true
	default:
		return nil, errAt("error_type", "http_status, grpc_status or header_abort is required")
	}
	if a.GetResponseBody() != "" {
		return nil, errAt("response_body", "is not supported")
	}
	p, err := fraction("percentage", a.GetPercentage())
	if err != nil {
		return nil, err
	}
	out.Percentage = p
	return out, nil
}

// fraction decodes a FractionalPercent. Unset is 0% (the proto's zero
// value), which is what Envoy evaluates too.
func fraction(path string, p *typev3.FractionalPercent) (state.Fraction, error) {
	out := state.Fraction{Numerator: p.GetNumerator()}
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		out.Denominator = state.PerHundred
	case typev3.FractionalPercent_TEN_THOUSAND:
		out.Denominator = state.PerTenThousand
	case typev3.FractionalPercent_MILLION:
		out.Denominator = state.PerMillion
	default:
		return out, errAt(path+".denominator", "unknown value %d", p.GetDenominator())
	}
	return out, nil
}
