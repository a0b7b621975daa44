package integration

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// TestPackageLayering pins the dependency graph: lower packages never import
// higher ones, and Envoy protos stop at xds/config.
func TestPackageLayering(t *testing.T) {
	const mod = "github.com/meshlet/meshlet/"
	forbidden := map[string][]string{
		"state":               {mod, "github.com/envoyproxy/"},
		"lb":                  {mod + "dataplane", mod + "policy", mod + "xds", mod + "config", "github.com/envoyproxy/"},
		"policy":              {mod + "dataplane", mod + "lb", mod + "xds", mod + "config", "github.com/envoyproxy/"},
		"dataplane":           {mod + "xds", mod + "config", mod + "admin", mod + "cmd", "github.com/envoyproxy/"},
		"dataplane/upstream":  {mod + "dataplane/httpproxy", mod + "policy", mod + "xds", "github.com/envoyproxy/"},
		"dataplane/httpproxy": {mod + "xds", mod + "config", mod + "admin", "github.com/envoyproxy/"},
		"xds/resource":        {mod + "dataplane", mod + "lb", mod + "policy", mod + "xds\""},
		"identity":            {mod + "dataplane", mod + "xds", mod + "config", mod + "policy", mod + "lb", mod + "hbone", "github.com/envoyproxy/"},
		"hbone":               {mod + "dataplane", mod + "xds", mod + "config", mod + "cmd", "github.com/envoyproxy/"},
		"whitebox":            {mod + "dataplane", mod + "xds", mod + "config", mod + "admin", mod + "cmd", "github.com/envoyproxy/"},
	}
	out, err := exec.Command("go", "list", "-json", "../...").Output()
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		rules, ok := forbidden[strings.TrimPrefix(p.ImportPath, mod)]
		if !ok {
			continue
		}
		checked++
		for _, d := range p.Deps {
			for _, f := range rules {
				exact := strings.HasSuffix(f, "\"")
				f = strings.TrimSuffix(f, "\"")
				if (exact && d == f) || (!exact && strings.HasPrefix(d, f) && d != p.ImportPath && !strings.HasPrefix(d, p.ImportPath+"/")) {
					t.Errorf("%s imports %s", p.ImportPath, d)
				}
			}
		}
	}
	if checked != len(forbidden) {
		t.Errorf("checked %d packages, want %d", checked, len(forbidden))
	}
}
