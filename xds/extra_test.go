package xds

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

// stringWatcher accepts testExtraType resources ("name=value" strings)
// unless a value is "bad", and records the values it accepted.
type stringWatcher struct {
	mu       sync.Mutex
	accepted map[string]string // last accepted set, name -> value
	calls    int
}

func (w *stringWatcher) Apply(res map[string]*anypb.Any) error {
	got := map[string]string{}
	for name, a := range res {
		var s wrapperspb.StringValue
		if err := a.UnmarshalTo(&s); err != nil {
			return fmt.Errorf("resource %q: %w", name, err)
		}
		_, v, _ := strings.Cut(s.GetValue(), "=")
		if v == "bad" {
			return fmt.Errorf("resource %q: value %q refused by the watcher", name, v)
		}
		got[name] = v
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.accepted = got
	w.calls++
	return nil
}

// values returns the accepted values, sorted.
func (w *stringWatcher) values() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, v := range w.accepted {
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

func (w *stringWatcher) names() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return keys(w.accepted)
}

// stringName is an ExtraType.Name for the test resources: "a=one" is a.
func stringName(a *anypb.Any) (string, error) {
	var s wrapperspb.StringValue
	if err := a.UnmarshalTo(&s); err != nil {
		return "", err
	}
	name, _, ok := strings.Cut(s.GetValue(), "=")
	if !ok {
		return "", fmt.Errorf("%q has no name", s.GetValue())
	}
	return name, nil
}

func (cp *controlPlane) setExtra(name, value string) {
	cp.t.Helper()
	if err := cp.extra.UpdateResource(name, wrapperspb.String(name+"="+value)); err != nil {
		cp.t.Fatal(err)
	}
}

// extraRequests returns the requests for testExtraType as (version or
// initial versions, nonce, error_detail) triples, whatever the variant.
type extraReq struct {
	version string // SotW version_info; for delta, initial_resource_versions rendered
	nonce   string
	nack    string
}

func (cp *controlPlane) extraRequests(delta bool) []extraReq {
	var out []extraReq
	if delta {
		for _, r := range cp.deltaRequests(testExtraType) {
			out = append(out, extraReq{fmt.Sprint(r.GetInitialResourceVersions()), r.GetResponseNonce(), r.GetErrorDetail().GetMessage()})
		}
		return out
	}
	for _, r := range cp.sotwRequests(testExtraType) {
		out = append(out, extraReq{r.GetVersionInfo(), r.GetResponseNonce(), r.GetErrorDetail().GetMessage()})
	}
	return out
}

// TestExtraType: an extra type given in Config.Extra is subscribed on the
// one ADS stream with the Envoy types, applied through its watcher and
// ACKed; a response the watcher refuses is NACKed with the watcher's error
// in error_detail and the last accepted set stays; after the control plane
// restarts the type is subscribed again on the new stream and updates
// flow.
func TestExtraType(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(tcpListener("l1", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001)))
			cp.setExtra("a", "one")
			w := &stringWatcher{}
			h := startClient(t, cp, m.delta, nil, nil)
			// Run has just started: the type is adopted at the start of
			// the first stream or, if that is already up, on it.
			if err := h.c.Watch(ExtraType{TypeURL: testExtraType, Name: stringName, Watcher: w}); err != nil {
				t.Fatal(err)
			}
			waitReady(t, h.c)
			waitFor(t, "extra resource applied", func() bool { return slices.Equal(w.values(), []string{"one"}) })
			if got := w.names(); !slices.Equal(got, []string{"a"}) {
				t.Errorf("watcher names = %v, want [a]", got)
			}
			if h.store.Load().Listeners["l1"] == nil {
				t.Error("core types not applied beside the extra type")
			}
			// ACK: a request answering the response, without error.
			waitFor(t, "ACK", func() bool {
				rs := cp.extraRequests(m.delta)
				return len(rs) >= 2 && rs[len(rs)-1].nonce != "" && rs[len(rs)-1].nack == ""
			})
			accepted := h.c.Status().Versions[testExtraType]
			if accepted == "" {
				t.Error("Status().Versions lacks the extra type")
			}
			if n := cp.streams.Load(); n != 1 {
				t.Errorf("control plane saw %d streams, want 1", n)
			}

			// The watcher refuses "bad": NACK naming its error; last good kept.
			cp.setExtra("a", "bad")
			waitFor(t, "NACK", func() bool { return len(cp.nackMessages()) > 0 })
			msg := cp.nackMessages()[0]
			if !strings.Contains(msg, `resource "`) || !strings.Contains(msg, `value "bad" refused by the watcher`) || !strings.Contains(msg, testExtraType) {
				t.Errorf("NACK error_detail = %q, want the watcher's error and the type", msg)
			}
			if !m.delta {
				for _, r := range cp.extraRequests(false) {
					if r.nack != "" && r.version != accepted {
						t.Errorf("NACK version_info = %q, want the last accepted %q", r.version, accepted)
					}
				}
			}
			if got := w.values(); !slices.Equal(got, []string{"one"}) {
				t.Errorf("after NACK watcher holds %v, want [one]", got)
			}
			if st := h.c.Status(); st.Versions[testExtraType] != accepted || !strings.Contains(st.LastNACK, "refused") {
				t.Errorf("after NACK status = %+v, want version %q and the NACK", st, accepted)
			}

			cp.setExtra("a", "two")
			waitFor(t, "fixed update applied", func() bool { return slices.Equal(w.values(), []string{"two"}) })

			// Restart: the new stream subscribes the type again, reporting
			// what is held, and updates made afterwards arrive.
			before := len(cp.extraRequests(m.delta))
			cp.restart()
			waitFor(t, "re-subscription", func() bool {
				rs := cp.extraRequests(m.delta)
				for _, r := range rs[before:] {
					if r.nonce == "" && r.version != "" && r.version != "map[]" {
						return true
					}
				}
				return false
			})
			cp.setExtra("b", "three")
			waitFor(t, "update after restart", func() bool { return slices.Equal(w.values(), []string{"three", "two"}) })
			if n := cp.streams.Load(); n != 2 {
				t.Errorf("control plane saw %d streams over a restart, want 2", n)
			}
		})
	}
}

