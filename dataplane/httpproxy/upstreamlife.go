package httpproxy

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
)

// The cluster's common_http_protocol_options.max_stream_duration bounds
// each upstream request from the moment the attempt starts until its
// response body ends (Envoy's upstream max_stream_duration timer). When it
// fires the upstream request is reset; the retry policy sees a reset, and
// without a retry the client gets 504 (408 while its request body was still
// arriving) with flag UMSDR, or a reset once response headers were sent.
// max_connection_duration, the other lifetime of that message, lives in
// the pools: HTTP/1.1 checks a connection's age at checkout and on return
// (h1pool.go); HTTP/2 retires each connection with a timer (h2pool.go).

const (
	// FlagUpstreamMaxStreamDuration is Envoy's response flag for an upstream
	// request ended by the cluster's max_stream_duration.
	FlagUpstreamMaxStreamDuration = "UMSDR"
	// BodyUpstreamMaxStreamDuration is Envoy's local reply text for it.
	BodyUpstreamMaxStreamDuration = "upstream max stream duration reached"
)

// errUpstreamStreamDuration is the cancel cause of an attempt ended by the
// cluster's max_stream_duration.
var errUpstreamStreamDuration = errors.New("upstream max stream duration")

// attemptBounds returns the deadlines of one attempt started at now on
// cluster c: head bounds the wait for the response head (the earliest of
// the overall deadline, the per-try timeout and the cluster's stream
// duration), stream is the stream-duration deadline alone, which also
// bounds the response body (zero: none). perTry and maxDur say which limit
// head is.
func (t *requestTimeouts) attemptBounds(c *upstream.Cluster, now, overall time.Time) (head, stream time.Time, perTry, maxDur bool) {
	head, perTry = t.attempt(now, overall)
	if d := c.Spec().UpstreamMaxStreamDuration; d > 0 {
		stream = now.Add(d)
		if head.IsZero() || stream.Before(head) {
			head, perTry, maxDur = stream, false, true
		}
	}
	return head, stream, perTry, maxDur
}

// upstreamStreamDurationReply is the local reply when the cluster's
// max_stream_duration ended the last attempt before response headers:
// Envoy's maybeRequestTimeoutCode picks 408 while the downstream request
// was still being received, else 504.
func upstreamStreamDurationReply(requestDone bool) (status int, flags, body string) {
	status = http.StatusGatewayTimeout
	if !requestDone {
		status = http.StatusRequestTimeout
	}
	return status, FlagUpstreamMaxStreamDuration, BodyUpstreamMaxStreamDuration
}

// withStreamDuration derives the attempt context that ends at stream (zero:
// ctx itself, and a no-op stop).
func withStreamDuration(ctx context.Context, stream time.Time) (context.Context, context.CancelFunc) {
	if stream.IsZero() {
		return ctx, func() {}
	}
	return context.WithDeadlineCause(ctx, stream, errUpstreamStreamDuration)
}
