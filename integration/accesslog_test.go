package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

const textFormat = `%START_TIME% "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "%REQ(X-REQUEST-ID)%" %UPSTREAM_CLUSTER% %UPSTREAM_HOST%` + "\n"

// fileLog is a file access logger at path with a text format, or the JSON
// format when json is set, and an optional filter.
func fileLog(t *testing.T, path, text string, jsonFmt map[string]any, filter *accesslogv3.AccessLogFilter) *accesslogv3.AccessLog {
	t.Helper()
	f := &filev3.FileAccessLog{Path: path}
	if jsonFmt != nil {
		s, err := structpb.NewStruct(jsonFmt)
		if err != nil {
			t.Fatal(err)
		}
		f.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: s}}}
	} else {
		f.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_TextFormatSource{TextFormatSource: &corev3.DataSource{
				Specifier: &corev3.DataSource_InlineString{InlineString: text}}}}}
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", Filter: filter,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: anyOf(t, f)}}
}

// withAccessLogs adds logs to the HCM or tcp_proxy of l's first filter.
func withAccessLogs(t *testing.T, l *listenerv3.Listener, logs ...*accesslogv3.AccessLog) *listenerv3.Listener {
	t.Helper()
	f := l.GetFilterChains()[0].GetFilters()[0]
	m, err := f.GetTypedConfig().UnmarshalNew()
	if err != nil {
		t.Fatal(err)
	}
	switch c := m.(type) {
	case *hcmv3.HttpConnectionManager:
		c.AccessLog = logs
	case *tcpv3.TcpProxy:
		c.AccessLog = logs
	default:
		t.Fatalf("filter %T has no access_log", m)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, m)}
	return l
}

// logLines waits until path holds n lines and returns them.
func logLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	eventually(t, 5*time.Second, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) == 0 {
			lines = nil
		}
		if len(lines) < n {
			return fmt.Errorf("%s has %d lines, want %d", filepath.Base(path), len(lines), n)
		}
		return nil
	})
	return lines
}

func TestAccessLogHTTPTextAndJSON(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	dir := t.TempDir()
	textPath, jsonPath, errPath := filepath.Join(dir, "text.log"), filepath.Join(dir, "json.log"), filepath.Join(dir, "errors.log")
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	jsonFmt := map[string]any{
		"method": "%REQ(:METHOD)%", "path": "%REQ(:PATH)%", "code": "%RESPONSE_CODE%",
		"flags": "%RESPONSE_FLAGS%", "upstream": "%UPSTREAM_HOST%", "cluster": "%UPSTREAM_CLUSTER%",
		"request_id": "%REQ(X-REQUEST-ID)%", "protocol": "%PROTOCOL%", "mesh": "meshlet",
	}
	errorsOnly := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
		StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
			Op: accesslogv3.ComparisonFilter_GE, Value: &corev3.RuntimeUInt32{DefaultValue: 500, RuntimeKey: "errors"}}}}}
	l := withAccessLogs(t, httpListener(t, "web", lAddr, "web-routes"),
		fileLog(t, textPath, textFormat, nil, nil),
		fileLog(t, jsonPath, "", jsonFmt, nil),
		fileLog(t, errPath, "%RESPONSE_CODE% %RESPONSE_FLAGS% %REQ(:PATH)%\n", nil, errorsOnly))
	noEndpoints := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/none"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "empty"}}},
	}
	cp.set(l, routeConfig("web-routes", noEndpoints, routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr),
		edsCluster("empty", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "empty"))
	p := startZtunnel(t, cp, proxyOpts{})
	eventually(t, 10*time.Second, func() error {
		code, _, _, err := get(h1Client(), "http://"+lAddr+"/warmup", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("not serving yet: %d %v", code, err)
		}
		return nil
	})
	c := h1Client()
	if code, _, _, err := get(c, "http://"+lAddr+"/ok?q=1", map[string]string{"x-request-id": "rid-ok"}); err != nil || code != 200 {
		t.Fatalf("/ok = %d %v", code, err)
	}
	if code, _, _, err := get(c, "http://"+lAddr+"/none", map[string]string{"x-request-id": "rid-none"}); err != nil || code != 503 {
		t.Fatalf("/none = %d %v, want 503", code, err)
	}

	// Warm-up requests are logged too; the last two lines are ours.
	text := logLines(t, textPath, 3)
	text = text[len(text)-2:]
	wantText := []string{
		`"GET /ok?q=1 HTTP/1.1" 200 - 0 `,
		`"GET /none HTTP/1.1" 503 UH 0 `,
	}
	for i, w := range wantText {
		if !strings.Contains(text[i], w) {
			t.Errorf("text line %d = %q, want it to contain %q", i, text[i], w)
		}
	}
	if !strings.HasSuffix(text[0], `"rid-ok" svc `+be.addr) {
		t.Errorf("text line %q does not end with request id, cluster and upstream host %s", text[0], be.addr)
	}
	if !strings.HasSuffix(text[1], `"rid-none" empty -`) {
		t.Errorf("text line %q: want no upstream host for UH", text[1])
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000Z", text[0][:strings.IndexByte(text[0], ' ')]); err != nil {
		t.Errorf("start time: %v", err)
	}

	js := logLines(t, jsonPath, 3)
	var entries []map[string]any
	for _, line := range js[len(js)-2:] {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("JSON line %q: %v", line, err)
		}
		entries = append(entries, m)
	}
	want := []map[string]any{
		{"method": "GET", "path": "/ok?q=1", "code": float64(200), "flags": nil, "upstream": be.addr, "cluster": "svc", "request_id": "rid-ok", "protocol": "HTTP/1.1", "mesh": "meshlet"},
		{"method": "GET", "path": "/none", "code": float64(503), "flags": "UH", "upstream": nil, "cluster": "empty", "request_id": "rid-none", "protocol": "HTTP/1.1", "mesh": "meshlet"},
	}
	for i := range want {
		for k, v := range want[i] {
			if got := entries[i][k]; fmt.Sprint(got) != fmt.Sprint(v) {
				t.Errorf("JSON entry %d %s = %#v, want %#v (entry %v)", i, k, got, v, entries[i])
			}
		}
	}

	if got := logLines(t, errPath, 1); len(got) != 1 || got[0] != "503 UH /none" {
		t.Errorf("status_code_filter log = %q, want only the 503", got)
	}
	_, stats := adminDo(t, p, "GET", "/stats?filter=access_log")
	if !strings.Contains(stats, "access_log.lines_dropped: 0") || strings.Contains(stats, "access_log.lines_written: 0") {
		t.Errorf("/stats access_log counters:\n%s", stats)
	}
}

