package agent

import (
	"context"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// replayer is one application stream's subscription memory (sotw.go,
// delta.go). request and response are called from different goroutines.
type replayer[Req, Resp any] interface {
	// request records an application request and returns what to send
	// on the current upstream stream, or nil when nothing should go.
	request(r *Req) *Req
	// response records a response on its way to the application.
	response(r *Resp)
	// replay starts a new upstream stream: it returns the requests that
	// restore the application's subscriptions there (the first carrying
	// the node) and resets what the state knows about the previous one.
	replay() []*Req
}

// upstreamError marks a failure of the upstream stream, after which the
// application's stream stays and the proxy reconnects.
type upstreamError struct{ err error }

func (e upstreamError) Error() string { return "upstream: " + e.err.Error() }

// forward serves one application stream until the application ends it,
// re-opening the upstream stream with backoff whenever it fails. The
// application's requests are read by one goroutine and handed to this
// one, which alone sends upstream; responses are relayed by one goroutine
// per upstream stream, which alone sends to the application.
func forward[Req, Resp any](p *Proxy, kind string, down grpc.BidiStreamingServer[Req, Resp],
	open func(context.Context) (grpc.BidiStreamingClient[Req, Resp], error), st replayer[Req, Resp]) error {
	p.appStreams.Add(1)
	defer p.appStreams.Add(-1)
	ctx := down.Context()
	log := p.opts.Log.With("stream", kind)
	reqs := make(chan *Req, 16)
	appDone := make(chan error, 1)
	go func() {
		for {
			r, err := down.Recv()
			if err != nil {
				appDone <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()

	attempt := 0
	for {
		upCtx, cancelUp := context.WithCancel(ctx)
		up, err := open(upCtx)
		if err == nil {
			p.upStreams.Add(1)
			var healthy bool
			healthy, err = session(upCtx, cancelUp, down, up, st, reqs, appDone)
			if healthy {
				attempt = 0
			}
		} else {
			err = upstreamError{err}
		}
		cancelUp()
		var ue upstreamError
		if !errors.As(err, &ue) {
			return appResult(err)
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		wait := p.opts.Backoff.delay(attempt)
		attempt++
		log.Warn("xds proxy: upstream stream failed; application stream kept", "error", ue.err, "retry_in", wait)
		if err := waitRecording(ctx, wait, st, reqs, appDone); err != nil {
			return appResult(err)
		}
	}
}

// appResult is what the handler returns when the application's side ends:
// a half-close is a normal end.
func appResult(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// waitRecording sleeps for d while still taking the application's
// requests (recorded for the replay, not sent anywhere).
func waitRecording[Req, Resp any](ctx context.Context, d time.Duration, st replayer[Req, Resp], reqs <-chan *Req, appDone <-chan error) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case r := <-reqs:
			st.request(r)
		case err := <-appDone:
			return err
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-t.C:
			return nil
		}
	}
}

// session runs one upstream stream: replay, then relay both ways. It
// returns an upstreamError when the upstream side failed (healthy tells
// whether it delivered anything first), else the application's error.
func session[Req, Resp any](ctx context.Context, cancel context.CancelFunc,
	down grpc.BidiStreamingServer[Req, Resp], up grpc.BidiStreamingClient[Req, Resp],
	st replayer[Req, Resp], reqs <-chan *Req, appDone <-chan error) (healthy bool, err error) {
	relayDone := make(chan error, 1)
	got := make(chan struct{})
	// The relay starts before the replay so a response cannot be held
	// up behind a send that flow control blocks.
	go func() {
		first := true
		for {
			resp, err := up.Recv()
			if err != nil {
				relayDone <- upstreamError{err}
				return
			}
			if first {
				close(got)
				first = false
			}
			st.response(resp)
			if err := down.Send(resp); err != nil {
				relayDone <- err
				return
			}
		}
	}()
	// stop ends the relay and returns its result, or fallback when the
	// relay ended only because it was stopped.
	stop := func(fallback error) error {
		cancel()
		rerr := <-relayDone
		if fallback != nil {
			return fallback
		}
		return rerr
	}
	isHealthy := func() bool {
		select {
		case <-got:
			return true
		default:
			return false
		}
	}
	for _, r := range st.replay() {
		if err := up.Send(r); err != nil {
			return isHealthy(), stop(nil)
		}
	}
	for {
		select {
		case r := <-reqs:
			f := st.request(r)
			if f == nil {
				continue
			}
			if err := up.Send(f); err != nil {
				// The send error is io.EOF; the real status comes from
				// Recv, which the relay reports.
				return isHealthy(), stop(nil)
			}
		case err := <-relayDone:
			return isHealthy(), err
		case err := <-appDone:
			if err == nil {
				err = io.EOF
			}
			return isHealthy(), stop(err)
		case <-ctx.Done():
			return isHealthy(), stop(status.Error(codes.Canceled, "application stream ended"))
		}
	}
}
