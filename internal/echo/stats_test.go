package echo

import (
	"net/http"
	"testing"
	"time"
)

func TestStats(t *testing.T) {
	s := startEcho(t, "mirror")
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	send := func(host, attempt string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+s.HTTPAddr.String()+"/", nil)
		req.Host = host
		if attempt != "" {
			req.Header.Set("x-envoy-attempt-count", attempt)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	tests := []struct {
		host, attempt string
		wantHeader    string
	}{
		{"echo.demo-shadow", "", ""},
		{"echo.demo-shadow", "2", "2"},
		{"echo.demo", "2", "2"},
	}
	for _, tt := range tests {
		resp := send(tt.host, tt.attempt)
		if got := resp.Header.Get(HeaderAttemptCount); got != tt.wantHeader {
			t.Errorf("host %s attempt %q: %s = %q, want %q", tt.host, tt.attempt, HeaderAttemptCount, got, tt.wantHeader)
		}
	}
	st := s.Stats()
	if st.Requests != 3 || st.Hosts["echo.demo-shadow"] != 2 || st.Hosts["echo.demo"] != 1 ||
		st.Attempts[""] != 1 || st.Attempts["2"] != 2 {
		t.Errorf("stats = %+v", st)
	}
	s.ResetStats()
	if st := s.Stats(); st.Requests != 0 || len(st.Hosts) != 0 || len(st.Attempts) != 0 {
		t.Errorf("after reset: %+v", st)
	}
	// A Stats copy does not change with later traffic.
	send("x", "")
	if st.Hosts["x"] != 0 {
		t.Error("Stats returned a live map")
	}
}
