//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"fmt"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

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
