package resource

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

// FuzzDecode feeds serialized Listener bytes to Decode: it must never panic,
// and a success must produce a listener with at least one chain.
func FuzzDecode(f *testing.F) {
	seeds := []*listenerv3.Listener{tcpListener(f)}
	h := tcpListener(f)
	rc := simpleRouteConfig()
	hc := rdsHCM(f, "r")
	hc.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
	h.FilterChains[0].Filters[0] = hcmFilter(f, hc)
	seeds = append(seeds, h)
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name, v, err := Decode(state.TypeListener, &anypb.Any{TypeUrl: state.TypeListener, Value: b})
		if err != nil {
			if v != nil {
				t.Fatalf("value %v returned with error %v", v, err)
			}
			return
		}
		l, ok := v.(*state.Listener)
		if !ok || l.Name != name || (len(l.FilterChains) == 0 && l.DefaultFilterChain == nil) {
			t.Fatalf("bad result %#v for %q", v, name)
		}
		References(l)
	})
}
