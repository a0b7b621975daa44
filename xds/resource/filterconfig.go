package resource

import (
	"fmt"
	"sort"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

const typeFilterConfig = "type.googleapis.com/envoy.config.route.v3.FilterConfig"

// decodeHTTPFilterConfig decodes the typed_config of a supported HTTP
// filter into f. It reports false when the type is not one we run.
func decodeHTTPFilterConfig(f *state.HTTPFilter, tc *anypb.Any) (bool, error) {
	switch tc.GetTypeUrl() {
	case typeFault:
		v, err := decodeFault(tc)
		if err != nil {
			return true, fmt.Errorf("fault: %w", err)
		}
		f.Fault = v
	case typeLocalRateLimit:
		v, err := decodeLocalRateLimit(tc)
		if err != nil {
			return true, fmt.Errorf("local_ratelimit: %w", err)
		}
		f.LocalRateLimit = v
	case typeHTTPRBAC:
		v, err := decodeHTTPRBAC(tc)
		if err != nil {
			return true, fmt.Errorf("rbac: %w", err)
		}
		f.RBAC = v
	case typeGCPAuthn:
		v, err := decodeGCPAuthn(tc)
		if err != nil {
			return true, fmt.Errorf("gcp_authn: %w", err)
		}
		f.GCPAuthn = v
	default:
		return false, nil
	}
	return true, nil
}

// decodeFilterOverrides decodes typed_per_filter_config of a virtual host
// or route. Entries for filters we do not run are ignored: they can only
// refine a filter the listener has, and unsupported required filters are
// already rejected there.
func decodeFilterOverrides(m map[string]*anypb.Any) (map[string]*state.FilterOverride, error) {
	if len(m) == 0 {
		return nil, nil
	}
	// Sorted so the first error reported is stable.
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	var out map[string]*state.FilterOverride
	for _, name := range names {
		o, err := decodeFilterOverride(m[name])
		if err != nil {
			return nil, at(fmt.Sprintf("typed_per_filter_config[%q]", name), err)
		}
		if o == nil {
			continue
		}
		if out == nil {
			out = map[string]*state.FilterOverride{}
		}
		out[name] = o
	}
	return out, nil
}

func decodeFilterOverride(a *anypb.Any) (*state.FilterOverride, error) {
	if a.GetTypeUrl() == typeFilterConfig {
		var fc routev3.FilterConfig
		if err := a.UnmarshalTo(&fc); err != nil {
			return nil, err
		}
		if fc.GetDisabled() {
			return &state.FilterOverride{Disabled: true}, nil
		}
		if fc.GetConfig() == nil {
			return nil, nil
		}
		o, err := decodeFilterOverride(fc.GetConfig())
		return o, at("config", err)
	}
	if a.GetTypeUrl() == typeHTTPRBACPerRoute {
		o, err := decodeHTTPRBACPerRoute(a)
		if err != nil {
			return nil, fmt.Errorf("rbac: %w", err)
		}
		return o, nil
	}
	var f state.HTTPFilter
	ok, err := decodeHTTPFilterConfig(&f, a)
	if err != nil || !ok {
		return nil, err
	}
	return &state.FilterOverride{Fault: f.Fault, LocalRateLimit: f.LocalRateLimit, RBAC: f.RBAC}, nil
}
