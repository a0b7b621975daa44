package resource

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

// TestListenerFiltersTimeoutZeroDisables: Envoy reads an explicit
// listener_filters_timeout of 0s as "no timeout"; unset means 15s.
func TestListenerFiltersTimeoutZeroDisables(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  *durationpb.Duration
		want time.Duration
	}{
		{"unset", nil, 15 * time.Second},
		{"explicit 0s", durationpb.New(0), -1},
		{"3s", durationpb.New(3 * time.Second), 3 * time.Second},
	} {
		p := tcpListener(t)
		p.ListenerFiltersTimeout = tc.set
		l, err := DecodeListener(p)
		if err != nil {
			t.Fatal(err)
		}
		if l.ListenerFiltersTimeout != tc.want {
			t.Errorf("%s: ListenerFiltersTimeout = %v, want %v", tc.name, l.ListenerFiltersTimeout, tc.want)
		}
	}
}

func TestContinueOnListenerFiltersTimeout(t *testing.T) {
	p := tcpListener(t)
	p.ContinueOnListenerFiltersTimeout = true
	l, err := DecodeListener(p)
	if err != nil {
		t.Fatal(err)
	}
	if !l.ContinueOnListenerFiltersTimeout {
		t.Fatal("continue_on_listener_filters_timeout not decoded")
	}
}
