package dataplane

import (
	"context"
	"runtime/metrics"
	"time"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
)

// heapMetric is the bytes held by heap objects, live or not yet swept: it
// follows allocation at once, where the live-heap figure only moves at GC.
const heapMetric = "/memory/classes/heap/objects:bytes"

// DefaultHeapCheckInterval is how often HeapMonitor samples the heap.
const DefaultHeapCheckInterval = 100 * time.Millisecond

// HeapMonitor is an overload action like Envoy's fixed_heap resource monitor
// with envoy.overload_actions.stop_accepting_requests: while the heap is at
// or above Max bytes, Overload is active and new requests are answered
// 503. Sampling runs on its own goroutine at most every Interval, so the
// request path reads one atomic and never touches runtime/metrics.
type HeapMonitor struct {
	Max      uint64
	Interval time.Duration // default DefaultHeapCheckInterval
	Overload *httpproxy.Overload
	// read returns the heap size; tests replace it.
	read func() uint64
}

// NewHeapMonitor returns a monitor for max bytes driving o.
func NewHeapMonitor(max uint64, o *httpproxy.Overload) *HeapMonitor {
	return &HeapMonitor{Max: max, Interval: DefaultHeapCheckInterval, Overload: o}
}

// Run samples until ctx ends, then turns the overload off.
func (m *HeapMonitor) Run(ctx context.Context) {
	iv := m.Interval
	if iv <= 0 {
		iv = DefaultHeapCheckInterval
	}
	read := m.read
	if read == nil {
		read = readHeap()
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	defer m.Overload.Set(false)
	for {
		m.Overload.Set(read() >= m.Max)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// readHeap returns a reader that reuses one sample slice.
func readHeap() func() uint64 {
	s := []metrics.Sample{{Name: heapMetric}}
	return func() uint64 {
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return s[0].Value.Uint64()
	}
}
