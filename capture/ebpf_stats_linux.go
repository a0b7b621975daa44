package capture

import (
	"errors"
	"fmt"
)

// Stats reads the counters of the programs installed now.
func (r *ebpfRedirector) Stats() (Stats, error) {
	r.mu.Lock()
	defer r.mu.Unlock() // Remove must not close the maps under the lookups
	var (
		st   Stats
		errs []error
	)
	if r.objs != nil {
		o, err := r.objs.Stats()
		if err != nil {
			errs = append(errs, err)
		} else {
			st.Outbound, st.Captured, st.FastPath = true, o.Captured, o.FastPath
		}
	}
	if r.inb != nil {
		in, err := r.inb.Stats()
		if err != nil {
			errs = append(errs, err)
		} else {
			st.Inbound, st.InboundSteered, st.InboundRefused = true, in.Steered, in.Refused
		}
	}
	if err := errors.Join(errs...); err != nil {
		return st, fmt.Errorf("capture: ebpf stats: %w", err)
	}
	return st, nil
}
