package telemetry

import (
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshlet/meshlet/state"
)

type fakeHeaders map[string]string

func (h fakeHeaders) RequestHeader(n string) string  { return h["req:"+n] }
func (h fakeHeaders) ResponseHeader(n string) string { return h["resp:"+n] }

func sampleHTTP() *HTTPRecord {
	return &HTTPRecord{
		Conn: Conn{
			Remote:        netip.MustParseAddrPort("10.0.0.1:5555"),
			Local:         netip.MustParseAddrPort("10.0.0.2:80"),
			PeerPrincipal: "spiffe://td/ns/a/sa/b",
		},
		Start:         time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC),
		Duration:      42 * time.Millisecond,
		Protocol:      "HTTP/1.1",
		Method:        "POST",
		Authority:     "svc.local",
		Path:          "/api?x=1",
		RequestID:     "rid-1",
		UserAgent:     "curl/8",
		ResponseCode:  503,
		GRPCStatus:    NoGRPCStatus,
		ResponseFlags: "UF,URX",
		RouteName:     "r1",
		UpstreamHost:  "10.0.0.9:8080",

		UpstreamCluster: "backend",
		Attempts:        2,
		BytesReceived:   10,
		BytesSent:       20,
		Headers:         fakeHeaders{"req:x-forwarded-for": "1.2.3.4", "resp:x-envoy-upstream-service-time": "7", "resp:content-type": "text/plain"},
	}
}

func render(t *testing.T, cfg *state.AccessLog, v view) string {
	t.Helper()
	cl, err := compileLog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if cl.json != nil {
		b, _ := appendJSON(nil, nil, cl.json, v, cl.omitEmpty)
		return string(b)
	}
	return string(cl.text.appendText(nil, v, cl.omitEmpty))
}

