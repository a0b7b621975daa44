package telemetry

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports pins telemetry below the data plane: the data plane imports
// it, so it must not import the data plane, xDS, config, admin or cmd.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/meshlet/meshlet/"
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{mod + "dataplane", mod + "xds", mod + "config", mod + "admin", mod + "cmd", "github.com/envoyproxy/"} {
			if strings.HasPrefix(dep, bad) {
				t.Errorf("telemetry depends on %s", dep)
			}
		}
	}
}
