package httpproxy

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// statusLines holds "HTTP/1.1 NNN Reason\r\n" for every status code, so
// writing a status line is one copy.
var statusLines = func() (t [600]string) {
	for c := 100; c < 600; c++ {
		t[c] = "HTTP/1.1 " + strconv.Itoa(c) + " " + http.StatusText(c) + "\r\n"
	}
	return t
}()

func statusLine(code int) string {
	if code < 100 || code >= 600 {
		return "HTTP/1.1 " + strconv.Itoa(code) + " \r\n"
	}
	return statusLines[code]
}

// The Date header value changes once a second; it is formatted once per
// second and shared.
type dateValue struct {
	sec int64
	b   []byte
}

var curDate atomic.Pointer[dateValue]

func httpDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := curDate.Load(); d != nil && d.sec == sec {
		return d.b
	}
	d := &dateValue{sec: sec, b: now.UTC().AppendFormat(make([]byte, 0, 29), http.TimeFormat)}
	curDate.Store(d)
	return d.b
}

// newUUID writes a random (version 4) UUID in its text form.
func newUUID(dst *[36]byte) {
	var b [16]byte
	hi, lo := rand.Uint64(), rand.Uint64()
	for i := 0; i < 8; i++ {
		b[i] = byte(hi >> (8 * i))
		b[8+i] = byte(lo >> (8 * i))
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = hex[c>>4], hex[c&0xf]
		j += 2
	}
}

// prepareResponseHeaders drops hop-by-hop and framing headers from a
// response header list and adds what the proxy owns: server, date, the
// route's response mutations and the debug headers. fromUpstream is false
// for local replies.
func (s *h1Session) prepareResponseHeaders(h *hlist, fromUpstream bool) {
	upgrade := fromUpstream && s.resp.status == 101
	j := 0
	for i := range h.h {
		switch string(h.h[i].name) {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "content-length":
			continue
		case "upgrade":
			if !upgrade {
				continue
			}
		}
		h.h[j] = h.h[i]
		j++
	}
	h.h = h.h[:j]
	if !s.hcm.ServerHeaderPassThrough {
		name := s.hcm.ServerName
		if name == "" {
			name = "meshlet"
		}
		h.set("server", name)
	}
	if !h.has("date") {
		h.addBytes("date", httpDate())
	}
	applyMutations(s.muts, true, &s.fc, h)
	if s.overloaded {
		h.set(headerOverloaded, "true")
	}
	if s.rs.attempts > 0 && s.d.vh != nil && s.d.vh.IncludeAttemptCountInResponse {
		h.set(headerAttemptCount, attemptCount(s.rs.attempts))
	}
	if s.p.opts.DebugHeaders {
		flags := s.d.flags
		if flags == "" {
			flags = "-"
		}
		h.set(HeaderResponseFlags, flags)
		if s.d.host != nil {
			h.set(HeaderUpstreamHost, s.d.host.Address)
		}
	}
}

// writeResponseHead writes the status line, headers and framing: chunked,
// or content-length cl when cl >= 0 (also for HEAD and 304, where it is the
// length the body would have had).
func (s *h1Session) writeResponseHead(status int, h *hlist, cl int64, chunked, keep bool) {
	w := &s.bw
	w.writeString(statusLine(status))
	for i := range h.h {
		f := &h.h[i]
		w.write(f.name)
		w.writeString(": ")
		w.write(f.value)
		w.writeString("\r\n")
	}
	switch {
	case status == 101:
		w.writeString("connection: upgrade\r\n")
	case chunked:
		w.writeString("transfer-encoding: chunked\r\n")
	case cl >= 0 && status != 204 && status >= 200:
		w.writeString("content-length: ")
		w.writeInt(cl)
		w.writeString("\r\n")
	}
	if status != 101 {
		if !keep {
			w.writeString("connection: close\r\n")
		} else if s.req.minor == 0 {
			w.writeString("connection: keep-alive\r\n")
		}
	}
	w.writeString("\r\n")
}

// localReply writes the decision's local reply (redirect, direct response,
// error). The connection stays open when the request body is consumed.
func (s *h1Session) localReply() bool {
	d := &s.d
	keep := s.keepAfter() && s.skipBody()
	h := &s.resp.hdr
	h.reset()
	if d.location != "" {
		h.add("location", d.location)
	}
	if d.body != "" {
		h.add("content-type", "text/plain")
	}
	s.resp.status = d.status
	s.prepareResponseHeaders(h, false)
	s.writeResponseHead(d.status, h, int64(len(d.body)), false, keep)
	if string(s.req.method) != "HEAD" {
		s.bw.writeString(d.body)
		s.sent = int64(len(d.body))
	}
	if s.bw.flush() != nil {
		return false
	}
	return keep
}

// writeSimple answers a request that never got routed (protocol errors,
// timeouts) and marks the connection for closing.
func (s *h1Session) writeSimple(status int, flags, body string) {
	s.d = decision{}
	s.d.setLocal(status, flags, body)
	s.muts = s.muts[:0]
	s.req.keepAlive = false
	s.req.method = nil
	s.localReply()
}
