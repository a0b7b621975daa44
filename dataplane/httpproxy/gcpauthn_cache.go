package httpproxy

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/meshlet/meshlet/state"
)

// tokenRefreshMargin is how long before a token's exp the cache stops
// handing it out for new requests and fetches a new one, so a token never
// expires between the proxy and the upstream (A83 caches until shortly
// before expiry). Short-lived tokens use half their lifetime instead.
const tokenRefreshMargin = 30 * time.Second

// cachedToken is one audience's token with the request header mutation
// that carries it, built once per fetch so requests add the header
// without allocating.
type cachedToken struct {
	audience  string
	mut       *state.HeaderMutation
	refreshAt time.Time
	exp       time.Time
}

// tokenCall is a fetch in flight; everyone who wants the audience meanwhile
// waits on done instead of asking the metadata server again.
type tokenCall struct {
	done chan struct{}
	tok  *cachedToken
	err  error
}

// tokenCache is the bounded per-audience token cache of one gcp_authn
// config: LRU over audiences, with concurrent misses for one audience
// collapsed into one fetch.
type tokenCache struct {
	size   int
	header string
	prefix string
	fetch  func(ctx context.Context, audience string) (string, time.Time, error)
	now    func() time.Time

	mu    sync.Mutex
	lru   list.List // of *cachedToken, most recently used first
	byAud map[string]*list.Element
	calls map[string]*tokenCall
}

func newTokenCache(cfg *state.GCPAuthnFilter, fetch func(context.Context, string) (string, time.Time, error)) *tokenCache {
	return &tokenCache{
		size: cfg.CacheSize, header: cfg.Header, prefix: cfg.Prefix,
		fetch: fetch, now: time.Now,
		byAud: map[string]*list.Element{}, calls: map[string]*tokenCall{},
	}
}

// get returns a token for audience: cached, or fetched now. fetched is true
// for the one caller that ran a fetch (so a failure is logged once, not
// by every waiter). A caller whose ctx ends stops waiting; the fetch goes
// on for the others.
func (c *tokenCache) get(ctx context.Context, audience string) (tok *cachedToken, fetched bool, err error) {
	now := c.now()
	c.mu.Lock()
	var stale *cachedToken
	if el, ok := c.byAud[audience]; ok {
		t := el.Value.(*cachedToken)
		if now.Before(t.refreshAt) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return t, false, nil
		}
		if now.Before(t.exp) {
			stale = t
		}
	}
	if call, ok := c.calls[audience]; ok {
		c.mu.Unlock()
		// Someone is already refreshing: a token that has not expired yet
		// is still good for this request.
		if stale != nil {
			return stale, false, nil
		}
		select {
		case <-call.done:
			return call.tok, false, call.err
		case <-ctx.Done():
			return nil, false, fmt.Errorf("waiting for token: %w", ctx.Err())
		}
	}
	call := &tokenCall{done: make(chan struct{})}
	c.calls[audience] = call
	c.mu.Unlock()

	call.tok, call.err = c.run(ctx, audience)
	c.mu.Lock()
	delete(c.calls, audience)
	if call.err == nil {
		c.storeLocked(call.tok)
	}
	c.mu.Unlock()
	close(call.done)
	return call.tok, true, call.err
}

// run fetches audience's token detached from the request's cancellation.
func (c *tokenCache) run(ctx context.Context, audience string) (*cachedToken, error) {
	raw, exp, err := c.fetch(context.WithoutCancel(ctx), audience)
	if err != nil {
		return nil, err
	}
	now := c.now()
	life := exp.Sub(now)
	if life <= 0 {
		return nil, errors.New("metadata server returned an expired token")
	}
	return &cachedToken{
		audience:  audience,
		refreshAt: exp.Add(-min(tokenRefreshMargin, life/2)),
		exp:       exp,
		mut: &state.HeaderMutation{RequestAdd: []state.HeaderValueOption{{
			Key: c.header, Value: c.prefix + raw, Action: state.OverwriteIfExistsOrAdd,
		}}},
	}, nil
}

// storeLocked puts t in the cache, evicting the least recently used
// audiences beyond the bound. A size of 0 caches nothing.
func (c *tokenCache) storeLocked(t *cachedToken) {
	if c.size <= 0 {
		return
	}
	if el, ok := c.byAud[t.audience]; ok {
		el.Value = t
		c.lru.MoveToFront(el)
		return
	}
	c.byAud[t.audience] = c.lru.PushFront(t)
	for c.lru.Len() > c.size {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.byAud, old.Value.(*cachedToken).audience)
	}
}

// len is the number of cached audiences.
func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
