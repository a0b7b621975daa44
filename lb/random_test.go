package lb

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestRandomWeighted(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"1:2:7", []uint32{1, 2, 7}},
		{"equal", []uint32{3, 3, 3, 3}},
		{"1:1000", []uint32{1, 1000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var eps []ep
			var total float64
			for i, w := range tt.weights {
				eps = append(eps, ep{addr: "10.0.0.1:" + string(rune('a'+i)), weight: w})
				total += float64(w)
			}
			want := map[string]float64{}
			for _, e := range eps {
				want[e.addr] = float64(e.weight) / total
			}
			b := newBalancer(&state.Cluster{LBPolicy: state.LBRandom}, assignment(locality("a", 0, 1, eps)))
			checkShares(t, sharesOf(t, b, 100000, nil), want, 0.01)
		})
	}
}
