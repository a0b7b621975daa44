package lb

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

func hostByAddr(t *testing.T, b *Balancer, addr string) *Host {
	t.Helper()
	for _, h := range b.Hosts() {
		if h.Address == addr {
			return h
		}
	}
	t.Fatalf("no host %s", addr)
	return nil
}

func TestLeastRequestP2CPrefersLessLoaded(t *testing.T) {
	eps := hosts("10.0.0.1", 4, state.HealthHealthy)
	tests := []struct {
		name    string
		choices uint32
		want    map[string]float64
	}{
		// Sampling two with replacement: a loaded host wins only when both
		// samples are loaded and it was drawn first: 1/4 * 1/2.
		{"choice 2", 0, map[string]float64{eps[0].addr: 0.125, eps[1].addr: 0.125, eps[2].addr: 0.375, eps[3].addr: 0.375}},
		// Ten samples all landing on loaded hosts: (1/2)^10.
		{"choice 10", 10, map[string]float64{eps[0].addr: 0.0005, eps[1].addr: 0.0005, eps[2].addr: 0.4995, eps[3].addr: 0.4995}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(&state.Cluster{LBPolicy: state.LBLeastRequest, ChoiceCount: tt.choices},
				assignment(locality("a", 0, 1, eps)))
			for _, a := range []string{eps[0].addr, eps[1].addr} {
				h := hostByAddr(t, b, a)
				for range 10 {
					h.Acquire()
				}
				defer func() {
					for range 10 {
						h.Release()
					}
				}()
			}
			checkShares(t, sharesOf(t, b, 100000, nil), tt.want, 0.01)
		})
	}
}

func TestLeastRequestP2CEqualWithoutLoad(t *testing.T) {
	eps := hosts("10.0.0.1", 4, state.HealthHealthy)
	b := newBalancer(&state.Cluster{LBPolicy: state.LBLeastRequest}, assignment(locality("a", 0, 1, eps)))
	checkShares(t, sharesOf(t, b, 100000, nil), even(1, eps), 0.01)
}

func TestLeastRequestWeighted(t *testing.T) {
	eps := []ep{{"10.0.0.1:1", 1, 0}, {"10.0.0.1:2", 2, 0}, {"10.0.0.1:7", 7, 0}}
	tests := []struct {
		name   string
		bias   float64
		active int
		want   []float64
	}{
		{"idle follows weights", 0, 0, []float64{0.1, 0.2, 0.7}},
		// 7/(9+1) = 0.7 against 1 and 2.
		{"busy heavy host sheds load", 0, 9, []float64{1 / 3.7, 2 / 3.7, 0.7 / 3.7}},
		// 7/(9+1)^2 = 0.07.
		{"bias 2 sheds more", 2, 9, []float64{1 / 3.07, 2 / 3.07, 0.07 / 3.07}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(&state.Cluster{LBPolicy: state.LBLeastRequest, ActiveRequestBias: tt.bias},
				assignment(locality("a", 0, 1, eps)))
			h := hostByAddr(t, b, eps[2].addr)
			for range tt.active {
				h.Acquire()
			}
			// The picker was built with the host idle; the dynamic weight is
			// re-read each time the host is picked, so it adapts.
			want := map[string]float64{}
			for i, e := range eps {
				want[e.addr] = tt.want[i]
			}
			checkShares(t, sharesOf(t, b, 100000, nil), want, 0.01)
			for range tt.active {
				h.Release()
			}
		})
	}
}
