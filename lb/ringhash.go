package lb

import (
	"cmp"
	"math"
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

const (
	defaultMinRingSize = 1024
	defaultMaxRingSize = 8 * 1024 * 1024
)

// ringPicker is RING_HASH as Envoy builds it (ring_hash_lb.cc): every host
// gets hashes xxhash64("<address>_<i>") in proportion to its normalized
// weight, scaled so the lightest host gets a whole number of entries and the
// ring holds between min and max entries. A request maps to the first entry
// at or after its hash, wrapping around.
type ringPicker struct {
	hashes []uint64 // sorted
	idx    []uint32 // host index for hashes[i]
	hosts  []*Host
}

// newRingPicker takes weights normalized to sum to at most 1.
func newRingPicker(hosts []*Host, weights []float64, minSize, maxSize uint64) *ringPicker {
	minW := 1.0
	for _, w := range weights {
		minW = min(minW, w)
	}
	scale := min(math.Ceil(minW*float64(minSize))/minW, float64(maxSize))
	size := uint64(math.Ceil(scale))

	type entry struct {
		hash uint64
		idx  uint32
	}
	ring := make([]entry, 0, size)
	var cur, target float64
	buf := make([]byte, 0, 64)
	for i, h := range hosts {
		buf = append(buf[:0], h.Address...)
		buf = append(buf, '_')
		base := len(buf)
		target += scale * weights[i]
		for n := uint64(0); cur < target; n++ {
			buf = strconv.AppendUint(buf[:base], n, 10)
			ring = append(ring, entry{hash: xxhash.Sum64(buf), idx: uint32(i)})
			cur++
		}
	}
	slices.SortFunc(ring, func(a, b entry) int { return cmp.Compare(a.hash, b.hash) })
	p := &ringPicker{hosts: hosts, hashes: make([]uint64, len(ring)), idx: make([]uint32, len(ring))}
	for i, e := range ring {
		p.hashes[i], p.idx[i] = e.hash, e.idx
	}
	return p
}

func (p *ringPicker) pick(h uint64, attempt uint32) *Host {
	n := len(p.hashes)
	if n == 0 {
		return nil
	}
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.hashes[m] >= h {
			hi = m
		} else {
			lo = m + 1
		}
	}
	// A retry walks on along the ring, as if the rejected entry were gone.
	i := (uint64(lo) + uint64(attempt)) % uint64(n)
	return p.hosts[p.idx[i]]
}
