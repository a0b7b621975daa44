package xds

import (
	"strings"

	"github.com/meshlet/meshlet/state"
)

// workloadTypes are the Istio Workload API types, subscribed as wildcards
// on the delta stream after the Envoy types.
var workloadTypes = []string{state.TypeAddress, state.TypeAuthorization}

// workloadMode says which type families cfg subscribes to: the Workload
// API when asked or when the node is a ztunnel, the Envoy types unless
// only the Workload API is wanted.
func workloadMode(cfg Config) (workloads, envoy bool) {
	only := cfg.WorkloadsOnly || strings.HasPrefix(cfg.Node.ID, "ztunnel~")
	return cfg.Workloads || only, !only
}

// ambient builds Snapshot.Ambient from the accepted Address and
// Authorization resources. The index is rebuilt whole on each accepted
// response; a node holds thousands of workloads at most and responses
// are batched, so this stays well under a millisecond per thousand.
func (c *Client) ambient() *state.Ambient {
	w := map[string]*state.Workload{}
	s := map[string]*state.Service{}
	p := map[string]*state.Authorization{}
	if ts := c.types[state.TypeAddress]; ts != nil {
		for _, v := range ts.values {
			switch x := v.(type) {
			case *state.Workload:
				w[x.UID] = x
			case *state.Service:
				s[x.Key()] = x
			}
		}
	}
	if ts := c.types[state.TypeAuthorization]; ts != nil {
		for _, v := range ts.values {
			a := v.(*state.Authorization)
			p[a.Key()] = a
		}
	}
	return state.NewAmbient(w, s, p)
}

// workloadsReady reports whether both Workload API types were accepted
// once: serving before policies arrive would admit what a DENY forbids.
func (c *Client) workloadsReady() bool {
	for _, t := range workloadTypes {
		if !c.types[t].applied {
			return false
		}
	}
	return true
}
