package policy

import (
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
	"weak"

	"github.com/meshlet/meshlet/state"
)

// SelectRoute finds the virtual host for the request's authority and the
// first route in it that matches. route is nil when nothing matches (404 NR);
// vh is nil when no virtual host matches.
//
// Virtual host selection follows Envoy's order: exact domain, then the
// longest suffix wildcard ("*.foo.com", "*-bar.foo.com"), then the longest
// prefix wildcard ("foo.*"), then "*". Host comparison is ASCII
// case-insensitive. As in Envoy, an authority with a port is matched as
// "host:port": a domain "a.b" does not match "a.b:8080" (Istio lists both
// forms). With the route configuration's ignore_port_in_host_matching the
// port is dropped before matching.
func SelectRoute(rc *state.RouteConfig, r Request) (vh *state.VirtualHost, route *state.Route) {
	if rc == nil {
		return nil, nil
	}
	vh = indexFor(rc).find(r.Authority())
	if vh == nil {
		return nil, nil
	}
	for _, rt := range vh.Routes {
		if MatchRoute(rt, r) {
			return vh, rt
		}
	}
	return vh, nil
}

// SelectVirtualHost is the virtual host half of SelectRoute, for callers
// that need the vhost without matching a route (e.g. a CONNECT authority).
func SelectVirtualHost(rc *state.RouteConfig, authority string) *state.VirtualHost {
	if rc == nil {
		return nil
	}
	return indexFor(rc).find(authority)
}

// vhostIndex is the per-RouteConfig lookup structure. It must not point at
// the RouteConfig itself: the cache below is keyed weakly by that pointer and
// an index that kept it alive would never be collected.
type vhostIndex struct {
	exact map[string]*state.VirtualHost
	// suffix/prefix are keyed by the domain without its '*'; the lengths
	// are the distinct key lengths, longest first, so the first hit is the
	// longest wildcard.
	suffix     map[string]*state.VirtualHost
	suffixLens []int
	prefix     map[string]*state.VirtualHost
	prefixLens []int
	def        *state.VirtualHost
	ignorePort bool
}

// The index cache maps a *state.RouteConfig to its vhostIndex. Snapshots are
// immutable, so the pointer identifies the content.
//
// Readers must not pay for weak.Make (a span lookup under a lock, ~30ns) nor
// allocate, and the cache must not keep replaced configurations alive. So the
// key is the config's address as a uintptr (invisible to the GC), and each
// entry carries a weak pointer that is checked on every hit: an address
// reused by a new config after the old one died fails that check, because a
// dead object's weak pointer yields nil. A cleanup on the config removes its
// entry. The map itself is copy-on-write behind an atomic pointer: lookups
// are lock-free, and writes happen once per configuration.
type cacheEntry struct {
	key uintptr
	rc  weak.Pointer[state.RouteConfig]
	idx *vhostIndex
}

var (
	cacheMu sync.Mutex // serializes writers of cache
	cache   atomic.Pointer[map[uintptr]*cacheEntry]
)

func indexFor(rc *state.RouteConfig) *vhostIndex {
	key := uintptr(unsafe.Pointer(rc))
	if m := cache.Load(); m != nil {
		if e := (*m)[key]; e != nil && e.rc.Value() == rc {
			return e.idx
		}
	}
	return storeIndex(rc, key)
}

func storeIndex(rc *state.RouteConfig, key uintptr) *vhostIndex {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	old := cache.Load()
	if old != nil {
		if e := (*old)[key]; e != nil && e.rc.Value() == rc {
			return e.idx // built by another goroutine meanwhile
		}
	}
	e := &cacheEntry{key: key, rc: weak.Make(rc), idx: buildIndex(rc)}
	next := make(map[uintptr]*cacheEntry, cacheLen(old)+1)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	next[key] = e
	cache.Store(&next)
	runtime.AddCleanup(rc, dropIndex, e)
	return e.idx
}

// dropIndex removes e when its config has been collected, unless the slot
// already holds a newer config's entry at the same address.
func dropIndex(e *cacheEntry) {
	cacheMu.Lock()
	defer cacheMu.Unlock()
	old := cache.Load()
	if old == nil || (*old)[e.key] != e {
		return
	}
	next := make(map[uintptr]*cacheEntry, len(*old))
	for k, v := range *old {
		if k != e.key {
			next[k] = v
		}
	}
	cache.Store(&next)
}

