package xds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/resource"
)

// Client keeps a state.Store current from one ADS control plane. Create it
// with New and call Run once.
type Client struct {
	cfg Config
	log *slog.Logger

	// decode and refs are resource.Decode and resource.References, held
	// here so a test can substitute a decoder.
	decode       decodeFunc
	refs         refsFunc
	secretRefs   func(value any) []string
	readyTimeout time.Duration
	rnd          func(int64) int64

	// typeList is typeURLs and/or workloadTypes, per Config.
	typeList []string
	// workloads and envoy say which families of types are subscribed.
	workloads, envoy bool

	// extras holds extra types registered and not yet adopted (extra.go).
	extras extraRegistry

	// The fields below are owned by the Run goroutine.
	types map[string]*typeState
	// extra holds the adopted extra types by type URL; they are in types
	// and typeList too.
	extra map[string]*extraSub
	// want holds the RouteConfiguration, ClusterLoadAssignment and Secret
	// names the current listeners and clusters reference (plus
	// Config.Secrets): the RDS, EDS and SDS subscriptions.
	want map[string]map[string]struct{}

	// extraErr is why an entry of Config.Extra was refused; Run returns it.
	extraErr error

	ready      chan struct{}
	readyOnce  sync.Once
	readyTimer *time.Timer

	mu     sync.Mutex // guards status
	status Status

	// raw keeps accepted resources' protos for ConfigDump (configdump.go).
	raw rawStore
}

// Status is what the admin page shows about the xDS connection.
type Status struct {
	// Connected is true while an ADS stream is open.
	Connected bool
	// Versions is the version_info last accepted per type URL (for delta,
	// the system_version_info of the last accepted response).
	Versions map[string]string
	// LastNACK is the error_detail message of the most recent rejected
	// response, with its type; empty if none was rejected.
	LastNACK string
	// LastError is why the most recent stream ended, if it failed.
	LastError string
}

// typeURLs in the order requests go out on a new stream: clusters before
// listeners, as Envoy does, so the clusters a listener names are known first.
// Secrets come last: they are asked for by name once something references
// them.
var typeURLs = []string{state.TypeCluster, state.TypeEndpoint, state.TypeListener, state.TypeRoute, state.TypeSecret}

// namedTypes are the types subscribed by resource name (not wildcard),
// following what listeners and clusters reference.
var namedTypes = []string{state.TypeRoute, state.TypeEndpoint, state.TypeSecret}

// New returns a client for cfg. It does not connect until Run.
func New(cfg Config) *Client {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	c := &Client{
		cfg:          cfg,
		log:          log.With("component", "xds", "server", cfg.Address),
		decode:       resource.Decode,
		refs:         resource.References,
		secretRefs:   resource.SecretReferences,
		readyTimeout: defaultReadyTimeout,
		rnd:          randInt63n,
		types:        map[string]*typeState{},
		want: map[string]map[string]struct{}{
			state.TypeRoute:    {},
			state.TypeEndpoint: {},
			state.TypeSecret:   {},
		},
		ready:  make(chan struct{}),
		status: Status{Versions: map[string]string{}},
		extra:  map[string]*extraSub{},
		extras: extraRegistry{seen: map[string]bool{}, wake: make(chan struct{}, 1)},
	}
	c.workloads, c.envoy = workloadMode(cfg)
	if c.envoy {
		c.typeList = append(c.typeList, typeURLs...)
	}
	if c.workloads {
		c.typeList = append(c.typeList, workloadTypes...)
	}
	for _, t := range c.typeList {
		c.types[t] = newTypeState(t)
	}
	for _, x := range cfg.Extra {
		// A bad entry is reported by Run, which can return an error.
		if err := c.Watch(x); err != nil {
			c.extraErr = errors.Join(c.extraErr, err)
		}
	}
	return c
}

