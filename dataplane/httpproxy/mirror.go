package httpproxy

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/textproto"
	"strings"

	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// maxMirrorsPerCluster bounds the mirrored requests in flight to one
// cluster: a slow shadow then costs at most this many goroutines and
// bodies, and further mirrors are dropped (and counted), never queued.
const maxMirrorsPerCluster = 64

// mirrorTimeout bounds a mirrored request when the route has no timeout.
const mirrorTimeout = 15 * time.Second

// mirrorStats counts mirrored requests per cluster.
type mirrorStats struct {
	inflight atomic.Int32
	sent     atomic.Uint64
	dropped  atomic.Uint64
	failed   atomic.Uint64
}

// MirrorStats is a snapshot of one shadow cluster's mirror counters.
type MirrorStats struct {
	Sent, Dropped, Failed uint64
	InFlight              int32
}

// MirrorStats returns the mirror counters of cluster (tests, admin).
func (p *Proxy) MirrorStats(cluster string) MirrorStats {
	v, ok := p.mirrors.Load(cluster)
	if !ok {
		return MirrorStats{}
	}
	m := v.(*mirrorStats)
	return MirrorStats{Sent: m.sent.Load(), Dropped: m.dropped.Load(), Failed: m.failed.Load(), InFlight: m.inflight.Load()}
}

func (p *Proxy) mirrorStatsOf(cluster string) *mirrorStats {
	if v, ok := p.mirrors.Load(cluster); ok {
		return v.(*mirrorStats)
	}
	v, _ := p.mirrors.LoadOrStore(cluster, &mirrorStats{})
	return v.(*mirrorStats)
}

// mirrorRequest is what a shadow request is built from: the upstream
// request as the primary sends it (after rewrites and header mutations).
type mirrorRequest struct {
	method, path, authority string
	header                  http.Header
	body                    []byte
	timeout                 time.Duration
	downstreamH2            bool
}

// startMirrors sends m to every sampled mirror policy on its own
// goroutine. The caller never waits: the primary request goes on at once.
func (p *Proxy) startMirrors(policies []state.MirrorPolicy, m *mirrorRequest) {
	for i := range policies {
		mp := &policies[i]
		if !policy.MirrorSampled(mp, rand.Uint64()) {
			continue
		}
		st := p.mirrorStatsOf(mp.Cluster)
		if st.inflight.Add(1) > maxMirrorsPerCluster {
			st.inflight.Add(-1)
			st.dropped.Add(1)
			continue
		}
		authority := m.authority
		if !mp.DisableShadowHostSuffixAppend {
			authority = policy.ShadowAuthority(authority)
		}
		p.mirrorWG.Add(1)
		go func(cluster, authority string) {
			defer p.mirrorWG.Done()
			defer st.inflight.Add(-1)
			if p.sendMirror(cluster, authority, m) {
				st.sent.Add(1)
			} else {
				st.failed.Add(1)
			}
		}(mp.Cluster, authority)
	}
}

// sendMirror sends one shadow request and discards the response.
func (p *Proxy) sendMirror(cluster, authority string, m *mirrorRequest) bool {
	c := p.clusters.Cluster(cluster)
	if c == nil {
		return false
	}
	h, err := c.Pick(nil)
	if err != nil || h == nil {
		return false
	}
	// The shadow request's authority names it for auto_sni, as Envoy's
	// router does for the shadow stream.
	ep := c.EndpointFor(h, upstream.AutoSNIName(c.Spec().AutoSNI, authority, func(n string) (string, bool) {
		v := m.header.Get(n)
		return v, v != ""
	}))
	timeout := m.timeout
	if timeout <= 0 {
		timeout = mirrorTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req := &http.Request{
		Method:     m.method,
		URL:        h2URL(m.path, authority),
		Proto:      "HTTP/2.0",
		ProtoMajor: 2,
		Header:     m.header.Clone(),
		Host:       authority,
		Body:       http.NoBody,
	}
	if len(m.body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(m.body))
		req.ContentLength = int64(len(m.body))
	}
	req = req.WithContext(ctx)
	proto := c.Spec().Protocol
	if proto == state.UpstreamUseDownstream {
		proto = state.UpstreamHTTP1
		if m.downstreamH2 {
			proto = state.UpstreamHTTP2
		}
	}
	h.Acquire()
	defer h.Release()
	var resp *http.Response
	if proto == state.UpstreamHTTP2 {
		resp, err = p.roundTripH2(ctx, ep, req)
	} else {
		req.URL.Scheme = ""
		resp, err = p.roundTripH1(ctx, ep, req)
	}
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.ReportHTTP(h, outlierStatus(resp))
	return true
}

// mirrorH1 starts the route's mirrors for the HTTP/1.1 request in s, whose
// body (if any) is fully in s.replayBody.
func (p *Proxy) mirrorH1(s *h1Session) {
	r := &s.req
	hdr := make(http.Header, len(r.hdr.h))
	for _, f := range r.hdr.h {
		k := textproto.CanonicalMIMEHeaderKey(string(f.name))
		hdr[k] = append(hdr[k], string(f.value))
	}
	m := &mirrorRequest{
		method:    string(r.method),
		path:      strings.Clone(s.upPath),
		authority: strings.Clone(s.upAuthority),
		header:    hdr,
		body:      bytes.Clone(s.replayBody),
		timeout:   s.to.global,
	}
	p.startMirrors(s.d.action.MirrorPolicies, m)
}

// mirrorRT starts the mirrors for a request forwarded as an *http.Request
// (out, after rewrites). A body is mirrored only once complete: by the
// time the first attempt is back a unary body has been read whole; a body
// still streaming, or one that outgrew the replay buffer, is not mirrored
// (a shadow must never hold the primary back).
func (p *Proxy) mirrorRT(policies []state.MirrorPolicy, out *http.Request, rb *replayBody, hasBody bool, timeout time.Duration, downstreamH2 bool) {
	m := &mirrorRequest{
		method:       out.Method,
		path:         out.URL.RequestURI(),
		authority:    out.Host,
		header:       out.Header.Clone(),
		timeout:      timeout,
		downstreamH2: downstreamH2,
	}
	if out.URL.Opaque != "" {
		m.path = out.URL.Opaque
		if out.URL.RawQuery != "" {
			m.path += "?" + out.URL.RawQuery
		}
	}
	if !hasBody {
		p.startMirrors(policies, m)
		return
	}
	if rb == nil {
		return
	}
	if body, ok := rb.complete(); ok {
		m.body = bytes.Clone(body)
		p.startMirrors(policies, m)
	}
}
