package xds

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

type (
	decodeFunc func(typeURL string, raw *anypb.Any) (name string, value any, err error)
	refsFunc   func(value any) (routeNames, edsNames []string)
)

// typeState is what the client has accepted for one resource type. It
// outlives streams: after a reconnect it is what the store keeps serving
// and, for delta, what initial_resource_versions reports.
type typeState struct {
	url string
	// values holds the accepted, decoded resources by name (never static
	// ones).
	values map[string]any
	// versions holds delta's per-resource versions.
	versions map[string]string
	// version is the last accepted version_info (SotW) or
	// system_version_info (delta).
	version string
	// applied is set by the first accepted response.
	applied bool
}

func newTypeState(url string) *typeState {
	return &typeState{url: url, values: map[string]any{}, versions: map[string]string{}}
}

// decodeOne decodes raw as a resource of typeURL and checks the decoder
// returned the matching state type.
func (c *Client) decodeOne(typeURL string, raw *anypb.Any) (string, any, error) {
	if raw.GetTypeUrl() != typeURL {
		return "", nil, fmt.Errorf("resource of type %q in a %s response", raw.GetTypeUrl(), typeURL)
	}
	if x := c.extra[typeURL]; x != nil {
		// Its watcher decodes it; the name comes from the server unless
		// the type says how to find it.
		if x.Name == nil {
			return "", raw, nil
		}
		name, err := x.Name(raw)
		if err != nil {
			return "", nil, fmt.Errorf("resource name: %w", err)
		}
		return name, raw, nil
	}
	name, v, err := c.decode(typeURL, raw)
	if err != nil {
		return name, nil, err
	}
	var ok bool
	switch typeURL {
	case state.TypeListener:
		_, ok = v.(*state.Listener)
	case state.TypeCluster:
		_, ok = v.(*state.Cluster)
	case state.TypeRoute:
		_, ok = v.(*state.RouteConfig)
	case state.TypeEndpoint:
		_, ok = v.(*state.ClusterLoadAssignment)
	case state.TypeSecret:
		_, ok = v.(*state.Secret)
	case state.TypeAddress:
		switch v.(type) {
		case *state.Workload, *state.Service:
			ok = true
		}
	case state.TypeAuthorization:
		_, ok = v.(*state.Authorization)
	}
	if !ok || name == "" {
		return name, nil, fmt.Errorf("resource %q: decoder returned %T for %s", name, v, typeURL)
	}
	if prev := c.sameAsAccepted(typeURL, name, raw); prev != nil {
		// The control plane resent the resource unchanged: keep the value
		// already published, so watchers see the same pointer and keep
		// what they built from it (listener configs, rate-limit buckets,
		// filter state) instead of rebuilding on every push.
		v = prev
	}
	c.noteDecoded(typeURL, name, raw, v)
	return name, v, nil
}

// isStatic reports whether the store holds a bootstrap resource of this
// name, which xDS must neither replace nor remove.
func isStatic(snap *state.Snapshot, typeURL, name string) bool {
	switch typeURL {
	case state.TypeListener:
		l := snap.Listeners[name]
		return l != nil && l.Static
	case state.TypeCluster:
		cl := snap.Clusters[name]
		return cl != nil && cl.Static
	}
	return false
}

// subscribed reports whether a resource of this type is one the client
// asked for: LDS and CDS are wildcard, RDS, EDS and SDS follow want.
func (c *Client) subscribed(typeURL, name string) bool {
	if x := c.extra[typeURL]; x != nil {
		_, ok := x.names[name]
		return x.names == nil || name == "" || ok
	}
	w, ok := c.want[typeURL]
	if !ok {
		return true
	}
	_, ok = w[name]
	return ok
}

// joinErrors renders several resource errors for error_detail.
func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	slices.Sort(msgs)
	return errors.New(strings.Join(msgs, "; "))
}

// commit publishes the accepted state of typeURL to the store. Routes and
// endpoints are rebuilt from what the listeners and clusters of the new
// snapshot reference, in the same update, so a removed listener or cluster
// takes its route configuration or load assignment with it atomically.
// It then prunes unreferenced RDS/EDS/SDS resources and updates want.
func (c *Client) commit(typeURL string) {
	ts := c.types[typeURL]
	if c.extra[typeURL] != nil {
		// The watcher took it (applyExtra); the store and the RDS/EDS/SDS
		// subscriptions do not depend on it.
		c.acceptedVersion(typeURL, ts)
		return
	}
	var snap *state.Snapshot
	c.cfg.Store.Update(func(next *state.Snapshot) bool {
		switch typeURL {
		case state.TypeListener:
			replaceDynamic(next.Listeners, ts.values, func(l *state.Listener) bool { return l.Static })
		case state.TypeCluster:
			replaceDynamic(next.Clusters, ts.values, func(cl *state.Cluster) bool { return cl.Static })
		case state.TypeAddress, state.TypeAuthorization:
			next.Ambient = c.ambient()
		}
		if c.envoy {
			routes, eds, secrets := c.references(next)
			next.Routes = pick[state.RouteConfig](c.types[state.TypeRoute].values, routes)
			next.Endpoints = pick[state.ClusterLoadAssignment](c.types[state.TypeEndpoint].values, eds)
			next.Secrets = pick[state.Secret](c.types[state.TypeSecret].values, secrets)
		}
		next.Versions[typeURL] = ts.version
		snap = next
		return true
	})
	c.refreshWant(snap)
	for _, t := range c.typeList {
		if c.extra[t] == nil {
			c.publishRaw(c.types[t]) // refreshWant may have dropped some of any type
		}
	}
	c.acceptedVersion(typeURL, ts)
}

