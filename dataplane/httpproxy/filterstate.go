package httpproxy

import (
	"runtime"
	"sync"
	"weak"
)

// sideTable holds mutable runtime state (token buckets, active fault
// counts) for immutable config objects from the state snapshot. It is keyed
// by a weak pointer to the config, so a pushed config change starts with
// fresh state (as Envoy rebuilds its filters) and the entry is dropped once
// the old config is collected.
type sideTable[K, V any] struct {
	m sync.Map // weak.Pointer[K] -> *V
}

// get returns k's state, creating it with mk on first use.
func (t *sideTable[K, V]) get(k *K, mk func(*K) *V) *V {
	wp := weak.Make(k)
	if v, ok := t.m.Load(wp); ok {
		return v.(*V)
	}
	v, loaded := t.m.LoadOrStore(wp, mk(k))
	if !loaded {
		runtime.AddCleanup(k, func(wp weak.Pointer[K]) { t.m.Delete(wp) }, wp)
	}
	return v.(*V)
}
