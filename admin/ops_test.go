package admin

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func post(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Post(url, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestStats(t *testing.T) {
	base := startAdmin(t, Deps{OpsDeps: OpsDeps{Stats: func() map[string]uint64 {
		return map[string]uint64{"listener.in.downstream_cx_total": 3, "access_log.dropped": 1, "cluster.c.upstream_rq_total": 9}
	}}})
	_, body := get(t, base+"/stats")
	want := "access_log.dropped: 1\ncluster.c.upstream_rq_total: 9\nlistener.in.downstream_cx_total: 3\n"
	if body != want {
		t.Errorf("/stats = %q, want %q", body, want)
	}
	if _, body := get(t, base+"/stats?filter=cluster."); body != "cluster.c.upstream_rq_total: 9\n" {
		t.Errorf("/stats?filter = %q", body)
	}
}

func TestLogging(t *testing.T) {
	lv := new(slog.LevelVar)
	base := startAdmin(t, Deps{OpsDeps: OpsDeps{LogLevel: lv}})
	tests := []struct {
		method, query string
		code          int
		level         slog.Level
	}{
		{"POST", "?level=debug", 200, slog.LevelDebug},
		{"POST", "?level=warning", 200, slog.LevelWarn},
		{"GET", "?level=debug", 405, slog.LevelWarn},
		{"POST", "?level=loud", 400, slog.LevelWarn},
		{"POST", "?level=critical", 200, slog.LevelError},
		{"GET", "", 200, slog.LevelError},
	}
	for _, tt := range tests {
		var code int
		var body string
		if tt.method == "POST" {
			code, body = post(t, base+"/logging"+tt.query)
		} else {
			code, body = get(t, base+"/logging"+tt.query)
		}
		if code != tt.code || lv.Level() != tt.level {
			t.Errorf("%s /logging%s = %d (%q), level %v; want %d, level %v", tt.method, tt.query, code, body, lv.Level(), tt.code, tt.level)
		}
	}
}

func TestDrainAndQuit(t *testing.T) {
	var drained, quit atomic.Int32
	base := startAdmin(t, Deps{OpsDeps: OpsDeps{
		DrainListeners: func() { drained.Add(1) },
		Quit:           func() { quit.Add(1) },
	}})
	if code, _ := get(t, base+"/drain_listeners"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /drain_listeners = %d, want 405", code)
	}
	if code, body := post(t, base+"/drain_listeners"); code != 200 || body != "OK\n" || drained.Load() != 1 {
		t.Errorf("POST /drain_listeners = %d %q, drained %d", code, body, drained.Load())
	}
	for range 2 {
		if code, _ := post(t, base+"/quitquitquit"); code != 200 {
			t.Errorf("POST /quitquitquit = %d", code)
		}
	}
	if quit.Load() != 1 {
		t.Errorf("quit called %d times, want once", quit.Load())
	}
}

func TestReopenLogs(t *testing.T) {
	var reopened atomic.Int32
	base := startAdmin(t, Deps{OpsDeps: OpsDeps{ReopenLogs: func() { reopened.Add(1) }}})
	if code, _ := get(t, base+"/reopen_logs"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /reopen_logs = %d, want 405", code)
	}
	if code, body := post(t, base+"/reopen_logs"); code != 200 || body != "OK\n" || reopened.Load() != 1 {
		t.Errorf("POST /reopen_logs = %d %q, reopened %d", code, body, reopened.Load())
	}
}

func TestOpsNotWired(t *testing.T) {
	base := startAdmin(t, Deps{})
	for _, p := range []string{"/stats", "/certs", "/logging"} {
		if code, _ := get(t, base+p); code != http.StatusNotImplemented {
			t.Errorf("%s = %d, want 501", p, code)
		}
	}
	for _, p := range []string{"/drain_listeners", "/quitquitquit", "/reopen_logs"} {
		if code, _ := post(t, base+p); code != http.StatusNotImplemented {
			t.Errorf("%s = %d, want 501", p, code)
		}
	}
}

func TestEnvoyConfigDump(t *testing.T) {
	base := startAdmin(t, Deps{Store: testStore(), OpsDeps: OpsDeps{
		ConfigDump: func() ([]byte, error) { return []byte(`{"configs":[]}`), nil },
		Certs:      func() any { return map[string]any{"certificates": []any{}} },
	}})
	if _, body := get(t, base+"/config_dump"); body != `{"configs":[]}` {
		t.Errorf("/config_dump = %q, want the wired dump", body)
	}
	if _, body := get(t, base+"/certs"); !strings.Contains(body, `"certificates"`) {
		t.Errorf("/certs = %q", body)
	}
}
