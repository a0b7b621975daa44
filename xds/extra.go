package xds

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

// ExtraType is a resource type the client subscribes to on behalf of
// another package, over the same ADS stream as everything else: Istio's
// NameTable (NDS) for the DNS proxy, for instance. The client does not
// decode or store it; it hands the resources to Watcher and keeps the
// protocol bookkeeping (versions, nonces, ACK/NACK, re-subscription after
// a reconnect) exactly as for the core types.
type ExtraType struct {
	// TypeURL is the resource type, e.g.
	// "type.googleapis.com/istio.networking.nds.v1.NameTable".
	TypeURL string
	// Names are the resources to subscribe to; none subscribes to the
	// wildcard (every resource of the type the server has for this node).
	Names []string
	// Name, if set, returns a resource's name, which a state-of-the-world
	// response does not carry beside the resource; an error rejects the
	// response. With it, a SotW response updates the resources it names
	// and keeps the others, as the protocol has it for every type but
	// Listener and Cluster, and Names filters what is handed on. Without
	// it, the resources of a SotW response are keyed "#N" by position and
	// each response is taken as the whole set: nothing else can tell which
	// held resource a nameless one replaces. Istio's NameTable, one
	// nameless resource sent whole on every push, needs no Name.
	Name func(*anypb.Any) (string, error)
	// Transport says which ADS variants the control plane serves the type
	// on. A type the client's stream cannot carry is refused at
	// registration rather than silently never arriving.
	Transport Transport
	// Watcher receives the accepted resources.
	Watcher ExtraWatcher
}

// Transport is the set of ADS variants a resource type is served on.
type Transport int

const (
	// AnyTransport: state-of-the-world and delta.
	AnyTransport Transport = iota
	// SotWOnly: StreamAggregatedResources only.
	SotWOnly
	// DeltaOnly: DeltaAggregatedResources only.
	DeltaOnly
)

// ExtraWatcher is told about an extra type's resources.
type ExtraWatcher interface {
	// Apply receives every resource of the type the client would hold
	// after a response, keyed by name (not only the changed ones). It runs
	// on the client's goroutine, one call at a time, before the response
	// is acknowledged, so it should only validate and hand the resources
	// on. A non-nil error rejects the response: it is NACKed with the
	// error's text as error_detail, and the client keeps the resources of
	// the last accepted response (Apply is not called again for them).
	//
	// Resources without a name (see ExtraType.Name; delta responses name
	// every resource) are keyed "#N", N being their position in the
	// response.
	Apply(resources map[string]*anypb.Any) error
}

// ExtraFunc adapts a function to ExtraWatcher.
type ExtraFunc func(resources map[string]*anypb.Any) error

// Apply calls f.
func (f ExtraFunc) Apply(resources map[string]*anypb.Any) error { return f(resources) }

// extraSub is a registered ExtraType, owned by the Run goroutine once
// adopted.
type extraSub struct {
	ExtraType
	// names is Names as a set; nil for the wildcard.
	names map[string]struct{}
}

// extraRegistry holds extra types registered (by Config.Extra or Watch)
// and not yet adopted by the Run goroutine, which may be running: Watch is
// safe to call at any time.
type extraRegistry struct {
	mu      sync.Mutex
	seen    map[string]bool // type URLs registered so far
	pending []*extraSub
	// wake tells a running stream to adopt pending types; capacity one,
	// so a Watch never blocks.
	wake chan struct{}
}

// Watch subscribes to an extra resource type. It may be called before or
// while Run runs: a running stream subscribes at once, later streams from
// their start. It fails for a type URL already subscribed (core or extra),
// a missing TypeURL or Watcher, or a Transport the client's stream variant
// does not carry.
func (c *Client) Watch(x ExtraType) error {
	if err := c.checkExtra(x); err != nil {
		return err
	}
	c.extras.mu.Lock()
	defer c.extras.mu.Unlock()
	if c.extras.seen[x.TypeURL] {
		return fmt.Errorf("xds: extra type %s: already subscribed", x.TypeURL)
	}
	c.extras.seen[x.TypeURL] = true
	sub := &extraSub{ExtraType: x}
	sub.Names = slices.Clone(x.Names)
	if len(x.Names) > 0 {
		sub.names = map[string]struct{}{}
		for _, n := range x.Names {
			sub.names[n] = struct{}{}
		}
	}
	c.extras.pending = append(c.extras.pending, sub)
	select {
	case c.extras.wake <- struct{}{}:
	default:
	}
	return nil
}

