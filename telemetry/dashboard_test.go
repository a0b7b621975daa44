package telemetry

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestGrafanaDashboard checks that deploy/grafana/meshlet.json is valid
// JSON and that every metric its queries use is one this package exports.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile("../deploy/grafana/meshlet.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}

	// Export one of everything, then collect the family names.
	m := NewMetrics(MetricsConfig{})
	m.HTTPDone(httpRec("out", "outbound|80|v1|a.b.svc.cluster.local", "", 200, ""))
	tr := &TCPRecord{UpstreamCluster: "db", Connected: true}
	m.TCPOpened(tr)
	m.TCPDone(tr)
	m.TCPDone(&TCPRecord{UpstreamCluster: "db", ResponseFlags: "UF"})
	m.SetClusterSource(func() []ClusterStats { return []ClusterStats{{Name: "db"}} })
	m.SetXDSSource(func() XDSStats { return XDSStats{} })
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range fams {
		exported[f.GetName()] = true
	}

	metric := regexp.MustCompile(`\b(?:istio|envoy|meshlet)_[a-z0-9_]+`)
	used := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range metric.FindAllString(tg.Expr, -1) {
				used++
				base := strings.TrimSuffix(name, "_bucket")
				if !exported[name] && !exported[base] {
					t.Errorf("panel %q uses %s, which is not exported", p.Title, name)
				}
			}
		}
	}
	if used == 0 {
		t.Fatal("dashboard queries no metrics")
	}
}
