package httpproxy

import (
	"net/http"
	"time"

	"github.com/meshlet/meshlet/telemetry"
)

// record hands the finished HTTP/2 stream's record to the sink. It runs
// deferred at the end of h2Handler.ServeHTTP, when the response head (and
// body) went out; END_STREAM follows when the stream closes. The record
// lives in the stream (h2sStream.rec) when w is our server's writer.
func (h *h2Handler) record(w http.ResponseWriter, r *http.Request, d *decision, start time.Time, grpc bool) {
	var rec *telemetry.HTTPRecord
	var status int
	var sent, received int64
	var reqMsgs, respMsgs uint64
	sw, ok := w.(*h2sWriter)
	if ok {
		s := sw.s
		rec = &s.rec
		status, sent = sw.status, sw.sent
		s.c.mu.Lock()
		received = s.received
		reqMsgs, respMsgs = s.reqMsgs.msgs, sw.respMsgs.msgs
		reset := s.resetErr != nil
		s.c.mu.Unlock()
		if status == 0 && !reset {
			status = http.StatusOK // the handler returned without writing: 200, as net/http
		}
	} else {
		rec = new(telemetry.HTTPRecord)
	}
	info := h.info
	*rec = telemetry.HTTPRecord{
		Conn: telemetry.Conn{
			Remote:        info.Remote,
			Local:         info.Local,
			PeerPrincipal: info.PeerPrincipal,
			TLS:           info.TLS != nil,
			Listener:      info.Listener,
			FilterChain:   info.FilterChain,
		},
		Start:         start,
		Duration:      time.Since(start),
		Protocol:      "HTTP/2",
		GRPC:          grpc,
		Method:        r.Method,
		Authority:     r.Host,
		Path:          r.RequestURI,
		RequestID:     headerValue(r.Header, "X-Request-Id"),
		UserAgent:     headerValue(r.Header, "User-Agent"),
		ResponseCode:  status,
		GRPCStatus:    telemetry.NoGRPCStatus,
		ResponseFlags: d.flags,
		BytesReceived: received,
		BytesSent:     sent,
		HCM:           h.hcm,
	}
	if ok {
		// In the stream: boxing a two-map value would allocate.
		sw.s.hdrs = h2Headers{req: r.Header, resp: w.Header()}
		rec.Headers = &sw.s.hdrs
	} else {
		rec.Headers = h2Headers{req: r.Header, resp: w.Header()}
	}
	if grpc {
		rec.GRPCStatus = parseGRPCStatus(grpcStatusHeader(w.Header()))
		rec.RequestMessages, rec.ResponseMessages = reqMsgs, respMsgs
	}
	if d.route != nil {
		rec.RouteName = d.route.Name
	}
	rec.UpstreamCluster = d.clusterName
	if d.host != nil {
		rec.UpstreamHost = d.host.Address
		rec.Attempts = 1 // retries are not visible here yet
	}
	h.p.opts.Sink.HTTPDone(rec)
}

// headerValue is the first value of a canonical header key, without
// http.Header.Get's canonicalization.
func headerValue(h http.Header, key string) string {
	if vs := h[key]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}

// grpcStatusHeader finds grpc-status in a response header map: as a header
// (trailers-only responses) or as a trailer.
func grpcStatusHeader(h http.Header) string {
	if v := headerValue(h, "Grpc-Status"); v != "" {
		return v
	}
	return headerValue(h, http.TrailerPrefix+"Grpc-Status")
}

// h2Headers implements telemetry.Headers over net/http header maps.
type h2Headers struct{ req, resp http.Header }

func (h h2Headers) RequestHeader(name string) string  { return lookupFold(h.req, name) }
func (h h2Headers) ResponseHeader(name string) string { return lookupFold(h.resp, name) }

// lookupFold finds a lower-case name among canonical keys without
// allocating a canonical key.
func lookupFold(h http.Header, name string) string {
	for k, vs := range h {
		if len(vs) > 0 && len(k) == len(name) && equalFoldString(k, name) {
			return vs[0]
		}
	}
	return ""
}

func equalFoldString(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
