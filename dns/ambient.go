package dns

import (
	"maps"
	"net/netip"
	"slices"

	"github.com/meshlet/meshlet/state"
)

// AmbientService is one node-mode service of the Workload API as the table
// answers it. Several may share a hostname (a ServiceEntry host defined in
// more than one namespace): a query gets one of them, chosen for the
// client that asked.
type AmbientService struct {
	Hostname  string
	Namespace string
	// Canonical is preferred over the other namespaces' services when the
	// client's own namespace has none.
	Canonical bool
	// VIPs are tagged with their network: a client is answered only the
	// VIPs on its own network. Empty for a headless service.
	VIPs []state.NetworkAddr
}

// ServicesFromAmbient lists the Workload API's services that have a
// hostname, in the index's key order ("namespace/hostname"), so that the
// table's "first" choice is deterministic.
func ServicesFromAmbient(a *state.Ambient) []AmbientService {
	if a == nil {
		return nil
	}
	out := make([]AmbientService, 0, len(a.Services))
	for _, key := range slices.Sorted(maps.Keys(a.Services)) {
		s := a.Services[key]
		if s.Hostname == "" {
			continue
		}
		out = append(out, AmbientService{Hostname: s.Hostname, Namespace: s.Namespace, Canonical: s.Canonical, VIPs: s.Addresses})
	}
	return out
}

// Client is the workload a query came from: the table answers it with the
// service of its own namespace first and only VIPs on its network.
type Client struct {
	Namespace string
	Network   string
}

// ClientFunc finds the workload at a query's source address; false when
// the address is not a known workload (the table then answers as for the
// proxy's own namespace and network). It runs on the query path: a map
// lookup, no blocking.
type ClientFunc func(src netip.Addr) (Client, bool)

// StoreClients finds clients in store's Workload API state by address on
// network, the proxy's: the pods that query it are its own node's.
func StoreClients(store *state.Store, network string) ClientFunc {
	return func(src netip.Addr) (Client, bool) {
		w := store.Load().Ambient.WorkloadByAddr(network, src)
		if w == nil {
			return Client{}, false
		}
		return Client{Namespace: w.Namespace, Network: w.Network}, true
	}
}
