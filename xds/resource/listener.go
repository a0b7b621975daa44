package resource

import (
	"fmt"
	"strings"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/meshlet/meshlet/state"
)

// defaultListenerFiltersTimeout is Envoy's listener_filters_timeout default.
const defaultListenerFiltersTimeout = 15 * time.Second

// Listener filters we accept. We always peek at the first bytes (SNI, ALPN,
// HTTP version) and always know the original destination, so these filters
// only confirm what the data plane does anyway.
var knownListenerFilters = map[string]bool{
	"envoy.filters.listener.tls_inspector":                                                  true,
	"envoy.filters.listener.http_inspector":                                                 true,
	"envoy.filters.listener.original_dst":                                                   true,
	"type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector":   true,
	"type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector": true,
	"type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst":     true,
}

// DecodeListener validates l and converts it to the state form. The error
// names the listener and the field path.
func DecodeListener(l *listenerv3.Listener) (*state.Listener, error) {
	out, err := decodeListener(l)
	if err != nil {
		return nil, fmt.Errorf("listener %q: %w", l.GetName(), err)
	}
	return out, nil
}

func decodeListener(l *listenerv3.Listener) (*state.Listener, error) {
	if l.GetName() == "" {
		return nil, errAt("name", "is required")
	}
	out := &state.Listener{
		Name:           l.GetName(),
		BindToPort:     true,
		UseOriginalDst: l.GetUseOriginalDst().GetValue(),
		Transparent:    l.GetTransparent().GetValue(),
	}
	if l.GetBindToPort() != nil {
		out.BindToPort = l.GetBindToPort().GetValue()
	}
	if l.GetApiListener() != nil {
		// Control planes that serve proxyless gRPC clients put api_listener
		// resources in the same LDS response; Envoy skips them with a warning.
		return nil, fmt.Errorf("api_listener: %w", ErrNotForProxy)
	}
	if l.GetInternalListener() != nil {
		return decodeInternalListener(l) // only Istio's HBONE origination, hbone_istio.go
	}
	addr, err := ipSocketAddress(l.GetAddress())
	if err != nil {
		return nil, at("address", err)
	}
	out.Address = addr
	if len(l.GetAdditionalAddresses()) > 0 {
		return nil, errAt("additional_addresses", "are not supported")
	}
	if l.GetFilterChainMatcher() != nil {
		return nil, errAt("filter_chain_matcher", "is not supported; use filter_chain_match")
	}
	if l.GetFcdsConfig() != nil {
		return nil, errAt("fcds_config", "is not supported")
	}
	for i, f := range l.GetListenerFilters() {
		if err := checkListenerFilter(f); err != nil {
			return nil, atIndex("listener_filters", i, err)
		}
		out.OriginalDstFilter = out.OriginalDstFilter || isOriginalDstFilter(f)
	}
	if out.ListenerFiltersTimeout, err = durationField("listener_filters_timeout", l.GetListenerFiltersTimeout(), defaultListenerFiltersTimeout); err != nil {
		return nil, err
	}
	if l.GetListenerFiltersTimeout() != nil && out.ListenerFiltersTimeout == 0 {
		out.ListenerFiltersTimeout = -1 // explicit 0s: Envoy disables the timeout
	}
	out.ContinueOnListenerFiltersTimeout = l.GetContinueOnListenerFiltersTimeout()

	for i, fc := range l.GetFilterChains() {
		c, err := decodeFilterChain(fc)
		if err != nil {
			return nil, atIndex("filter_chains", i, err)
		}
		out.FilterChains = append(out.FilterChains, c)
	}
	if err := checkDuplicateMatches(out.FilterChains); err != nil {
		return nil, err
	}
	if l.GetDefaultFilterChain() != nil {
		c, err := decodeFilterChain(l.GetDefaultFilterChain())
		if err != nil {
			return nil, at("default_filter_chain", err)
		}
		out.DefaultFilterChain = c
	}
	if len(out.FilterChains) == 0 && out.DefaultFilterChain == nil {
		return nil, errAt("filter_chains", "at least one filter chain or a default_filter_chain is required")
	}
	return out, nil
}

func checkListenerFilter(f *listenerv3.ListenerFilter) error {
	if f.GetConfigDiscovery() != nil {
		return errAt("config_discovery", "is not supported")
	}
	key := f.GetName()
	if tc := f.GetTypedConfig(); tc != nil {
		key = tc.GetTypeUrl()
	}
	if !knownListenerFilters[key] {
		return fmt.Errorf("listener filter %q (%s) is not supported", f.GetName(), key)
	}
	return nil
}

// checkDuplicateMatches rejects two chains with identical matches, as Envoy
// does: the second could never be selected, which is almost always a
// config mistake.
func checkDuplicateMatches(chains []*state.FilterChain) error {
	seen := make(map[string]int, len(chains))
	for i, c := range chains {
		k := fmt.Sprintf("%+v", c.Match)
		if j, ok := seen[k]; ok {
			return errAt(fmt.Sprintf("filter_chains[%d].filter_chain_match", i),
				"is identical to filter_chains[%d]'s (%s)", j, strings.TrimSpace(k))
		}
		seen[k] = i
	}
	return nil
}

// isOriginalDstFilter reports whether f is the original_dst listener filter
// (by type URL, or by name when it has no typed config).
func isOriginalDstFilter(f *listenerv3.ListenerFilter) bool {
	if tc := f.GetTypedConfig(); tc != nil {
		return tc.GetTypeUrl() == "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
	}
	return f.GetName() == "envoy.filters.listener.original_dst"
}
