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
	// Hostname is the EDS endpoint's hostname (or the DNS name of a DNS
	// cluster's endpoint), used by auto_host_rewrite (gRFC A81). Like the
	// fields below it is rewritten in place on update.
	Hostname string

	// The fields below are replaced on update; they are read only by the
	// picker built from the same update, so they are plain fields published
	// through the picker pointer.
	Weight   uint32
	Locality state.Locality
	Priority uint32
	Health   state.HealthStatus

	active atomic.Int64
	// flags holds the health verdicts made by the proxy itself (outlier
	// ejection, active health check); any set flag makes the host
	// unhealthy for load balancing, as Envoy's FAILED_OUTLIER_CHECK and
	// FAILED_ACTIVE_HC do. They take effect at the next picker build
	// (Balancer.Rebuild).
	flags atomic.Uint32
}

// Health flags set by the proxy.
const (
	flagEjected  uint32 = 1 << iota // outlier detection
	flagHCFailed                    // active health check
)

// SetEjected marks h ejected (or not) by outlier detection and reports
// whether that changed anything. Callers then call Balancer.Rebuild.
func (h *Host) SetEjected(v bool) bool { return h.setFlag(flagEjected, v) }

// Ejected reports whether outlier detection has ejected h.
func (h *Host) Ejected() bool { return h.flags.Load()&flagEjected != 0 }

// SetHealthCheckFailed marks h failed (or passing) by active health
// checking and reports whether that changed anything.
func (h *Host) SetHealthCheckFailed(v bool) bool { return h.setFlag(flagHCFailed, v) }

// HealthCheckFailed reports whether active health checking marks h down.
func (h *Host) HealthCheckFailed() bool { return h.flags.Load()&flagHCFailed != 0 }

func (h *Host) setFlag(f uint32, v bool) bool {
	for {
		old := h.flags.Load()
		next := old &^ f
		if v {
			next = old | f
		}
		if next == old {
			return false
		}
		if h.flags.CompareAndSwap(old, next) {
			return true
		}
	}
}

// lbHealth combines the EDS health status with the proxy's own verdicts
// the way Envoy does: DRAINING stays draining (never picked), any failed
// check or ejection makes the host unhealthy, else EDS decides.
func (h *Host) lbHealth() state.HealthStatus {
	if h.Health == state.HealthDraining {
		return state.HealthDraining
	}
	if h.flags.Load() != 0 {
		return state.HealthUnhealthy
	}
	return h.Health
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
