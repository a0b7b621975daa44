package httpproxy

import (
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// BodyRBACDenied is the local reply body of a request the RBAC filter
// denies (Envoy's wording). Envoy sets no response flag for it; the
// response code details are rbac_access_denied_matched_policy[NAME].
const BodyRBACDenied = "RBAC: access denied"

// RBACCounters are the outcomes of one HTTP RBAC filter config, as Envoy's
// http.<prefix>.rbac.{allowed,denied,shadow_allowed,shadow_denied} stats,
// plus the requests a LOG policy marked for logging.
type RBACCounters struct {
	Allowed, Denied, ShadowAllowed, ShadowDenied, Logged atomic.Uint64
}

var rbacCounters sideTable[state.HTTPRBAC, RBACCounters]

func newRBACCounters(*state.HTTPRBAC) *RBACCounters { return &RBACCounters{} }

// RBACStats returns the counters of an HTTP RBAC filter config (the
// state.HTTPRBAC of a listener's filter or of a per-route override).
func RBACStats(cfg *state.HTTPRBAC) *RBACCounters { return rbacCounters.get(cfg, newRBACCounters) }

// runRBAC applies the HTTP RBAC filter f (or the route's RBACPerRoute
// override) to r. It reports whether d became a local reply (403).
// Filters run even when routing already produced a local reply: in Envoy
// the router, which answers no-route and redirects, comes after RBAC.
func (p *Proxy) runRBAC(hcm *state.HTTPConnectionManager, f *state.HTTPFilter, r policy.Request, d *decision) bool {
	cfg, disabled := f.RBAC, f.Disabled
	if o := d.filterOverride(f.Name); o != nil {
		cfg, disabled = o.RBAC, o.Disabled
	}
	if disabled || cfg == nil || (cfg.Rules == nil && cfg.ShadowRules == nil) {
		return false
	}
	in := rbacInput(hcm, d.info, r)
	st := rbacCounters.get(cfg, newRBACCounters)
	if cfg.ShadowRules != nil {
		if res := policy.EvalRBAC(cfg.ShadowRules, &in); res.Allowed {
			st.ShadowAllowed.Add(1)
		} else {
			st.ShadowDenied.Add(1)
		}
	}
	if cfg.Rules == nil {
		return false
	}
	res := policy.EvalRBAC(cfg.Rules, &in)
	if res.Log {
		st.Logged.Add(1)
	}
	if res.Allowed {
		st.Allowed.Add(1)
		return false
	}
	st.Denied.Add(1)
	d.setLocal(403, FlagNone, BodyRBACDenied)
	d.location = ""
	d.filterMut = nil
	return true
}

// rbacInput builds the policy view of a request on the connection info.
func rbacInput(hcm *state.HTTPConnectionManager, info *ConnInfo, r policy.Request) policy.RBACInput {
	in := policy.RBACInput{Request: r}
	if info == nil {
		return in
	}
	in.DirectRemote = info.Remote
	in.Remote = remoteAddress(hcm, info, r)
	in.Local = info.OriginalDst
	if !in.Local.IsValid() {
		in.Local = info.Local
	}
	if cs := info.TLS; cs != nil {
		in.TLS = true
		in.ServerName = cs.ServerName
		if len(cs.PeerCertificates) > 0 {
			in.Peer = cs.PeerCertificates[0]
		}
	}
	return in
}

// remoteAddress is Envoy's downstream remote address, which remote_ip
// matches: without use_remote_address the last x-forwarded-for entry
// (skipping xff_num_trusted_hops), with it the connection peer unless
// trusted hops say to look into x-forwarded-for.
func remoteAddress(hcm *state.HTTPConnectionManager, info *ConnInfo, r policy.Request) netip.AddrPort {
	skip := -1
	switch {
	case !hcm.UseRemoteAddress:
		skip = int(hcm.XffNumTrustedHops)
	case hcm.XffNumTrustedHops > 0:
		skip = int(hcm.XffNumTrustedHops) - 1
	}
	if skip < 0 {
		return info.Remote
	}
	xff, ok := r.Header("x-forwarded-for")
	if !ok {
		return info.Remote
	}
	parts := strings.Split(xff, ",")
	i := len(parts) - 1 - skip
	if i < 0 {
		return info.Remote
	}
	a, err := netip.ParseAddr(strings.TrimSpace(parts[i]))
	if err != nil {
		return info.Remote
	}
	return netip.AddrPortFrom(a.Unmap(), 0)
}

// pathSetter lets the connection manager replace the request path after
// normalization, so routing, filters and the upstream all see the same
// path.
type pathSetter interface{ setPath(string) }

func (r *h1Request) setPath(p string) { r.path = []byte(p) }
func (q *h2Request) setPath(p string) { q.r.RequestURI = p }

// decideHCM is decide preceded by the connection manager's path
// normalization (normalize_path, merge_slashes, escaped slashes) and
// strip_port_mode on the authority. A path
// that must be rejected (400) or redirected (307, UNESCAPE_AND_REDIRECT)
// becomes a local reply that the HTTP filters leave alone.
func (p *Proxy) decideHCM(hcm *state.HTTPConnectionManager, r policy.Request, info *ConnInfo, downstreamH2 bool, d *decision) {
	if p.shedOverload(info, d) {
		return
	}
	rc := p.routeConfig(hcm)
	stripInternalOnly(rc, r, info) // internalhdr.go
	if hcm.Path.Enabled() && r.Method() != "CONNECT" {
		orig := r.Path()
		if orig != "" {
			path, verdict := policy.NormalizePath(hcm.Path, orig)
			if verdict == policy.PathRedirect && isGRPCRequest(r) {
				// gRPC clients do not follow redirects: Envoy rejects.
				verdict = policy.PathReject
			}
			switch verdict {
			case policy.PathReject:
				*d = decision{rc: rc, info: info, early: true}
				d.setLocal(400, FlagNone, "")
				return
			case policy.PathRedirect:
				*d = decision{rc: rc, info: info, early: true}
				d.status = 307
				d.location = path
				return
			}
			if path != orig {
				if ps, ok := r.(pathSetter); ok {
					ps.setPath(path)
				}
			}
		}
	}
	stripHostPort(hcm.StripHostPort, r, info)
	p.decide(rc, r, info, downstreamH2, d)
	d.hcmStream = hcm.MaxStreamDuration
}

func isGRPCRequest(r policy.Request) bool {
	ct, _ := r.Header("content-type")
	return isGRPCContentType(ct)
}
