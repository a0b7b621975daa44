package echo

import (
	"maps"
	"net/http"
	"sync"
)

// HeaderAttemptCount is the response header in which the backend reports
// the x-envoy-attempt-count request header it received (absent when the
// request carried none). It lets a client see how many tries a proxy's
// retry policy needed for the request that finally got through.
const HeaderAttemptCount = "x-echo-attempt-count"

// requestAttemptCount is the header a proxy's router sets on each try.
const requestAttemptCount = "X-Envoy-Attempt-Count"

// Stats counts the HTTP requests a backend received, counted on arrival
// (before any ?delay=), so a mirror target shows what it was sent even when
// nobody waits for its answers.
type Stats struct {
	Requests int
	// Hosts counts requests by Host (HTTP/2 :authority); a proxy's mirror
	// appends "-shadow" to it.
	Hosts map[string]int
	// Attempts counts requests by their x-envoy-attempt-count value; ""
	// counts requests without the header.
	Attempts map[string]int
}

// stats is the live, shared form of Stats.
type stats struct {
	mu sync.Mutex
	s  Stats
}

func newStats() *stats {
	return &stats{s: Stats{Hosts: map[string]int{}, Attempts: map[string]int{}}}
}

func (st *stats) record(r *http.Request) {
	attempt := r.Header.Get(requestAttemptCount)
	st.mu.Lock()
	st.s.Requests++
	st.s.Hosts[r.Host]++
	st.s.Attempts[attempt]++
	st.mu.Unlock()
}

func (st *stats) snapshot() Stats {
	st.mu.Lock()
	defer st.mu.Unlock()
	return Stats{Requests: st.s.Requests, Hosts: maps.Clone(st.s.Hosts), Attempts: maps.Clone(st.s.Attempts)}
}

func (st *stats) reset() {
	st.mu.Lock()
	st.s = Stats{Hosts: map[string]int{}, Attempts: map[string]int{}}
	st.mu.Unlock()
}

// Stats returns a copy of the HTTP request counts since Start or the last
// ResetStats.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// ResetStats sets the HTTP request counts back to zero.
func (s *Server) ResetStats() { s.stats.reset() }