// TestExtraTypeConfig: Config.Extra subscribes from the first stream, and
// Watch on a client whose stream is already running subscribes on it.
func TestExtraTypeConfig(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(tcpListener("l1", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001)))
			cp.setExtra("a", "one")

			w1 := &stringWatcher{}
			c := New(Config{Address: cp.addr, Node: Node{ID: testNodeID}, Delta: m.delta, Store: state.NewStore(),
				Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Extra: []ExtraType{{TypeURL: testExtraType, Watcher: w1}}})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- c.Run(ctx) }()
			waitFor(t, "Config.Extra applied", func() bool { return slices.Equal(w1.values(), []string{"one"}) })
			// No Name: a SotW resource is keyed by position.
			wantName := "#0"
			if m.delta {
				wantName = "a"
			}
			if got := w1.names(); !slices.Equal(got, []string{wantName}) {
				t.Errorf("watcher names = %v, want [%s]", got, wantName)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}

			// A running client: Watch after it is ready.
			h := startClient(t, cp, m.delta, nil, nil)
			waitReady(t, h.c)
			w2 := &stringWatcher{}
			if err := h.c.Watch(ExtraType{TypeURL: testExtraType, Watcher: w2}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "Watch while running", func() bool { return slices.Equal(w2.values(), []string{"one"}) })
		})
	}
}

// TestExtraTypeNamed: with Names, only those resources are subscribed and
// handed on.
func TestExtraTypeNamed(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(tcpListener("l1", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001)))
			cp.setExtra("a", "one")
			cp.setExtra("b", "other")
			w := &stringWatcher{}
			h := startClient(t, cp, m.delta, nil, nil)
			if err := h.c.Watch(ExtraType{TypeURL: testExtraType, Names: []string{"a"}, Name: stringName, Watcher: w}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "named resource", func() bool { return slices.Equal(w.values(), []string{"one"}) })
			if m.delta {
				for _, r := range cp.deltaRequests(testExtraType) {
					if r.GetResponseNonce() == "" && !slices.Equal(r.GetResourceNamesSubscribe(), []string{"a"}) {
						t.Errorf("subscribe = %v, want [a]", r.GetResourceNamesSubscribe())
					}
				}
			} else {
				for _, r := range cp.sotwRequests(testExtraType) {
					if !slices.Equal(r.GetResourceNames(), []string{"a"}) {
						t.Errorf("resource_names = %v, want [a]", r.GetResourceNames())
					}
				}
			}
			cp.setExtra("b", "changed")
			cp.setExtra("a", "two")
			waitFor(t, "named update", func() bool { return slices.Equal(w.values(), []string{"two"}) })
		})
	}
}

func TestWatchErrors(t *testing.T) {
	noop := ExtraFunc(func(map[string]*anypb.Any) error { return nil })
	sotw := New(Config{Address: "x", Store: state.NewStore()})
	delta := New(Config{Address: "x", Store: state.NewStore(), Delta: true})
	if err := sotw.Watch(ExtraType{TypeURL: testExtraType, Watcher: noop}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		c    *Client
		x    ExtraType
		want string
	}{
		{"no type", sotw, ExtraType{Watcher: noop}, "type URL is required"},
		{"no watcher", sotw, ExtraType{TypeURL: "t"}, "watcher is required"},
		{"core type", sotw, ExtraType{TypeURL: state.TypeCluster, Watcher: noop}, "subscribes to it itself"},
		{"workload type", delta, ExtraType{TypeURL: state.TypeAddress, Watcher: noop}, "subscribes to it itself"},
		{"duplicate", sotw, ExtraType{TypeURL: testExtraType, Watcher: noop}, "already subscribed"},
		{"delta only on sotw", sotw, ExtraType{TypeURL: "t", Transport: DeltaOnly, Watcher: noop}, "delta xDS only"},
		{"sotw only on delta", delta, ExtraType{TypeURL: "t", Transport: SotWOnly, Watcher: noop}, "state-of-the-world xDS only"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Watch(tc.x)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Watch = %v, want an error containing %q", err, tc.want)
			}
		})
	}

	// A bad Config.Extra makes Run fail at once.
	c := New(Config{Address: "127.0.0.1:1", Store: state.NewStore(), Extra: []ExtraType{{TypeURL: testExtraType}}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Run(ctx); err == nil || !strings.Contains(err.Error(), "watcher is required") {
		t.Errorf("Run = %v, want the Config.Extra error", err)
	}
}
