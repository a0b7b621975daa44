package dns

import (
	"container/list"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Cache bounds.
const (
	DefaultCacheSize = 4096
	// maxCacheTTL caps how long an upstream answer is served from the
	// cache whatever its TTL says.
	maxCacheTTL = 5 * time.Minute
)

// cache keeps forwarded answers for their TTL, least recently used first
// out when full. Only complete NOERROR and NXDOMAIN answers with at least
// one record to take a TTL from are kept.
type cache struct {
	max int
	now func() time.Time

	mu    sync.Mutex
	items map[cacheKey]*list.Element
	lru   list.List // of *cacheEntry, most recent at the front
}

type cacheKey struct {
	name  string // lower-case
	typ   dnsmessage.Type
	class dnsmessage.Class
	do    bool // DNSSEC OK: the answer carries signatures or not
	cd    bool // checking disabled (bit 4 of the header flags)
}

type cacheEntry struct {
	key     cacheKey
	msg     dnsmessage.Message
	stored  time.Time
	expires time.Time
}

func newCache(max int, now func() time.Time) *cache {
	if now == nil {
		now = time.Now
	}
	return &cache{max: max, now: now, items: map[cacheKey]*list.Element{}}
}

func keyOf(q *query) cacheKey {
	return cacheKey{
		name: strings.ToLower(q.question.Name.String()), typ: q.question.Type, class: q.question.Class,
		do: q.do, cd: q.header.CheckingDisabled,
	}
}

// get returns the cached answer to q packed for the client (its ID and
// question, TTLs lowered by the time spent in the cache), or nil.
func (c *cache) get(q *query, max int) []byte {
	if c == nil || c.max <= 0 {
		return nil
	}
	k := keyOf(q)
	now := c.now()
	c.mu.Lock()
	el, ok := c.items[k]
	if !ok {
		c.mu.Unlock()
		return nil
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.items, k)
		c.mu.Unlock()
		return nil
	}
	c.lru.MoveToFront(el)
	msg, stored := e.msg, e.stored
	c.mu.Unlock()

	age := uint32(now.Sub(stored) / time.Second)
	out := dnsmessage.Message{
		Header:      msg.Header,
		Questions:   []dnsmessage.Question{q.question},
		Answers:     aged(msg.Answers, age),
		Authorities: aged(msg.Authorities, age),
		Additionals: aged(msg.Additionals, age),
	}
	if !q.edns {
		// The answer may have been cached for an EDNS client; a client
		// without EDNS must not get an OPT record (RFC 6891 7).
		out.Additionals = slices.DeleteFunc(out.Additionals, func(r dnsmessage.Resource) bool { return r.Header.Type == dnsmessage.TypeOPT })
	}
	out.Header.ID = q.header.ID
	out.Header.RecursionDesired = q.header.RecursionDesired
	return packFit(&out, max)
}

// aged copies rs with TTLs lowered by age (OPT's TTL field holds flags).
func aged(rs []dnsmessage.Resource, age uint32) []dnsmessage.Resource {
	if len(rs) == 0 {
		return nil
	}
	out := make([]dnsmessage.Resource, len(rs))
	for i, r := range rs {
		if r.Header.Type != dnsmessage.TypeOPT {
			if r.Header.TTL > age {
				r.Header.TTL -= age
			} else {
				r.Header.TTL = 0
			}
		}
		out[i] = r
	}
	return out
}

// put stores reply (an upstream's answer to q) if it may be cached.
func (c *cache) put(q *query, reply []byte) {
	if c == nil || c.max <= 0 {
		return
	}
	var msg dnsmessage.Message
	if err := msg.Unpack(reply); err != nil || msg.Header.Truncated {
		return
	}
	if msg.Header.RCode != dnsmessage.RCodeSuccess && msg.Header.RCode != dnsmessage.RCodeNameError {
		return
	}
	ttl, ok := cacheTTL(&msg)
	if !ok || ttl == 0 {
		return
	}
	now := c.now()
	e := &cacheEntry{key: keyOf(q), msg: msg, stored: now, expires: now.Add(ttl)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.items[e.key] = c.lru.PushFront(e)
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

// cacheTTL is the smallest TTL among the answer and authority records; for
// a negative answer the SOA's minimum also bounds it (RFC 2308 5).
func cacheTTL(msg *dnsmessage.Message) (time.Duration, bool) {
	var lowest uint32
	seen := false
	take := func(v uint32) {
		if !seen || v < lowest {
			lowest, seen = v, true
		}
	}
	for _, r := range msg.Answers {
		take(r.Header.TTL)
	}
	for _, r := range msg.Authorities {
		take(r.Header.TTL)
		if soa, ok := r.Body.(*dnsmessage.SOAResource); ok {
			take(soa.MinTTL)
		}
	}
	if !seen {
		return 0, false
	}
	return min(time.Duration(lowest)*time.Second, maxCacheTTL), true
}
