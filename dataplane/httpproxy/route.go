package httpproxy

import (
	"errors"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// Envoy response flags (the short form used in access logs and in
// HeaderResponseFlags).
const (
	FlagNone                  = ""
	FlagNoRoute               = "NR"
	FlagNoCluster             = "NC"
	FlagNoHealthyUpstream     = "UH"
	FlagUpstreamConnFailure   = "UF"
	FlagUpstreamRemoteReset   = "UR"
	FlagUpstreamConnTerminate = "UC"
	FlagUpstreamTimeout       = "UT"
	FlagDownstreamTerminate   = "DC"
	FlagDownstreamProtocolErr = "DPE"
	FlagUpstreamProtocolErr   = "UPE"
	FlagStreamIdleTimeout     = "SI"
)

// Local reply bodies, worded like Envoy's so clients and tests that match on
// them keep working.
const (
	BodyNoHealthyUpstream = "no healthy upstream"
	BodyConnFailure       = "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
	BodyRemoteReset       = "upstream connect error or disconnect/reset before headers. reset reason: remote reset"
	BodyConnTermination   = "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
	BodyUpstreamTimeout   = "upstream request timeout"
	BodyStreamTimeout     = "stream timeout"
	BodyRequestTimeout    = "request timeout"
	BodyHeaderTimeout     = "request header timeout"
)

// decision is the outcome of routing one request. Both downstream codecs fill
// one with decide and then either write a local reply (status != 0) or send
// the request to ep. A decision is reusable: decide resets it.
type decision struct {
	// faultHeld is the fault filter state whose active count this request
	// holds until it ends (see releaseFaults).
	faultHeld *faultState

	rc    *state.RouteConfig
	vh    *state.VirtualHost
	route *state.Route
	// action is route.Action (nil for redirect and direct response routes).
	action *state.RouteAction

	clusterName string
	cluster     *upstream.Cluster
	wc          *state.WeightedCluster
	host        *lb.Host
	ep          *upstream.Endpoint
	// autoName is the auto_sni name of the request ("" when the cluster
	// has none); retries pick their endpoint with it too.
	autoName string
	// proto is the resolved upstream protocol: UpstreamHTTP1 or
	// UpstreamHTTP2 (UseDownstream is resolved by decide).
	proto state.UpstreamProtocol

	// pick is the lb input; kept here so it does not escape per request.
	pick lb.PickInfo

	// timeout is the route timeout (0 = none).
	timeout time.Duration

	// Local reply: status != 0 means the proxy answers itself with status,
	// body (text/plain when non-empty) and, for redirects, location.
	status   int
	body     string
	location string
	flags    string

	// Set by the HTTP filters (runFilters): delayed after a fault delay
	// (flag DI); grpcStatus overrides the gRPC status a gRPC local reply
	// carries when hasGRPCStatus; filterMut is a filter's header mutation
	// (rate limit reply headers), applied after the route's.
	delayed       bool
	hasGRPCStatus bool
	grpcStatus    int
	filterMut     *state.HeaderMutation

	// info is the downstream connection (for RBAC). early marks a local
	// reply the connection manager made before the HTTP filters (path
	// normalization): the filters do not run on it.
	info  *ConnInfo
	early bool
	// hcmStream is the connection manager's max_stream_duration, used
	// when the route has none.
	hcmStream time.Duration
}

// local reports whether the decision is a local reply.
func (d *decision) local() bool { return d.status != 0 }

// setLocal turns d into a local reply.
func (d *decision) setLocal(status int, flags, body string) {
	if d.delayed {
		flags = joinFlags(flags)
	}
	d.status, d.flags, d.body = status, flags, body
}

// grpcCode is the gRPC status of a local reply to a gRPC request: a
// filter's explicit status, else the one mapped from the HTTP status.
func (d *decision) grpcCode() int {
	if d.hasGRPCStatus {
		return d.grpcStatus
	}
	return httpToGRPCStatus(d.status)
}

// routeConfig returns the route configuration of hcm: inline, or looked up
// by RDS name in the current snapshot (nil while RDS has not delivered it,
// which routes as "no route").
func (p *Proxy) routeConfig(hcm *state.HTTPConnectionManager) *state.RouteConfig {
	if hcm.RouteConfig != nil {
		return hcm.RouteConfig
	}
	if hcm.RDSName == "" {
		return nil
	}
	return p.store.Load().Routes[hcm.RDSName]
}

// decide routes r: virtual host and route selection, redirect and direct
// response, cluster choice, and the lb pick. downstreamH2 resolves the
// cluster's UseDownstream protocol. It does not Acquire the host: the
// caller does that around the upstream request.
func (p *Proxy) decide(rc *state.RouteConfig, r policy.Request, info *ConnInfo, downstreamH2 bool, d *decision) {
	*d = decision{rc: rc, info: info}
	if rc == nil {
		d.setLocal(404, FlagNoRoute, "")
		return
	}
	vh, route := policy.SelectRoute(rc, r)
	d.vh, d.route = vh, route
	if route == nil {
		d.setLocal(404, FlagNoRoute, "")
		return
	}
	switch {
	case route.Redirect != nil:
		code := route.Redirect.ResponseCode
		if code == 0 {
			code = 301
		}
		d.status = code
		d.location = policy.RedirectLocation(route, route.Redirect, schemeOf(info), r)
		return
	case route.DirectResponse != nil:
		d.status = route.DirectResponse.Status
		d.body = string(route.DirectResponse.Body)
		return
	case route.Action == nil:
		d.setLocal(404, FlagNoRoute, "")
		return
	}
	a := route.Action
	d.action = a
	d.timeout = a.Timeout
	name, wc := policy.PickCluster(a, r, rand.Uint64())
	d.clusterName, d.wc = name, wc
	c := p.clusters.Cluster(name)
	if c == nil {
		code := a.ClusterNotFoundCode
		if code == 0 {
			code = 503
		}
		d.setLocal(code, FlagNoCluster, "")
		return
	}
	d.cluster = c
	if len(a.HashPolicies) > 0 {
		d.pick.Hash, d.pick.HasHash = policy.HashRequest(a.HashPolicies, r, info.Remote.Addr())
	}
	var h *lb.Host
	var err error
	if spec := c.Spec(); spec.Type == state.ClusterOriginalDst {
		h = c.OriginalDstHost(originalDst(spec, r, info))
	} else {
		h, err = c.Pick(&d.pick)
	}
	if err != nil || h == nil {
		if err != nil && !errors.Is(err, lb.ErrNoHealthyUpstream) {
			p.log.Debug("lb pick failed", "cluster", name, "err", err)
		}
		d.setLocal(503, FlagNoHealthyUpstream, BodyNoHealthyUpstream)
		return
	}
	d.host = h
	spec := c.Spec()
	if spec.AutoSNI.Enabled() {
		// As Envoy, the name is taken before the host is known: a
		// literal or header host rewrite applies, auto_host_rewrite not.
		host := r.Authority()
		if v, ok := policy.RewriteHost(a, r, ""); ok {
			host = v
		}
		d.autoName = upstream.AutoSNIName(spec.AutoSNI, host, r.Header)
	}
	d.ep = c.EndpointFor(h, d.autoName)
	d.proto = spec.Protocol
	if d.proto == state.UpstreamUseDownstream {
		d.proto = state.UpstreamHTTP1
		if downstreamH2 {
			d.proto = state.UpstreamHTTP2
		}
	}
}

// originalDst is where a request to an ORIGINAL_DST cluster goes: the
// address in the cluster's header when it has one (only the first value, as
// Envoy treats the header as untrusted), else the downstream connection's
// original destination. The zero AddrPort (no header, not ip:port, no
// connection) makes OriginalDstHost return nil: 503 UH.
func originalDst(spec *state.Cluster, r policy.Request, info *ConnInfo) netip.AddrPort {
	if spec.OriginalDstHeader != "" {
		v, ok := r.Header(spec.OriginalDstHeader)
		if !ok {
			return netip.AddrPort{}
		}
		if i := strings.IndexByte(v, ','); i >= 0 {
			v = v[:i]
		}
		ap, err := netip.ParseAddrPort(strings.TrimSpace(v))
		if err != nil {
			return netip.AddrPort{}
		}
		return ap
	}
	if info == nil {
		return netip.AddrPort{}
	}
	return info.OriginalDst
}

// appendMutations appends the header mutations that apply to d, most
// specific first (policy.AppendMutations order; allocation-free). Envoy
// applies them in this order, so the least specific level's overwrite wins
// unless most_specific_header_mutations_wins (not supported) is set.
func (d *decision) appendMutations(dst []*state.HeaderMutation) []*state.HeaderMutation {
	if d.rc != nil {
		dst = policy.AppendMutations(dst, d.rc, d.vh, d.route, d.wc)
	}
	if d.filterMut != nil {
		dst = append(dst, d.filterMut)
	}
	return dst
}

func schemeOf(info *ConnInfo) string {
	if info != nil && info.TLS != nil {
		return "https"
	}
	return "http"
}

// headerEditor is the small view of a header list the mutation helper
// needs; the HTTP/1.1 codec's header list and http.Header both provide it.
// Names are lower-case.
type headerEditor interface {
	has(name string) bool
	del(name string)
	add(name, value string)
}

// applyMutations applies the request (response == false) or response side
// of ms to h in order. Within one level removals run before additions, as in
// Envoy's HeaderParser.
func applyMutations(ms []*state.HeaderMutation, response bool, fc *policy.FormatContext, h headerEditor) {
	for _, m := range ms {
		if m == nil {
			continue
		}
		remove, add := m.RequestRemove, m.RequestAdd
		if response {
			remove, add = m.ResponseRemove, m.ResponseAdd
		}
		for _, name := range remove {
			h.del(name)
		}
		for i := range add {
			o := &add[i]
			v := o.Value
			if fc != nil {
				v = policy.FormatValue(v, fc)
			}
			if v == "" && !o.KeepEmptyValue {
				continue
			}
			switch o.Action {
			case state.AppendIfExistsOrAdd:
				h.add(o.Key, v)
			case state.AddIfAbsent:
				if !h.has(o.Key) {
					h.add(o.Key, v)
				}
			case state.OverwriteIfExistsOrAdd:
				h.del(o.Key)
				h.add(o.Key, v)
			case state.OverwriteIfExists:
				if h.has(o.Key) {
					h.del(o.Key)
					h.add(o.Key, v)
				}
			}
		}
	}
}

// formatContext fills fc for the request formatters of a decision.
func (p *Proxy) formatContext(fc *policy.FormatContext, info *ConnInfo, d *decision, proto string) {
	fc.DownstreamRemote = netip.AddrPort{}
	fc.DownstreamLocal = netip.AddrPort{}
	if info != nil {
		fc.DownstreamRemote = info.Remote
		fc.DownstreamLocal = info.Local
	}
	fc.UpstreamRemote = ""
	if d.host != nil {
		fc.UpstreamRemote = d.host.Address
	}
	fc.Protocol = proto
	fc.Hostname = p.opts.Hostname
}

// httpHeader adapts an http.Header (canonical keys) to headerEditor for the
// codecs that carry requests as *http.Request.
type httpHeader http.Header

func (h httpHeader) has(name string) bool {
	_, ok := h[textproto.CanonicalMIMEHeaderKey(name)]
	return ok
}

func (h httpHeader) del(name string) { delete(h, textproto.CanonicalMIMEHeaderKey(name)) }

func (h httpHeader) add(name, value string) {
	k := textproto.CanonicalMIMEHeaderKey(name)
	h[k] = append(h[k], value)
}