// Ready is closed once listeners and clusters have each been accepted once
// and every route configuration and load assignment they reference has
// arrived, or readyTimeout after listeners and clusters arrived, whichever
// is first.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Status returns a copy of the connection status.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	s.Versions = make(map[string]string, len(c.status.Versions))
	for k, v := range c.status.Versions {
		s.Versions[k] = v
	}
	return s
}

// Run connects, keeps the store current and reconnects with backoff until
// ctx is done; it then returns nil. While disconnected the store keeps the
// last accepted configuration. It returns an error only for an unusable
// Config.
func (c *Client) Run(ctx context.Context) error {
	if c.cfg.Address == "" {
		return errors.New("xds: config: address is required")
	}
	if c.cfg.Store == nil {
		return errors.New("xds: config: store is required")
	}
	node, err := c.cfg.Node.proto()
	if err != nil {
		return fmt.Errorf("xds: config: %w", err)
	}
	if c.extraErr != nil {
		return c.extraErr
	}
	defer c.stopReadyTimer()

	// Static listeners and clusters may reference RDS/EDS resources served
	// over ADS; subscribe to those from the first stream on.
	c.refreshWant(c.cfg.Store.Load())

	attempt := 0
	for {
		start := time.Now()
		gotResponse, err := c.runStream(ctx, node)
		c.setConnected(false)
		if ctx.Err() != nil {
			return nil
		}
		if gotResponse || time.Since(start) > stableStream {
			attempt = 0
		}
		wait := c.cfg.Backoff.delay(attempt, c.rnd)
		attempt++
		c.mu.Lock()
		c.status.LastError = fmt.Sprint(err)
		c.mu.Unlock()
		c.log.Warn("xds stream ended; reconnecting", "error", err, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// runStream dials and runs one ADS stream until it fails or ctx is done.
// Each attempt dials afresh so that reconnection timing is ours alone,
// rather than also subject to the gRPC channel's own reconnect backoff.
func (c *Client) runStream(ctx context.Context, node *core.Node) (gotResponse bool, err error) {
	opts := c.cfg.DialOptions
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(c.cfg.Address, opts...)
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", c.cfg.Address, err)
	}
	defer conn.Close()
	ads := discovery.NewAggregatedDiscoveryServiceClient(conn)
	if c.useDelta() {
		return c.runDelta(ctx, ads, node)
	}
	return c.runSotW(ctx, ads, node)
}

func (c *Client) setConnected(v bool) {
	c.mu.Lock()
	c.status.Connected = v
	c.mu.Unlock()
}

func (c *Client) recordNACK(typeURL string, err error) {
	c.mu.Lock()
	c.status.LastNACK = fmt.Sprintf("%s: %v", typeURL, err)
	c.mu.Unlock()
}

// serve handles the stream's responses one at a time on the Run goroutine
// until ctx ends, the stream fails (the error is wrapped with what) or
// handle fails. got reports whether any response arrived, which resets the
// reconnect backoff.
// wake, when signalled, makes serve call onWake (Watch registered an extra
// type to subscribe on this stream).
func serve[T any](ctx context.Context, wg *sync.WaitGroup, recv func() (T, error), handle func(T) error, onWake func() error, wake <-chan struct{}, what string) (got bool, err error) {
	responses, errc := pump(ctx, wg, recv)
	for {
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case err := <-errc:
			return got, fmt.Errorf("%s: %w", what, err)
		case <-wake:
			if err := onWake(); err != nil {
				return got, err
			}
		case resp := <-responses:
			got = true
			if err := handle(resp); err != nil {
				return got, err
			}
		}
	}
}

// pump runs recv on its own goroutine so the stream's owner can select on
// responses, stream failure and cancellation together. The goroutine ends
// when recv fails, which it does once the stream's context is cancelled;
// wg lets the owner wait for that.
func pump[T any](ctx context.Context, wg *sync.WaitGroup, recv func() (T, error)) (<-chan T, <-chan error) {
	out := make(chan T)
	errc := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			r, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case out <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, errc
}
