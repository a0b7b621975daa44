package upstream

import (
	"math"
	"testing"
	"time"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

func odConfig(mod func(*state.OutlierDetection)) *state.OutlierDetection {
	cfg := &state.OutlierDetection{
		Consecutive5xx: 5, ConsecutiveGatewayFailure: 5, ConsecutiveLocalOriginFailure: 5,
		Interval: time.Hour, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second,
		MaxEjectionPercent: 100, EnforcingConsecutive5xx: 100, EnforcingConsecutiveLocalOriginFailure: 100,
		EnforcingSuccessRate: 100, EnforcingLocalOriginSuccessRate: 100,
		SuccessRateMinimumHosts: 5, SuccessRateRequestVolume: 100, SuccessRateStdevFactor: 1900,
		FailurePercentageThreshold: 85, FailurePercentageMinimumHosts: 5, FailurePercentageRequestVolume: 50,
	}
	if mod != nil {
		mod(cfg)
	}
	return cfg
}

// testDetector is a detector over n hosts with a fake clock; rebuilds are
// counted. Interval is an hour so the sweep goroutine never fires by
// itself: tests call sweep.
type testDetector struct {
	*detector
	hosts    []*lb.Host
	clock    time.Time
	rebuilds int
}

func newTestDetector(t *testing.T, n int, cfg *state.OutlierDetection) *testDetector {
	td := &testDetector{clock: time.Unix(1000, 0)}
	td.detector = newDetector(func() { td.rebuilds++ })
	td.now = func() time.Time { return td.clock }
	for i := range n {
		td.hosts = append(td.hosts, &lb.Host{Address: "10.0.0." + string(rune('1'+i)) + ":80"})
	}
	td.setHosts(td.hosts)
	td.configure(cfg)
	t.Cleanup(func() { td.configure(nil) })
	return td
}

func (td *testDetector) report(h *lb.Host, status, n int) {
	for range n {
		td.putHTTP(h, status)
	}
}

func TestMayEject(t *testing.T) {
	for _, tc := range []struct {
		active, total int
		max           uint32
		alwaysOne     bool
		want          bool
	}{
		{0, 10, 10, false, true},  // 10% <= 10%
		{1, 10, 10, false, false}, // 20% > 10%
		{0, 5, 10, false, false},  // 20% > 10%: small clusters eject nothing by default
		{0, 5, 10, true, true},    // unless always_eject_one_host
		{1, 5, 10, true, false},   // and only the first
		{1, 2, 100, false, true},
		{0, 2, 50, false, true},
		{1, 3, 50, false, false}, // 66% > 50%
		{0, 0, 100, true, false}, // no hosts
		{2, 4, 200, false, true}, // capped at 100
	} {
		if got := mayEject(tc.active, tc.total, tc.max, tc.alwaysOne); got != tc.want {
			t.Errorf("mayEject(%d, %d, %d, %v) = %v, want %v", tc.active, tc.total, tc.max, tc.alwaysOne, got, tc.want)
		}
	}
}

func TestEjectionDuration(t *testing.T) {
	cfg := odConfig(func(c *state.OutlierDetection) {
		c.BaseEjectionTime = 30 * time.Second
		c.MaxEjectionTime = 100 * time.Second
	})
	for _, tc := range []struct {
		backoff uint32
		want    time.Duration
	}{{1, 30 * time.Second}, {2, 60 * time.Second}, {3, 90 * time.Second}, {4, 100 * time.Second}, {40, 100 * time.Second}} {
		if got := ejectionDuration(cfg, tc.backoff); got != tc.want {
			t.Errorf("backoff %d: %v, want %v", tc.backoff, got, tc.want)
		}
	}
}

func TestSuccessRateThreshold(t *testing.T) {
	s := func(total, fail uint64) rateSample { return rateSample{total: total, fail: fail} }
	for _, tc := range []struct {
		name     string
		samples  []rateSample
		volume   uint64
		minHosts int
		factor   uint32
		want     float64
		ok       bool
	}{
		{"all equal", []rateSample{s(100, 0), s(100, 0), s(100, 0)}, 100, 3, 1900, 100, true},
		// rates 100,100,100,100,50: mean 90, population stdev 20.
		{"one bad", []rateSample{s(100, 0), s(100, 0), s(100, 0), s(100, 0), s(100, 50)}, 100, 5, 1900, 90 - 20*1.9, true},
		{"factor 1000", []rateSample{s(100, 0), s(100, 0), s(100, 0), s(100, 0), s(100, 50)}, 100, 5, 1000, 70, true},
		{"too few hosts", []rateSample{s(100, 0), s(100, 50)}, 100, 5, 1900, 0, false},
		{"low volume ignored", []rateSample{s(100, 0), s(100, 0), s(10, 10)}, 100, 3, 1900, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := successRateThreshold(tc.samples, tc.volume, tc.minHosts, tc.factor)
			if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("got (%v, %v), want (%v, %v)", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestConsecutiveEjection: each consecutive detector ejects at its
// threshold and not before; a success in between starts over.
func TestConsecutiveEjection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     func(*state.OutlierDetection)
		feed    func(td *testDetector, h *lb.Host)
		ejected bool
		reason  string
	}{
		{"5xx at threshold", nil, func(td *testDetector, h *lb.Host) { td.report(h, 500, 5) }, true, "consecutive_5xx"},
		{"5xx below threshold", nil, func(td *testDetector, h *lb.Host) { td.report(h, 500, 4) }, false, ""},
		{"success resets", nil, func(td *testDetector, h *lb.Host) {
			td.report(h, 500, 4)
			td.report(h, 200, 1)
			td.report(h, 500, 4)
		}, false, ""},
		{"4xx is a success", nil, func(td *testDetector, h *lb.Host) {
			td.report(h, 500, 4)
			td.report(h, 404, 1)
			td.report(h, 500, 1)
		}, false, ""},
		{"gateway not enforced by default", func(c *state.OutlierDetection) { c.Consecutive5xx = 100 },
			func(td *testDetector, h *lb.Host) { td.report(h, 503, 10) }, false, ""},
		{"gateway enforced", func(c *state.OutlierDetection) {
			c.Consecutive5xx = 100
			c.EnforcingConsecutiveGatewayFailure = 100
			c.ConsecutiveGatewayFailure = 3
		},
			func(td *testDetector, h *lb.Host) { td.report(h, 502, 3) }, true, "consecutive_gateway_failure"},
		{"500 breaks a gateway run", func(c *state.OutlierDetection) {
			c.Consecutive5xx = 100
			c.EnforcingConsecutiveGatewayFailure = 100
			c.ConsecutiveGatewayFailure = 3
		},
			func(td *testDetector, h *lb.Host) { td.report(h, 502, 2); td.report(h, 500, 1); td.report(h, 504, 2) }, false, ""},
		{"local failures count as 5xx when not split", nil, func(td *testDetector, h *lb.Host) {
			for range 5 {
				td.putLocal(h, ConnectFailure)
			}
		}, true, "consecutive_5xx"},
		{"split: local failures apart", func(c *state.OutlierDetection) {
			c.SplitExternalLocalOriginErrors = true
			c.ConsecutiveLocalOriginFailure = 2
		},
			func(td *testDetector, h *lb.Host) { td.putLocal(h, ConnectTimeout); td.putLocal(h, UpstreamReset) }, true, "consecutive_local_origin_failure"},
		{"split: response resets local run", func(c *state.OutlierDetection) {
			c.SplitExternalLocalOriginErrors = true
			c.ConsecutiveLocalOriginFailure = 2
		},
			func(td *testDetector, h *lb.Host) {
				td.putLocal(h, ConnectFailure)
				td.putHTTP(h, 500)
				td.putLocal(h, ConnectFailure)
			}, false, ""},
		{"enforcing 0", func(c *state.OutlierDetection) { c.EnforcingConsecutive5xx = 0 },
			func(td *testDetector, h *lb.Host) { td.report(h, 500, 5) }, false, ""},
		{"tcp connects reset the run", nil, func(td *testDetector, h *lb.Host) {
			td.putLocal(h, ConnectFailure)
			td.putConnected(h)
			td.report(h, 500, 4)
		}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td := newTestDetector(t, 3, odConfig(tc.cfg))
			h := td.hosts[0]
			tc.feed(td, h)
			if h.Ejected() != tc.ejected {
				t.Fatalf("ejected = %v, want %v", h.Ejected(), tc.ejected)
			}
			st := td.snapshot()
			if tc.ejected && (st.Enforced[tc.reason] != 1 || st.Active != 1 || td.rebuilds != 1) {
				t.Fatalf("stats %+v rebuilds %d, want one %s ejection", st, td.rebuilds, tc.reason)
			}
			if td.hosts[1].Ejected() || td.hosts[2].Ejected() {
				t.Fatal("a healthy host was ejected")
			}
		})
	}
}

// TestEjectionTimeGrows: a host comes back after base x n ejections, the
// multiplier is capped by max_ejection_time and decays while healthy.
func TestEjectionTimeGrows(t *testing.T) {
	td := newTestDetector(t, 2, odConfig(func(c *state.OutlierDetection) {
		c.Interval = 10 * time.Second
		c.BaseEjectionTime = 30 * time.Second
		c.MaxEjectionTime = 60 * time.Second
	}))
	h := td.hosts[0]
	ejectFor := func() time.Duration {
		t.Helper()
		td.report(h, 500, 5)
		if !h.Ejected() {
			t.Fatal("not ejected")
		}
		start := td.clock
		for i := 0; i < 100; i++ {
			td.clock = td.clock.Add(10 * time.Second)
			td.sweep()
			if !h.Ejected() {
				return td.clock.Sub(start)
			}
		}
		t.Fatal("never returned")
		return 0
	}
	if d := ejectFor(); d != 30*time.Second {
		t.Fatalf("first ejection lasted %v, want 30s", d)
	}
	if d := ejectFor(); d != 60*time.Second {
		t.Fatalf("second ejection lasted %v, want 60s", d)
	}
	if d := ejectFor(); d != 60*time.Second {
		t.Fatalf("third ejection lasted %v, want 60s (max_ejection_time)", d)
	}
	// Healthy intervals decay the multiplier back to zero.
	for range 5 {
		td.clock = td.clock.Add(10 * time.Second)
		td.sweep()
	}
	if d := ejectFor(); d != 30*time.Second {
		t.Fatalf("after decay the ejection lasted %v, want 30s", d)
	}
}

// TestMaxEjectionPercentOverflow: the second outlier of two hosts is not
// ejected at 50%, and the skip is counted.
func TestMaxEjectionPercentOverflow(t *testing.T) {
	td := newTestDetector(t, 2, odConfig(func(c *state.OutlierDetection) { c.MaxEjectionPercent = 50 }))
	td.report(td.hosts[0], 500, 5)
	td.report(td.hosts[1], 500, 5)
	if !td.hosts[0].Ejected() || td.hosts[1].Ejected() {
		t.Fatalf("ejected: %v %v, want only the first", td.hosts[0].Ejected(), td.hosts[1].Ejected())
	}
	if st := td.snapshot(); st.Overflow != 1 {
		t.Fatalf("overflow = %d, want 1", st.Overflow)
	}
}

// TestRateEjections: success rate and failure percentage run on the sweep
// over one interval's buckets.
func TestRateEjections(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   func(*state.OutlierDetection)
		fails []int // per host, out of 200 requests (interleaved so no consecutive ejection)
		want  []bool
	}{
		{"success rate outlier", nil, []int{0, 2, 0, 1, 0, 80}, []bool{false, false, false, false, false, true}},
		{"no outlier when uniform", nil, []int{10, 10, 10, 10, 10, 10}, []bool{false, false, false, false, false, false}},
		{"too few hosts for success rate", func(c *state.OutlierDetection) { c.SuccessRateMinimumHosts = 10 },
			[]int{0, 0, 0, 0, 0, 80}, []bool{false, false, false, false, false, false}},
		{"failure percentage", func(c *state.OutlierDetection) {
			c.EnforcingSuccessRate = 0
			c.EnforcingFailurePercentage = 100
			c.Consecutive5xx = 1000
			c.FailurePercentageThreshold = 50
		}, []int{0, 0, 0, 0, 120, 100}, []bool{false, false, false, false, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td := newTestDetector(t, len(tc.fails), odConfig(tc.cfg))
			for i, h := range td.hosts {
				for r := range 200 {
					// Spread failures so no run reaches consecutive_5xx.
					if r%2 == 0 && r/2 < tc.fails[i] || r%2 == 1 && tc.fails[i] > 100 && r/2 < tc.fails[i]-100 {
						td.putHTTP(h, 500)
					} else {
						td.putHTTP(h, 200)
					}
				}
			}
			for i, h := range td.hosts {
				if h.Ejected() {
					t.Fatalf("host %d ejected before the sweep", i)
				}
			}
			td.sweep()
			for i, h := range td.hosts {
				if h.Ejected() != tc.want[i] {
					t.Errorf("host %d ejected = %v, want %v", i, h.Ejected(), tc.want[i])
				}
			}
		})
	}
}

// TestDetectorOffReturnsHosts: removing outlier_detection brings every
// ejected host back.
func TestDetectorOffReturnsHosts(t *testing.T) {
	td := newTestDetector(t, 2, odConfig(nil))
	td.report(td.hosts[0], 500, 5)
	if !td.hosts[0].Ejected() {
		t.Fatal("not ejected")
	}
	td.configure(nil)
	if td.hosts[0].Ejected() {
		t.Fatal("still ejected with detection off")
	}
}