func TestTextFormat(t *testing.T) {
	empty := &HTTPRecord{}
	tcp := &TCPRecord{Conn: Conn{Remote: netip.MustParseAddrPort("10.0.0.1:5555")}, Duration: 3 * time.Second,
		UpstreamCluster: "db", UpstreamHost: "10.1.1.1:5432", BytesReceived: 5, BytesSent: 6, Connected: true}
	tests := []struct {
		name   string
		format string
		v      view
		omit   bool
		want   string
	}{
		{"default", "", view{h: sampleHTTP()}, false,
			`[2024-05-06T07:08:09.123Z] "POST /api?x=1 HTTP/1.1" 503 UF,URX 10 20 42 7 "1.2.3.4" "curl/8" "rid-1" "svc.local" "10.0.0.9:8080"` + "\n"},
		{"operators", "%REQ(:METHOD)% %RESP(CONTENT-TYPE)% %UPSTREAM_CLUSTER% %DOWNSTREAM_PEER_URI_SAN% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %ROUTE_NAME% %REQ(X-REQUEST-ID)% %UPSTREAM_REQUEST_ATTEMPT_COUNT%",
			view{h: sampleHTTP()}, false, "POST text/plain backend spiffe://td/ns/a/sa/b 10.0.0.1:5555 10.0.0.1 r1 rid-1 2"},
		{"alternate header", "%REQ(X-MISSING?:AUTHORITY)%", view{h: sampleHTTP()}, false, "svc.local"},
		{"truncate", "%REQ(:PATH):4%|%UPSTREAM_HOST(x)%", view{h: sampleHTTP()}, false, ""},
		{"truncate ok", "%REQ(:PATH):4%", view{h: sampleHTTP()}, false, "/api"},
		{"missing values dash", "%REQ(:METHOD)% %RESPONSE_FLAGS% %UPSTREAM_HOST% %RESPONSE_CODE%", view{h: empty}, false, "- - - 0"},
		{"omit empty", "[%RESPONSE_FLAGS%]", view{h: empty}, true, "[]"},
		{"literal percent", "100% done %% %lower%", view{h: empty}, false, "100% done %% %lower%"},
		{"tcp", "%PROTOCOL% %RESPONSE_CODE% %DURATION% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %BYTES_RECEIVED% %BYTES_SENT% %REQ(:PATH)%",
			view{t: tcp}, false, "- 0 3000 db 10.1.1.1:5432 5 6 -"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &state.AccessLog{Text: tt.format, OmitEmptyValues: tt.omit}
			if tt.want == "" {
				if _, err := compileLog(cfg); err == nil {
					t.Fatalf("compile %q succeeded, want error", tt.format)
				}
				return
			}
			if got := render(t, cfg, tt.v); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	for _, f := range []string{"%NOPE%", "%REQ%", "%REQ()%", "%DURATION(x)%", "%REQ(A):x%", "%REQ(A:%"} {
		if _, err := compileFormat(f); err == nil {
			t.Errorf("compileFormat(%q) succeeded", f)
		}
	}
}

func TestJSONFormat(t *testing.T) {
	cfg := &state.AccessLog{JSON: []state.AccessLogJSONField{
		{Key: "bytes", Format: "%BYTES_SENT%", IsFormat: true},
		{Key: "code", Format: "%RESPONSE_CODE%", IsFormat: true},
		{Key: "flags", Format: "%RESPONSE_FLAGS%", IsFormat: true},
		{Key: "method_path", Format: "%REQ(:METHOD)% %REQ(:PATH)%", IsFormat: true},
		{Key: "n", Literal: "1.5"},
		{Key: "up", Nested: []state.AccessLogJSONField{{Key: "host", Format: "%UPSTREAM_HOST%", IsFormat: true}}},
		{Key: "quote", Format: "%REQ(X-Q)%", IsFormat: true},
	}}
	r := sampleHTTP()
	r.Headers = fakeHeaders{"req:x-q": "a\"b\n\xff"}
	got := render(t, cfg, view{h: r})
	var m map[string]any
	if err := json.Unmarshal([]byte(got), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, got)
	}
	want := map[string]any{"bytes": 20.0, "code": 503.0, "flags": "UF,URX", "method_path": "POST /api?x=1", "n": 1.5,
		"up": map[string]any{"host": "10.0.0.9:8080"}, "quote": "a\"b\n\ufffd"}
	for k, v := range want {
		gb, _ := json.Marshal(m[k])
		wb, _ := json.Marshal(v)
		if string(gb) != string(wb) {
			t.Errorf("%s = %s, want %s", k, gb, wb)
		}
	}
	r.ResponseFlags, r.UpstreamHost = "", ""
	got = render(t, cfg, view{h: r})
	if !strings.Contains(got, `"flags":null`) || !strings.Contains(got, `"up":{"host":null}`) {
		t.Errorf("missing single operators should be null: %s", got)
	}
	cfg.OmitEmptyValues = true
	got = render(t, cfg, view{h: r})
	if strings.Contains(got, "flags") || strings.Contains(got, "host") || json.Unmarshal([]byte(got), &m) != nil {
		t.Errorf("omit_empty_values kept null fields or broke JSON: %s", got)
	}
}

func TestFilters(t *testing.T) {
	code := func(op state.CompareOp, v uint64) *state.AccessLogFilter {
		return &state.AccessLogFilter{Kind: state.FilterStatusCode, Op: op, Value: v}
	}
	dur := func(op state.CompareOp, v uint64) *state.AccessLogFilter {
		return &state.AccessLogFilter{Kind: state.FilterDuration, Op: op, Value: v}
	}
	sample := func(n uint32, indep bool) *state.AccessLogFilter {
		return &state.AccessLogFilter{Kind: state.FilterRuntime, Sampled: state.Fraction{Numerator: n, Denominator: state.PerHundred}, IndependentRandomness: indep}
	}
	hc := sampleHTTP()
	hc.HealthCheck = true
	tests := []struct {
		name string
		f    *state.AccessLogFilter
		v    view
		want bool
	}{
		{"code ge match", code(state.CompareGE, 500), view{h: sampleHTTP()}, true},
		{"code ge miss", code(state.CompareGE, 504), view{h: sampleHTTP()}, false},
		{"code eq", code(state.CompareEQ, 503), view{h: sampleHTTP()}, true},
		{"code le", code(state.CompareLE, 499), view{h: sampleHTTP()}, false},
		{"tcp code is 0", code(state.CompareEQ, 0), view{t: &TCPRecord{}}, true},
		{"duration ge", dur(state.CompareGE, 42), view{h: sampleHTTP()}, true},
		{"duration le miss", dur(state.CompareLE, 41), view{h: sampleHTTP()}, false},
		{"not health check", &state.AccessLogFilter{Kind: state.FilterNotHealthCheck}, view{h: sampleHTTP()}, true},
		{"health check", &state.AccessLogFilter{Kind: state.FilterNotHealthCheck}, view{h: hc}, false},
		{"runtime 100", sample(100, false), view{h: sampleHTTP()}, true},
		{"runtime 0", sample(0, true), view{h: sampleHTTP()}, false},
		{"and", &state.AccessLogFilter{Kind: state.FilterAnd, Filters: []*state.AccessLogFilter{code(state.CompareGE, 500), dur(state.CompareGE, 100)}}, view{h: sampleHTTP()}, false},
		{"or", &state.AccessLogFilter{Kind: state.FilterOr, Filters: []*state.AccessLogFilter{code(state.CompareGE, 500), dur(state.CompareGE, 100)}}, view{h: sampleHTTP()}, true},
	}
	for _, tt := range tests {
		if got := matchFilter(tt.f, tt.v); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestRuntimeFilterByRequestID: with an x-request-id the sampling decision
// is the same every time (and on every proxy), and about the configured
// share of distinct ids is logged.
func TestRuntimeFilterByRequestID(t *testing.T) {
	f := &state.AccessLogFilter{Kind: state.FilterRuntime, Sampled: state.Fraction{Numerator: 25, Denominator: state.PerHundred}}
	r := sampleHTTP()
	hits := 0
	for i := range 4000 {
		r.RequestID = "id-" + time.Duration(i).String()
		first := matchFilter(f, view{h: r})
		for range 3 {
			if matchFilter(f, view{h: r}) != first {
				t.Fatalf("request id %q sampled inconsistently", r.RequestID)
			}
		}
		if first {
			hits++
		}
	}
	if hits < 800 || hits > 1200 {
		t.Errorf("%d of 4000 sampled, want about 1000", hits)
	}
}

func TestAccessLoggerWritesFile(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	al := NewAccessLogger(AccessLogOptions{})
	hcm := &state.HTTPConnectionManager{AccessLogs: []*state.AccessLog{
		{Name: "all", Path: path, Text: "%RESPONSE_CODE% %REQ(:PATH)%\n"},
		{Name: "errors", Path: path, Text: "ERR %RESPONSE_CODE%\n", Filter: &state.AccessLogFilter{Kind: state.FilterStatusCode, Op: state.CompareGE, Value: 500}},
	}}
	tcp := &state.TCPProxy{AccessLogs: []*state.AccessLog{{Name: "tcp", Path: path, Text: "TCP %UPSTREAM_CLUSTER%\n"}}}
	r := sampleHTTP()
	r.HCM = hcm
	r.ResponseCode = 200
	al.HTTPDone(r)
	r.ResponseCode = 502
	al.HTTPDone(r)
	al.TCPDone(&TCPRecord{TCP: tcp, UpstreamCluster: "db"})
	al.HTTPDone(&HTTPRecord{}) // no HCM: nothing
	if err := al.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "200 /api?x=1\n502 /api?x=1\nERR 502\nTCP db\n"
	if string(b) != want {
		t.Errorf("file = %q, want %q", b, want)
	}
	if st := al.Stats(); st.Written != 4 || st.Dropped != 0 {
		t.Errorf("stats = %+v", st)
	}
	// After Close records are counted, not written, and nothing panics.
	al.HTTPDone(r)
	if st := al.Stats(); st.Failed == 0 {
		t.Errorf("record after Close not counted as failed: %+v", st)
	}
}

func TestAccessLoggerDropsWhenFull(t *testing.T) {
	defer goleak.VerifyNone(t)
	// A pipe nobody reads blocks the writer goroutine on its first flush,
	// so the queue fills.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	al := NewAccessLogger(AccessLogOptions{QueueLines: 8})
	cfg := &state.AccessLog{Path: "/dev/fd/" + strconv.Itoa(int(pw.Fd())), Text: strings.Repeat("x", 70000) + "\n"}
	hcm := &state.HTTPConnectionManager{AccessLogs: []*state.AccessLog{cfg}}
	r := sampleHTTP()
	r.HCM = hcm
	for range 100 {
		al.HTTPDone(r)
	}
	st := al.Stats()
	if st.Dropped == 0 || st.Written+st.Dropped != 100 {
		t.Errorf("stats = %+v, want drops and written+dropped = 100", st)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if err := al.Close(); err != nil {
		t.Fatal(err)
	}
	_ = pw.Close()
	_ = pr.Close()
}

func BenchmarkAccessLogText(b *testing.B) {
	cl, err := compileLog(&state.AccessLog{})
	if err != nil {
		b.Fatal(err)
	}
	r := sampleHTTP()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = cl.text.appendText(buf[:0], view{h: r}, false)
	}
}

func BenchmarkAccessLogJSON(b *testing.B) {
	cl, err := compileLog(&state.AccessLog{JSON: []state.AccessLogJSONField{
		{Key: "code", Format: "%RESPONSE_CODE%", IsFormat: true},
		{Key: "path", Format: "%REQ(:PATH)%", IsFormat: true},
		{Key: "start", Format: "%START_TIME%", IsFormat: true},
	}})
	if err != nil {
		b.Fatal(err)
	}
	r := sampleHTTP()
	buf, sc := make([]byte, 0, 1024), make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf, sc = appendJSON(buf[:0], sc, cl.json, view{h: r}, false)
	}
}
