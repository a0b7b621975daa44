package lb

import (
	"fmt"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func benchAssignment(n int, weighted bool) *state.ClusterLoadAssignment {
	eps := make([]ep, n)
	for i := range eps {
		w := uint32(1)
		if weighted {
			w = uint32(1 + i%7)
		}
		eps[i] = ep{fmt.Sprintf("10.%d.%d.%d:8080", i>>16&255, i>>8&255, i&255), w, state.HealthHealthy}
	}
	return assignment(locality("a", 0, 1, eps))
}

func BenchmarkPick(b *testing.B) {
	for _, policy := range allPolicies {
		for _, weighted := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/weighted=%v", policy, weighted), func(b *testing.B) {
				bal := newBalancer(&state.Cluster{LBPolicy: policy}, benchAssignment(100, weighted))
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					for i := uint64(0); pb.Next(); i++ {
						// Built per request, as a caller would: it must
						// stay on the stack.
						info := PickInfo{Hash: i * 0x9e3779b97f4a7c15, HasHash: true}
						if _, err := bal.Pick(&info); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}

// BenchmarkBuild measures the picker rebuild each Update costs; the target
// is under 5 ms for a default maglev table or ring.
func BenchmarkBuild(b *testing.B) {
	for _, policy := range allPolicies {
		for _, n := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/hosts=%d", policy, n), func(b *testing.B) {
				c := &state.Cluster{LBPolicy: policy}
				cla := benchAssignment(n, true)
				bal := newBalancer(c, cla)
				hs := bal.Hosts()
				b.ReportAllocs()
				for b.Loop() {
					build(c, cla, hs)
				}
			})
		}
	}
}
