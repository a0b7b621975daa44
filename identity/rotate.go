package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// FetchFunc obtains a new certificate (chain and key) and the trust bundle
// that goes with it. It is called once by NewRotating and then whenever the
// current certificate reaches its rotation point.
type FetchFunc func(ctx context.Context) (*tls.Certificate, *x509.CertPool, error)

// RotationOptions tune when a Rotating source renews. Zero values take the
// defaults.
type RotationOptions struct {
	// Fraction of the remaining lifetime after which to renew; default
	// 0.5, as Istio and ztunnel do.
	Fraction float64
	// Jitter renews up to this fraction of the lifetime earlier, at
	// random, so that many workloads issued together do not renew
	// together; default 0.1.
	Jitter float64
	// RetryMin and RetryMax bound the backoff between failed renewals;
	// defaults 100ms and 30s. A retry is never scheduled past the
	// certificate's expiry.
	RetryMin, RetryMax time.Duration
	// FetchTimeout bounds one renewal; default 30s.
	FetchTimeout time.Duration
	// Name labels log lines (e.g. the SPIFFE ID).
	Name string
	Log  *slog.Logger
}

func (o *RotationOptions) defaults() {
	if o.Fraction <= 0 || o.Fraction >= 1 {
		o.Fraction = 0.5
	}
	if o.Jitter < 0 || o.Jitter >= o.Fraction {
		o.Jitter = 0
	} else if o.Jitter == 0 {
		o.Jitter = min(0.1, o.Fraction/2)
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 100 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(30*time.Second, o.RetryMin)
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 30 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
}

// material is one certificate with its trust bundle; it is replaced whole,
// never modified, so a handshake sees a consistent pair.
type material struct {
	cert  *tls.Certificate
	roots *x509.CertPool
}

// Rotating is a Source that renews its certificate in the background
// before it expires. Handshakes always get the newest certificate; one
// already in progress keeps the one it started with, so a rotation never
// breaks a connection.
type Rotating struct {
	fetch     FetchFunc
	opts      RotationOptions
	cur       atomic.Pointer[material]
	rotations atomic.Int64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRotating fetches the first certificate (bounded by ctx) and starts
// renewing in the background until Close.
func NewRotating(ctx context.Context, fetch FetchFunc, opts RotationOptions) (*Rotating, error) {
	opts.defaults()
	r := &Rotating{fetch: fetch, opts: opts}
	m, err := r.fetchOnce(ctx)
	if err != nil {
		return nil, err
	}
	r.cur.Store(m)
	bg, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go r.loop(bg)
	return r, nil
}

func (r *Rotating) fetchOnce(ctx context.Context) (*material, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.FetchTimeout)
	defer cancel()
	cert, roots, err := r.fetch(ctx)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", r.opts.Name, err)
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("certificate %s: fetch returned no certificate", r.opts.Name)
	}
	if roots == nil {
		return nil, fmt.Errorf("certificate %s: fetch returned no trust bundle", r.opts.Name)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", r.opts.Name, err)
		}
		c := *cert
		c.Leaf = leaf
		cert = &c
	}
	return &material{cert: cert, roots: roots}, nil
}

// Certificate returns the current certificate. After a failed renewal it
// keeps returning the last good one, even past expiry: peers then refuse
// it, which is the visible failure, and a later renewal recovers.
func (r *Rotating) Certificate() (*tls.Certificate, error) { return r.cur.Load().cert, nil }

// Roots returns the trust bundle fetched with the current certificate.
func (r *Rotating) Roots() (*x509.CertPool, error) { return r.cur.Load().roots, nil }

// Rotations counts successful renewals after the first certificate.
func (r *Rotating) Rotations() int64 { return r.rotations.Load() }

// Close stops renewing and waits for the background goroutine. The last
// certificate stays available.
func (r *Rotating) Close() {
	r.cancel()
	r.wg.Wait()
}

// renewAt picks when to renew a certificate that is valid until notAfter,
// measured from now rather than from NotBefore because issuers backdate.
func (r *Rotating) renewAt(now, notAfter time.Time) time.Time {
	left := notAfter.Sub(now)
	if left <= 0 {
		return now
	}
	f := r.opts.Fraction - r.opts.Jitter*rand.Float64()
	return now.Add(time.Duration(float64(left) * f))
}

func (r *Rotating) loop(ctx context.Context) {
	defer r.wg.Done()
	next := r.renewAt(time.Now(), r.cur.Load().cert.Leaf.NotAfter)
	retry := r.opts.RetryMin
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m, err := r.fetchOnce(ctx)
		now := time.Now()
		if err != nil {
			if errors.Is(ctx.Err(), context.Canceled) {
				return
			}
			wait := retry
			retry = min(2*retry, r.opts.RetryMax)
			if exp := r.cur.Load().cert.Leaf.NotAfter; now.Before(exp) && now.Add(wait).After(exp) {
				wait = max(exp.Sub(now)/2, time.Millisecond)
			}
			r.opts.Log.Warn("certificate renewal failed", "identity", r.opts.Name, "error", err, "retry_in", wait)
			t.Reset(wait)
			continue
		}
		retry = r.opts.RetryMin
		r.cur.Store(m)
		r.rotations.Add(1)
		next = r.renewAt(now, m.cert.Leaf.NotAfter)
		r.opts.Log.Debug("certificate renewed", "identity", r.opts.Name, "not_after", m.cert.Leaf.NotAfter, "next", next)
		t.Reset(time.Until(next))
	}
}

// Source returns a Rotating source of certificates for id issued by ca,
// each valid for ttl (0 means DefaultWorkloadTTL).
func (ca *CA) Source(ctx context.Context, id ID, ttl time.Duration, opts RotationOptions) (*Rotating, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = id.String()
	}
	return NewRotating(ctx, func(context.Context) (*tls.Certificate, *x509.CertPool, error) {
		c, err := ca.Issue(id, ttl)
		return c, ca.Roots(), err
	}, opts)
}
