package state

import (
	"sync"
	"sync/atomic"
)

// Type URLs of the resources held in a Snapshot.
const (
	TypeListener    = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeRoute       = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	TypeCluster     = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeEndpoint    = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	TypeSecret      = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	TypeVirtualHost = "type.googleapis.com/envoy.config.route.v3.VirtualHost"
)

// Snapshot is one consistent view of the configuration. A published Snapshot
// and everything reachable from it are never modified.
type Snapshot struct {
	Listeners map[string]*Listener
	Routes    map[string]*RouteConfig
	Clusters  map[string]*Cluster
	// Endpoints is keyed by ClusterLoadAssignment.ClusterName (the EDS
	// service name).
	Endpoints map[string]*ClusterLoadAssignment
	// Secrets holds the SDS secrets (by name) that listeners and clusters
	// reference, delivered over the same ADS stream.
	Secrets map[string]*Secret
	// Versions is the xDS version_info last accepted per type URL.
	Versions map[string]string
	// Ambient holds the Istio Workload API resources (node mode); nil
	// when none were received. Replaced, never modified, on update.
	Ambient *Ambient
}

// Empty returns a snapshot with no resources.
func Empty() *Snapshot {
	return &Snapshot{
		Listeners: map[string]*Listener{},
		Routes:    map[string]*RouteConfig{},
		Clusters:  map[string]*Cluster{},
		Endpoints: map[string]*ClusterLoadAssignment{},
		Secrets:   map[string]*Secret{},
		Versions:  map[string]string{},
	}
}

// Clone returns a shallow copy whose maps may be modified.
func (s *Snapshot) Clone() *Snapshot {
	n := &Snapshot{
		Listeners: make(map[string]*Listener, len(s.Listeners)),
		Routes:    make(map[string]*RouteConfig, len(s.Routes)),
		Clusters:  make(map[string]*Cluster, len(s.Clusters)),
		Endpoints: make(map[string]*ClusterLoadAssignment, len(s.Endpoints)),
		Secrets:   make(map[string]*Secret, len(s.Secrets)),
		Versions:  make(map[string]string, len(s.Versions)),
		Ambient:   s.Ambient,
	}
	for k, v := range s.Listeners {
		n.Listeners[k] = v
	}
	for k, v := range s.Routes {
		n.Routes[k] = v
	}
	for k, v := range s.Clusters {
		n.Clusters[k] = v
	}
	for k, v := range s.Endpoints {
		n.Endpoints[k] = v
	}
	for k, v := range s.Secrets {
		n.Secrets[k] = v
	}
	for k, v := range s.Versions {
		n.Versions[k] = v
	}
	return n
}

// EndpointsFor returns the load assignment a cluster uses: its inline one for
// STATIC/DNS clusters, the EDS one otherwise (nil when none has arrived).
func (s *Snapshot) EndpointsFor(c *Cluster) *ClusterLoadAssignment {
	if c.Type != ClusterEDS {
		return c.LoadAssignment
	}
	name := c.EDSServiceName
	if name == "" {
		name = c.Name
	}
	return s.Endpoints[name]
}

// Store holds the current Snapshot and tells watchers when it changes.
// Readers call Load on every new connection or request; it never blocks.
type Store struct {
	cur atomic.Pointer[Snapshot]

	mu       sync.Mutex // serializes Update and watcher registration
	watchers []func(old, new *Snapshot)
}

// NewStore returns a Store holding an empty snapshot.
func NewStore() *Store {
	s := &Store{}
	s.cur.Store(Empty())
	return s
}

// Load returns the current snapshot.
func (s *Store) Load() *Snapshot { return s.cur.Load() }

// Update applies fn to a clone of the current snapshot and publishes the
// result, then calls the watchers in registration order (synchronously, with
// the store's update lock held, so watchers see updates in order). fn returns
// false to abandon the update.
func (s *Store) Update(fn func(next *Snapshot) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	next := old.Clone()
	if !fn(next) {
		return
	}
	s.cur.Store(next)
	for _, w := range s.watchers {
		w(old, next)
	}
}

// Watch registers fn to be called after every update, and calls it once now
// with (nil, current).
func (s *Store) Watch(fn func(old, new *Snapshot)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.watchers = append(s.watchers, fn)
	fn(nil, s.cur.Load())
}
