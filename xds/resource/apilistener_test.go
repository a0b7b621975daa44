package resource

import (
	"errors"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

// TestAPIListenerSkipped: an api_listener (for proxyless gRPC clients) in
// LDS is marked ErrNotForProxy so the client skips it rather than NACKing
// the whole update, as Envoy does.
func TestAPIListenerSkipped(t *testing.T) {
	raw, err := anypb.New(&listenerv3.Listener{Name: "svc.example", ApiListener: &listenerv3.ApiListener{}})
	if err != nil {
		t.Fatal(err)
	}
	name, v, err := Decode(state.TypeListener, raw)
	if !errors.Is(err, ErrNotForProxy) || name != "svc.example" || v != nil {
		t.Fatalf("Decode = %q, %v, %v; want the name and ErrNotForProxy", name, v, err)
	}
}
