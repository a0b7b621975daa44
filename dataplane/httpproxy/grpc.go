package httpproxy

import (
	"net/http"
	"strconv"
	"strings"
)

// gRPC status codes used by local replies (grpc/codes values).
const (
	grpcUnknown          = 2
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

// writeGRPCLocalReply answers a gRPC request the way Envoy does: HTTP 200
// with grpc-status (mapped from the would-be HTTP status) and grpc-message
// (the local reply body) in a trailers-only response, so gRPC clients see a
// status instead of a protocol error.
func writeGRPCLocalReply(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h["Content-Type"] = []string{"application/grpc"}
	h["Grpc-Status"] = []string{strconv.Itoa(httpToGRPCStatus(status))}
	if body != "" {
		h["Grpc-Message"] = []string{grpcPercentEncode(body)}
	}
	w.WriteHeader(http.StatusOK)
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