func cacheLen(m *map[uintptr]*cacheEntry) int {
	if m == nil {
		return 0
	}
	return len(*m)
}

func buildIndex(rc *state.RouteConfig) *vhostIndex {
	idx := &vhostIndex{
		exact:      make(map[string]*state.VirtualHost),
		suffix:     make(map[string]*state.VirtualHost),
		prefix:     make(map[string]*state.VirtualHost),
		ignorePort: rc.IgnorePortInHostMatching,
	}
	suffixLens := map[int]bool{}
	prefixLens := map[int]bool{}
	// First definition wins for a duplicated domain; the decoder rejects
	// duplicates like Envoy does, so this only matters for hand-built state.
	add := func(m map[string]*state.VirtualHost, k string, vh *state.VirtualHost) bool {
		if _, dup := m[k]; dup {
			return false
		}
		m[k] = vh
		return true
	}
	for _, vh := range rc.VirtualHosts {
		if vh == nil {
			continue
		}
		for _, d := range vh.Domains {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if idx.def == nil {
					idx.def = vh
				}
			case strings.HasPrefix(d, "*"):
				if add(idx.suffix, d[1:], vh) {
					suffixLens[len(d)-1] = true
				}
			case strings.HasSuffix(d, "*"):
				if add(idx.prefix, d[:len(d)-1], vh) {
					prefixLens[len(d)-1] = true
				}
			default:
				add(idx.exact, d, vh)
			}
		}
	}
	idx.suffixLens = sortedDesc(suffixLens)
	idx.prefixLens = sortedDesc(prefixLens)
	return idx
}

func sortedDesc(set map[int]bool) []int {
	out := make([]int, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(out)))
	return out
}

// maxStackHost bounds the authority length lower-cased on the stack; DNS
// names are at most 253 bytes, so only odd requests take the heap path.
const maxStackHost = 320

func (idx *vhostIndex) find(authority string) *state.VirtualHost {
	full := authority
	if hasUpperASCII(authority) {
		var buf [maxStackHost]byte
		var b []byte
		if len(authority) <= len(buf) {
			b = buf[:len(authority)]
		} else {
			b = make([]byte, len(authority))
		}
		for i := 0; i < len(authority); i++ {
			b[i] = lowerASCII(authority[i])
		}
		// The string aliases b only for the lookups below, which do not
		// retain it; this keeps mixed-case hosts allocation-free.
		full = unsafe.String(unsafe.SliceData(b), len(b))
	}
	return idx.findLower(full)
}

func (idx *vhostIndex) findLower(full string) *state.VirtualHost {
	if idx.ignorePort {
		if p := portStart(full); p >= 0 {
			full = full[:p]
		}
	}
	if vh, ok := idx.exact[full]; ok {
		return vh
	}
	if len(idx.suffixLens) > 0 {
		if vh := idx.wildcard(full, true); vh != nil {
			return vh
		}
	}
	if len(idx.prefixLens) > 0 {
		if vh := idx.wildcard(full, false); vh != nil {
			return vh
		}
	}
	return idx.def
}

// wildcard looks host up among suffix (or prefix) wildcards, longest first.
// Like Envoy, the '*' must stand for at least one character, so "*.foo.com"
// does not match ".foo.com".
func (idx *vhostIndex) wildcard(host string, suffix bool) *state.VirtualHost {
	if suffix {
		for _, n := range idx.suffixLens {
			if n >= len(host) {
				continue
			}
			if vh, ok := idx.suffix[host[len(host)-n:]]; ok {
				return vh
			}
		}
		return nil
	}
	for _, n := range idx.prefixLens {
		if n >= len(host) {
			continue
		}
		if vh, ok := idx.prefix[host[:n]]; ok {
			return vh
		}
	}
	return nil
}

// portStart returns the index of the ':' that starts a numeric port in an
// authority, or -1. IPv6 literals are bracketed ("[::1]:80"), so a ':' before
// the closing ']' is not a port separator.
func portStart(authority string) int {
	i := strings.LastIndexByte(authority, ':')
	if i < 0 || i == len(authority)-1 {
		return -1
	}
	if j := strings.LastIndexByte(authority, ']'); j > i {
		return -1
	}
	if authority[0] != '[' && strings.IndexByte(authority, ':') != i {
		return -1 // unbracketed IPv6 literal: no port to strip
	}
	for k := i + 1; k < len(authority); k++ {
		if authority[k] < '0' || authority[k] > '9' {
			return -1
		}
	}
	return i
}
