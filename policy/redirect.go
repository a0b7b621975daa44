package policy

import (
	"strconv"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// RedirectLocation builds the Location header for a redirect route.
// scheme is the downstream scheme ("http" or "https").
//
// It follows Envoy's Http::Utility::newUri:
//   - scheme: SchemeRedirect, else the request's scheme;
//   - host: HostRedirect verbatim (the request's port is dropped), else the
//     request authority, whose port is removed when PortRedirect is set, or
//     when the scheme changes and the port is the default one of the
//     request's protocol (":80" for http, ":443" for https), so
//     http://a:80 -> https://a but http://a:8080 -> https://a:8080;
//   - port: ":PortRedirect" when set;
//   - path: PathRedirect (keeping the request's query unless PathRedirect
//     has its own), else the request path after the redirect's prefix or
//     regex rewrite; a leading '/' is ensured; StripQuery drops the query
//     unless it came from PathRedirect.
//
// The request's protocol for port stripping is x-forwarded-proto when the
// request carries it (the proxy has sanitized it by then), else scheme.
func RedirectLocation(route *state.Route, rd *state.RedirectAction, scheme string, r Request) string {
	if rd == nil {
		return ""
	}
	finalScheme := scheme
	if rd.SchemeRedirect != "" {
		finalScheme = rd.SchemeRedirect
	}
	var port string
	if rd.PortRedirect != 0 {
		port = ":" + strconv.FormatUint(uint64(rd.PortRedirect), 10)
	}
	host := rd.HostRedirect
	if host == "" {
		proto := scheme
		if xfp, ok := r.Header("x-forwarded-proto"); ok && xfp != "" {
			proto = xfp
		}
		host = redirectHost(r.Authority(), finalScheme, port, proto)
	}

	path := r.Path()
	pathHasQuery := false
	if rd.PathRedirect != "" {
		if strings.IndexByte(rd.PathRedirect, '?') >= 0 {
			path, pathHasQuery = rd.PathRedirect, true
		} else if i := strings.IndexByte(path, '?'); i >= 0 {
			path = rd.PathRedirect + path[i:]
		} else {
			path = rd.PathRedirect
		}
	} else {
		path = rewritePath(route, rd.PrefixRewrite, rd.RegexRewrite, rd.RegexSubstitution, path)
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if rd.StripQuery && !pathHasQuery {
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
	}
	return finalScheme + "://" + host + port + path
}

// redirectHost is the request authority with its port removed when a new
// port is set or the scheme change makes the default port implicit.
func redirectHost(authority, newScheme, newPort, proto string) string {
	if authority == "" {
		return authority
	}
	var end int
	if authority[0] == '[' {
		end = strings.LastIndex(authority, "]:")
		if end >= 0 {
			end++
		}
	} else {
		end = strings.LastIndexByte(authority, ':')
	}
	if end < 0 {
		return authority
	}
	reqPort := authority[end:]
	remove := newPort != ""
	if newScheme != proto {
		remove = remove || (equalFoldASCII(proto, "https") && reqPort == ":443")
		remove = remove || (equalFoldASCII(proto, "http") && reqPort == ":80")
	}
	if remove {
		return authority[:end]
	}
	return authority
}
