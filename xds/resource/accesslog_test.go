package resource

import (
	"encoding/json"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/state"
)

func fileLog(t *testing.T, path string, f *corev3.SubstitutionFormatString, filter *accesslogv3.AccessLogFilter) *accesslogv3.AccessLog {
	fl := &filev3.FileAccessLog{Path: path}
	if f != nil {
		fl.AccessLogFormat = &filev3.FileAccessLog_LogFormat{LogFormat: f}
	}
	return &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", Filter: filter,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, fl)}}
}

func textSource(s string) *corev3.SubstitutionFormatString {
	return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
		TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}}}
}

func statusGE(v uint32) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{StatusCodeFilter: &accesslogv3.StatusCodeFilter{
		Comparison: &accesslogv3.ComparisonFilter{Op: accesslogv3.ComparisonFilter_GE, Value: &corev3.RuntimeUInt32{DefaultValue: v}}}}}
}

func TestDecodeAccessLog(t *testing.T) {
	jsonFmt, err := structpb.NewStruct(map[string]any{"code": "%RESPONSE_CODE%", "n": 1, "up": map[string]any{"host": "%UPSTREAM_HOST%"}})
	if err != nil {
		t.Fatal(err)
	}
	stdout := &accesslogv3.AccessLog{Name: "envoy.access_loggers.stdout",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &streamv3.StdoutAccessLog{})}}
	runtime := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_RuntimeFilter{RuntimeFilter: &accesslogv3.RuntimeFilter{
		RuntimeKey: "k", PercentSampled: &typev3.FractionalPercent{Numerator: 5, Denominator: typev3.FractionalPercent_TEN_THOUSAND}}}}
	and := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{
		Filters: []*accesslogv3.AccessLogFilter{statusGE(500), runtime}}}}
	tests := []struct {
		name string
		in   *accesslogv3.AccessLog
		want *state.AccessLog
	}{
		{"file text source", fileLog(t, "/tmp/a.log", textSource("%REQ(:METHOD)% %RESPONSE_CODE%\n"), nil),
			&state.AccessLog{Name: "envoy.access_loggers.file", Sink: state.AccessLogFile, Path: "/tmp/a.log", Text: "%REQ(:METHOD)% %RESPONSE_CODE%\n"}},
		{"file default format", fileLog(t, "/dev/stdout", nil, statusGE(500)),
			&state.AccessLog{Name: "envoy.access_loggers.file", Sink: state.AccessLogFile, Path: "/dev/stdout",
				Filter: &state.AccessLogFilter{Kind: state.FilterStatusCode, Op: state.CompareGE, Value: 500}}},
		{"json", fileLog(t, "/tmp/a.log", &corev3.SubstitutionFormatString{OmitEmptyValues: true, Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: jsonFmt}}, and),
			&state.AccessLog{Name: "envoy.access_loggers.file", Path: "/tmp/a.log", OmitEmptyValues: true,
				JSON: []state.AccessLogJSONField{
					{Key: "code", Format: "%RESPONSE_CODE%", IsFormat: true},
					{Key: "n", Literal: "1"},
					{Key: "up", Nested: []state.AccessLogJSONField{{Key: "host", Format: "%UPSTREAM_HOST%", IsFormat: true}}},
				},
				Filter: &state.AccessLogFilter{Kind: state.FilterAnd, Filters: []*state.AccessLogFilter{
					{Kind: state.FilterStatusCode, Op: state.CompareGE, Value: 500},
					{Kind: state.FilterRuntime, Sampled: state.Fraction{Numerator: 5, Denominator: state.PerTenThousand}},
				}}}},
		{"stdout", stdout, &state.AccessLog{Name: "envoy.access_loggers.stdout", Sink: state.AccessLogStdout}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeAccessLogs([]*accesslogv3.AccessLog{tt.in})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("got %d logs", len(got))
			}
			assertEqualJSON(t, got[0], tt.want)
		})
	}
}

func TestDecodeAccessLogErrors(t *testing.T) {
	header := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_HeaderFilter{HeaderFilter: &accesslogv3.HeaderFilter{}}}
	one := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{
		Filters: []*accesslogv3.AccessLogFilter{statusGE(1)}}}}
	grpcLog := &accesslogv3.AccessLog{Name: "grpc", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &tcpproxyv3.TcpProxy{})}}
	tests := []struct {
		name string
		in   *accesslogv3.AccessLog
		want []string
	}{
		{"unknown operator", fileLog(t, "/tmp/a", textSource("%NOT_AN_OPERATOR%"), nil), []string{"access_log[0].typed_config.log_format", "NOT_AN_OPERATOR"}},
		{"header without name", fileLog(t, "/tmp/a", textSource("%REQ()%"), nil), []string{"needs a header name"}},
		{"no path", fileLog(t, "", nil, nil), []string{"typed_config.path", "is required"}},
		{"unsupported logger", grpcLog, []string{"typed_config", "not supported"}},
		{"no typed_config", &accesslogv3.AccessLog{Name: "x"}, []string{"typed_config", "is required"}},
		{"unsupported filter", fileLog(t, "/tmp/a", nil, header), []string{"filter", "HeaderFilter"}},
		{"or with one filter", fileLog(t, "/tmp/a", nil, one), []string{"or_filter.filters", "at least two"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeAccessLogs([]*accesslogv3.AccessLog{tt.in})
			wantErr(t, err, tt.want...)
		})
	}
}

// TestAccessLogHooks: HCM and tcp_proxy carry their access_log through the
// listener decoder, and a bad one NACKs the listener.
func TestAccessLogHooks(t *testing.T) {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"},
		AccessLog: []*accesslogv3.AccessLog{fileLog(t, "/tmp/tcp.log", nil, nil)}}
	l := tcpListener(t)
	l.FilterChains[0].Filters = []*listenerv3.Filter{tcpProxyFilter(t, tp)}
	got, err := DecodeListener(l)
	if err != nil {
		t.Fatal(err)
	}
	if al := got.FilterChains[0].TCPProxy.AccessLogs; len(al) != 1 || al[0].Path != "/tmp/tcp.log" {
		t.Errorf("tcp_proxy access logs = %+v", al)
	}

	h := rdsHCM(t, "r")
	h.AccessLog = []*accesslogv3.AccessLog{fileLog(t, "/tmp/http.log", textSource("%RESPONSE_CODE%\n"), nil)}
	l = tcpListener(t)
	l.FilterChains[0].Filters = []*listenerv3.Filter{hcmFilter(t, h)}
	got, err = DecodeListener(l)
	if err != nil {
		t.Fatal(err)
	}
	if al := got.FilterChains[0].HTTP.AccessLogs; len(al) != 1 || al[0].Text != "%RESPONSE_CODE%\n" {
		t.Errorf("HCM access logs = %+v", al)
	}

	h.AccessLog = []*accesslogv3.AccessLog{fileLog(t, "/tmp/http.log", textSource("%BOGUS%"), nil)}
	l.FilterChains[0].Filters = []*listenerv3.Filter{hcmFilter(t, h)}
	_, err = DecodeListener(l)
	wantErr(t, err, "access_log[0]", "BOGUS")
}

func assertEqualJSON(t *testing.T, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("got  %s\nwant %s", g, w)
	}
}
