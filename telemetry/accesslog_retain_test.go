package telemetry

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestRetainClosesOnlyRetiredDestinations(t *testing.T) {
	dir := t.TempDir()
	keep, drop := filepath.Join(dir, "keep.log"), filepath.Join(dir, "drop.log")
	a := NewAccessLogger(AccessLogOptions{})
	defer a.Close()
	hcm := &state.HTTPConnectionManager{AccessLogs: []*state.AccessLog{
		{Path: keep, Text: "%RESPONSE_CODE%\n"}, {Path: drop, Text: "%RESPONSE_CODE%\n"},
	}}
	r := &HTTPRecord{ResponseCode: 200, HCM: hcm}
	a.HTTPDone(r)

	live := map[string]bool{}
	Destinations(hcm.AccessLogs[:1], live)
	if err := a.Retain(live); err != nil {
		t.Fatal(err)
	}
	if got := a.OpenDestinations(); !slices.Equal(got, []string{keep}) {
		t.Fatalf("open after Retain = %v, want [%s]", got, keep)
	}
	// The retired file was flushed on close; the kept one keeps its writer
	// and gets the next line after a recompile.
	if b, _ := os.ReadFile(drop); string(b) != "200\n" {
		t.Errorf("retired file = %q, want its line flushed", b)
	}
	a.HTTPDone(&HTTPRecord{ResponseCode: 404, HCM: &state.HTTPConnectionManager{AccessLogs: hcm.AccessLogs[:1]}})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(keep); string(b) != "200\n404\n" {
		t.Errorf("kept file = %q, want both lines", b)
	}
}
