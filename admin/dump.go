package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/meshlet/meshlet/state"
)

// typeDump is one resource type in /config_dump.
type typeDump struct {
	Version   string         `json:"version"`
	Names     []string       `json:"names"`
	Resources map[string]any `json:"resources"`
}

func dumpOf[T any](version string, m map[string]*T) typeDump {
	d := typeDump{Version: version, Names: make([]string, 0, len(m)), Resources: make(map[string]any, len(m))}
	for name, v := range m {
		d.Names = append(d.Names, name)
		d.Resources[name] = v
	}
	slices.Sort(d.Names)
	return d
}

func (s *Server) configDump(w http.ResponseWriter, _ *http.Request) {
	if s.deps.ConfigDump != nil {
		b, err := s.deps.ConfigDump()
		if err != nil {
			http.Error(w, "config_dump: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.withWorkloads(b))
		return
	}
	snap := state.Empty()
	if s.deps.Store != nil {
		snap = s.deps.Store.Load()
	}
	out := map[string]any{
		"listeners": dumpOf(snap.Versions[state.TypeListener], snap.Listeners),
		"routes":    dumpOf(snap.Versions[state.TypeRoute], snap.Routes),
		"clusters":  dumpOf(snap.Versions[state.TypeCluster], snap.Clusters),
		"endpoints": dumpOf(snap.Versions[state.TypeEndpoint], snap.Endpoints),
	}
	if s.deps.XDSStatus != nil {
		out["xds"] = s.deps.XDSStatus()
	}
	if snap.Ambient != nil {
		for k, v := range workloadsDump(snap.Ambient) {
			out[k] = v
		}
	}
	b, err := json.Marshal(out)
	if err != nil {
		http.Error(w, "config_dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	// Round-trip through a generic value to blank private keys wherever the
	// state types carry them, now and after fields are added.
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		http.Error(w, "config_dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	redact(generic)
	writeJSON(w, generic)
}

// redactedKeys are state field names holding private key material.
var redactedKeys = map[string]bool{"KeyPEM": true}

func redact(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if redactedKeys[k] && e != nil && e != "" {
				v[k] = "[redacted]"
				continue
			}
			redact(e)
		}
	case []any:
		for _, e := range v {
			redact(e)
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// listeners prints "name::address" per line, like Envoy's /listeners;
// an unbound listener shows its error instead of an address.
func (s *Server) listeners(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.deps.Listeners == nil {
		return
	}
	ls := s.deps.Listeners()
	slices.SortFunc(ls, func(a, b ListenerStatus) int { return strings.Compare(a.Name, b.Name) })
	for _, l := range ls {
		switch {
		case l.Addr != "":
			fmt.Fprintf(w, "%s::%s\n", l.Name, l.Addr)
		case l.Error != "":
			fmt.Fprintf(w, "%s::error::%s\n", l.Name, l.Error)
		default:
			fmt.Fprintf(w, "%s::unbound\n", l.Name)
		}
	}
}

// clusters prints Envoy-style "cluster::host::stat::value" lines.
func (s *Server) clusters(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.deps.Store == nil || s.deps.Clusters == nil {
		return
	}
	snap := s.deps.Store.Load()
	names := make([]string, 0, len(snap.Clusters))
	for n := range snap.Clusters {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		c := s.deps.Clusters.Cluster(n)
		if c == nil {
			continue
		}
		spec := c.Spec()
		fmt.Fprintf(w, "%s::type::%s\n%s::lb_policy::%s\n", n, spec.Type, n, spec.LBPolicy)
		for _, h := range c.LB.Hosts() {
			p := n + "::" + h.Address + "::"
			fmt.Fprintf(w, "%shealth::%s\n%sweight::%d\n%srq_active::%d\n%slocality::%s/%s/%s\n%spriority::%d\n",
				p, healthName(h.Health), p, h.Weight, p, h.Active(),
				p, h.Locality.Region, h.Locality.Zone, h.Locality.SubZone, p, h.Priority)
		}
	}
}

func healthName(h state.HealthStatus) string {
	switch h {
	case state.HealthHealthy:
		return "HEALTHY"
	case state.HealthUnhealthy:
		return "UNHEALTHY"
	case state.HealthDraining:
		return "DRAINING"
	case state.HealthTimeout:
		return "TIMEOUT"
	case state.HealthDegraded:
		return "DEGRADED"
	}
	return "UNKNOWN"
}

func (s *Server) serverInfo(w http.ResponseWriter, _ *http.Request) {
	st := "LIVE"
	if s.readyErr() != nil {
		st = "INITIALIZING"
	}
	info := s.deps.Info
	if info.GoVersion == "" {
		info.GoVersion = runtime.Version()
	}
	writeJSON(w, struct {
		ServerInfo
		State     string `json:"state"`
		StartTime string `json:"start_time"`
		Uptime    string `json:"uptime"`
	}{info, st, s.started.UTC().Format(time.RFC3339), time.Since(s.started).Round(time.Second).String()})
}
