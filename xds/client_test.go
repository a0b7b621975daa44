package xds

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

var modes = []struct {
	name  string
	delta bool
}{{"sotw", false}, {"delta", true}}

type harness struct {
	cp    *controlPlane
	store *state.Store
	c     *Client
}

// startClient runs a client against cp until the end of the test.
func startClient(t *testing.T, cp *controlPlane, delta bool, store *state.Store, tweak func(*Client)) *harness {
	t.Helper()
	if store == nil {
		store = state.NewStore()
	}
	c := New(Config{
		Address: cp.addr,
		Node:    Node{ID: testNodeID, Metadata: map[string]string{"CLUSTER_ID": "Kubernetes"}},
		Delta:   delta,
		Store:   store,
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff: Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond},
	})
	if tweak != nil {
		tweak(c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v after cancel, want nil", err)
		}
	})
	return &harness{cp: cp, store: store, c: c}
}

// waitFor polls cond for up to 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitReady(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("client never became ready")
	}
}

func keys[V any](m map[string]V) []string {
	return slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
}

func endpointAddrs(cla *state.ClusterLoadAssignment) []string {
	var out []string
	if cla == nil {
		return nil
	}
	for _, l := range cla.Localities {
		for _, e := range l.Endpoints {
			out = append(out, e.Address)
		}
	}
	return out
}

func staticStore() *state.Store {
	s := state.NewStore()
	s.Update(func(n *state.Snapshot) bool {
		n.Listeners["static-l"] = &state.Listener{Name: "static-l", Static: true, Address: netip.MustParseAddrPort("127.0.0.1:1")}
		// A static EDS cluster gets its endpoints over ADS.
		n.Clusters["static-c"] = &state.Cluster{Name: "static-c", Static: true, Type: state.ClusterEDS}
		return true
	})
	return s
}

// TestSync covers initial sync, update and removal, RDS/EDS subscriptions
// following references, and static resources surviving all of it.
func TestSync(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(
				httpListener("l1", 8001, "r1"), tcpListener("l2", 8002, "c2"),
				// Same name as a static listener: must not replace it.
				tcpListener("static-l", 9999, "c1"),
				edsCluster("c1"), edsCluster("c2"),
				routeConfig("r1", "a.example"),
				assignment("c1", 9001), assignment("c2", 9002), assignment("static-c", 9100),
			))
			h := startClient(t, cp, m.delta, staticStore(), nil)
			waitReady(t, h.c)

			snap := h.store.Load()
			if got, want := keys(snap.Listeners), []string{"l1", "l2", "static-l"}; !slices.Equal(got, want) {
				t.Errorf("listeners = %v, want %v", got, want)
			}
			if sl := snap.Listeners["static-l"]; !sl.Static || sl.Address.Port() != 1 {
				t.Errorf("static listener replaced by xDS: %+v", sl)
			}
			if got, want := keys(snap.Clusters), []string{"c1", "c2", "static-c"}; !slices.Equal(got, want) {
				t.Errorf("clusters = %v, want %v", got, want)
			}
			if got, want := keys(snap.Routes), []string{"r1"}; !slices.Equal(got, want) {
				t.Errorf("routes = %v, want %v", got, want)
			}
			if got, want := keys(snap.Endpoints), []string{"c1", "c2", "static-c"}; !slices.Equal(got, want) {
				t.Errorf("endpoints = %v, want %v", got, want)
			}
			for _, typ := range typeURLs {
				if typ == state.TypeSecret {
					continue // nothing here references a secret
				}
				if snap.Versions[typ] != "1" {
					t.Errorf("store version[%s] = %q, want 1", typ, snap.Versions[typ])
				}
			}
			if st := h.c.Status(); !st.Connected || st.Versions[state.TypeListener] != "1" || st.LastNACK != "" {
				t.Errorf("status = %+v, want connected at version 1 without NACK", st)
			}

			// Update: l1 switches to route r2, c1's endpoints change, l2 and
			// c2 go away (and with c2 its assignment).
			cp.set("2", resources(
				httpListener("l1", 8001, "r2"),
				edsCluster("c1"),
				routeConfig("r2", "b.example"),
				assignment("c1", 9011), assignment("static-c", 9100),
			))
			waitFor(t, "version 2 applied", func() bool {
				s := h.store.Load()
				return s.Routes["r2"] != nil && slices.Equal(endpointAddrs(s.Endpoints["c1"]), []string{"127.0.0.1:9011"}) &&
					s.Versions[state.TypeListener] == "2" && s.Versions[state.TypeCluster] == "2"
			})
			snap = h.store.Load()
			if got, want := keys(snap.Listeners), []string{"l1", "static-l"}; !slices.Equal(got, want) {
				t.Errorf("after update listeners = %v, want %v", got, want)
			}
			if got, want := keys(snap.Clusters), []string{"c1", "static-c"}; !slices.Equal(got, want) {
				t.Errorf("after update clusters = %v, want %v", got, want)
			}
			if got, want := keys(snap.Routes), []string{"r2"}; !slices.Equal(got, want) {
				t.Errorf("after update routes = %v, want %v", got, want)
			}
			if got, want := keys(snap.Endpoints), []string{"c1", "static-c"}; !slices.Equal(got, want) {
				t.Errorf("after update endpoints = %v, want %v", got, want)
			}
			checkSubscribed(t, cp, m.delta, state.TypeRoute, []string{"r2"})
			checkSubscribed(t, cp, m.delta, state.TypeEndpoint, []string{"c1", "static-c"})

			// Removal of everything dynamic: statics stay, and so does the
			// static cluster's EDS assignment.
			cp.set("3", resources(assignment("static-c", 9100)))
			waitFor(t, "version 3 applied", func() bool {
				s := h.store.Load()
				return s.Versions[state.TypeListener] == "3" && s.Versions[state.TypeCluster] == "3"
			})
			snap = h.store.Load()
			if got, want := keys(snap.Listeners), []string{"static-l"}; !slices.Equal(got, want) {
				t.Errorf("after removal listeners = %v, want %v", got, want)
			}
			if got, want := keys(snap.Clusters), []string{"static-c"}; !slices.Equal(got, want) {
				t.Errorf("after removal clusters = %v, want %v", got, want)
			}
			if len(snap.Routes) != 0 {
				t.Errorf("after removal routes = %v, want none", keys(snap.Routes))
			}
			if got, want := keys(snap.Endpoints), []string{"static-c"}; !slices.Equal(got, want) {
				t.Errorf("after removal endpoints = %v, want %v", got, want)
			}
			waitFor(t, "RDS unsubscribed", func() bool {
				return subscribed(cp, m.delta, state.TypeRoute) != nil && len(subscribed(cp, m.delta, state.TypeRoute)) == 0
			})
		})
	}
}

