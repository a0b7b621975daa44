package dns

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports pins what doc.go promises: dns reads state and nothing of
// the data plane, the xDS client or the capture.
func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/meshlet/meshlet/"
	for _, d := range strings.Fields(string(out)) {
		rest, ours := strings.CutPrefix(d, mod)
		if !ours {
			continue
		}
		switch {
		case rest == "dns", rest == "dns/ndspb", rest == "state":
		default:
			t.Errorf("dns depends on %s", d)
		}
	}
}
