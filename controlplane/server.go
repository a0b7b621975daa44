package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
)

// snapshotKey is the one cache key every node maps to: the embedded control
// plane serves the same configuration to all proxies.
const snapshotKey = "all"

// servedTypes are the resource types files may hold.
var servedTypes = []string{
	resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType,
}

type allNodes struct{}

func (allNodes) ID(*core.Node) string { return snapshotKey }

// Server is an embedded ADS server. Create it with New, then Start it.
type Server struct {
	dir  string
	vars map[string]string
	log  *slog.Logger

	cache cache.SnapshotCache

	mu      sync.Mutex // guards the fields below and serializes publishing
	version int
	current map[string][]types.Resource
	lastErr error

	loadedFP string // directory fingerprint of the initial load

	cancel context.CancelFunc
	grpc   *grpc.Server
	wg     sync.WaitGroup
}

// New loads the resource files of dir (with ${NAME} placeholders replaced
// from vars) and prepares the first snapshot. dir may be empty, in which
// case resources only come from SetResources. A broken file here is an
// error: there is no last good snapshot yet.
func New(dir string, vars map[string]string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		dir:   dir,
		vars:  vars,
		log:   log.With("component", "controlplane"),
		cache: cache.NewSnapshotCache(true, allNodes{}, nil),
	}
	res := map[string][]types.Resource{}
	if dir != "" {
		// Taken before loading, so a change made while loading (or before
		// Start) is seen by the first poll.
		s.loadedFP = fingerprint(dir)
		var err error
		if res, err = loadDir(dir, vars); err != nil {
			return nil, err
		}
	}
	if err := s.publish(res); err != nil {
		return nil, err
	}
	return s, nil
}

// Start serves ADS (SotW and delta) on addr ("127.0.0.1:0" when empty) and
// starts watching the directory. It returns the bound address.
func (s *Server) Start(addr string) (net.Addr, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("controlplane: listen %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.grpc = grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(s.grpc, server.NewServer(ctx, s.cache, nil))
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.grpc.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("ADS server stopped", "err", err)
		}
	}()
	if s.dir != "" {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.watch(ctx)
		}()
	}
	s.log.Info("ADS server listening", "addr", lis.Addr().String(), "dir", s.dir)
	return lis.Addr(), nil
}

// Stop closes all streams and stops watching. It is safe to call once
// after Start.
func (s *Server) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	// Stop, not GracefulStop: ADS streams never end on their own.
	s.grpc.Stop()
	s.wg.Wait()
}

// SetResources replaces the whole resource set with res and pushes it as a
// new snapshot version. A later change to the watched files replaces it
// again with the files' content.
func (s *Server) SetResources(res ...types.Resource) error {
	byType := map[string][]types.Resource{}
	for _, r := range res {
		byType[typeURL(r)] = append(byType[typeURL(r)], r)
	}
	return s.publish(byType)
}

// Resources returns the resources of the current snapshot, grouped by type
// URL. Callers may change the returned messages only after cloning them.
func (s *Server) Resources() map[string][]types.Resource {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]types.Resource, len(s.current))
	for k, v := range s.current {
		out[k] = append([]types.Resource(nil), v...)
	}
	return out
}

// Version returns the version of the snapshot being served.
func (s *Server) Version() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strconv.Itoa(s.version)
}

// LastError returns the error of the most recent reload, nil when it
// succeeded.
func (s *Server) LastError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// publish checks res for consistency and sets it as the next snapshot
// version for every node.
func (s *Server) publish(res map[string][]types.Resource) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	version := strconv.Itoa(s.version + 1)
	// Every type gets a version even when empty, so a client subscribing
	// to a type with no resources still gets an (empty) answer.
	all := make(map[string][]types.Resource, len(res)+len(servedTypes))
	for _, t := range servedTypes {
		all[t] = nil
	}
	for t, r := range res {
		all[t] = r
	}
	res = all
	snap, err := cache.NewSnapshot(version, res)
	if err != nil {
		return fmt.Errorf("controlplane: snapshot: %w", err)
	}
	if err := snap.Consistent(); err != nil {
		return fmt.Errorf("controlplane: snapshot is not consistent: %w", err)
	}
	if err := s.cache.SetSnapshot(context.Background(), snapshotKey, snap); err != nil {
		return fmt.Errorf("controlplane: set snapshot: %w", err)
	}
	s.version++
	s.current = res
	s.log.Info("snapshot published", "version", version, "resources", count(res))
	return nil
}

func count(res map[string][]types.Resource) int {
	n := 0
	for _, v := range res {
		n += len(v)
	}
	return n
}