// checkExtra validates x against the client's configuration.
func (c *Client) checkExtra(x ExtraType) error {
	switch {
	case x.TypeURL == "":
		return errors.New("xds: extra type: type URL is required")
	case x.Watcher == nil:
		return fmt.Errorf("xds: extra type %s: watcher is required", x.TypeURL)
	case slices.Contains(typeURLs, x.TypeURL) || slices.Contains(workloadTypes, x.TypeURL):
		return fmt.Errorf("xds: extra type %s: the client subscribes to it itself", x.TypeURL)
	}
	delta := c.useDelta()
	if x.Transport == DeltaOnly && !delta {
		return fmt.Errorf("xds: extra type %s: served over delta xDS only, but the client uses state-of-the-world (set Delta)", x.TypeURL)
	}
	if x.Transport == SotWOnly && delta {
		return fmt.Errorf("xds: extra type %s: served over state-of-the-world xDS only, but the client uses delta", x.TypeURL)
	}
	return nil
}

// useDelta reports whether streams use DeltaAggregatedResources: when
// asked, and always for the Workload API, which Istio serves over delta
// only.
func (c *Client) useDelta() bool { return c.cfg.Delta || c.workloads }

// adoptExtras moves pending extra types into the Run goroutine's tables
// and returns them, so the caller can subscribe them on its stream.
func (c *Client) adoptExtras() []string {
	c.extras.mu.Lock()
	pending := c.extras.pending
	c.extras.pending = nil
	c.extras.mu.Unlock()
	var added []string
	for _, x := range pending {
		c.extra[x.TypeURL] = x
		c.types[x.TypeURL] = newTypeState(x.TypeURL)
		c.typeList = append(c.typeList, x.TypeURL)
		added = append(added, x.TypeURL)
	}
	return added
}

// extraName is the key of an extra resource: the name decoded or given by
// the server, else its position in the response.
func extraName(name string, i int) string {
	if name != "" {
		return name
	}
	return fmt.Sprintf("#%d", i)
}

// applyExtra offers the would-be accepted set of an extra type to its
// watcher; the caller NACKs on error and commits otherwise. It is a no-op
// for core types.
func (c *Client) applyExtra(typeURL string, next map[string]any) error {
	x := c.extra[typeURL]
	if x == nil {
		return nil
	}
	res := make(map[string]*anypb.Any, len(next))
	for name, v := range next {
		res[name] = v.(*anypb.Any)
	}
	if err := x.Watcher.Apply(res); err != nil {
		return fmt.Errorf("%s: %w", typeURL, err)
	}
	return nil
}

// sotwNext is the set a SotW response of typeURL leaves the client with:
// the response itself for full-state types, else the response merged over
// what is held.
func (c *Client) sotwNext(typeURL string, values map[string]any) map[string]any {
	if c.fullState(typeURL) {
		return values
	}
	next := maps.Clone(c.types[typeURL].values)
	maps.Copy(next, values)
	return next
}

// fullState reports whether a SotW response of this type lists every
// resource, so that a missing one has been removed: Listener and Cluster,
// as the protocol says, and extra types whose resources cannot be named
// (ExtraType.Name). For RDS and EDS a resource goes away when nothing
// references it any more.
func (c *Client) fullState(typeURL string) bool {
	if x := c.extra[typeURL]; x != nil {
		return x.Name == nil
	}
	return typeURL == state.TypeListener || typeURL == state.TypeCluster
}
