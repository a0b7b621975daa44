package httpproxy

import (
	"context"
	"net/http"

	"github.com/meshlet/meshlet/dataplane/upstream"
)

// roundTripH1 sends req to ep over the HTTP/1.1 pool and returns the
// response (body streaming). Used by the HTTP/2 downstream path when the
// upstream speaks HTTP/1.1. Owner: HTTP/1.1 engineer (replace this stub).
func (p *Proxy) roundTripH1(ctx context.Context, ep *upstream.Endpoint, req *http.Request) (*http.Response, error) {
	panic("roundTripH1: not implemented")
}
