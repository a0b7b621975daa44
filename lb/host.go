package lb

import (
	"errors"
	"sync/atomic"

	"github.com/meshlet/meshlet/state"
)

// ErrNoHealthyUpstream is returned by Pick when the cluster has no endpoint
// that can take traffic (Envoy response flag UH).
var ErrNoHealthyUpstream = errors.New("no healthy upstream")

// Host is one endpoint of a cluster. The same *Host is reused across
// endpoint updates as long as its address stays, so counters survive.
type Host struct {
	// Address is "ip:port".
	Address string

	// The fields below are replaced on update; they are read only by the
	// picker built from the same update, so they are plain fields published
	// through the picker pointer.
	Weight   uint32
	Locality state.Locality
	Priority uint32
	Health   state.HealthStatus

	active atomic.Int64
}

// Acquire marks one more active request on h (least-request input). Callers
// pair it with Release when the request or connection ends.
func (h *Host) Acquire() { h.active.Add(1) }

// Release ends a request started with Acquire.
func (h *Host) Release() { h.active.Add(-1) }

// Active returns the number of requests in flight to h.
func (h *Host) Active() int64 { return h.active.Load() }

// PickInfo carries per-request inputs to Pick. The zero value is valid.
type PickInfo struct {
	// Hash is the request hash from the route's hash_policy (ring hash and
	// maglev). When HasHash is false those policies pick a random host.
	Hash    uint64
	HasHash bool
	// Exclude, when non-nil, is consulted to avoid hosts (retry predicates).
	Exclude func(*Host) bool
}
