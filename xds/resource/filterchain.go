//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"errors"
	"fmt"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/meshlet/meshlet/state"
)

const (
	typeTCPProxy = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	typeHCM      = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)

func decodeFilterChain(fc *listenerv3.FilterChain) (*state.FilterChain, error) {
	out := &state.FilterChain{Name: fc.GetName()}
	m, err := decodeFilterChainMatch(fc.GetFilterChainMatch())
	if err != nil {
		return nil, at("filter_chain_match", err)
	}
	out.Match = m
	if fc.GetUseProxyProto().GetValue() {
		return nil, errAt("use_proxy_proto", "is not supported")
	}
	if out.TLS, err = decodeDownstreamTLS(fc.GetTransportSocket()); err != nil {
		return nil, at("transport_socket", err)
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, errAt("filters", "exactly one terminal filter (tcp_proxy or http_connection_manager) is required")
	}
	for i, f := range filters {
		// Rate limit and RBAC filters are the only non-terminal ones we run.
		if f.GetTypedConfig().GetTypeUrl() == typeNetLocalRateLimit && i != len(filters)-1 {
			rl, err := decodeNetworkRateLimit(f.GetTypedConfig())
			if err != nil {
				return nil, atIndex("filters", i, at("typed_config", fmt.Errorf("local_ratelimit: %w", err)))
			}
			if rl != nil {
				out.RateLimits = append(out.RateLimits, rl)
			}
			continue
		}
		if f.GetTypedConfig().GetTypeUrl() == typeNetConnectionLimit && i != len(filters)-1 {
			cl, err := decodeConnectionLimit(f.GetTypedConfig())
			if err != nil {
				return nil, atIndex("filters", i, at("typed_config", fmt.Errorf("connection_limit: %w", err)))
			}
			if cl != nil {
				out.ConnectionLimits = append(out.ConnectionLimits, cl)
			}
			continue
		}
		if f.GetTypedConfig().GetTypeUrl() == typeNetRBAC && i != len(filters)-1 {
			r, err := decodeNetworkRBAC(f.GetTypedConfig())
			if err != nil {
				return nil, atIndex("filters", i, at("typed_config", fmt.Errorf("rbac: %w", err)))
			}
			out.RBAC = append(out.RBAC, r)
			continue
		}
		if err := decodeNetworkFilter(out, f); err != nil {
			return nil, atIndex("filters", i, err)
		}
		// Both supported filters are terminal, so anything after the first
		// one would never see data.
		if i != len(filters)-1 {
			return nil, errAt(fmt.Sprintf("filters[%d]", i+1), "follows terminal filter %q", f.GetName())
		}
	}
	return out, nil
}

func decodeNetworkFilter(fc *state.FilterChain, f *listenerv3.Filter) error {
	if f.GetConfigDiscovery() != nil {
		return errAt("config_discovery", "is not supported")
	}
	tc := f.GetTypedConfig()
	if tc == nil {
		return errAt("typed_config", "is required (filter %q)", f.GetName())
	}
	switch tc.GetTypeUrl() {
	case typeTCPProxy:
		p, err := decodeTCPProxy(tc)
		if err != nil {
			return at("typed_config", fmt.Errorf("tcp_proxy: %w", err))
		}
		fc.TCPProxy = p
	case typeHCM:
		h, err := decodeHCM(tc)
		if err != nil {
			return at("typed_config", fmt.Errorf("http_connection_manager: %w", err))
		}
		fc.HTTP = h
	default:
		return errAt("typed_config", "network filter %q (%s) is not supported", f.GetName(), tc.GetTypeUrl())
	}
	return nil
}

func decodeFilterChainMatch(m *listenerv3.FilterChainMatch) (state.FilterChainMatch, error) {
	var out state.FilterChainMatch
	if m == nil {
		return out, nil
	}
	var err error
	if m.GetDestinationPort() != nil {
		p := m.GetDestinationPort().GetValue()
		if p == 0 || p > 65535 {
			return out, errAt("destination_port", "%d is out of range", p)
		}
		out.DestinationPort = p
	}
	if out.PrefixRanges, err = cidrRanges("prefix_ranges", m.GetPrefixRanges()); err != nil {
		return out, err
	}
	if m.GetAddressSuffix() != "" || m.GetSuffixLen() != nil {
		return out, errAt("address_suffix", "is not supported")
	}
	if len(m.GetDirectSourcePrefixRanges()) > 0 {
		return out, errAt("direct_source_prefix_ranges", "is not supported")
	}
	switch m.GetSourceType() {
	case listenerv3.FilterChainMatch_ANY:
		out.SourceType = state.SourceAny
	case listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK:
		out.SourceType = state.SourceSameIPOrLoopback
	case listenerv3.FilterChainMatch_EXTERNAL:
		out.SourceType = state.SourceExternal
	default:
		return out, errAt("source_type", "unknown value %d", m.GetSourceType())
	}
	if out.SourcePrefixRanges, err = cidrRanges("source_prefix_ranges", m.GetSourcePrefixRanges()); err != nil {
		return out, err
	}
	for i, p := range m.GetSourcePorts() {
		if p == 0 || p > 65535 {
			return out, errAt(fmt.Sprintf("source_ports[%d]", i), "%d is out of range", p)
		}
	}
	out.SourcePorts = m.GetSourcePorts()
	for i, n := range m.GetServerNames() {
		n = strings.ToLower(n)
		if err := checkServerName(n); err != nil {
			return out, atIndex("server_names", i, err)
		}
		out.ServerNames = append(out.ServerNames, n)
	}
	switch t := m.GetTransportProtocol(); t {
	case "", "raw_buffer", "tls":
		out.TransportProtocol = t
	default:
		return out, errAt("transport_protocol", "%q is not supported (want raw_buffer or tls)", t)
	}
	out.ApplicationProtocols = m.GetApplicationProtocols()
	return out, nil
}

// checkServerName accepts exact names and "*.suffix" wildcards, the forms
// Envoy's filter chain matching understands.
func checkServerName(n string) error {
	if n == "" {
		return errors.New("empty server name")
	}
	if !strings.Contains(n, "*") {
		return nil
	}
	if !strings.HasPrefix(n, "*.") || strings.Count(n, "*") != 1 || len(n) < 3 {
		return fmt.Errorf("%q: only a leading \"*.\" wildcard is supported", n)
	}
	return nil
}
