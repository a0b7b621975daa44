package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// testCP is a go-control-plane ADS server that can be stopped and started
// again on the same port, counting the TCP connections it accepts.
type testCP struct {
	t       *testing.T
	addr    string
	accepts atomic.Int64

	mu    sync.Mutex
	gs    *grpc.Server
	nodes []string // node id on each stream's first request
}

func startTestCP(t *testing.T, snap map[resource.Type][]types.Resource, version string) *testCP {
	t.Helper()
	cp := &testCP{t: t, addr: "127.0.0.1:0"}
	cp.start(snap, version)
	t.Cleanup(cp.stop)
	return cp
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// start serves a fresh cache holding snap at version.
func (cp *testCP) start(snap map[resource.Type][]types.Resource, version string) {
	cp.t.Helper()
	c := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	s, err := cache.NewSnapshot(version, snap)
	if err != nil {
		cp.t.Fatal(err)
	}
	if err := c.SetSnapshot(context.Background(), "node-1", s); err != nil {
		cp.t.Fatal(err)
	}
	// go-control-plane copies a stream's node into every later request
	// it hands to callbacks, so only a stream's first request shows
	// what was sent.
	seen := map[int64]bool{}
	record := func(stream int64, n *corev3.Node) {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		if !seen[stream] {
			seen[stream] = true
			cp.nodes = append(cp.nodes, n.GetId())
		}
	}
	cb := server.CallbackFuncs{
		StreamRequestFunc:      func(id int64, r *discoverygrpc.DiscoveryRequest) error { record(id, r.GetNode()); return nil },
		StreamDeltaRequestFunc: func(id int64, r *discoverygrpc.DeltaDiscoveryRequest) error { record(id, r.GetNode()); return nil },
	}
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(context.Background(), c, cb))
	var lis net.Listener
	// The port may take a moment to be free again after a stop.
	for i := 0; ; i++ {
		lis, err = net.Listen("tcp", cp.addr)
		if err == nil {
			break
		}
		if i == 50 {
			cp.t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cp.addr = lis.Addr().String()
	cp.mu.Lock()
	cp.gs = gs
	cp.mu.Unlock()
	go func() { _ = gs.Serve(countingListener{lis, &cp.accepts}) }()
}

func (cp *testCP) stop() {
	cp.mu.Lock()
	gs := cp.gs
	cp.gs = nil
	cp.mu.Unlock()
	if gs != nil {
		gs.Stop()
	}
}

func (cp *testCP) firstRequestNodes() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.nodes)
}

func listeners(names ...string) map[resource.Type][]types.Resource {
	var ls []types.Resource
	for _, n := range names {
		ls = append(ls, &listenerv3.Listener{Name: n})
	}
	return map[resource.Type][]types.Resource{resource.ListenerType: ls}
}

