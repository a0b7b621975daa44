package telemetry

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// FuzzAccessLogFormat compiles arbitrary format strings as Envoy text and
// as a JSON dictionary value and renders them against HTTP and TCP records:
// compiling must not panic, rendering a compiled format must not panic, and
// the JSON output must be one valid JSON object.
func FuzzAccessLogFormat(f *testing.F) {
	for _, s := range []string{
		DefaultAccessLogFormat,
		"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\n",
		"%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)% %DURATION% %RESP(X-A):3%",
		"%%literal %DOWNSTREAM_PEER_URI_SAN% %UPSTREAM_CLUSTER% %BYTES_SENT%",
		"%UNCLOSED",
		"%REQ()%",
	} {
		f.Add(s, "k")
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC)
	conn := Conn{Remote: netip.MustParseAddrPort("10.0.0.1:1234"), Local: netip.MustParseAddrPort("10.0.0.2:80"),
		PeerPrincipal: "spiffe://cluster.local/ns/a/sa/b", TLS: true, Listener: "l", FilterChain: "fc"}
	h := &HTTPRecord{Conn: conn, Start: start, Duration: 3 * time.Millisecond, Protocol: "HTTP/2", Method: "GET",
		Authority: "a.b", Path: "/p?q\"\n", RequestID: "id", ResponseCode: 200, GRPCStatus: NoGRPCStatus,
		ResponseFlags: "UF", UpstreamCluster: "c", UpstreamHost: "1.2.3.4:80", Attempts: 2, BytesReceived: 5, BytesSent: 7}
	tcp := &TCPRecord{Conn: conn, Start: start}
	f.Fuzz(func(t *testing.T, text, key string) {
		for _, cfg := range []*state.AccessLog{
			{Text: text},
			{Text: text, OmitEmptyValues: true},
			{JSON: []state.AccessLogJSONField{{Key: key, Format: text}, {Key: "n", Nested: []state.AccessLogJSONField{{Key: key, Format: text}}}}},
		} {
			cl, err := compileLog(cfg)
			if err != nil {
				continue
			}
			for _, v := range []view{{h: h}, {t: tcp}} {
				var out []byte
				if cl.json != nil {
					out, _ = appendJSON(nil, nil, cl.json, v, cfg.OmitEmptyValues)
					if !json.Valid(bytes.TrimSpace(out)) {
						t.Fatalf("format %q, key %q: invalid JSON %q", text, key, out)
					}
				} else {
					_ = cl.text.appendText(out, v, cfg.OmitEmptyValues)
				}
			}
		}
	})
}
