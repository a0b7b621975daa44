package main

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/meshlet/meshlet/config"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds"
)

// bootstrapNode mirrors config.Bootstrap's anonymous Node struct.
type bootstrapNode struct {
	ID, Cluster string
	Metadata    map[string]string
	Locality    state.Locality
}

func (n bootstrapNode) bootstrap() *config.Bootstrap {
	b := &config.Bootstrap{}
	b.Node.ID, b.Node.Cluster, b.Node.Metadata, b.Node.Locality = n.ID, n.Cluster, n.Metadata, n.Locality
	return b
}

func TestMergeNode(t *testing.T) {
	env := xds.Node{ID: "sidecar~10.0.0.1~p.ns~ns.svc.cluster.local", Cluster: "istio-proxy",
		Metadata: map[string]string{"NAMESPACE": "ns", "CLUSTER_ID": "k"}}
	tests := []struct {
		name string
		b    bootstrapNode
		want xds.Node
	}{
		{"empty bootstrap keeps env", bootstrapNode{}, env},
		{"bootstrap wins", bootstrapNode{ID: "id", Cluster: "c", Locality: state.Locality{Zone: "z"}},
			xds.Node{ID: "id", Cluster: "c", Metadata: env.Metadata, Locality: state.Locality{Zone: "z"}}},
		{"metadata merges", bootstrapNode{Metadata: map[string]string{"NAMESPACE": "other", "X": "1"}},
			xds.Node{ID: env.ID, Cluster: env.Cluster, Metadata: map[string]string{"NAMESPACE": "other", "CLUSTER_ID": "k", "X": "1"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeNode(env, tt.b.bootstrap()); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("mergeNode = %+v, want %+v", got, tt.want)
			}
		})
	}
	if env.Metadata["NAMESPACE"] != "ns" {
		t.Error("mergeNode modified the env node's metadata")
	}
}

func TestRunLoadTally(t *testing.T) {
	i := 0
	ch := make(chan int, 1)
	ch <- 0
	tl := runLoad(context.Background(), 100, 4, func(context.Context) result {
		n := <-ch
		i = n + 1
		ch <- i
		switch {
		case n%10 == 0:
			return result{err: errors.New("boom")}
		case n%2 == 0:
			return result{version: "v2", latency: time.Duration(n) * time.Millisecond}
		}
		return result{version: "v1", latency: time.Duration(n) * time.Millisecond}
	})
	if tl.total() != 100 || tl.failed != 10 {
		t.Fatalf("total %d failed %d, want 100 and 10", tl.total(), tl.failed)
	}
	if tl.byVersion["v1"] != 50 || tl.byVersion["v2"] != 40 {
		t.Errorf("byVersion = %v", tl.byVersion)
	}
	if got := tl.share("v1"); math.Abs(got-50.0/90) > 1e-9 {
		t.Errorf("share(v1) = %v", got)
	}
	if p := tl.percentile(1); p != 99*time.Millisecond {
		t.Errorf("p100 = %v, want 99ms", p)
	}
	if p := tl.percentile(0); p != time.Millisecond {
		t.Errorf("p0 = %v, want 1ms", p)
	}
}

func TestRunLoadCancelledCountsUnsent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tl := runLoad(ctx, 50, 2, func(context.Context) result { return result{version: "v1"} })
	if tl.total() != 50 || tl.failed == 0 {
		t.Errorf("cancelled load: total %d failed %d; unsent requests must count as failed", tl.total(), tl.failed)
	}
}