func TestAccessLogTCPProxy(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	logPath := filepath.Join(t.TempDir(), "tcp.log")
	okAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	badAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	format := "%UPSTREAM_CLUSTER% %UPSTREAM_HOST% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%\n"
	cp.set(
		withAccessLogs(t, tcpListener(t, "tcp-ok", okAddr, "svc"), fileLog(t, logPath, format, nil, nil)),
		withAccessLogs(t, tcpListener(t, "tcp-bad", badAddr, "empty"), fileLog(t, logPath, format, nil, nil)),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr),
		edsCluster("empty", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "empty"))
	startZtunnel(t, cp, proxyOpts{})

	// A raw HTTP/1.0 exchange through the TCP proxy: the backend closes
	// after answering, so the connection ends by itself.
	req := "GET /tcp HTTP/1.0\r\nHost: x\r\n\r\n"
	var resp string
	eventually(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", okAddr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			return err
		}
		b, err := io.ReadAll(bufio.NewReader(c))
		if err != nil || !strings.HasPrefix(string(b), "HTTP/1.0 200") {
			return fmt.Errorf("tcp proxy answer %q: %v", b, err)
		}
		resp = string(b)
		return nil
	})
	if c, err := net.DialTimeout("tcp", badAddr, time.Second); err == nil {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.ReadAll(c) // closed by the proxy: no endpoint
		c.Close()
	}

	lines := logLines(t, logPath, 2)
	want := map[string]string{
		"svc":   fmt.Sprintf("svc %s - %d %d 127.0.0.1", be.addr, len(req), len(resp)),
		"empty": "empty - UH 0 0 127.0.0.1",
	}
	for _, line := range lines {
		cluster := strings.Fields(line)[0]
		if w, ok := want[cluster]; ok && line == w {
			delete(want, cluster)
		}
	}
	if len(want) > 0 {
		t.Errorf("tcp access log lines %q are missing %v", lines, want)
	}
}

// TestAccessLogReopen: after logrotate-style renames, POST /reopen_logs and
// SIGUSR1 (Envoy's two ways) make the proxy continue in a new file at the
// configured path; the renamed file keeps the earlier lines.
func TestAccessLogReopen(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	logPath := filepath.Join(t.TempDir(), "access.log")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(withAccessLogs(t, httpListener(t, "http", addr, "local"), fileLog(t, logPath, "%REQ(:PATH)%\n", nil, nil)),
		routeConfig("local", routeTo("v1")),
		edsCluster("v1", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "v1", be.addr))
	p := startZtunnel(t, cp, proxyOpts{})
	client := h1Client()
	send := func(path string) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			code, _, _, err := get(client, "http://"+addr+path, nil)
			if err != nil || code != 200 {
				return fmt.Errorf("GET %s: %d %v", path, code, err)
			}
			return nil
		})
	}
	send("/one")
	logLines(t, logPath, 1)
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if code, _ := adminDo(t, p, "POST", "/reopen_logs"); code != 200 {
		t.Fatalf("POST /reopen_logs = %d", code)
	}
	send("/two")
	if got := logLines(t, logPath, 1); got[0] != "/two" {
		t.Errorf("new file after /reopen_logs = %q, want [/two]", got)
	}
	if err := os.Rename(logPath, logPath+".2"); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	// The signal is asynchronous: retry until a request lands in a new file.
	eventually(t, 5*time.Second, func() error {
		send("/three")
		if _, err := os.Stat(logPath); err != nil {
			return err
		}
		return nil
	})
	if got := logLines(t, logPath, 1); got[0] != "/three" {
		t.Errorf("new file after SIGUSR1 = %q, want /three first", got)
	}
	if got := logLines(t, logPath+".1", 1); len(got) != 1 || got[0] != "/one" {
		t.Errorf("rotated file = %q, want [/one]", got)
	}
}
