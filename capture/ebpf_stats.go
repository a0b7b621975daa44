package capture

// Stats are the eBPF backend's program counters, each summed over CPUs.
// A direction whose programs are not loaded (turned off, or removed) says
// so and counts nothing: its counters start again from zero when Install
// loads the programs afresh.
type Stats struct {
	// Outbound: the cgroup programs are loaded; connects sent to the
	// proxy's outbound port, and messages the sockhash fast path handed
	// between sockets.
	Outbound bool
	Captured uint64
	FastPath uint64
	// Inbound: the sk_lookup program is loaded; connections handed to
	// the proxy's inbound listener, and steerable ones refused because no
	// listener was in the map.
	Inbound        bool
	InboundSteered uint64
	InboundRefused uint64
}

// StatsReporter is implemented by a Redirector whose programs count what
// they capture (the eBPF backend). Reading is a few map lookups, cheap
// enough for every metrics scrape. On error the directions that could be
// read are still reported (their flag set).
type StatsReporter interface {
	Stats() (Stats, error)
}
