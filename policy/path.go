package policy

import (
	"errors"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// PathVerdict is what the connection manager does with a request after path
// normalization.
type PathVerdict int

const (
	// PathContinue: route the (possibly rewritten) path.
	PathContinue PathVerdict = iota
	// PathReject: answer 400 (Envoy's path_normalization_failed /
	// escaped-slash rejection).
	PathReject
	// PathRedirect: answer 307 with Location set to the normalized path
	// (UNESCAPE_AND_REDIRECT when escaped slashes were found).
	PathRedirect
)

// ErrInvalidPath is returned by CanonicalPath for a path it cannot
// normalize (not in origin form).
var ErrInvalidPath = errors.New("path is not in origin form")

// NormalizePath applies the connection manager's path handling to path
// (origin form, query included) in Envoy's order: a fragment rejects the
// request; escaped slashes (%2F, %5C) are handled per the action; then
// normalize_path (RFC 3986 dot-segment removal, decoding of percent-encoded
// unreserved characters, backslash to slash); then merge_slashes. The query
// is never touched. It returns the path to route and forward, and what to do.
//
// "*" (OPTIONS *) and paths of other forms are left alone unless
// normalize_path is on, which rejects what is not in origin form, as
// Envoy's canonicalizer does.
func NormalizePath(cfg state.PathNormalization, path string) (string, PathVerdict) {
	if !cfg.Enabled() {
		return path, PathContinue
	}
	if path == "*" {
		return path, PathContinue
	}
	if strings.IndexByte(path, '#') >= 0 {
		// Clients never send fragments; Envoy rejects them
		// (http_reject_path_with_fragment) rather than guess.
		return path, PathReject
	}
	p, query := splitQuery(path)
	verdict := PathContinue
	if cfg.EscapedSlashes != state.KeepEscapedSlashes {
		if u, found := unescapeSlashes(p); found {
			switch cfg.EscapedSlashes {
			case state.RejectEscapedSlashes:
				return path, PathReject
			case state.UnescapeAndRedirect:
				verdict = PathRedirect
			}
			p = u
		}
	}
	if cfg.NormalizePath {
		c, err := CanonicalPath(p)
		if err != nil {
			return path, PathReject
		}
		p = c
	}
	if cfg.MergeSlashes {
		p = MergeSlashes(p)
	}
	if query == "" || len(p) == len(path)-len(query) && p == path[:len(p)] {
		if query == "" {
			return p, verdict
		}
		return path, verdict
	}
	return p + query, verdict
}

// splitQuery splits path at the first '?': the query part keeps its '?'.
func splitQuery(path string) (string, string) {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return path[:i], path[i:]
	}
	return path, ""
}

// unescapeSlashes decodes %2F and %5C (any case) to '/' and '\'.
func unescapeSlashes(p string) (string, bool) {
	if !strings.Contains(p, "%") {
		return p, false
	}
	var b strings.Builder
	found := false
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			h := upperHex(p[i+1], p[i+2])
			if h == "2F" || h == "5C" {
				if !found {
					b.Grow(len(p))
					b.WriteString(p[:i])
					found = true
				}
				if h == "2F" {
					b.WriteByte('/')
				} else {
					b.WriteByte('\\')
				}
				i += 2
				continue
			}
		}
		if found {
			b.WriteByte(p[i])
		}
	}
	if !found {
		return p, false
	}
	return b.String(), true
}

func upperHex(a, b byte) string {
	return string([]byte{toUpperASCII(a), toUpperASCII(b)})
}

func toUpperASCII(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// CanonicalPath normalizes a path without query per RFC 3986 section 6.2.2
// the way Envoy's normalize_path does: percent-encoded unreserved
// characters are decoded (%61 -> a, %2E -> .), other escapes get upper-case
// hex digits, backslashes become slashes, bytes that may not appear in a
// path are percent-encoded, and "." and ".." segments are removed (section
// 5.2.4; ".." never climbs above the root).
func CanonicalPath(p string) (string, error) {
	if p == "" || (p[0] != '/' && p[0] != '\\') {
		return "", ErrInvalidPath
	}
	if isPlainPath(p) {
		// The common case: nothing to decode or escape; no allocation
		// unless there are dot segments.
		return removeDotSegments(p), nil
	}
	// Decode first so that "%2e%2e" is recognised as a dot segment.
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]):
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			if isUnreserved(v) {
				b.WriteByte(v)
			} else {
				b.WriteByte('%')
				b.WriteByte(toUpperASCII(p[i+1]))
				b.WriteByte(toUpperASCII(p[i+2]))
			}
			i += 2
		case c == '\\':
			b.WriteByte('/')
		case needsEscape(c):
			const hexDigits = "0123456789ABCDEF"
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		default:
			b.WriteByte(c)
		}
	}
	return removeDotSegments(b.String()), nil
}

// isPlainPath reports a path that canonicalization leaves byte for byte
// (dot segments aside): no escapes, no backslashes, nothing to encode.
func isPlainPath(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c == '\\' || needsEscape(c) {
			return false
		}
	}
	return true
}

// hasDotSegment reports whether p has a "." or ".." segment.
func hasDotSegment(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '.' || (i > 0 && p[i-1] != '/') {
			continue
		}
		j := i + 1
		if j < len(p) && p[j] == '.' {
			j++
		}
		if j == len(p) || p[j] == '/' {
			return true
		}
	}
	return false
}

// removeDotSegments is RFC 3986 section 5.2.4 for an absolute path.
func removeDotSegments(p string) string {
	if !hasDotSegment(p) {
		return p
	}
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
			if last {
				out = append(out, "")
			}
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			if last {
				out = append(out, "")
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// MergeSlashes collapses runs of '/' into one.
func MergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// isUnreserved is RFC 3986's unreserved set: ALPHA DIGIT - . _ ~
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// needsEscape reports bytes that may not appear literally in a path:
// controls, space, non-ASCII and the delimiters RFC 3986 excludes ("<>^`{|}
// and the double quote). '%' not starting a valid escape is escaped too.
func needsEscape(c byte) bool {
	if c <= 0x20 || c >= 0x7f {
		return true
	}
	switch c {
	case '"', '<', '>', '^', '`', '{', '|', '}', '%':
		return true
	}
	return false
}
