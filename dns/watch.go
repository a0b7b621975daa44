package dns

import "github.com/meshlet/meshlet/state"

// WatchStore keeps the table's xDS-derived and node-mode names current
// with store. The rebuild runs in the store's update (the xDS client's
// goroutine), never on a query.
func (t *Table) WatchStore(store *state.Store) {
	store.Watch(func(prev, next *state.Snapshot) {
		t.SetXDS(HostsFromSnapshot(next))
		if prev == nil || prev.Ambient != next.Ambient {
			t.SetAmbient(ServicesFromAmbient(next.Ambient))
		}
	})
}
