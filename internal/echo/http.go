package echo

import (
	"encoding/json"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Response is the JSON body of every HTTP answer.
type Response struct {
	Version string `json:"version"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	Host    string `json:"host"`
	// Proto is the protocol the backend received ("HTTP/1.1", "HTTP/2.0"):
	// it shows what the proxy spoke upstream.
	Proto string `json:"proto"`
	// Headers holds the request headers worth showing: every x-* header
	// plus user-agent and content-type, lower-cased, values joined by ",".
	Headers map[string]string `json:"headers"`
}

// maxDelay bounds the ?delay= query parameter.
const maxDelay = 10 * time.Second

func newHTTPServer(version string, st *stats) *http.Server {
	var protos http.Protocols
	protos.SetHTTP1(true)
	// Prior-knowledge h2c from the standard library: no Upgrade dance and
	// no deprecated x/net/http2/h2c.
	protos.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           handler(version, st),
		Protocols:         &protos,
		ReadHeaderTimeout: 10 * time.Second,
	}
}

// handler answers every path. Query parameters let tests provoke
// behaviour: status=CODE answers with that status, delay=DURATION (at most
// 10s) waits first. Every request is counted in st on arrival.
func handler(version string, st *stats) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st.record(r)
		q := r.URL.Query()
		if d, err := time.ParseDuration(q.Get("delay")); err == nil && d > 0 {
			select {
			case <-time.After(min(d, maxDelay)):
			case <-r.Context().Done():
				return
			}
		}
		status := http.StatusOK
		if c, err := strconv.Atoi(q.Get("status")); err == nil && c >= 200 && c <= 599 {
			status = c
		}
		resp := Response{
			Version: version,
			Method:  r.Method,
			Path:    r.URL.RequestURI(),
			Host:    r.Host,
			Proto:   r.Proto,
			Headers: selectHeaders(r.Header),
		}
		body, _ := json.Marshal(resp)
		w.Header().Set(HeaderVersion, version)
		if a := r.Header.Get(requestAttemptCount); a != "" {
			w.Header().Set(HeaderAttemptCount, a)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)+1))
		w.WriteHeader(status)
		_, _ = w.Write(append(body, '\n'))
	})
}

func selectHeaders(h http.Header) map[string]string {
	out := map[string]string{}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "x-") || lk == "user-agent" || lk == "content-type" {
			out[lk] = strings.Join(h[k], ",")
		}
	}
	return out
}
