package node

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports pins what doc.go promises: node never reaches xds, the data
// plane, capture, in-pod, admin or the binary (so any of them may use it).
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	const mod = "github.com/meshlet/meshlet/"
	for _, dep := range strings.Fields(string(out)) {
		for _, bad := range []string{"xds", "dataplane", "capture", "inpod", "admin", "cmd", "config"} {
			if dep == mod+bad || strings.HasPrefix(dep, mod+bad+"/") {
				t.Errorf("node depends on %s", dep)
			}
		}
		if strings.HasPrefix(dep, "github.com/envoyproxy/") {
			t.Errorf("node depends on Envoy protos via %s", dep)
		}
	}
}
