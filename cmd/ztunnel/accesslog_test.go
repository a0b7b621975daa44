package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
)

// withLogs publishes one listener whose HTTP chain logs to paths.
func withLogs(store *state.Store, paths ...string) *state.HTTPConnectionManager {
	hcm := &state.HTTPConnectionManager{}
	for _, p := range paths {
		hcm.AccessLogs = append(hcm.AccessLogs, &state.AccessLog{Sink: state.AccessLogFile, Path: p, Text: "%REQ(:METHOD)% %RESPONSE_CODE%\n"})
	}
	store.Update(func(s *state.Snapshot) bool {
		s.Listeners = map[string]*state.Listener{"l": {Name: "l", FilterChains: []*state.FilterChain{{Name: "fc", HTTP: hcm}}}}
		return true
	})
	return hcm
}

func TestAccessLogsFollowSnapshot(t *testing.T) {
	dir := t.TempDir()
	a1, a2 := filepath.Join(dir, "a1.log"), filepath.Join(dir, "a2.log")
	store := state.NewStore()
	al := newAccessLogs(store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer al.close()

	// Nothing configured: records are ignored without allocating.
	rec := &telemetry.HTTPRecord{Method: "GET", ResponseCode: 200}
	if n := testing.AllocsPerRun(100, func() { al.HTTPDone(rec) }); n != 0 {
		t.Errorf("inactive sink allocates %v per record", n)
	}

	rec.HCM = withLogs(store, a1, a2)
	al.HTTPDone(rec)
	// A push that drops a2 closes its writer, flushing what it had.
	rec.HCM = withLogs(store, a1)
	if open := al.logger.OpenDestinations(); !slices.Equal(open, []string{a1}) {
		t.Errorf("open destinations after push = %v, want [%s]", open, a1)
	}
	rec.ResponseCode = 503
	al.HTTPDone(rec)
	// No logs left: the sink turns off.
	withLogs(store)
	if al.active.Load() || len(al.logger.OpenDestinations()) != 0 {
		t.Errorf("sink still active with no access log configured")
	}
	al.HTTPDone(rec)

	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got, want := read(a1), "GET 200\nGET 503\n"; got != want {
		t.Errorf("%s = %q, want %q", a1, got, want)
	}
	if got, want := read(a2), "GET 200\n"; got != want {
		t.Errorf("%s = %q, want %q", a2, got, want)
	}
	st := al.logger.Stats()
	if st.Written != 3 || st.Dropped != 0 || st.Failed != 0 {
		t.Errorf("stats = %+v, want 3 written", st)
	}
}
