package policy

import (
	"strconv"
	"strings"
	"time"

	"github.com/meshlet/meshlet/state"
)

// Request headers that control header_delay / header_abort faults and that
// scope faults to downstream nodes (Envoy's names).
const (
	HeaderFaultDelay               = "x-envoy-fault-delay-request"
	HeaderFaultDelayPercentage     = "x-envoy-fault-delay-request-percentage"
	HeaderFaultAbort               = "x-envoy-fault-abort-request"
	HeaderFaultAbortGRPC           = "x-envoy-fault-abort-grpc-request"
	HeaderFaultAbortPercentage     = "x-envoy-fault-abort-request-percentage"
	HeaderDownstreamServiceNode    = "x-envoy-downstream-service-node"
	maxHeaderDelay                 = 24 * time.Hour
	minAbortStatus, maxAbortStatus = 200, 600
)

// FractionHit reports whether a uniformly random draw falls inside f, the
// way Envoy's runtime featureEnabled samples a FractionalPercent: draw
// modulo the denominator below the numerator. A numerator at or above the
// denominator always hits; a zero numerator never does.
func FractionHit(f state.Fraction, draw uint64) bool {
	if f.Numerator == 0 || f.Denominator == 0 {
		return false
	}
	if uint64(f.Numerator) >= uint64(f.Denominator) {
		return true
	}
	return draw%uint64(f.Denominator) < uint64(f.Numerator)
}

// FaultApplies reports whether f's scope admits r: the routed cluster
// (upstream_cluster), the downstream node header (downstream_nodes) and the
// header matchers (headers) must all agree.
func FaultApplies(f *state.FaultFilter, cluster string, r Request) bool {
	if f.UpstreamCluster != "" && f.UpstreamCluster != cluster {
		return false
	}
	if len(f.DownstreamNodes) > 0 {
		node, ok := r.Header(HeaderDownstreamServiceNode)
		if !ok {
			return false
		}
		found := false
		for _, n := range f.DownstreamNodes {
			if n == node {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	for i := range f.Headers {
		if !MatchHeader(&f.Headers[i], r) {
			return false
		}
	}
	return true
}

// FaultDelay returns the delay to inject into r, or 0. draw is a uniform
// random number. A header_delay without a valid x-envoy-fault-delay-request
// (milliseconds) injects nothing.
func FaultDelay(d *state.FaultDelay, r Request, draw uint64) time.Duration {
	if d == nil {
		return 0
	}
	p := d.Percentage
	delay := d.Fixed
	if d.FromHeader {
		v, ok := r.Header(HeaderFaultDelay)
		if !ok {
			return 0
		}
		ms, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0
		}
		delay = min(time.Duration(ms)*time.Millisecond, maxHeaderDelay)
		p = headerPercentage(p, r, HeaderFaultDelayPercentage)
	}
	if delay <= 0 || !FractionHit(p, draw) {
		return 0
	}
	return delay
}

// Abort is an abort fault's reply: an HTTP status, or (GRPC true) HTTP 200
// carrying GRPCStatus for gRPC requests.
type Abort struct {
	HTTPStatus int
	GRPCStatus uint32
	GRPC       bool
}

// FaultAbort returns the abort to inject into r and true, or false. For
// header_abort the HTTP status header (which must be in [200, 600)) wins
// over the gRPC one, as in Envoy; without a usable header nothing aborts.
func FaultAbort(a *state.FaultAbort, r Request, draw uint64) (Abort, bool) {
	if a == nil {
		return Abort{}, false
	}
	p := a.Percentage
	var out Abort
	switch {
	case a.FromHeader:
		var ok bool
		if out, ok = headerAbort(r); !ok {
			return Abort{}, false
		}
		p = headerPercentage(p, r, HeaderFaultAbortPercentage)
	case a.HasGRPCStatus:
		out = Abort{HTTPStatus: 200, GRPCStatus: a.GRPCStatus, GRPC: true}
	default:
		out = Abort{HTTPStatus: a.HTTPStatus}
	}
	if !FractionHit(p, draw) {
		return Abort{}, false
	}
	return out, true
}

func headerAbort(r Request) (Abort, bool) {
	if v, ok := r.Header(HeaderFaultAbort); ok {
		if code, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && code >= minAbortStatus && code < maxAbortStatus {
			return Abort{HTTPStatus: code}, true
		}
	}
	if v, ok := r.Header(HeaderFaultAbortGRPC); ok {
		if code, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
			return Abort{HTTPStatus: 200, GRPCStatus: uint32(code), GRPC: true}, true
		}
	}
	return Abort{}, false
}

// headerPercentage lets a request lower (never raise) the configured
// percentage of a header-controlled fault: the header gives a numerator
// over the configured denominator, capped at the configured numerator.
func headerPercentage(p state.Fraction, r Request, name string) state.Fraction {
	v, ok := r.Header(name)
	if !ok {
		return p
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
	if err != nil {
		return p
	}
	p.Numerator = min(uint32(n), p.Numerator)
	return p
}
