package httpproxy

import (
	"net/http"
	"strconv"
)

// outlierStatus is the status outlier detection and the circuit breakers
// see for an upstream response. Like Envoy's router, a gRPC status that
// arrives in the response headers (a trailers-only response) is mapped to
// the HTTP status it stands for, so a backend answering UNAVAILABLE counts
// as a 503; a status sent later in trailers is not counted.
func outlierStatus(resp *http.Response) int {
	if v := resp.Header.Get("grpc-status"); v != "" && resp.StatusCode == http.StatusOK {
		if code, err := strconv.Atoi(v); err == nil {
			return grpcToHTTPStatus(code)
		}
	}
	return resp.StatusCode
}

// grpcToHTTPStatus maps a gRPC status code to HTTP as Envoy's
// Grpc::Utility::grpcToHttpStatus does.
func grpcToHTTPStatus(code int) int {
	switch code {
	case 0:
		return 200
	case 1: // CANCELLED
		return 499
	case 3, 9, 11: // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
		return 400
	case 4: // DEADLINE_EXCEEDED
		return 504
	case 5: // NOT_FOUND
		return 404
	case 6, 10: // ALREADY_EXISTS, ABORTED
		return 409
	case 7: // PERMISSION_DENIED
		return 403
	case 8: // RESOURCE_EXHAUSTED
		return 429
	case 12: // UNIMPLEMENTED
		return 501
	case 14: // UNAVAILABLE
		return 503
	case 16: // UNAUTHENTICATED
		return 401
	}
	return 500 // UNKNOWN, INTERNAL, DATA_LOSS and anything else
}