// subscribed returns the names the server was last asked for on typeURL:
// for SotW the last request's resource_names, for delta the running set of
// subscribes minus unsubscribes. nil means no request at all.
func subscribed(cp *controlPlane, delta bool, typeURL string) []string {
	if !delta {
		reqs := cp.sotwRequests(typeURL)
		if len(reqs) == 0 {
			return nil
		}
		names := slices.Clone(reqs[len(reqs)-1].GetResourceNames())
		slices.Sort(names)
		return append([]string{}, names...)
	}
	reqs := cp.deltaRequests(typeURL)
	if len(reqs) == 0 {
		return nil
	}
	set := map[string]bool{}
	for _, r := range reqs {
		for _, n := range r.GetResourceNamesSubscribe() {
			set[n] = true
		}
		for _, n := range r.GetResourceNamesUnsubscribe() {
			delete(set, n)
		}
	}
	return append([]string{}, keys(set)...)
}

func checkSubscribed(t *testing.T, cp *controlPlane, delta bool, typeURL string, want []string) {
	t.Helper()
	// The subscription request may trail the store update by a moment.
	waitFor(t, typeURL+" subscription "+strings.Join(want, ","), func() bool {
		return slices.Equal(subscribed(cp, delta, typeURL), want)
	})
}

// TestNACK sends an invalid listener: the whole LDS response is rejected
// with an error_detail naming it, the previous listeners keep serving, and
// a later valid response is accepted.
func TestNACK(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(tcpListener("l1", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001)))
			h := startClient(t, cp, m.delta, nil, nil)
			waitReady(t, h.c)

			cp.set("2", resources(
				tcpListener("l1", 8001, ""), // invalid: no cluster
				tcpListener("l3", 8003, "c3"),
				tcpListener("l4", 8004, ""), // invalid too: both are reported
				edsCluster("c1"), edsCluster("c3"),
				assignment("c1", 9001), assignment("c3", 9003),
			))
			waitFor(t, "a NACK", func() bool { return len(cp.nackMessages()) > 0 })
			msg := cp.nackMessages()[0]
			if !strings.Contains(msg, `listener "l1"`) || !strings.Contains(msg, "tcp_proxy") ||
				!strings.Contains(msg, `; listener "l4"`) {
				t.Errorf("NACK error_detail = %q, want listeners l1 and l4 and the tcp_proxy field, joined by \"; \"", msg)
			}
			if m.delta {
				for _, r := range cp.deltaRequests(state.TypeListener) {
					if r.GetErrorDetail() != nil && (r.GetResponseNonce() == "" || r.GetErrorDetail().GetCode() != 3) {
						t.Errorf("delta NACK = %v, want the response nonce and code INVALID_ARGUMENT", r)
					}
				}
			} else {
				for _, r := range cp.sotwRequests(state.TypeListener) {
					if r.GetErrorDetail() != nil && (r.GetVersionInfo() != "1" || r.GetResponseNonce() == "" || r.GetErrorDetail().GetCode() != 3) {
						t.Errorf("NACK = %v, want version_info 1 (last good), the response nonce and code INVALID_ARGUMENT", r)
					}
				}
			}
			// Clusters are a separate response and were valid.
			waitFor(t, "clusters v2", func() bool { return h.store.Load().Clusters["c3"] != nil })

			snap := h.store.Load()
			if l := snap.Listeners["l1"]; l == nil || l.FilterChains[0].TCPProxy == nil || l.FilterChains[0].TCPProxy.Cluster != "c1" {
				t.Errorf("listener l1 = %+v, want the last good one (tcp_proxy to c1)", l)
			}
			// As in Envoy and gRPC, the valid listener of the NACKed
			// response is applied; the invalid ones keep their last good
			// value (l1) or stay absent (l4).
			if l := snap.Listeners["l3"]; l == nil || l.Address.Port() != 8003 {
				t.Errorf("listener l3 = %+v, want the valid listener of the NACKed response applied", l)
			}
			if snap.Listeners["l4"] != nil {
				t.Error("invalid listener l4 applied")
			}
			if snap.Versions[state.TypeListener] != "1" {
				t.Errorf("listener version = %q, want 1", snap.Versions[state.TypeListener])
			}
			st := h.c.Status()
			if !strings.Contains(st.LastNACK, `listener "l1"`) {
				t.Errorf("Status().LastNACK = %q, want the decoder error", st.LastNACK)
			}

			// l3 changes too, so that a delta server (which counts what it
			// sent, NACKed or not) sends it again.
			cp.set("3", resources(
				tcpListener("l1", 8001, "c1"), tcpListener("l3", 8013, "c3"),
				edsCluster("c1"), edsCluster("c3"),
				assignment("c1", 9001), assignment("c3", 9003),
			))
			waitFor(t, "listeners v3", func() bool {
				s := h.store.Load()
				return s.Listeners["l3"] != nil && s.Listeners["l3"].Address.Port() == 8013 && s.Listeners["l1"] != nil
			})
		})
	}
}

