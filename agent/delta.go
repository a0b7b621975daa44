package agent

import (
	"maps"
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

type (
	deltaReq  = discoverygrpc.DeltaDiscoveryRequest
	deltaResp = discoverygrpc.DeltaDiscoveryResponse
)

// deltaSub is one type's subscription on a delta stream: the names asked
// for and the versions the application holds, which become
// initial_resource_versions on a new upstream stream so the control plane
// sends only what changed.
type deltaSub struct {
	names    map[string]bool
	wildcard bool
	versions map[string]string
}

type deltaState struct {
	mu       sync.Mutex
	node     *corev3.Node
	order    []string
	subs     map[string]*deltaSub
	nodeSent bool // per upstream stream
}

func newDeltaState() *deltaState { return &deltaState{subs: map[string]*deltaSub{}} }

func (s *deltaState) sub(t string) (*deltaSub, bool) {
	if d, ok := s.subs[t]; ok {
		return d, false
	}
	d := &deltaSub{names: map[string]bool{}, versions: map[string]string{}}
	s.subs[t] = d
	s.order = append(s.order, t)
	return d, true
}

func (s *deltaState) request(r *deltaReq) *deltaReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.GetNode() != nil {
		s.node = r.GetNode()
	}
	d, first := s.sub(r.GetTypeUrl())
	// A first request with no names is the legacy wildcard subscription.
	if first && len(r.GetResourceNamesSubscribe()) == 0 {
		d.wildcard = true
	}
	for _, n := range r.GetResourceNamesSubscribe() {
		if n == "*" {
			d.wildcard = true
		} else {
			d.names[n] = true
		}
	}
	for _, n := range r.GetResourceNamesUnsubscribe() {
		if n == "*" {
			d.wildcard = false
		} else {
			delete(d.names, n)
			delete(d.versions, n)
		}
	}
	maps.Copy(d.versions, r.GetInitialResourceVersions())
	if s.nodeSent {
		return r
	}
	out := proto.Clone(r).(*deltaReq)
	out.Node = s.node
	s.nodeSent = true
	return out
}

func (s *deltaState) response(r *deltaResp) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, _ := s.sub(r.GetTypeUrl())
	for _, res := range r.GetResources() {
		d.versions[res.GetName()] = res.GetVersion()
	}
	for _, n := range r.GetRemovedResources() {
		delete(d.versions, n)
	}
}

func (s *deltaState) replay() []*deltaReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodeSent = false
	var out []*deltaReq
	for _, t := range s.order {
		d := s.subs[t]
		names := slices.Sorted(maps.Keys(d.names))
		if d.wildcard {
			names = append(names, "*")
		}
		if len(names) == 0 {
			// An empty first request would mean wildcard: nothing is
			// subscribed, so nothing is sent.
			continue
		}
		r := &deltaReq{
			TypeUrl:                 t,
			ResourceNamesSubscribe:  names,
			InitialResourceVersions: maps.Clone(d.versions),
		}
		if !s.nodeSent {
			r.Node = s.node
			s.nodeSent = true
		}
		out = append(out, r)
	}
	return out
}