func startTestProxy(t *testing.T, upstream, listen string) *Proxy {
	t.Helper()
	p, err := NewProxy(ProxyOptions{
		Listen: listen, Upstream: upstream,
		Backoff: Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Log:     slog.New(slog.NewTextHandler(tlogWriter{t}, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// tlogWriter sends log lines to the test log (shown on failure).
type tlogWriter struct{ t *testing.T }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func dialProxy(t *testing.T, p *Proxy) discoverygrpc.AggregatedDiscoveryServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(p.ServerURI(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return discoverygrpc.NewAggregatedDiscoveryServiceClient(cc)
}

// recvTimeout receives one message or fails the test after d.
func recvTimeout[T any](t *testing.T, recv func() (T, error), d time.Duration) T {
	t.Helper()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := recv()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("application stream: %v", r.err)
		}
		return r.v
	case <-time.After(d):
		t.Fatalf("application stream: nothing received in %v", d)
	}
	panic("unreachable")
}

func resourceNames(t *testing.T, r *discoverygrpc.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		var l listenerv3.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l.GetName())
	}
	slices.Sort(out)
	return out
}

// An application's state-of-the-world stream outlives a control plane
// restart: the proxy replays the subscription with the accepted version,
// and the new control plane's newer resources arrive on the same
// application stream without the application asking again.
func TestProxySotwSurvivesControlPlaneRestart(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "unix://" + filepath.Join(t.TempDir(), "XDS")} {
		t.Run(listen[:4], func(t *testing.T) {
			cp := startTestCP(t, listeners("l1"), "v1")
			p := startTestProxy(t, cp.addr, listen)
			ads := dialProxy(t, p)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := ads.StreamAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			node := &corev3.Node{Id: "node-1"}
			if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: resource.ListenerType}); err != nil {
				t.Fatal(err)
			}
			r := recvTimeout(t, st.Recv, 5*time.Second)
			if got := resourceNames(t, r); r.GetVersionInfo() != "v1" || !slices.Equal(got, []string{"l1"}) {
				t.Fatalf("first response: version %q names %v, want v1 [l1]", r.GetVersionInfo(), got)
			}
			if err := st.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: "v1", ResponseNonce: r.GetNonce()}); err != nil {
				t.Fatal(err)
			}

			cp.stop()
			// While the control plane is down the application stream
			// stays open: a send succeeds and nothing ends it.
			time.Sleep(150 * time.Millisecond)
			if got := p.AppStreams(); got != 1 {
				t.Fatalf("application streams open during the outage: %d, want 1", got)
			}
			cp.start(listeners("l1", "l2"), "v2")

			r = recvTimeout(t, st.Recv, 10*time.Second)
			if got := resourceNames(t, r); r.GetVersionInfo() != "v2" || !slices.Equal(got, []string{"l1", "l2"}) {
				t.Fatalf("after restart: version %q names %v, want v2 [l1 l2]", r.GetVersionInfo(), got)
			}
			// The replayed first request carried the node the
			// application sent once, on its first request.
			nodes := cp.firstRequestNodes()
			if len(nodes) != 2 || nodes[0] != "node-1" || nodes[1] != "node-1" {
				t.Errorf("node ids on first requests at the control plane: %q, want one per upstream stream", nodes)
			}
			cancel()
		})
	}
}

// Delta: the replay sends initial_resource_versions, so the restarted
// control plane sends only what the application does not have.
func TestProxyDeltaReplaysInitialVersions(t *testing.T) {
	cp := startTestCP(t, listeners("l1"), "v1")
	p := startTestProxy(t, cp.addr, "127.0.0.1:0")
	ads := dialProxy(t, p)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := ads.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	r := recvTimeout(t, st.Recv, 5*time.Second)
	if len(r.GetResources()) != 1 || r.GetResources()[0].GetName() != "l1" {
		t.Fatalf("first delta response: %v", r.GetResources())
	}
	if err := st.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resource.ListenerType, ResponseNonce: r.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	cp.stop()
	cp.start(listeners("l1", "l2"), "v2")
	r = recvTimeout(t, st.Recv, 10*time.Second)
	var names []string
	for _, res := range r.GetResources() {
		names = append(names, res.GetName())
	}
	if !slices.Equal(names, []string{"l2"}) {
		t.Fatalf("delta after restart sent %v, want only [l2] (l1 unchanged)", names)
	}
}

// Several applications, each with its own stream, share one upstream
// connection.
func TestProxyOneUpstreamConnection(t *testing.T) {
	cp := startTestCP(t, listeners("l1"), "v1")
	p := startTestProxy(t, cp.addr, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const apps = 3
	for i := range apps {
		st, err := dialProxy(t, p).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resource.ListenerType}); err != nil {
			t.Fatal(err)
		}
		if r := recvTimeout(t, st.Recv, 5*time.Second); r.GetVersionInfo() != "v1" {
			t.Fatalf("app %d: version %q", i, r.GetVersionInfo())
		}
	}
	if got := cp.accepts.Load(); got != 1 {
		t.Errorf("control plane accepted %d connections for %d application streams, want 1", got, apps)
	}
	if got := p.UpstreamStreams(); got != apps {
		t.Errorf("upstream streams %d, want %d", got, apps)
	}
}

// When the application ends its stream, the proxy ends the upstream one.
func TestProxyAppCloseEndsUpstream(t *testing.T) {
	cp := startTestCP(t, listeners("l1"), "v1")
	p := startTestProxy(t, cp.addr, "127.0.0.1:0")
	ctx, cancel := context.WithCancel(context.Background())
	st, err := dialProxy(t, p).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	recvTimeout(t, st.Recv, 5*time.Second)
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for p.AppStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("application streams still open: %d", p.AppStreams())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := st.Recv(); err == nil || err == io.EOF {
		t.Errorf("stream after cancel: %v, want a cancellation", err)
	}
}
