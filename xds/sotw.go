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

// sotwStream is one StreamAggregatedResources stream.
type sotwStream struct {
	c      *Client
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *core.Node
	// nonce is the last response nonce per type on this stream; requests
	// echo it so the server can tell which response they answer.
	nonce map[string]string
	// sent is the resource_names last sent per RDS/EDS type; a type absent
	// from it has not been requested on this stream yet.
	sent map[string]map[string]struct{}
}

func (c *Client) runSotW(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient, node *core.Node) (gotResponse bool, err error) {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	stream, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return false, fmt.Errorf("open ADS stream: %w", err)
	}
	c.setConnected(true)
	s := &sotwStream{c: c, stream: stream, node: node, nonce: map[string]string{}, sent: map[string]map[string]struct{}{}}
	c.adoptExtras()
	// Requests carry the last accepted version, as Envoy's do, so a server
	// may skip resending what this client already holds.
	for _, t := range c.typeList {
		if _, named := c.want[t]; named && len(c.want[t]) == 0 {
			continue // nothing to ask for yet
		}
		if err := s.send(t, nil); err != nil {
			return false, err
		}
	}

	return serve(ctx, &wg, stream.Recv, s.handle, s.subscribeExtras, c.extras.wake, "ADS stream")
}

// subscribeExtras subscribes extra types registered while the stream runs.
func (s *sotwStream) subscribeExtras() error {
	for _, t := range s.c.adoptExtras() {
		if err := s.send(t, nil); err != nil {
			return err
		}
	}
	return nil
}

// send sends a request for typeURL with the current subscription, the last
// accepted version and the last nonce; nack, when set, makes it a NACK.
func (s *sotwStream) send(typeURL string, nack error) error {
	req := &discovery.DiscoveryRequest{
		TypeUrl:       typeURL,
		VersionInfo:   s.c.types[typeURL].version,
		ResponseNonce: s.nonce[typeURL],
	}
	if w, named := s.c.want[typeURL]; named {
		req.ResourceNames = sortedNames(w)
		s.sent[typeURL] = maps.Clone(w)
	} else if x := s.c.extra[typeURL]; x != nil {
		req.ResourceNames = x.Names
	}
	if nack != nil {
		req.ErrorDetail = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: nack.Error()}
	}
	// The node goes on the first request of a stream only; servers keep it.
	if s.node != nil {
		req.Node, s.node = s.node, nil
	}
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("ADS send %s: %w", typeURL, err)
	}
	return nil
}

// handle validates one response, applies what is valid, asks for any
// RDS/EDS names it made relevant, and ACKs it, or NACKs it naming what is
// invalid. As in Envoy and gRPC, a NACK does not throw the valid resources
// away: they are applied, and each invalid one keeps its last accepted
// value (or stays absent); the type's version stays the last accepted one.
func (s *sotwStream) handle(resp *discovery.DiscoveryResponse) error {
	c := s.c
	t := resp.GetTypeUrl()
	ts, ok := c.types[t]
	if !ok {
		c.log.Warn("xds: ignoring response of unrequested type", "type", t)
		return nil
	}
	s.nonce[t] = resp.GetNonce()

	values, failed, err := s.decode(t, resp)
	var next map[string]any
	partial := false
	switch {
	case err == nil:
		next = c.sotwNext(t, values)
		err = c.applyExtra(t, next)
	case c.extra[t] == nil && failed != nil:
		partial = true
		// Partial: the valid ones, and the last good value of each
		// invalid one (a full-state type would otherwise drop it).
		next = c.sotwNext(t, values)
		for name := range failed {
			if old, ok := ts.values[name]; ok {
				next[name] = old
			} else {
				delete(next, name)
			}
		}
	}
	if err != nil {
		c.recordNACK(t, err)
		c.log.Warn("xds rejected", "type", t, "version", resp.GetVersionInfo(), "error", err)
		if partial {
			ts.values = next
			ts.applied = true
			c.commit(t)
			if err := s.subscribeReferenced(t); err != nil {
				return err
			}
		}
		return s.send(t, err)
	}
	ts.values = next
	ts.version = resp.GetVersionInfo()
	ts.applied = true
	c.commit(t)
	if err := s.subscribeReferenced(t); err != nil {
		return err
	}
	return s.send(t, nil)
}

// subscribeReferenced asks for the RDS/EDS/SDS names that applying a
// response of type t made relevant: new references first, so the server
// learns of them no later than of the ACK that implies them.
func (s *sotwStream) subscribeReferenced(t string) error {
	c := s.c
	for _, other := range namedTypes {
		if other == t {
			continue
		}
		sent, requested := s.sent[other]
		if !requested && len(c.want[other]) == 0 {
			continue
		}
		if !maps.Equal(sent, c.want[other]) {
			if err := s.send(other, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// decode decodes every resource of a response. Any invalid one rejects the
// whole response. Resources named like a static one, and RDS/EDS resources
// not subscribed to, are skipped.
// decode decodes a response's resources of type t. Besides the valid
// ones it returns the names of the invalid ones; failed is nil when an
// invalid resource could not even be named (then nothing of the response
// can be applied safely: a full-state type would drop that resource).
func (s *sotwStream) decode(t string, resp *discovery.DiscoveryResponse) (values map[string]any, failed map[string]struct{}, err error) {
	c := s.c
	snap := c.cfg.Store.Load()
	values = make(map[string]any, len(resp.GetResources()))
	failed = map[string]struct{}{}
	var errs []error
	for i, raw := range resp.GetResources() {
		name, v, err := c.decodeOne(t, raw)
		if name != "" && !c.subscribed(t, name) {
			continue
		}
		if c.extra[t] != nil {
			name = extraName(name, i)
		}
		if errors.Is(err, resource.ErrNotForProxy) {
			c.log.Debug("xds: skipping resource", "type", t, "name", name, "reason", err)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			if name == "" {
				failed = nil
			} else if failed != nil {
				failed[name] = struct{}{}
			}
			continue
		}
		if _, dup := values[name]; dup {
			errs = append(errs, fmt.Errorf("resources[%d]: duplicate resource name %q", i, name))
			// Neither copy is trustworthy.
			delete(values, name)
			if failed != nil {
				failed[name] = struct{}{}
			}
			continue
		}
		if isStatic(snap, t, name) {
			c.log.Debug("xds: ignoring resource shadowing a static one", "type", t, "name", name)
			continue
		}
		values[name] = v
	}
	if len(errs) == 0 {
		failed = nil
	}
	return values, failed, joinErrors(errs)
}
