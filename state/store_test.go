package state

import (
	"sync"
	"testing"
)

func TestStoreUpdateAndWatch(t *testing.T) {
	s := NewStore()
	var seen []int
	s.Watch(func(old, next *Snapshot) {
		seen = append(seen, len(next.Clusters))
		if old != nil && old == next {
			t.Error("watcher got the same snapshot as old and new")
		}
	})
	first := s.Load()
	s.Update(func(n *Snapshot) bool {
		n.Clusters["a"] = &Cluster{Name: "a"}
		return true
	})
	if len(first.Clusters) != 0 {
		t.Fatal("a published snapshot was modified by a later update")
	}
	s.Update(func(n *Snapshot) bool { return false }) // abandoned: no publish
	if got := len(s.Load().Clusters); got != 1 {
		t.Fatalf("clusters %d, want 1", got)
	}
	if len(seen) != 2 || seen[0] != 0 || seen[1] != 1 {
		t.Fatalf("watcher calls %v, want [0 1]", seen)
	}
}

func TestEndpointsFor(t *testing.T) {
	s := Empty()
	s.Endpoints["svc"] = &ClusterLoadAssignment{ClusterName: "svc"}
	s.Endpoints["c2"] = &ClusterLoadAssignment{ClusterName: "c2"}
	static := &ClusterLoadAssignment{ClusterName: "inline"}
	for _, tc := range []struct {
		c    *Cluster
		want *ClusterLoadAssignment
	}{
		{&Cluster{Name: "c1", Type: ClusterEDS, EDSServiceName: "svc"}, s.Endpoints["svc"]},
		{&Cluster{Name: "c2", Type: ClusterEDS}, s.Endpoints["c2"]},
		{&Cluster{Name: "c3", Type: ClusterStatic, LoadAssignment: static}, static},
		{&Cluster{Name: "c4", Type: ClusterEDS}, nil},
	} {
		if got := s.EndpointsFor(tc.c); got != tc.want {
			t.Errorf("%s: got %v want %v", tc.c.Name, got, tc.want)
		}
	}
}

func TestStoreConcurrentLoad(t *testing.T) {
	s := NewStore()
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 1000; j++ {
				_ = len(s.Load().Listeners)
			}
		}()
	}
	for j := 0; j < 100; j++ {
		s.Update(func(n *Snapshot) bool { n.Listeners["l"] = &Listener{Name: "l"}; return true })
	}
	wg.Wait()
}
