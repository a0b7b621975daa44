package lb

import (
	"math/big"
	"slices"
	"strings"

	"github.com/cespare/xxhash/v2"
)

const defaultMaglevTableSize = 65537

// maglevPicker is MAGLEV as Envoy builds it (maglev_lb.cc, after the Maglev
// paper's listing 1): hosts sorted by address each walk their own
// permutation of the table (offset = xxhash64(addr) % M, skip =
// xxhash64(addr, seed 1) % (M-1) + 1) claiming free slots in turn; a host
// with a fraction of the heaviest host's weight takes a turn only that often.
// Lookup is hash % M. The table holds host indexes, not pointers, to halve
// its size and keep it out of the garbage collector's scan.
type maglevPicker struct {
	table []uint32
	hosts []*Host
}

// newMaglevPicker takes weights normalized to sum to at most 1. size must be
// prime; callers pass it through maglevTableSize.
func newMaglevPicker(hosts []*Host, weights []float64, size uint64) *maglevPicker {
	type entry struct {
		addr           string
		idx            uint32
		weight, target float64
		pos, skip      uint64
	}
	entries := make([]entry, len(hosts))
	maxW := 0.0
	for i, h := range hosts {
		entries[i] = entry{addr: h.Address, idx: uint32(i), weight: weights[i]}
		maxW = max(maxW, weights[i])
	}
	// The fill order decides the table: sort so it depends only on the set.
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.addr, b.addr) })
	d := xxhash.NewWithSeed(1)
	for i := range entries {
		e := &entries[i]
		e.pos = xxhash.Sum64String(e.addr) % size
		d.ResetWithSeed(1)
		_, _ = d.WriteString(e.addr)
		e.skip = d.Sum64()%(size-1) + 1
	}

	table := make([]uint32, size)
	// Probing tests an occupancy bitset (8 KiB for the default size, so it
	// stays in L1) rather than the table: the probe loop is the whole cost
	// of the build, and with few hosts it runs about M·ln M times.
	used := make([]uint64, (size+63)/64)
	filled := uint64(0)
	for iter := 1.0; filled < size; iter++ {
		for i := range entries {
			if filled == size {
				break
			}
			e := &entries[i]
			if iter*e.weight < e.target {
				continue
			}
			e.target += maxW
			// pos and skip are below size: a subtraction replaces modulo.
			for used[e.pos>>6]&(1<<(e.pos&63)) != 0 {
				if e.pos += e.skip; e.pos >= size {
					e.pos -= size
				}
			}
			used[e.pos>>6] |= 1 << (e.pos & 63)
			table[e.pos] = e.idx
			if e.pos += e.skip; e.pos >= size {
				e.pos -= size
			}
			filled++
		}
	}
	return &maglevPicker{table: table, hosts: hosts}
}

func (p *maglevPicker) pick(h uint64, attempt uint32) *Host {
	if attempt > 0 {
		// Envoy's retry perturbation: flip most bits so retries scatter.
		h ^= ^uint64(0) - uint64(attempt) + 1
	}
	return p.hosts[p.table[h%uint64(len(p.table))]]
}

// maglevTableSize returns the configured size if it is a usable prime, else
// the default: a composite size would leave permutations that never reach
// some slots and the fill would not terminate.
func maglevTableSize(n uint64) uint64 {
	if n < 3 || !new(big.Int).SetUint64(n).ProbablyPrime(0) {
		return defaultMaglevTableSize
	}
	return n
}
