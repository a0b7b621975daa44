package xds

import (
	"context"
	"errors"
	"fmt"
	"github.com/meshlet/meshlet/xds/resource"
	"maps"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// deltaStream is one DeltaAggregatedResources stream.
type deltaStream struct {
	c      *Client
	stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	node   *core.Node
	// sent is the set of RDS/EDS names subscribed on this stream so far.
	sent map[string]map[string]struct{}
}

func (c *Client) runDelta(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient, node *core.Node) (gotResponse bool, err error) {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	stream, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("open delta ADS stream: %w", err)
	}
	c.setConnected(true)
	s := &deltaStream{c: c, stream: stream, node: node, sent: map[string]map[string]struct{}{}}
	c.adoptExtras()
	for _, t := range c.typeList {
		if err := s.start(t); err != nil {
			return false, err
		}
	}

	return serve(ctx, &wg, stream.Recv, s.handle, s.subscribeExtras, c.extras.wake, "delta ADS stream")
}

// subscribeExtras subscribes extra types registered while the stream runs.
func (s *deltaStream) subscribeExtras() error {
	for _, t := range s.c.adoptExtras() {
		if err := s.start(t); err != nil {
			return err
		}
	}
	return nil
}

// start sends the first request of a type on this stream. It reports the
// versions of what the client already holds (initial_resource_versions) so
// that after a reconnect the server sends only what changed and removals
// of what went away meanwhile. LDS and CDS subscribe with no names, which
// every server treats as the wildcard.
func (s *deltaStream) start(t string) error {
	ts := s.c.types[t]
	req := &discovery.DeltaDiscoveryRequest{TypeUrl: t}
	if w, named := s.c.want[t]; named {
		if len(w) == 0 {
			// An empty first request would be read as a wildcard
			// subscription; ask when there is something to ask for.
			return nil
		}
		req.ResourceNamesSubscribe = sortedNames(w)
		s.sent[t] = maps.Clone(w)
	} else if x := s.c.extra[t]; x != nil {
		req.ResourceNamesSubscribe = x.Names
	}
	if len(ts.versions) > 0 {
		req.InitialResourceVersions = maps.Clone(ts.versions)
	}
	return s.send(req)
}

func (s *deltaStream) send(req *discovery.DeltaDiscoveryRequest) error {
	if s.node != nil {
		req.Node, s.node = s.node, nil
	}
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("delta ADS send %s: %w", req.GetTypeUrl(), err)
	}
	return nil
}

// handle validates one response, then either NACKs it or applies it,
// updates the RDS/EDS subscriptions it changed, and ACKs it.
func (s *deltaStream) handle(resp *discovery.DeltaDiscoveryResponse) error {
	c := s.c
	t := resp.GetTypeUrl()
	ts, ok := c.types[t]
	if !ok {
		c.log.Warn("xds: ignoring delta response of unrequested type", "type", t)
		return nil
	}

	type update struct {
		value   any
		version string
		// unnamed: an extra resource keyed by position, not by a name
		// the server knows; it is never reported in
		// initial_resource_versions.
		unnamed bool
	}
	snap := c.cfg.Store.Load()
	updates := make(map[string]update, len(resp.GetResources()))
	var errs []error
	for i, r := range resp.GetResources() {
		if r.GetResource() == nil {
			// A resource without a body only refreshes its TTL.
			continue
		}
		name, v, err := c.decodeOne(t, r.GetResource())
		if name == "" {
			name = r.GetName()
		}
		if !c.subscribed(t, name) {
			continue
		}
		unnamed := c.extra[t] != nil && name == ""
		if unnamed {
			name = extraName(name, i)
		}
		if err == nil && r.GetName() != "" && r.GetName() != name {
			err = fmt.Errorf("resources[%d]: name %q does not match the resource's own name %q", i, r.GetName(), name)
		}
		if errors.Is(err, resource.ErrNotForProxy) {
			c.log.Debug("xds: skipping resource", "type", t, "name", name, "reason", err)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := updates[name]; dup {
			errs = append(errs, fmt.Errorf("resources[%d]: duplicate resource name %q", i, name))
			delete(updates, name) // neither copy is trustworthy
			continue
		}
		if isStatic(snap, t, name) {
			c.log.Debug("xds: ignoring resource shadowing a static one", "type", t, "name", name)
			continue
		}
		updates[name] = update{v, r.GetVersion(), unnamed}
	}
	err := joinErrors(errs)
	if err == nil && c.extra[t] != nil {
		next := maps.Clone(ts.values)
		for name, u := range updates {
			next[name] = u.value
		}
		for _, name := range resp.GetRemovedResources() {
			delete(next, name)
		}
		err = c.applyExtra(t, next)
	}
	if err != nil && c.extra[t] != nil {
		// An extra type's watcher takes the whole set or nothing.
		c.recordNACK(t, err)
		c.log.Warn("xds rejected", "type", t, "version", resp.GetSystemVersionInfo(), "error", err)
		return s.nack(t, resp, err)
	}
	if err != nil {
		// As in Envoy and gRPC: the valid resources and the removals are
		// applied; each invalid one keeps its last accepted value; the
		// response is NACKed naming them.
		c.recordNACK(t, err)
		c.log.Warn("xds rejected", "type", t, "version", resp.GetSystemVersionInfo(), "error", err)
	}

	for name, u := range updates {
		ts.values[name] = u.value
		if u.unnamed {
			delete(ts.versions, name)
		} else {
			ts.versions[name] = u.version
		}
	}
	for _, name := range resp.GetRemovedResources() {
		delete(ts.values, name)
		delete(ts.versions, name)
	}
	if err == nil {
		ts.version = resp.GetSystemVersionInfo()
	}
	ts.applied = true
	c.commit(t)

	for _, other := range namedTypes {
		if err := s.resubscribe(other); err != nil {
			return err
		}
	}
	if err != nil {
		return s.nack(t, resp, err)
	}
	return s.send(&discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()})
}

// nack rejects resp, naming what is invalid.
func (s *deltaStream) nack(t string, resp *discovery.DeltaDiscoveryResponse, err error) error {
	return s.send(&discovery.DeltaDiscoveryRequest{
		TypeUrl:       t,
		ResponseNonce: resp.GetNonce(),
		ErrorDetail:   &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: err.Error()},
	})
}

// resubscribe sends the difference between the wanted and the subscribed
// names of an RDS/EDS type.
func (s *deltaStream) resubscribe(t string) error {
	if s.c.types[t] == nil {
		return nil // not subscribed in this mode (Workload API only)
	}
	want, sent := s.c.want[t], s.sent[t]
	var sub, unsub []string
	for _, n := range sortedNames(want) {
		if _, ok := sent[n]; !ok {
			sub = append(sub, n)
		}
	}
	for _, n := range sortedNames(sent) {
		if _, ok := want[n]; !ok {
			unsub = append(unsub, n)
		}
	}
	if len(sub) == 0 && len(unsub) == 0 {
		return nil
	}
	req := &discovery.DeltaDiscoveryRequest{
		TypeUrl:                  t,
		ResourceNamesSubscribe:   sub,
		ResourceNamesUnsubscribe: unsub,
	}
	if _, started := s.sent[t]; !started {
		// First request of this type on the stream: report held versions,
		// as start does.
		held := map[string]string{}
		for n, v := range s.c.types[t].versions {
			if _, ok := want[n]; ok {
				held[n] = v
			}
		}
		if len(held) > 0 {
			req.InitialResourceVersions = held
		}
	}
	s.sent[t] = maps.Clone(want)
	return s.send(req)
}
