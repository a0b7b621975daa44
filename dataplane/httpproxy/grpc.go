package httpproxy

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// gRPC status codes used by local replies (grpc/codes values).
const (
	grpcUnknown          = 2
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcInternal         = 13
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
)

// isGRPCContentType reports whether a content-type names gRPC
// ("application/grpc", "application/grpc+proto", "application/grpc;...").
// grpc-web is not gRPC here: it is HTTP/1.1-shaped and answered as HTTP.
func isGRPCContentType(ct string) bool {
	const p = "application/grpc"
	if len(ct) < len(p) || !strings.EqualFold(ct[:len(p)], p) {
		return false
	}
	if len(ct) == len(p) {
		return true
	}
	switch ct[len(p)] {
	case '+', ';':
		return true
	}
	return false
}

// httpToGRPCStatus maps the HTTP status of a local reply to the gRPC status
// Envoy puts in it (Grpc::Utility::httpToGrpcStatus, which follows gRPC's
// doc/http-grpc-status-mapping.md).
func httpToGRPCStatus(code int) int {
	switch code {
	case 400:
		return grpcInternal
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404:
		return grpcUnimplemented
	case 429, 502, 503, 504:
		return grpcUnavailable
	}
	return grpcUnknown
}

// writeGRPCStatus writes a trailers-only gRPC response with code and msg.
func writeGRPCStatus(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h["Content-Type"] = []string{"application/grpc"}
	h["Grpc-Status"] = []string{strconv.Itoa(code)}
	if msg != "" {
		h["Grpc-Message"] = []string{grpcPercentEncode(msg)}
	}
	w.WriteHeader(http.StatusOK)
}

// parseGRPCTimeout parses a grpc-timeout value: at most 8 digits and a
// unit (H, M, S, m, u, n), per gRPC's PROTOCOL-HTTP2.
func parseGRPCTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	var n int64
	for i := 0; i < len(v)-1; i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if max := int64(math.MaxInt64 / unit); n > max {
		return time.Duration(math.MaxInt64), true
	}
	return time.Duration(n) * unit, true
}

// grpcDeadlinePassed reports whether the client's gRPC deadline (its
// grpc-timeout, counted from start, when the request arrived) is over.
// The upstream then typically resets the stream because of that deadline,
// and the honest status is DEADLINE_EXCEEDED rather than UNAVAILABLE.
func grpcDeadlinePassed(h http.Header, start time.Time) bool {
	v := h["Grpc-Timeout"]
	if len(v) != 1 {
		return false
	}
	d, ok := parseGRPCTimeout(v[0])
	return ok && time.Since(start) >= d
}

// grpcPercentEncode encodes a grpc-message value: bytes outside printable
// ASCII, and '%' itself, become %XX (gRPC PROTOCOL-HTTP2, "Responses").
func grpcPercentEncode(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