// TestReconnect stops the control plane: the store keeps serving the last
// config; changes made meanwhile (including a removal) arrive after the
// server comes back, over a re-subscribed stream.
func TestReconnect(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(
				httpListener("l1", 8001, "r1"), tcpListener("l0", 8000, "c1"),
				edsCluster("c1"), routeConfig("r1", "a.example"), assignment("c1", 9001),
			))
			h := startClient(t, cp, m.delta, nil, nil)
			waitReady(t, h.c)
			before := h.store.Load()

			cp.stop()
			waitFor(t, "disconnected status", func() bool { return !h.c.Status().Connected })
			time.Sleep(200 * time.Millisecond) // a few failed reconnect attempts
			if h.store.Load() != before {
				t.Error("store changed while the control plane was down")
			}

			cp.mu.Lock()
			nSotw, nDelta := len(cp.requests), len(cp.deltas)
			cp.mu.Unlock()
			cp.set("2", resources(
				httpListener("l1", 8001, "r1"), tcpListener("l2", 8002, "c1"),
				edsCluster("c1"), routeConfig("r1", "a.example"), assignment("c1", 9011),
			))
			cp.restart()
			waitFor(t, "version 2 after reconnect", func() bool {
				s := h.store.Load()
				return s.Listeners["l2"] != nil && s.Listeners["l0"] == nil &&
					slices.Equal(endpointAddrs(s.Endpoints["c1"]), []string{"127.0.0.1:9011"})
			})
			if s := h.store.Load(); s.Routes["r1"] == nil || s.Listeners["l1"] == nil {
				t.Errorf("after reconnect lost l1/r1: listeners %v routes %v", keys(s.Listeners), keys(s.Routes))
			}
			if !h.c.Status().Connected {
				t.Error("status not connected after reconnect")
			}

			// The server may answer LDS before it has read the RDS request
			// sent right after it, so wait for the request to be recorded.
			resubscribed := func() bool {
				cp.mu.Lock()
				defer cp.mu.Unlock()
				if m.delta {
					var sawLDS, sawRDS bool
					for _, r := range cp.deltas[nDelta:] {
						switch r.GetTypeUrl() {
						case state.TypeListener:
							_, ok := r.GetInitialResourceVersions()["l1"]
							sawLDS = sawLDS || ok
						case state.TypeRoute:
							sawRDS = sawRDS || slices.Contains(r.GetResourceNamesSubscribe(), "r1") && r.GetInitialResourceVersions()["r1"] != ""
						}
					}
					return sawLDS && sawRDS
				}
				var sawRDS, sawEDS bool
				for _, r := range cp.requests[nSotw:] {
					switch r.GetTypeUrl() {
					case state.TypeRoute:
						sawRDS = sawRDS || slices.Equal(r.GetResourceNames(), []string{"r1"})
					case state.TypeEndpoint:
						sawEDS = sawEDS || slices.Equal(r.GetResourceNames(), []string{"c1"})
					}
				}
				return sawRDS && sawEDS
			}
			waitFor(t, "re-subscription (SotW: RDS r1 and EDS c1; delta: LDS and RDS initial_resource_versions)", resubscribed)
		})
	}
}

