package httpproxy

import (
	"strings"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// authoritySetter lets the connection manager replace the request
// authority after strip_port_mode, so routing, filters and the upstream
// Host all see the same value.
type authoritySetter interface{ setAuthority(string) }

// setAuthority keeps the bytes of the parsed head when a is a prefix of
// the current authority (always the case for a stripped port), so the
// hot path does not allocate.
func (r *h1Request) setAuthority(a string) {
	if len(a) <= len(r.authority) && bstr(r.authority[:len(a)]) == a {
		r.authority = r.authority[:len(a)]
		return
	}
	r.authority = []byte(a)
}

func (q *h2Request) setAuthority(a string) { q.r.Host = a }

// stripHostPort applies strip_port_mode to r's authority. CONNECT keeps
// its port: its authority-form target needs one (Envoy does the same).
func stripHostPort(mode state.StripHostPort, r policy.Request, info *ConnInfo) {
	if mode == state.StripHostPortNone || r.Method() == "CONNECT" {
		return
	}
	var local uint16
	if mode == state.StripHostPortMatching {
		if info == nil {
			return
		}
		local = info.Local.Port()
	}
	orig := r.Authority()
	host := hostWithoutPort(orig, mode == state.StripHostPortAny, local)
	if len(host) == len(orig) {
		return
	}
	if as, ok := r.(authoritySetter); ok {
		as.setAuthority(host)
	}
}

// hostWithoutPort returns authority without its ":port" when there is a
// numeric port and either anyPort is set or it equals local; otherwise
// authority unchanged. A bracketed IPv6 literal keeps its brackets
// ("[::1]:80" becomes "[::1]"); a colon inside brackets is not a port
// separator. Like Envoy, an empty or non-numeric port is left alone.
func hostWithoutPort(authority string, anyPort bool, local uint16) string {
	i := strings.LastIndexByte(authority, ':')
	if i < 0 || strings.LastIndexByte(authority, ']') > i {
		return authority
	}
	port, ok := parsePort(authority[i+1:])
	if !ok || (!anyPort && port != uint32(local)) {
		return authority
	}
	return authority[:i]
}

// parsePort parses a bare decimal port (no sign) that fits in uint32, as
// Envoy's absl::SimpleAtoi<uint32_t> would accept for a port.
func parsePort(s string) (uint32, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n > 1<<32-1 {
		return 0, false
	}
	return uint32(n), true
}
