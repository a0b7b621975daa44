package resource

import (
	"fmt"
	"net/textproto"
	"strings"
)

// decodeInternalOnlyHeaders validates internal_only_headers and returns the
// names lower-cased (the HTTP/1.1 path compares them so) and in net/http's
// canonical form (the HTTP/2 and in-process paths index header maps by
// it), duplicates dropped, so no request pays for normalising them.
func decodeInternalOnlyHeaders(names []string) (lower, canon []string, err error) {
	if len(names) == 0 {
		return nil, nil, nil
	}
	seen := make(map[string]bool, len(names))
	for i, n := range names {
		if !validHeaderName(n) {
			return nil, nil, errAt(fmt.Sprintf("internal_only_headers[%d]", i), "%q is not a valid header name", n)
		}
		l := strings.ToLower(n)
		if seen[l] {
			continue
		}
		seen[l] = true
		lower = append(lower, l)
		canon = append(canon, textproto.CanonicalMIMEHeaderKey(l))
	}
	return lower, canon, nil
}

// validHeaderName reports whether n is an RFC 9110 token: pseudo-headers
// and names with separators can never be on a request to remove.
func validHeaderName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
