package workloadtest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/meshlet/meshlet/xds/istiopb/securitypb"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
)

// Type URLs served.
const (
	TypeAddress       = "type.googleapis.com/istio.workload.Address"
	TypeAuthorization = "type.googleapis.com/istio.security.Authorization"
)

// Server is a running control plane. Methods are safe for concurrent use.
type Server struct {
	// Addr is the host:port to point an xDS client at.
	Addr string

	addrs, authz *cachev3.LinearCache
	srv          *grpc.Server
	cancel       context.CancelFunc
	done         chan struct{}

	mu     sync.Mutex
	deltas []*discovery.DeltaDiscoveryRequest
}

// Start serves on a fresh loopback port until Stop.
func Start() (*Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{
		Addr:  lis.Addr().String(),
		addrs: cachev3.NewLinearCache(TypeAddress),
		authz: cachev3.NewLinearCache(TypeAuthorization),
		done:  make(chan struct{}),
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cachev3.Cache{TypeAddress: s.addrs, TypeAuthorization: s.authz},
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	cb := serverv3.CallbackFuncs{
		StreamDeltaRequestFunc: func(_ int64, r *discovery.DeltaDiscoveryRequest) error {
			s.mu.Lock()
			s.deltas = append(s.deltas, proto.Clone(r).(*discovery.DeltaDiscoveryRequest))
			s.mu.Unlock()
			return nil
		},
	}
	s.srv = grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(s.srv, serverv3.NewServer(ctx, mux, cb))
	go func() { defer close(s.done); _ = s.srv.Serve(lis) }()
	return s, nil
}

// Stop ends every stream and the server.
func (s *Server) Stop() {
	s.cancel()
	s.srv.Stop()
	<-s.done
}

// DeltaRequests returns a copy of the delta requests received so far.
func (s *Server) DeltaRequests() []*discovery.DeltaDiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discovery.DeltaDiscoveryRequest(nil), s.deltas...)
}

// SetWorkloads adds or replaces workloads (named by uid) in one push.
func (s *Server) SetWorkloads(ws ...*workloadpb.Workload) error {
	m := make(map[string]types.Resource, len(ws))
	for _, w := range ws {
		m[w.GetUid()] = &workloadpb.Address{Type: &workloadpb.Address_Workload{Workload: w}}
	}
	return s.addrs.UpdateResources(m, nil)
}

// SetServices adds or replaces services (named "namespace/hostname").
func (s *Server) SetServices(ss ...*workloadpb.Service) error {
	m := make(map[string]types.Resource, len(ss))
	for _, v := range ss {
		m[v.GetNamespace()+"/"+v.GetHostname()] = &workloadpb.Address{Type: &workloadpb.Address_Service{Service: v}}
	}
	return s.addrs.UpdateResources(m, nil)
}

// SetAddressRaw stores any Address under name (for invalid resources).
func (s *Server) SetAddressRaw(name string, a *workloadpb.Address) error {
	return s.addrs.UpdateResource(name, a)
}

// RemoveAddresses deletes workloads (by uid) or services (by key).
func (s *Server) RemoveAddresses(names ...string) error {
	return s.addrs.UpdateResources(nil, names)
}

// SetPolicies adds or replaces policies (named "namespace/name").
func (s *Server) SetPolicies(ps ...*securitypb.Authorization) error {
	m := make(map[string]types.Resource, len(ps))
	for _, p := range ps {
		m[p.GetNamespace()+"/"+p.GetName()] = p
	}
	return s.authz.UpdateResources(m, nil)
}

// RemovePolicies deletes policies by "namespace/name".
func (s *Server) RemovePolicies(names ...string) error {
	return s.authz.UpdateResources(nil, names)
}

// Workload is a small constructor for test workloads: uid, namespace,
// service account, node, one IP, HBONE or not.
func Workload(uid, ns, sa, node, ip string, hbone bool) *workloadpb.Workload {
	a := netip.MustParseAddr(ip)
	tp := workloadpb.TunnelProtocol_NONE
	if hbone {
		tp = workloadpb.TunnelProtocol_HBONE
	}
	return &workloadpb.Workload{
		Uid: uid, Name: uid, Namespace: ns, ServiceAccount: sa, Node: node,
		Addresses: [][]byte{a.AsSlice()}, TunnelProtocol: tp,
	}
}

// Service is a constructor for a service with one VIP and port mapping.
func Service(name, ns, vip string, port, target uint32) *workloadpb.Service {
	return &workloadpb.Service{
		Name: name, Namespace: ns, Hostname: fmt.Sprintf("%s.%s.svc.cluster.local", name, ns),
		Addresses: []*workloadpb.NetworkAddress{{Address: netip.MustParseAddr(vip).AsSlice()}},
		Ports:     []*workloadpb.Port{{ServicePort: port, TargetPort: target}},
	}
}

// DenyPrincipal is a NAMESPACE-scoped DENY policy for one principal
// ("td/ns/NS/sa/SA", Istio's form without spiffe://).
func DenyPrincipal(name, ns, principal string) *securitypb.Authorization {
	return &securitypb.Authorization{
		Name: name, Namespace: ns, Scope: securitypb.Scope_NAMESPACE, Action: securitypb.Action_DENY,
		Groups: []*securitypb.Group{{Rules: []*securitypb.Rules{{Matches: []*securitypb.Match{{
			Principals: []*securitypb.StringMatch{{MatchType: &securitypb.StringMatch_Exact{Exact: principal}}},
		}}}}}},
	}
}
