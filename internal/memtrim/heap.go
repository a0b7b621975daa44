package memtrim

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// ShrinkHeap returns freed heap memory to the system every interval while
// the process retains more than 4 MB of heap it does not use. Go's own
// scavenger keeps memory up to the last GC's heap goal, and a proxy whose
// steady-state path allocates nothing rarely runs a GC after a burst, so
// without this the burst's high-water mark would stay resident for good.
func ShrinkHeap(ctx context.Context, interval time.Duration) {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(samples)
		inUse := samples[0].Value.Uint64()
		retained := inUse + samples[1].Value.Uint64() + samples[2].Value.Uint64()
		if retained-inUse > 4<<20 {
			debug.FreeOSMemory()
		}
	}
}
