package agent

import (
	"os/exec"
	"strings"
	"testing"
)

// The agent stays a small binary's worth of code: no data plane, load
// balancing, policy or state packages (doc.go).
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	const mod = "github.com/meshlet/meshlet/"
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"dataplane", "lb", "policy", "config", "admin", "hbone", "internal/wiring"} {
			if dep == mod+bad || strings.HasPrefix(dep, mod+bad+"/") {
				t.Errorf("agent imports %s", dep)
			}
		}
	}
}
