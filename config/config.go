package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/resource"
)

// ExitCode is the process exit status for an invalid configuration.
const ExitCode = 2

// Bootstrap is the validated content of a bootstrap file.
type Bootstrap struct {
	Path string
	Node struct {
		ID, Cluster string
		// Metadata keeps string values as is; other values are JSON-encoded.
		Metadata map[string]string
		Locality state.Locality
	}
	// Listeners and Clusters are static_resources, with Static set.
	Listeners []*state.Listener
	Clusters  []*state.Cluster
	// ADS is nil when dynamic_resources.ads_config is absent.
	ADS *ADSConfig
	// LDSFromADS and CDSFromADS are set when dynamic_resources.lds_config /
	// cds_config say `ads: {}`.
	LDSFromADS, CDSFromADS bool
	// AdminAddress is admin.address.socket_address as "ip:port", "" when
	// absent.
	AdminAddress string
}

// ADSConfig says where the aggregated xDS server is.
type ADSConfig struct {
	Address string // host:port
	Delta   bool   // api_type DELTA_GRPC / AGGREGATED_DELTA_GRPC
}

// Load reads, parses and validates the bootstrap file at path. Errors read
// `config: FILE: FIELD.PATH: what`.
func Load(path string) (*Bootstrap, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	b, err := Parse(path, raw)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Parse is Load for content already in memory; name is used in errors and
// to tell JSON (".json") from YAML (anything else).
func Parse(name string, raw []byte) (*Bootstrap, error) {
	fail := func(err error) (*Bootstrap, error) {
		return nil, fmt.Errorf("config: %s: %w", name, err)
	}
	data := raw
	if !strings.EqualFold(filepath.Ext(name), ".json") {
		j, err := yaml.YAMLToJSON(raw)
		if err != nil {
			return fail(err)
		}
		data = j
	}
	var pb bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(data, &pb); err != nil {
		return fail(errors.New(describeProtojsonError(err.Error(), data)))
	}
	b, err := build(&pb)
	if err != nil {
		return fail(err)
	}
	b.Path = name
	return b, nil
}

func build(pb *bootstrapv3.Bootstrap) (*Bootstrap, error) {
	b := &Bootstrap{}
	if n := pb.GetNode(); n != nil {
		b.Node.ID, b.Node.Cluster = n.GetId(), n.GetCluster()
		if l := n.GetLocality(); l != nil {
			b.Node.Locality = state.Locality{Region: l.GetRegion(), Zone: l.GetZone(), SubZone: l.GetSubZone()}
		}
		if md := n.GetMetadata().GetFields(); len(md) > 0 {
			b.Node.Metadata = make(map[string]string, len(md))
			for k, v := range md {
				if s, ok := v.AsInterface().(string); ok {
					b.Node.Metadata[k] = s
					continue
				}
				j, err := json.Marshal(v.AsInterface())
				if err != nil {
					return nil, fmt.Errorf("node.metadata.%s: %w", k, err)
				}
				b.Node.Metadata[k] = string(j)
			}
		}
	}

	sr := pb.GetStaticResources()
	for i, c := range sr.GetClusters() {
		sc, err := resource.DecodeCluster(c)
		if err != nil {
			return nil, fmt.Errorf("static_resources.clusters[%d]: %w", i, err)
		}
		sc.Static = true
		b.Clusters = append(b.Clusters, sc)
	}
	for i, l := range sr.GetListeners() {
		sl, err := resource.DecodeListener(l)
		if err != nil {
			return nil, fmt.Errorf("static_resources.listeners[%d]: %w", i, err)
		}
		sl.Static = true
		b.Listeners = append(b.Listeners, sl)
	}
	if err := uniqueNames(b); err != nil {
		return nil, err
	}
	if len(sr.GetSecrets()) > 0 {
		return nil, errors.New("static_resources.secrets: are not supported")
	}

	if err := dynamic(b, pb.GetDynamicResources()); err != nil {
		return nil, err
	}
	if a := pb.GetAdmin().GetAddress(); a != nil {
		sa := a.GetSocketAddress()
		if sa == nil || sa.GetNamedPort() != "" {
			return nil, errors.New("admin.address.socket_address: a TCP address with port_value is required")
		}
		b.AdminAddress = net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
	}
	return b, nil
}

func uniqueNames(b *Bootstrap) error {
	seen := map[string]int{}
	for i, c := range b.Clusters {
		if j, ok := seen[c.Name]; ok {
			return fmt.Errorf("static_resources.clusters[%d]: duplicate cluster name %q (also clusters[%d])", i, c.Name, j)
		}
		seen[c.Name] = i
	}
	seen = map[string]int{}
	for i, l := range b.Listeners {
		if j, ok := seen[l.Name]; ok {
			return fmt.Errorf("static_resources.listeners[%d]: duplicate listener name %q (also listeners[%d])", i, l.Name, j)
		}
		seen[l.Name] = i
	}
	return nil
}

func dynamic(b *Bootstrap, dr *bootstrapv3.Bootstrap_DynamicResources) error {
	if dr == nil {
		return nil
	}
	var err error
	if b.LDSFromADS, err = fromADS(dr.GetLdsConfig()); err != nil {
		return fmt.Errorf("dynamic_resources.lds_config: %w", err)
	}
	if b.CDSFromADS, err = fromADS(dr.GetCdsConfig()); err != nil {
		return fmt.Errorf("dynamic_resources.cds_config: %w", err)
	}
	if dr.GetLdsResourcesLocator() != "" || dr.GetCdsResourcesLocator() != "" {
		return errors.New("dynamic_resources: xdstp resource locators are not supported")
	}
	ads := dr.GetAdsConfig()
	if ads == nil {
		if b.LDSFromADS || b.CDSFromADS {
			return errors.New("dynamic_resources.ads_config: is required when lds_config or cds_config use ads")
		}
		return nil
	}
	cfg := &ADSConfig{}
	switch ads.GetApiType() {
	case corev3.ApiConfigSource_GRPC, corev3.ApiConfigSource_AGGREGATED_GRPC:
	case corev3.ApiConfigSource_DELTA_GRPC, corev3.ApiConfigSource_AGGREGATED_DELTA_GRPC:
		cfg.Delta = true
	default:
		return fmt.Errorf("dynamic_resources.ads_config.api_type: %v is not supported (use GRPC or DELTA_GRPC)", ads.GetApiType())
	}
	svcs := ads.GetGrpcServices()
	if len(svcs) == 0 {
		return errors.New("dynamic_resources.ads_config.grpc_services: one gRPC service is required")
	}
	svc := svcs[0]
	switch {
	case svc.GetEnvoyGrpc() != nil:
		name := svc.GetEnvoyGrpc().GetClusterName()
		addr, err := clusterAddress(b, name)
		if err != nil {
			return fmt.Errorf("dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name: %w", err)
		}
		cfg.Address = addr
	case svc.GetGoogleGrpc() != nil:
		t := svc.GetGoogleGrpc().GetTargetUri()
		for _, p := range []string{"dns:///", "passthrough:///"} {
			t = strings.TrimPrefix(t, p)
		}
		if t == "" {
			return errors.New("dynamic_resources.ads_config.grpc_services[0].google_grpc.target_uri: is required")
		}
		cfg.Address = t
	default:
		return errors.New("dynamic_resources.ads_config.grpc_services[0]: envoy_grpc or google_grpc is required")
	}
	b.ADS = cfg
	return nil
}

// fromADS reports whether a ConfigSource says `ads: {}`; other sources
// (files, REST, a separate gRPC server) are not supported.
func fromADS(cs *corev3.ConfigSource) (bool, error) {
	if cs == nil {
		return false, nil
	}
	if cs.GetAds() != nil {
		return true, nil
	}
	return false, errors.New("only `ads: {}` is supported")
}

// clusterAddress returns the first endpoint of a static cluster as
// host:port (the hostname for DNS clusters).
func clusterAddress(b *Bootstrap, name string) (string, error) {
	for _, c := range b.Clusters {
		if c.Name != name {
			continue
		}
		if c.LoadAssignment != nil {
			for _, l := range c.LoadAssignment.Localities {
				if len(l.Endpoints) == 0 {
					continue
				}
				e := l.Endpoints[0]
				if e.Address != "" {
					return e.Address, nil
				}
				return net.JoinHostPort(e.Hostname, strconv.Itoa(int(e.Port))), nil
			}
		}
		return "", fmt.Errorf("static cluster %q has no endpoints", name)
	}
	return "", fmt.Errorf("no static cluster named %q", name)
}
