package admin

import (
	"encoding/json"
	"slices"

	"github.com/meshlet/meshlet/state"
)

// workloadsDump is the Workload API part of /config_dump in node mode,
// under the top-level keys ztunnel uses: workloads, services, policies,
// each sorted by its xDS name.
func workloadsDump(a *state.Ambient) map[string]any {
	return map[string]any{
		"workloads": sortedValues(a.Workloads),
		"services":  sortedValues(a.Services),
		"policies":  sortedValues(a.Policies),
	}
}

func sortedValues[T any](m map[string]*T) []*T {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]*T, 0, len(keys))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// withWorkloads adds the Workload API keys to an Envoy-shaped dump (a
// JSON object) when the store holds Workload API resources; otherwise,
// or if b is not an object, b is returned unchanged.
func (s *Server) withWorkloads(b []byte) []byte {
	if s.deps.Store == nil {
		return b
	}
	a := s.deps.Store.Load().Ambient
	if a == nil {
		return b
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		return b
	}
	for k, v := range workloadsDump(a) {
		raw, err := json.Marshal(v)
		if err != nil {
			return b
		}
		obj[k] = raw
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return b
	}
	return out
}
