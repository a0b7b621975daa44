package policy

import (
	"regexp"
	"strings"
)

// req is a Request built from literal values. Header names are lower-case;
// a header given twice in hdr is one entry with values joined by ",", as
// real Request implementations do.
type req struct {
	authority, path, method string
	hdr                     map[string]string
}

func (r *req) Authority() string { return r.authority }
func (r *req) Path() string      { return r.path }
func (r *req) Method() string {
	if r.method == "" {
		return "GET"
	}
	return r.method
}

func (r *req) Header(name string) (string, bool) {
	switch name {
	case ":authority":
		return r.authority, true
	case ":path":
		return r.path, true
	case ":method":
		return r.Method(), true
	case ":scheme":
		return "http", true
	}
	v, ok := r.hdr[name]
	return v, ok
}

func get(authority, path string, kv ...string) *req {
	r := &req{authority: authority, path: path, hdr: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		k := strings.ToLower(kv[i])
		if old, ok := r.hdr[k]; ok {
			r.hdr[k] = old + "," + kv[i+1]
		} else {
			r.hdr[k] = kv[i+1]
		}
	}
	return r
}

// full compiles expr the way the xDS decoder does for safe_regex matchers:
// anchored, so MatchString is a full match.
func full(expr string) *regexp.Regexp { return regexp.MustCompile("^(?:" + expr + ")$") }
