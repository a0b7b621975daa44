package policy

import (
	"math/bits"
	"net/netip"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	"github.com/meshlet/meshlet/state"
)

// HashRequest computes the request hash from the route's hash policies the
// way Envoy's HashPolicyImpl does: each policy that yields a value is folded
// in as hash = rotl(hash, 1) ^ xxhash64(value) (the rotation keeps two equal
// policies from cancelling out), and evaluation stops after a terminal
// policy once a hash exists. ok is false when no policy produced a value.
//
// Values hashed: the header value (several values joined with ","), the
// cookie value, the source IP in text form, the first raw value of the query
// parameter. A cookie policy with a TTL and no cookie hashes the value
// CookieValue(source) would set, so the proxy can send that Set-Cookie and
// later requests land on the same host. filter_state yields nothing.
func HashRequest(policies []state.HashPolicy, r Request, source netip.Addr) (hash uint64, ok bool) {
	for i := range policies {
		p := &policies[i]
		if h, got := hashOne(p, r, source); got {
			if ok {
				hash = bits.RotateLeft64(hash, 1) ^ h
			} else {
				hash, ok = h, true
			}
		}
		if p.Terminal && ok {
			break
		}
	}
	return hash, ok
}

func hashOne(p *state.HashPolicy, r Request, source netip.Addr) (uint64, bool) {
	switch p.Kind {
	case state.HashHeader:
		if v, ok := r.Header(p.Name); ok {
			return xxhash.Sum64String(v), true
		}
	case state.HashCookie:
		if v, ok := Cookie(r, p.Name); ok {
			return xxhash.Sum64String(v), true
		}
		if p.CookieTTL > 0 && source.IsValid() {
			return xxhash.Sum64String(CookieValue(source)), true
		}
	case state.HashSourceIP:
		if source.IsValid() {
			var buf [64]byte
			return xxhash.Sum64(source.AppendTo(buf[:0])), true
		}
	case state.HashQueryParam:
		if v, ok := queryValue(rawQuery(r.Path()), p.Name); ok {
			return xxhash.Sum64String(v), true
		}
	}
	return 0, false
}

// CookieValue is the value the proxy sets for a hash-policy cookie with a TTL
// when the request has none: like Envoy, a hex hash of the client address,
// so one client keeps landing on the same host.
func CookieValue(source netip.Addr) string {
	var buf [64]byte
	return strconv.FormatUint(xxhash.Sum64(source.AppendTo(buf[:0])), 16)
}

// Cookie returns the value of the named cookie from the request's Cookie
// header(s). HTTP/2 clients may split cookies over several headers, which
// the Request joins with ","; cookie values cannot contain ',' or ';'
// (RFC 6265 cookie-octet), so both separate pairs here.
func Cookie(r Request, name string) (string, bool) {
	h, ok := r.Header("cookie")
	if !ok {
		return "", false
	}
	for h != "" {
		var pair string
		if i := strings.IndexAny(h, ";,"); i >= 0 {
			pair, h = h[:i], h[i+1:]
		} else {
			pair, h = h, ""
		}
		pair = strings.TrimLeft(pair, " \t")
		k, v, found := strings.Cut(pair, "=")
		if !found || strings.TrimRight(k, " \t") != name {
			continue
		}
		v = strings.TrimRight(v, " \t")
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}
