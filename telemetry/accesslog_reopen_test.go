package telemetry

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestReopenAfterRotation: a log renamed away (logrotate's create mode)
// continues in a new file at the same path after Reopen; lines written
// concurrently with the rotation are all in one of the two files, whole.
func TestReopenAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	a := NewAccessLogger(AccessLogOptions{})
	hcm := &state.HTTPConnectionManager{AccessLogs: []*state.AccessLog{{Path: path, Text: "%RESPONSE_CODE%\n"}}}
	const n = 2000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range n {
			a.HTTPDone(&HTTPRecord{ResponseCode: 200, HCM: hcm})
		}
	}()
	a.HTTPDone(&HTTPRecord{ResponseCode: 201, HCM: hcm}) // the file exists
	a.Reopen()                                           // nothing renamed: same file again
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	a.Reopen()
	wg.Wait()
	a.HTTPDone(&HTTPRecord{ResponseCode: 202, HCM: hcm})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path + ".1")
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no new file after Reopen: %v", err)
	}
	if !strings.HasSuffix(string(cur), "202\n") {
		t.Errorf("new file does not end with the line written after Reopen: %q", tail(cur))
	}
	lines := strings.Split(strings.TrimSuffix(string(old)+string(cur), "\n"), "\n")
	if got, want := len(lines)+int(a.Stats().Dropped), n+2; got != want {
		t.Errorf("%d lines (+%d dropped on a full queue), want %d", len(lines), a.Stats().Dropped, want)
	}
	for _, l := range lines {
		if l != "200" && l != "201" && l != "202" {
			t.Fatalf("split or garbled line %q", l)
		}
	}
}

func tail(b []byte) string {
	if len(b) > 40 {
		b = b[len(b)-40:]
	}
	return string(b)
}
