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
	sw, ok := w.(*h2sWriter)
	if !ok {
		h.recordStream(new(telemetry.HTTPRecord), nil, r, d, start, grpc, streamResult{respHdr: w.Header()})
		return
	}
	s := sw.s
	res := streamResult{status: sw.status, sent: sw.sent, respHdr: w.Header()}
	s.c.mu.Lock()
	res.received = s.received
	res.reqMsgs, res.respMsgs = s.reqMsgs.msgs, sw.respMsgs.msgs
	reset := s.resetErr != nil
	s.c.mu.Unlock()
	if res.status == 0 && !reset {
		res.status = http.StatusOK // the handler returned without writing: 200, as net/http
	}
	// In the stream: boxing a two-map value would allocate.
	h.recordStream(&s.rec, &s.hdrs, r, d, start, grpc, res)
}

// streamResult is what a finished stream's record needs from the side
// that delivered the response.
type streamResult struct {
	status            int
	sent, received    int64
	reqMsgs, respMsgs uint64
	respHdr           http.Header
	// trailer holds the response trailers when they are not in respHdr
	// under http.TrailerPrefix (the in-process path).
	trailer http.Header
}

// recordStream fills rec for the finished stream and hands it to the
// sink. hdrs, when not nil, is where the header view is kept (so it need
// not be boxed on the heap).
func (h *h2Handler) recordStream(rec *telemetry.HTTPRecord, hdrs *h2Headers, r *http.Request, d *decision, start time.Time, grpc bool, res streamResult) {
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
		ResponseCode:  res.status,
		GRPCStatus:    telemetry.NoGRPCStatus,
		ResponseFlags: d.flags,
		BytesReceived: res.received,
		BytesSent:     res.sent,
		HCM:           h.hcm,
	}
	if hdrs != nil {
		*hdrs = h2Headers{req: r.Header, resp: res.respHdr}
		rec.Headers = hdrs
	} else {
		rec.Headers = h2Headers{req: r.Header, resp: res.respHdr}
	}
	if grpc {
		st := grpcStatusHeader(res.respHdr)
		if st == "" {
			st = headerValue(res.trailer, "Grpc-Status")
		}
		rec.GRPCStatus = parseGRPCStatus(st)
		rec.RequestMessages, rec.ResponseMessages = res.reqMsgs, res.respMsgs
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
