package telemetry

import (
	"sync"

	"github.com/meshlet/meshlet/state"
)

// Destinations lists the distinct destinations (file paths, /dev/stdout,
// /dev/stderr) the given access log configurations write to.
func Destinations(logs []*state.AccessLog, into map[string]bool) {
	for _, l := range logs {
		into[destination(l)] = true
	}
}

// Retain closes the writers whose destination is not in live and drops
// the compiled formats, so configurations removed by a push release their
// files (a rotated-away file is reopened by name on next use). Writers
// for live destinations stay open and keep their queues: a push that only
// changes a format does not reopen the file.
//
// A record rendered against a just-retired writer races with its close;
// its line is dropped, which only happens to logs the configuration no
// longer asks for.
func (a *AccessLogger) Retain(live map[string]bool) error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	var stale []*logWriter
	for dest, w := range a.writers {
		if !live[dest] {
			stale = append(stale, w)
			delete(a.writers, dest)
		}
	}
	// Compiled entries point at writers; starting over makes the next
	// record of a still-live log compile again against the kept writer.
	a.compiled.Store(&sync.Map{})
	a.nCompile.Store(0)
	a.mu.Unlock()
	var first error
	for _, w := range stale {
		if err := w.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// OpenDestinations returns the destinations with an open writer, sorted
// by the caller if needed (for admin and tests).
func (a *AccessLogger) OpenDestinations() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.writers))
	for d := range a.writers {
		out = append(out, d)
	}
	return out
}
