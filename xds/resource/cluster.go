//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"fmt"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/meshlet/meshlet/state"
)

const (
	defaultDNSRefreshRate = 5 * time.Second
	minDNSRefreshRate     = time.Millisecond
)

// DecodeCluster validates c and converts it to the state form. The error
// names the cluster and the field path.
func DecodeCluster(c *clusterv3.Cluster) (*state.Cluster, error) {
	out, err := decodeCluster(c)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: %w", c.GetName(), err)
	}
	return out, nil
}

func decodeCluster(c *clusterv3.Cluster) (*state.Cluster, error) {
	if c.GetName() == "" {
		return nil, errAt("name", "is required")
	}
	out := &state.Cluster{Name: c.GetName()}
	switch c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_ClusterType:
		return nil, errAt("cluster_type", "custom cluster types (%s) are not supported", c.GetClusterType().GetName())
	}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC:
		out.Type = state.ClusterStatic
	case clusterv3.Cluster_STRICT_DNS:
		out.Type = state.ClusterStrictDNS
	case clusterv3.Cluster_LOGICAL_DNS:
		out.Type = state.ClusterLogicalDNS
	case clusterv3.Cluster_EDS:
		out.Type = state.ClusterEDS
	case clusterv3.Cluster_ORIGINAL_DST:
		out.Type = state.ClusterOriginalDst
	default:
		return nil, errAt("type", "unknown value %d", c.GetType())
	}
	if out.Type == state.ClusterEDS {
		out.EDSServiceName = c.GetEdsClusterConfig().GetServiceName()
		if out.EDSServiceName == "" {
			out.EDSServiceName = out.Name
		}
	} else if c.GetEdsClusterConfig() != nil {
		return nil, errAt("eds_cluster_config", "is only valid for EDS clusters")
	}
	var err error
	if out.ConnectTimeout, err = durationField("connect_timeout", c.GetConnectTimeout(), state.DefaultConnectTimeout); err != nil {
		return nil, err
	}
	if out.ConnectTimeout == 0 {
		return nil, errAt("connect_timeout", "must be greater than 0")
	}
	if err := decodeLB(out, c); err != nil {
		return nil, err
	}
	if err := decodeUpstreamProtocol(out, c); err != nil {
		return nil, err
	}
	if err := decodeClusterEndpoints(out, c); err != nil {
		return nil, err
	}
	if err := decodeOriginalDst(out, c); err != nil {
		return nil, err
	}
	if out.UpstreamBind, err = decodeBindConfig(c.GetUpstreamBindConfig()); err != nil {
		return nil, at("upstream_bind_config", err)
	}
	if out.TLS, err = decodeUpstreamTLS(c.GetTransportSocket()); err != nil {
		return nil, at("transport_socket", err)
	}
	if out.TransportSocketMatches, err = decodeTransportSocketMatches(c); err != nil {
		return nil, err
	}
	if c.GetLbSubsetConfig() != nil {
		return nil, errAt("lb_subset_config", "subset load balancing is not supported")
	}
	if len(c.GetFilters()) > 0 {
		return nil, errAt("filters", "upstream network filters are not supported")
	}
	if out.OutlierDetection, err = decodeOutlierDetection(c.GetOutlierDetection()); err != nil {
		return nil, at("outlier_detection", err)
	}
	if out.CircuitBreakers, err = decodeCircuitBreakers(c.GetCircuitBreakers()); err != nil {
		return nil, at("circuit_breakers", err)
	}
	if out.HealthChecks, err = decodeHealthChecks(c.GetHealthChecks()); err != nil {
		return nil, err
	}
	if out.HBONE, err = decodeHBONE(c); err != nil {
		return nil, at("metadata", err)
	}
	if out.GCPAudiences, err = decodeGCPAudiences(c.GetMetadata()); err != nil {
		return nil, at("metadata", err)
	}
	return out, nil
}

