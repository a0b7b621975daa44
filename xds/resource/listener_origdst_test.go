package resource

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestDecodeListenerOriginalDstAndTransparent: istiod's virtualInbound
// finds the original destination through the original_dst listener filter
// (not use_original_dst), and in TPROXY mode sets transparent.
func TestDecodeListenerOriginalDstAndTransparent(t *testing.T) {
	for _, tc := range []struct {
		name            string
		edit            func(*listenerv3.Listener)
		wantOrigDst     bool
		wantTransparent bool
	}{
		{"neither", func(*listenerv3.Listener) {}, false, false},
		{"typed original_dst", func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{
				{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &tlsinspectorv3.TlsInspector{})}},
				{Name: "whatever", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &originaldstv3.OriginalDst{})}},
			}
		}, true, false},
		{"original_dst by name", func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.original_dst"}}
		}, true, false},
		{"only the tls inspector", func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector"}}
		}, false, false},
		{"transparent", func(l *listenerv3.Listener) { l.Transparent = wrapperspb.Bool(true) }, false, true},
		{"transparent false", func(l *listenerv3.Listener) { l.Transparent = wrapperspb.Bool(false) }, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := tcpListener(t)
			tc.edit(l)
			got, err := DecodeListener(l)
			if err != nil {
				t.Fatal(err)
			}
			if got.OriginalDstFilter != tc.wantOrigDst || got.Transparent != tc.wantTransparent {
				t.Errorf("OriginalDstFilter %v Transparent %v, want %v %v", got.OriginalDstFilter, got.Transparent, tc.wantOrigDst, tc.wantTransparent)
			}
			if got.UseOriginalDst {
				t.Error("the original_dst filter must not turn on the use_original_dst handoff")
			}
		})
	}
}
