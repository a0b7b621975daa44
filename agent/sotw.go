package agent

import (
	"slices"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

type (
	sotwReq  = discoverygrpc.DiscoveryRequest
	sotwResp = discoverygrpc.DiscoveryResponse
)

// sotwState remembers, per type, the application's latest
// state-of-the-world request: its resource names and the version it last
// accepted are exactly what a new upstream stream needs to resume.
type sotwState struct {
	mu    sync.Mutex
	node  *corev3.Node
	order []string // type URLs in the order the application asked for them
	last  map[string]*sotwReq
	// wildcard types were first requested with no names (LDS, CDS): an
	// empty list there means "everything", elsewhere "nothing".
	wildcard map[string]bool

	// Per upstream stream, reset by replay.
	nodeSent bool
	nonce    map[string]string   // latest response nonce per type
	sent     map[string][]string // names last sent per type
}

func newSotwState() *sotwState {
	return &sotwState{
		last: map[string]*sotwReq{}, wildcard: map[string]bool{},
		nonce: map[string]string{}, sent: map[string][]string{},
	}
}

func (s *sotwState) request(r *sotwReq) *sotwReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.GetNode() != nil {
		s.node = r.GetNode()
	}
	t := r.GetTypeUrl()
	if _, ok := s.last[t]; !ok {
		s.order = append(s.order, t)
		s.wildcard[t] = len(r.GetResourceNames()) == 0
	}
	s.last[t] = r
	out := r
	if n := r.GetResponseNonce(); n != "" && n != s.nonce[t] {
		// The application answers a response from an earlier upstream
		// stream (or an outdated one). The control plane would ignore
		// it; what matters is a change of names, which goes as a fresh
		// request.
		if slices.Equal(r.GetResourceNames(), s.sent[t]) {
			return nil
		}
		out = proto.Clone(r).(*sotwReq)
		out.ResponseNonce = ""
		out.ErrorDetail = nil
	}
	if !s.nodeSent {
		if out == r {
			out = proto.Clone(r).(*sotwReq)
		}
		out.Node = s.node
		s.nodeSent = true
	}
	s.sent[t] = slices.Clone(r.GetResourceNames())
	return out
}

func (s *sotwState) response(r *sotwResp) {
	s.mu.Lock()
	s.nonce[r.GetTypeUrl()] = r.GetNonce()
	s.mu.Unlock()
}

func (s *sotwState) replay() []*sotwReq {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodeSent = false
	clear(s.nonce)
	clear(s.sent)
	var out []*sotwReq
	for _, t := range s.order {
		last := s.last[t]
		if len(last.GetResourceNames()) == 0 && !s.wildcard[t] {
			continue // unsubscribed from everything of this type
		}
		r := &sotwReq{
			TypeUrl:       t,
			VersionInfo:   last.GetVersionInfo(),
			ResourceNames: slices.Clone(last.GetResourceNames()),
		}
		if !s.nodeSent {
			r.Node = s.node
			s.nodeSent = true
		}
		s.sent[t] = slices.Clone(r.ResourceNames)
		out = append(out, r)
	}
	return out
}
