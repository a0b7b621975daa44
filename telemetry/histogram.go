package telemetry

import "sync/atomic"

// Istio's (Envoy's default) histogram bucket bounds, used for
// istio_request_duration_milliseconds and the byte-size histograms.
var istioBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// numBuckets is len(istioBuckets) plus the +Inf bucket.
const numBuckets = 20

// histogram is a lock-free fixed-bucket histogram of integer observations
// in a base unit (microseconds, bytes). bounds are the bucket upper bounds
// in that unit; scale converts the base unit to the exported one (1000 µs
// per exported millisecond). counts are per bucket, not cumulative.
type histogram struct {
	counts [numBuckets]atomic.Uint64
	sum    atomic.Uint64
}

// histBounds are istioBuckets in a base unit, rounded down (0.5 ms is
// 500 µs; 0.5 bytes is 0, which only a 0-byte body falls into).
type histBounds [numBuckets - 1]uint64

func boundsFor(scale float64) histBounds {
	var b histBounds
	for i, v := range istioBuckets {
		b[i] = uint64(v * scale)
	}
	return b
}

var (
	microsBounds = boundsFor(1000) // duration in µs, exported in ms
	bytesBounds  = boundsFor(1)
)

func (h *histogram) observe(b *histBounds, v uint64) {
	i := 0
	for i < len(b) && v > b[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(v)
}

// snapshot returns the total count, the sum in the exported unit and the
// cumulative bucket counts keyed by exported upper bound.
func (h *histogram) snapshot(scale float64) (uint64, float64, map[float64]uint64) {
	buckets := make(map[float64]uint64, len(istioBuckets))
	var cum uint64
	for i, ub := range istioBuckets {
		cum += h.counts[i].Load()
		buckets[ub] = cum
	}
	cum += h.counts[numBuckets-1].Load()
	return cum, float64(h.sum.Load()) / scale, buckets
}
