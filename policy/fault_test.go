package policy

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

func TestFractionHit(t *testing.T) {
	tests := []struct {
		name string
		f    state.Fraction
		draw uint64
		want bool
	}{
		{"zero numerator", state.Fraction{Numerator: 0, Denominator: state.PerHundred}, 0, false},
		{"zero denominator", state.Fraction{Numerator: 5, Denominator: 0}, 0, false},
		{"30% low draw", state.Fraction{Numerator: 30, Denominator: state.PerHundred}, 29, true},
		{"30% boundary", state.Fraction{Numerator: 30, Denominator: state.PerHundred}, 30, false},
		{"30% wraps modulo", state.Fraction{Numerator: 30, Denominator: state.PerHundred}, 1029, true},
		{"numerator above denominator", state.Fraction{Numerator: 150, Denominator: state.PerHundred}, 99, true},
		{"ten thousand", state.Fraction{Numerator: 1, Denominator: state.PerTenThousand}, 10000, true},
		{"ten thousand miss", state.Fraction{Numerator: 1, Denominator: state.PerTenThousand}, 1, false},
		{"million", state.Fraction{Numerator: 999999, Denominator: state.PerMillion}, 999998, true},
		{"million miss", state.Fraction{Numerator: 999999, Denominator: state.PerMillion}, 999999, false},
		{"all", state.Fraction{Numerator: 100, Denominator: state.PerHundred}, math.MaxUint64, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FractionHit(tt.f, tt.draw); got != tt.want {
				t.Fatalf("FractionHit(%+v, %d) = %v, want %v", tt.f, tt.draw, got, tt.want)
			}
		})
	}
}

// TestFractionHitRate checks the sampled rate over random draws for each
// denominator: 30% (of 100), 25.00% (2500 of 10000), 0.5% (5000 of 1e6).
func TestFractionHitRate(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, f := range []state.Fraction{{Numerator: 30, Denominator: state.PerHundred}, {Numerator: 2500, Denominator: state.PerTenThousand}, {Numerator: 5000, Denominator: state.PerMillion}} {
		const n = 200000
		hits := 0
		for range n {
			if FractionHit(f, r.Uint64()) {
				hits++
			}
		}
		p := float64(f.Numerator) / float64(f.Denominator)
		// Five standard deviations of a binomial: fails only when broken.
		tol := 5 * math.Sqrt(n*p*(1-p))
		if math.Abs(float64(hits)-n*p) > tol {
			t.Errorf("%+v: %d hits of %d, want %.0f +- %.0f", f, hits, n, n*p, tol)
		}
	}
}