// acceptedVersion records and logs an accepted response's version and
// re-checks readiness.
func (c *Client) acceptedVersion(typeURL string, ts *typeState) {
	c.mu.Lock()
	c.status.Versions[typeURL] = ts.version
	c.mu.Unlock()
	c.log.Info("xds accepted", "type", typeURL, "version", ts.version, "resources", len(ts.values))
	c.checkReady()
}

// refreshWant recomputes the RDS/EDS/SDS subscriptions from snap and forgets
// accepted resources no longer referenced.
func (c *Client) refreshWant(snap *state.Snapshot) {
	routes, eds, secrets := c.references(snap)
	c.want[state.TypeRoute] = routes
	c.want[state.TypeEndpoint] = eds
	c.want[state.TypeSecret] = secrets
	for _, t := range namedTypes {
		ts := c.types[t]
		if ts == nil {
			continue // Workload API only: no RDS/EDS/SDS
		}
		for name := range ts.values {
			if _, ok := c.want[t][name]; !ok {
				delete(ts.values, name)
				delete(ts.versions, name)
			}
		}
	}
}

// references returns the route configuration, load assignment and secret
// names that the listeners and clusters in snap (static ones included)
// need, plus the configured secrets and routes.
func (c *Client) references(snap *state.Snapshot) (routes, eds, secrets map[string]struct{}) {
	routes, eds, secrets = map[string]struct{}{}, map[string]struct{}{}, map[string]struct{}{}
	for _, n := range c.cfg.Secrets {
		secrets[n] = struct{}{}
	}
	for _, n := range c.cfg.Routes {
		routes[n] = struct{}{}
	}
	for _, l := range snap.Listeners {
		r, _ := c.refs(l)
		for _, n := range r {
			routes[n] = struct{}{}
		}
		for _, n := range c.secretRefs(l) {
			secrets[n] = struct{}{}
		}
	}
	for _, cl := range snap.Clusters {
		_, e := c.refs(cl)
		for _, n := range e {
			eds[n] = struct{}{}
		}
		for _, n := range c.secretRefs(cl) {
			secrets[n] = struct{}{}
		}
	}
	return routes, eds, secrets
}

// replaceDynamic makes the non-static entries of m equal to values, leaving
// static entries alone (an xDS resource named like a static one is
// dropped).
func replaceDynamic[T any](m map[string]*T, values map[string]any, static func(*T) bool) {
	for name, v := range m {
		if _, ok := values[name]; !ok && !static(v) {
			delete(m, name)
		}
	}
	for name, v := range values {
		if old := m[name]; old != nil && static(old) {
			continue
		}
		m[name] = v.(*T)
	}
}

// pick returns the values whose names are in names.
func pick[T any](values map[string]any, names map[string]struct{}) map[string]*T {
	out := make(map[string]*T, len(names))
	for name := range names {
		if v, ok := values[name]; ok {
			out[name] = v.(*T)
		}
	}
	return out
}

// checkReady closes Ready once listeners and clusters were accepted and
// every referenced route configuration, load assignment and secret is
// present; the
// first time listeners and clusters are both in, it arms the timeout that
// closes Ready regardless.
func (c *Client) checkReady() {
	if c.workloads && !c.workloadsReady() {
		return
	}
	if !c.envoy {
		c.markReady("workload API synced")
		return
	}
	if !c.types[state.TypeListener].applied || !c.types[state.TypeCluster].applied {
		return
	}
	if c.readyTimer == nil {
		c.readyTimer = time.AfterFunc(c.readyTimeout, func() {
			c.markReady("timeout waiting for referenced RDS/EDS resources")
		})
	}
	for _, t := range namedTypes {
		for name := range c.want[t] {
			if _, ok := c.types[t].values[name]; !ok {
				return
			}
		}
	}
	c.markReady("synced")
}

func (c *Client) markReady(why string) {
	c.readyOnce.Do(func() {
		c.log.Info("xds ready", "reason", why)
		close(c.ready)
	})
}

func (c *Client) stopReadyTimer() {
	if c.readyTimer != nil {
		c.readyTimer.Stop()
	}
}

// sortedNames returns the keys of set in order, for stable requests.
func sortedNames(set map[string]struct{}) []string {
	return slices.Sorted(maps.Keys(set))
}
