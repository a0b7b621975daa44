package httpproxy

import (
	"context"
	"math/rand/v2"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// Response flags added by retries and circuit breaking.
const (
	// FlagRetryLimitExceeded: the retry policy wanted another attempt but
	// num_retries was used up (Envoy's URX).
	FlagRetryLimitExceeded = "URX"
	// FlagUpstreamOverflow: a circuit breaker refused the request or its
	// retry (Envoy's UO).
	FlagUpstreamOverflow = "UO"
)

// Header names the router owns.
const (
	headerAttemptCount = "x-envoy-attempt-count"
	headerOverloaded   = "x-envoy-overloaded"
	// BodyOverflow is Envoy's local reply text for a circuit-breaker
	// overflow.
	BodyOverflow = "upstream connect error or disconnect/reset before headers. reset reason: overflow"
)

// maxReplayBody bounds the request body buffered so a retry (or a mirror)
// can send it again; a longer body is streamed and not retried, as Envoy
// does past its per-request buffer limit.
const maxReplayBody = 64 << 10

// retryState tracks one request's attempts under a retry policy. The zero
// value (policy nil) allows exactly one attempt and allocates nothing.
type retryState struct {
	policy    *state.RetryPolicy
	cluster   *upstream.Cluster
	remaining uint32
	// attempts counts attempts started (1 after the first).
	attempts int
	// tried are the hosts already attempted (previous_hosts predicate).
	tried []*lb.Host
	// limitExceeded / overflow record why the last wanted retry did not
	// happen, for the URX and UO flags.
	limitExceeded bool
	overflow      bool
	// release frees the ResourceRetries unit of the retry in progress.
	release func()
}

func (rs *retryState) init(p *state.RetryPolicy, c *upstream.Cluster) {
	rs.policy, rs.cluster = p, c
	rs.attempts = 0
	rs.tried = rs.tried[:0]
	rs.limitExceeded, rs.overflow = false, false
	rs.release = nil
	if p != nil {
		rs.remaining = p.NumRetries
	}
}

// done releases what the state still holds.
func (rs *retryState) done() {
	if rs.release != nil {
		rs.release()
		rs.release = nil
	}
}

// started records the start of an attempt on h.
func (rs *retryState) started(h *lb.Host) {
	rs.attempts++
	if rs.policy != nil && rs.policy.PreviousHosts {
		rs.tried = append(rs.tried, h)
	}
}

// next decides whether to retry after attempt a. It takes the retry
// circuit-breaker unit, then sleeps the back-off (bounded by deadline and
// ctx). false means answer with what the last attempt produced.
func (rs *retryState) next(ctx context.Context, a *policy.Attempt, deadline time.Time) bool {
	rs.done()
	if !policy.ShouldRetry(rs.policy, a) {
		return false
	}
	if rs.remaining == 0 {
		rs.limitExceeded = true
		return false
	}
	rs.remaining--
	release, ok := rs.cluster.Acquire(upstream.ResourceRetries)
	if !ok {
		rs.overflow = true
		return false
	}
	rs.release = release
	wait := policy.BackOff(rs.policy.BackOffBase, rs.policy.BackOffMax, rs.attempts, rand.Uint64())
	if !deadline.IsZero() {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		if wait >= left {
			// The back-off would outlive the request: Envoy's global timer
			// fires first and answers 504; let the caller do so.
			wait = left
		}
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// exclude is the lb predicate for previous_hosts.
func (rs *retryState) exclude(h *lb.Host) bool {
	for _, t := range rs.tried {
		if t == h {
			return true
		}
	}
	return false
}

// repick picks the host for a retry attempt into d.
func (rs *retryState) repick(d *decision) bool {
	if d.cluster.Spec().Type == state.ClusterOriginalDst {
		// The request names its host: a retry goes to the same one.
		return d.host != nil
	}
	if rs.policy != nil && rs.policy.PreviousHosts && len(rs.tried) > 0 {
		d.pick.Exclude = rs.exclude
	}
	var h *lb.Host
	var err error
	tries := uint32(1)
	if d.pick.Exclude != nil {
		tries += rs.policy.HostSelectionRetryMaxAttempts
	}
	for range tries {
		h, err = d.cluster.Pick(&d.pick)
		if err != nil || h == nil {
			return false
		}
		if d.pick.Exclude == nil || !d.pick.Exclude(h) {
			break
		}
	}
	d.host = h
	d.ep = d.cluster.EndpointFor(h, d.autoName)
	return true
}

// finalFlags adds URX / UO to the flags of the final answer.
func (rs *retryState) finalFlags(flags string) string {
	if rs == nil {
		return flags
	}
	add := ""
	switch {
	case rs.overflow:
		add = FlagUpstreamOverflow
	case rs.limitExceeded:
		add = FlagRetryLimitExceeded
	default:
		return flags
	}
	if flags == "" {
		return add
	}
	return flags + "," + add
}

// attemptCount formats n for x-envoy-attempt-count without allocating for
// small counts.
func attemptCount(n int) string {
	if n >= 1 && n <= 9 {
		return "123456789"[n-1 : n]
	}
	return strconv.Itoa(n)
}

// grpcStatusOf parses a grpc-status header value (-1 when absent/invalid).
func grpcStatusOf(v string, ok bool) int {
	if !ok || v == "" {
		return -1
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return -1
	}
	return n
}

// hlistRequest lets policy match response headers held in an hlist.
type hlistRequest struct{ l *hlist }

func (q *hlistRequest) Authority() string { return "" }
func (q *hlistRequest) Path() string      { return "" }
func (q *hlistRequest) Method() string    { return "" }

func (q *hlistRequest) Header(name string) (string, bool) {
	var out []byte
	found := false
	for i := range q.l.h {
		if string(q.l.h[i].name) == name {
			if found {
				out = append(out, ',')
			}
			out = append(out, q.l.h[i].value...)
			found = true
		}
	}
	return string(out), found
}

// httpHeaderRequest lets policy match response headers of an
// *http.Response.
type httpHeaderRequest struct{ h map[string][]string }

func (q *httpHeaderRequest) Authority() string { return "" }
func (q *httpHeaderRequest) Path() string      { return "" }
func (q *httpHeaderRequest) Method() string    { return "" }

func (q *httpHeaderRequest) Header(name string) (string, bool) {
	vs, ok := q.h[textproto.CanonicalMIMEHeaderKey(name)]
	if !ok {
		return "", false
	}
	return strings.Join(vs, ","), true
}
