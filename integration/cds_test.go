package integration

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestClusterUpdateUnderLoad re-pushes the clusters with a changed field
// (CDS update of live clusters, EDS unchanged) while load runs: no request
// may fail, since the endpoints stay as they were.
func TestClusterUpdateUnderLoad(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			m := startMesh(t, delta, routeTo("v1"))
			c := h1Client()
			var failed, total atomic.Int64
			var firstErr atomic.Value
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 3000; i++ {
						select {
						case <-stop:
							return
						default:
						}
						code, _, body, err := get(c, m.url("/"), nil)
						total.Add(1)
						if err != nil || code != 200 {
							failed.Add(1)
							firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %v %q", code, err, body))
						}
						time.Sleep(2 * time.Millisecond)
					}
				}()
			}
			for i := 0; i < 5; i++ {
				time.Sleep(200 * time.Millisecond)
				res := m.resources(routeTo("v1"))
				for _, r := range res {
					if cl, ok := r.(*clusterv3.Cluster); ok {
						cl.ConnectTimeout = durationpb.New(time.Duration(i+2) * time.Second)
					}
				}
				m.cp.set(append([]types.Resource(nil), res...)...)
			}
			time.Sleep(300 * time.Millisecond)
			close(stop)
			wg.Wait()
			if failed.Load() != 0 {
				t.Fatalf("%d of %d requests failed during CDS updates; first: %v", failed.Load(), total.Load(), firstErr.Load())
			}
		})
	}
}
