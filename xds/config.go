package xds

import (
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/meshlet/meshlet/state"
)

// Config configures a Client. Address and Store are required.
type Config struct {
	// Address is the control plane's host:port (any grpc.NewClient target).
	Address string
	Node    Node
	// Delta selects DeltaAggregatedResources instead of the
	// state-of-the-world StreamAggregatedResources.
	Delta bool
	Store *state.Store
	// Log defaults to slog.Default().
	Log *slog.Logger
	// DialOptions default to insecure transport credentials.
	DialOptions []grpc.DialOption
	Backoff     Backoff
	// Secrets are SDS secret names to subscribe to over ADS even when no
	// listener or cluster references them, e.g. Istio's "default" and
	// "ROOTCA" when the workload identity comes from the control plane.
	Secrets []string
	// Routes are RDS route configuration names to subscribe to even when
	// no listener references them: an embedding application routes its
	// own requests with them (the module's root package).
	Routes []string
	// Workloads also subscribes to the Istio Workload API
	// (istio.workload.Address, istio.security.Authorization) and keeps
	// Snapshot.Ambient current. Istio serves these over delta xDS only,
	// so Workloads makes the client use delta whatever Delta says.
	Workloads bool
	// WorkloadsOnly subscribes to the Workload API types and nothing else,
	// as ztunnel does; Ready then waits for those two types. A node ID of
	// type ztunnel ("ztunnel~...") implies it.
	WorkloadsOnly bool
	// Extra are resource types subscribed on the same stream for other
	// packages (extra.go); Client.Watch adds more later.
	Extra []ExtraType
}

// Backoff bounds the delay between connection attempts. Zero fields take
// the defaults (100ms and 10s).
type Backoff struct {
	Base, Max time.Duration
}

const (
	defaultBackoffBase = 100 * time.Millisecond
	defaultBackoffMax  = 10 * time.Second
	// stableStream is how long a stream must stay up for the next failure
	// to start the backoff over, even if it never delivered a response.
	stableStream = 30 * time.Second
	// defaultReadyTimeout bounds how long Ready waits for referenced
	// RDS/EDS resources once listeners and clusters have arrived: a control
	// plane may never send a name that does not exist, and the proxy must
	// not stay unready for that.
	defaultReadyTimeout = 10 * time.Second
)