// decodeClusterEndpoints handles load_assignment and the DNS settings.
// EDS clusters take endpoints from EDS and ignore load_assignment, as Envoy
// does.
func decodeClusterEndpoints(out *state.Cluster, c *clusterv3.Cluster) error {
	out.DNSLookupFamily = "auto"
	out.DNSRefreshRate = defaultDNSRefreshRate
	isDNS := out.Type == state.ClusterStrictDNS || out.Type == state.ClusterLogicalDNS
	if isDNS {
		var err error
		if out.DNSRefreshRate, err = durationField("dns_refresh_rate", c.GetDnsRefreshRate(), defaultDNSRefreshRate); err != nil {
			return err
		}
		if out.DNSRefreshRate < minDNSRefreshRate {
			return errAt("dns_refresh_rate", "must be at least 1ms")
		}
		switch c.GetDnsLookupFamily() {
		// AUTO prefers IPv6 in Envoy and V4_PREFERRED/ALL try both; all of
		// them resolve both families here, which never loses reachability.
		case clusterv3.Cluster_AUTO, clusterv3.Cluster_V4_PREFERRED, clusterv3.Cluster_ALL:
			out.DNSLookupFamily = "auto"
		case clusterv3.Cluster_V4_ONLY:
			out.DNSLookupFamily = "v4"
		case clusterv3.Cluster_V6_ONLY:
			out.DNSLookupFamily = "v6"
		default:
			return errAt("dns_lookup_family", "unknown value %d", c.GetDnsLookupFamily())
		}
	}
	cla := c.GetLoadAssignment()
	switch out.Type {
	case state.ClusterEDS, state.ClusterOriginalDst:
		return nil
	case state.ClusterStatic:
		if cla == nil {
			out.LoadAssignment = &state.ClusterLoadAssignment{ClusterName: out.Name, OverprovisioningFactor: state.DefaultOverprovisioning}
			return nil
		}
		la, err := decodeLoadAssignment(cla, addrIP)
		if err != nil {
			return at("load_assignment", err)
		}
		out.LoadAssignment = la
	default:
		if cla == nil {
			return errAt("load_assignment", "is required for %v clusters", out.Type)
		}
		la, err := decodeLoadAssignment(cla, addrHostname)
		if err != nil {
			return at("load_assignment", err)
		}
		n := 0
		for _, l := range la.Localities {
			n += len(l.Endpoints)
		}
		if n == 0 {
			return errAt("load_assignment.endpoints", "%v clusters need at least one endpoint", out.Type)
		}
		if out.Type == state.ClusterLogicalDNS && n != 1 {
			return errAt("load_assignment.endpoints", "LOGICAL_DNS clusters take exactly one endpoint, got %d", n)
		}
		out.LoadAssignment = la
	}
	if out.LoadAssignment.ClusterName == "" {
		out.LoadAssignment.ClusterName = out.Name
	}
	return nil
}

// decodeBindConfig decodes upstream_bind_config. Like Envoy it takes one
// source address plus at most one more of the other IP family (dual-stack
// clusters); socket_options are accepted and ignored.
func decodeBindConfig(b *corev3.BindConfig) (*state.UpstreamBind, error) {
	if b == nil {
		return nil, nil
	}
	if b.GetLocalAddressSelector() != nil {
		return nil, errAt("local_address_selector", "custom local address selectors are not supported")
	}
	out := &state.UpstreamBind{Freebind: b.GetFreebind().GetValue()}
	if sa := b.GetSourceAddress(); sa != nil {
		ap, err := bindAddress(sa)
		if err != nil {
			return nil, at("source_address", err)
		}
		out.Source = ap
	}
	// extra_source_addresses replaced additional_source_addresses; Envoy
	// rejects a config setting both.
	type extra struct {
		field string
		sa    *corev3.SocketAddress
	}
	var extras []extra
	for i, e := range b.GetExtraSourceAddresses() {
		if e.GetAddress() == nil {
			return nil, errAt(fmt.Sprintf("extra_source_addresses[%d].address", i), "is required")
		}
		extras = append(extras, extra{fmt.Sprintf("extra_source_addresses[%d]", i), e.GetAddress()})
	}
	for i, sa := range b.GetAdditionalSourceAddresses() {
		extras = append(extras, extra{fmt.Sprintf("additional_source_addresses[%d]", i), sa})
	}
	if len(b.GetExtraSourceAddresses()) > 0 && len(b.GetAdditionalSourceAddresses()) > 0 {
		return nil, errAt("additional_source_addresses", "cannot be set together with extra_source_addresses")
	}
	if len(extras) == 0 {
		if !out.Source.IsValid() && !out.Freebind {
			return nil, nil // an empty bind config binds nothing
		}
		return out, nil
	}
	if !out.Source.IsValid() {
		return nil, errAt(extras[0].field, "needs source_address")
	}
	if len(extras) > 1 {
		return nil, errAt(extras[1].field, "only one additional source address is supported")
	}
	e := extras[0]
	ap, err := bindAddress(e.sa)
	if err != nil {
		return nil, at(e.field, err)
	}
	if ap.Addr().Is4() == out.Source.Addr().Is4() {
		return nil, errAt(e.field, "%s has the same IP family as source_address %s; it must be the other one", ap.Addr(), out.Source.Addr())
	}
	out.Alternate = ap
	return out, nil
}

// bindAddress is a local address to bind: an IP literal (a hostname
// would need resolving on every dial) and a port, usually 0.
func bindAddress(sa *corev3.SocketAddress) (netip.AddrPort, error) {
	if _, ok := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); ok {
		return netip.AddrPort{}, errAt("named_port", "named ports are not supported")
	}
	if sa.GetPortValue() > 65535 {
		return netip.AddrPort{}, errAt("port_value", "%d is out of range", sa.GetPortValue())
	}
	if sa.GetResolverName() != "" {
		return netip.AddrPort{}, errAt("resolver_name", "custom resolvers are not supported")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil || ip.Zone() != "" {
		return netip.AddrPort{}, errAt("address", "%q is not an IP address", sa.GetAddress())
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(sa.GetPortValue())), nil
}