// TestReady checks that Ready waits for referenced RDS/EDS resources, and
// gives up waiting after the timeout when they never come.
func TestReady(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name+"/waits for references", func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(httpListener("l1", 8001, "r1"), edsCluster("c1")))
			h := startClient(t, cp, m.delta, nil, func(c *Client) { c.readyTimeout = time.Hour })
			waitFor(t, "LDS and CDS applied", func() bool {
				s := h.store.Load()
				return s.Listeners["l1"] != nil && s.Clusters["c1"] != nil
			})
			select {
			case <-h.c.Ready():
				t.Fatal("ready before route r1 and endpoints c1 arrived")
			case <-time.After(100 * time.Millisecond):
			}
			cp.set("2", resources(httpListener("l1", 8001, "r1"), edsCluster("c1"), routeConfig("r1", "a.example"), assignment("c1", 9001)))
			waitReady(t, h.c)
			if s := h.store.Load(); s.Routes["r1"] == nil || s.Endpoints["c1"] == nil {
				t.Error("ready without r1 and c1 in the store")
			}
		})
		t.Run(m.name+"/timeout", func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(httpListener("l1", 8001, "missing"), edsCluster("c1"), assignment("c1", 9001)))
			h := startClient(t, cp, m.delta, nil, func(c *Client) { c.readyTimeout = 200 * time.Millisecond })
			waitReady(t, h.c)
			if h.store.Load().Routes["missing"] != nil {
				t.Error("route appeared from nowhere")
			}
		})
	}
}

// TestUnreachable runs against a port nobody listens on: Run keeps retrying,
// reports the failure, leaves the store alone and returns when cancelled.
func TestUnreachable(t *testing.T) {
	cp := startControlPlane(t, "127.0.0.1:0")
	cp.stop()
	store := staticStore()
	before := store.Load()
	h := startClient(t, cp, false, store, nil)
	waitFor(t, "a failed attempt", func() bool { return h.c.Status().LastError != "" })
	if st := h.c.Status(); st.Connected {
		t.Errorf("status = %+v, want not connected", st)
	}
	if store.Load() != before {
		t.Error("store changed without a control plane")
	}
	select {
	case <-h.c.Ready():
		t.Error("ready without a control plane")
	default:
	}
}

func TestRunConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no address", Config{Store: state.NewStore()}, "address is required"},
		{"no store", Config{Address: "127.0.0.1:1"}, "store is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := New(tt.cfg).Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}
