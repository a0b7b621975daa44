package httpproxy

import (
	"context"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// BodyGCPAuthnFailed is the local reply body when no ID token could be
// fetched for the upstream's audience. The request fails closed: sending
// it without its credential would only turn into a 401 from the upstream,
// and hide the real cause.
const BodyGCPAuthnFailed = "gcp_authn: failed to fetch ID token"

// FlagGCPAuthnFailed marks replies to requests whose token could not be
// fetched. Envoy has no flag of its own for this; UAEX ("unauthorized
// external service") is the nearest: an external auth dependency failed
// the request. A flag also makes gRPC requests get a gRPC-shaped reply.
const FlagGCPAuthnFailed = "UAEX"

// gcpAuthnState is the runtime of one gcp_authn config: its token cache.
// Keyed by the config, so a config push starts with an empty cache, as
// Envoy's filter config (and its cache) is rebuilt.
type gcpAuthnState struct {
	cache *tokenCache
}

var gcpAuthnStates sideTable[state.GCPAuthnFilter, gcpAuthnState]

func newGCPAuthnState(cfg *state.GCPAuthnFilter) *gcpAuthnState {
	return &gcpAuthnState{cache: newTokenCache(cfg, newTokenFetcher(cfg).fetch)}
}

// runGCPAuthn applies the gcp_authn filter f to a routed request: it puts
// the ID token for the cluster's audience in the request header. Requests
// to clusters without an audience pass untouched. It reports whether d
// became a local reply (the token could not be fetched).
func (p *Proxy) runGCPAuthn(ctx context.Context, f *state.HTTPFilter, r policy.Request, d *decision) bool {
	disabled := f.Disabled
	if o := d.filterOverride(f.Name); o != nil {
		disabled = o.Disabled
	}
	if disabled || d.local() || d.cluster == nil {
		return false
	}
	cfg := f.GCPAuthn
	audience := cfg.Audience
	if audience == "" {
		spec := d.cluster.Spec()
		if spec == nil {
			return false
		}
		var ok bool
		if audience, ok = spec.GCPAudiences.Lookup(f.Name); !ok {
			return false
		}
	}
	if cfg.PreserveExisting {
		if _, ok := r.Header(cfg.Header); ok {
			return false
		}
	}
	st := gcpAuthnStates.get(cfg, newGCPAuthnState)
	tok, fetched, err := st.cache.get(ctx, audience)
	if err != nil {
		if fetched {
			// Logged by the one request that ran the fetch; its waiters
			// share the error.
			p.log.Warn("gcp_authn: ID token fetch failed", "filter", f.Name,
				"cluster", d.clusterName, "audience", audience, "uri", cfg.URI, "err", err)
		}
		d.setLocal(503, FlagGCPAuthnFailed, BodyGCPAuthnFailed)
		d.location = ""
		d.filterMut = nil
		// A83: the RPC fails with UNAVAILABLE.
		d.grpcStatus, d.hasGRPCStatus = grpcUnavailable, true
		return true
	}
	d.filterMut = joinMutations(d.filterMut, tok.mut)
	return false
}

// joinMutations combines an earlier filter's header mutation with m (the
// decision holds only one); the allocation happens only when two filters
// both mutate one request.
func joinMutations(prev, m *state.HeaderMutation) *state.HeaderMutation {
	if prev == nil {
		return m
	}
	return &state.HeaderMutation{
		RequestAdd:     append(append([]state.HeaderValueOption(nil), prev.RequestAdd...), m.RequestAdd...),
		RequestRemove:  prev.RequestRemove,
		ResponseAdd:    prev.ResponseAdd,
		ResponseRemove: prev.ResponseRemove,
	}
}
