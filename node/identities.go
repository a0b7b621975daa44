package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshlet/meshlet/identity"
)

// Identities supplies the certificate source of a workload identity. A
// node proxy acts for every pod on its node, so it holds one source per
// SPIFFE ID it has needed so far.
type Identities interface {
	// Source returns the (rotating) source for id, fetching the first
	// certificate if needed; ctx bounds that first fetch.
	Source(ctx context.Context, id identity.ID) (identity.Source, error)
}

// IdentityFunc adapts a function to Identities.
type IdentityFunc func(ctx context.Context, id identity.ID) (identity.Source, error)

// Source calls f.
func (f IdentityFunc) Source(ctx context.Context, id identity.ID) (identity.Source, error) {
	return f(ctx, id)
}

// rotatingSource is what a CA hands out: a source with a background
// renewal to stop.
type rotatingSource interface {
	identity.Source
	Close()
}

// Cache is an Identities that creates one rotating source per SPIFFE ID
// with New and keeps it until Forget or Close. Concurrent first requests
// for one ID share a single fetch.
type Cache struct {
	// New creates the source for id. The returned source's renewal runs
	// until Close; ctx only bounds the first fetch.
	New func(ctx context.Context, id identity.ID) (identity.Source, error)

	mu      sync.Mutex
	entries map[identity.ID]*cacheEntry
	closed  bool
}

type cacheEntry struct {
	done chan struct{}
	src  identity.Source
	err  error
}

// NewCAIdentities issues workload certificates from the built-in CA,
// each valid for ttl (0: the CA's default), renewed in the background.
func NewCAIdentities(ca *identity.CA, ttl time.Duration) *Cache {
	return &Cache{New: func(_ context.Context, id identity.ID) (identity.Source, error) {
		// The renewal loop outlives the request that caused it.
		return ca.Source(context.Background(), id, ttl, identity.RotationOptions{})
	}}
}

// NewIstioCAIdentities asks an Istio CA (istiod) for certificates on
// behalf of each workload, with ImpersonatedIdentity set as ztunnel does;
// istiod must trust this node's credentials to impersonate.
func NewIstioCAIdentities(c *identity.IstioCAClient, ttl time.Duration) *Cache {
	return &Cache{New: func(_ context.Context, id identity.ID) (identity.Source, error) {
		return c.Source(context.Background(), id, ttl, true, identity.RotationOptions{})
	}}
}

// Source implements Identities.
func (c *Cache) Source(ctx context.Context, id identity.ID) (identity.Source, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.entries == nil {
		c.entries = map[identity.ID]*cacheEntry{}
	}
	e, ok := c.entries[id]
	if !ok {
		e = &cacheEntry{done: make(chan struct{})}
		c.entries[id] = e
		c.mu.Unlock()
		e.src, e.err = c.New(ctx, id)
		if e.err != nil {
			e.err = fmt.Errorf("identity %s: %w", id, e.err)
			// A failed fetch is not cached: the next connection retries.
			c.mu.Lock()
			if c.entries[id] == e {
				delete(c.entries, id)
			}
			c.mu.Unlock()
		}
		close(e.done)
	} else {
		c.mu.Unlock()
	}
	select {
	case <-e.done:
		return e.src, e.err
	case <-ctx.Done():
		return nil, fmt.Errorf("identity %s: %w", id, ctx.Err())
	}
}

// Forget drops and stops the source for id (its workload left the node).
func (c *Cache) Forget(id identity.ID) {
	c.mu.Lock()
	e := c.entries[id]
	delete(c.entries, id)
	c.mu.Unlock()
	if e != nil {
		go closeWhenDone(e)
	}
}

// Len is the number of identities held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// Close stops every source's renewal.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	entries := c.entries
	c.entries = nil
	c.mu.Unlock()
	for _, e := range entries {
		<-e.done
		closeEntry(e)
	}
	return nil
}

func closeWhenDone(e *cacheEntry) {
	<-e.done
	closeEntry(e)
}

func closeEntry(e *cacheEntry) {
	if r, ok := e.src.(rotatingSource); ok && e.err == nil {
		r.Close()
	}
}

// parseWorkloadID is the identity.ID of a workload's SPIFFE ID string.
func parseWorkloadID(s string) (identity.ID, error) {
	id, err := identity.Parse(s)
	if err != nil {
		return identity.ID{}, errors.Join(ErrNoIdentity, err)
	}
	return id, nil
}

// ErrNoIdentity: a workload's trust domain, namespace or service account
// do not form a valid SPIFFE ID.
var ErrNoIdentity = errors.New("node: workload has no valid identity")
