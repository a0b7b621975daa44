package wiring

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"

	"github.com/meshlet/meshlet/config"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds"
)

// SeedStatic publishes the bootstrap's static listeners and clusters into
// store, marked Static so xDS never replaces or removes them.
func SeedStatic(store *state.Store, listeners []*state.Listener, clusters []*state.Cluster) {
	store.Update(func(s *state.Snapshot) bool {
		for _, l := range listeners {
			l.Static = true
			s.Listeners[l.Name] = l
		}
		for _, c := range clusters {
			c.Static = true
			s.Clusters[c.Name] = c
		}
		return true
	})
}

// BootstrapNode is the node section of a bootstrap as an xds.Node.
func BootstrapNode(b *config.Bootstrap) xds.Node {
	if b == nil {
		return xds.Node{}
	}
	return xds.Node{ID: b.Node.ID, Cluster: b.Node.Cluster, Metadata: b.Node.Metadata, Locality: b.Node.Locality}
}

// MergeNode lays over's set fields on base: ID, cluster and locality
// replace, metadata merges key by key (over's values win).
func MergeNode(base, over xds.Node) xds.Node {
	n := base
	if over.ID != "" {
		n.ID = over.ID
	}
	if over.Cluster != "" {
		n.Cluster = over.Cluster
	}
	if len(over.Metadata) > 0 {
		md := make(map[string]string, len(base.Metadata)+len(over.Metadata))
		maps.Copy(md, base.Metadata)
		maps.Copy(md, over.Metadata)
		n.Metadata = md
	}
	if over.Locality != (state.Locality{}) {
		n.Locality = over.Locality
	}
	return n
}

// OwnID is the SPIFFE ID of src's current certificate: the source identity
// of HBONE tunnels and of the workload's own telemetry labels.
func OwnID(src identity.Source) (string, error) {
	cert, err := src.Certificate()
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return "", errors.New("empty certificate")
		}
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return "", fmt.Errorf("certificate: %w", err)
		}
	}
	id, err := identity.FromCert(leaf)
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	return id.String(), nil
}