func TestFaultDelay(t *testing.T) {
	all := state.Fraction{Numerator: 100, Denominator: state.PerHundred}
	half := state.Fraction{Numerator: 50, Denominator: state.PerHundred}
	tests := []struct {
		name string
		d    *state.FaultDelay
		r    *req
		draw uint64
		want time.Duration
	}{
		{"nil", nil, get("a", "/"), 0, 0},
		{"fixed hit", &state.FaultDelay{Fixed: time.Second, Percentage: half}, get("a", "/"), 49, time.Second},
		{"fixed miss", &state.FaultDelay{Fixed: time.Second, Percentage: half}, get("a", "/"), 50, 0},
		{"fixed ignores percentage header", &state.FaultDelay{Fixed: time.Second, Percentage: half},
			get("a", "/", HeaderFaultDelayPercentage, "0"), 10, time.Second},
		{"header", &state.FaultDelay{FromHeader: true, Percentage: all}, get("a", "/", HeaderFaultDelay, "250"), 0, 250 * time.Millisecond},
		{"header missing", &state.FaultDelay{FromHeader: true, Percentage: all}, get("a", "/"), 0, 0},
		{"header garbage", &state.FaultDelay{FromHeader: true, Percentage: all}, get("a", "/", HeaderFaultDelay, "soon"), 0, 0},
		{"header negative", &state.FaultDelay{FromHeader: true, Percentage: all}, get("a", "/", HeaderFaultDelay, "-5"), 0, 0},
		{"header zero", &state.FaultDelay{FromHeader: true, Percentage: all}, get("a", "/", HeaderFaultDelay, "0"), 0, 0},
		{"header percentage lowers", &state.FaultDelay{FromHeader: true, Percentage: all},
			get("a", "/", HeaderFaultDelay, "10", HeaderFaultDelayPercentage, "20"), 20, 0},
		{"header percentage lowers hit", &state.FaultDelay{FromHeader: true, Percentage: all},
			get("a", "/", HeaderFaultDelay, "10", HeaderFaultDelayPercentage, "20"), 19, 10 * time.Millisecond},
		{"header percentage cannot raise", &state.FaultDelay{FromHeader: true, Percentage: state.Fraction{Numerator: 10, Denominator: state.PerHundred}},
			get("a", "/", HeaderFaultDelay, "10", HeaderFaultDelayPercentage, "100"), 50, 0},
		{"header percentage garbage keeps config", &state.FaultDelay{FromHeader: true, Percentage: all},
			get("a", "/", HeaderFaultDelay, "10", HeaderFaultDelayPercentage, "x"), 99, 10 * time.Millisecond},
		{"unset percentage is 0%", &state.FaultDelay{Fixed: time.Second, Percentage: state.Fraction{Numerator: 0, Denominator: state.PerHundred}}, get("a", "/"), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FaultDelay(tt.d, tt.r, tt.draw); got != tt.want {
				t.Fatalf("FaultDelay = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFaultAbort(t *testing.T) {
	all := state.Fraction{Numerator: 100, Denominator: state.PerHundred}
	tests := []struct {
		name   string
		a      *state.FaultAbort
		r      *req
		draw   uint64
		want   Abort
		wantOK bool
	}{
		{"nil", nil, get("a", "/"), 0, Abort{}, false},
		{"http", &state.FaultAbort{HTTPStatus: 503, Percentage: all}, get("a", "/"), 0, Abort{HTTPStatus: 503}, true},
		{"http 30% miss", &state.FaultAbort{HTTPStatus: 503, Percentage: state.Fraction{Numerator: 30, Denominator: state.PerHundred}}, get("a", "/"), 30, Abort{}, false},
		{"grpc", &state.FaultAbort{GRPCStatus: 14, HasGRPCStatus: true, Percentage: all}, get("a", "/"), 0,
			Abort{HTTPStatus: 200, GRPCStatus: 14, GRPC: true}, true},
		{"grpc status 0 is still an abort", &state.FaultAbort{HasGRPCStatus: true, Percentage: all}, get("a", "/"), 0,
			Abort{HTTPStatus: 200, GRPC: true}, true},
		{"header http", &state.FaultAbort{FromHeader: true, Percentage: all}, get("a", "/", HeaderFaultAbort, "429"), 0, Abort{HTTPStatus: 429}, true},
		{"header http out of range", &state.FaultAbort{FromHeader: true, Percentage: all}, get("a", "/", HeaderFaultAbort, "600"), 0, Abort{}, false},
		{"header http below 200", &state.FaultAbort{FromHeader: true, Percentage: all}, get("a", "/", HeaderFaultAbort, "100"), 0, Abort{}, false},
		{"header grpc", &state.FaultAbort{FromHeader: true, Percentage: all}, get("a", "/", HeaderFaultAbortGRPC, "4"), 0,
			Abort{HTTPStatus: 200, GRPCStatus: 4, GRPC: true}, true},
		{"header http wins over grpc", &state.FaultAbort{FromHeader: true, Percentage: all},
			get("a", "/", HeaderFaultAbort, "503", HeaderFaultAbortGRPC, "4"), 0, Abort{HTTPStatus: 503}, true},
		{"header missing", &state.FaultAbort{FromHeader: true, Percentage: all}, get("a", "/"), 0, Abort{}, false},
		{"header percentage", &state.FaultAbort{FromHeader: true, Percentage: state.Fraction{Numerator: 1000, Denominator: state.PerTenThousand}},
			get("a", "/", HeaderFaultAbort, "500", HeaderFaultAbortPercentage, "10"), 10, Abort{}, false},
		{"header percentage hit", &state.FaultAbort{FromHeader: true, Percentage: state.Fraction{Numerator: 1000, Denominator: state.PerTenThousand}},
			get("a", "/", HeaderFaultAbort, "500", HeaderFaultAbortPercentage, "10"), 9, Abort{HTTPStatus: 500}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FaultAbort(tt.a, tt.r, tt.draw)
			if got != tt.want || ok != tt.wantOK {
				t.Fatalf("FaultAbort = %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestFaultApplies(t *testing.T) {
	hdr := []state.HeaderMatcher{{Name: "x-chaos", Kind: state.HeaderExact, String: state.StringMatcher{Kind: state.StringExact, Value: "yes"}}}
	tests := []struct {
		name    string
		f       state.FaultFilter
		cluster string
		r       *req
		want    bool
	}{
		{"unscoped", state.FaultFilter{}, "c", get("a", "/"), true},
		{"cluster match", state.FaultFilter{UpstreamCluster: "c"}, "c", get("a", "/"), true},
		{"cluster mismatch", state.FaultFilter{UpstreamCluster: "c"}, "d", get("a", "/"), false},
		{"node match", state.FaultFilter{DownstreamNodes: []string{"n1", "n2"}}, "c", get("a", "/", HeaderDownstreamServiceNode, "n2"), true},
		{"node mismatch", state.FaultFilter{DownstreamNodes: []string{"n1"}}, "c", get("a", "/", HeaderDownstreamServiceNode, "n3"), false},
		{"node missing", state.FaultFilter{DownstreamNodes: []string{"n1"}}, "c", get("a", "/"), false},
		{"headers match", state.FaultFilter{Headers: hdr}, "c", get("a", "/", "x-chaos", "yes"), true},
		{"headers mismatch", state.FaultFilter{Headers: hdr}, "c", get("a", "/", "x-chaos", "no"), false},
		{"headers missing", state.FaultFilter{Headers: hdr}, "c", get("a", "/"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FaultApplies(&tt.f, tt.cluster, tt.r); got != tt.want {
				t.Fatalf("FaultApplies = %v, want %v", got, tt.want)
			}
		})
	}
}
