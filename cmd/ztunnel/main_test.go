package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// binary is the ztunnel binary built once for the tests that run it.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ztunnel-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ztunnel")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// runBinary runs the binary with args and returns its exit code and output.
func runBinary(t *testing.T, timeout time.Duration, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("ztunnel %v did not finish within %v\nstdout:\n%s\nstderr:\n%s", args, timeout, o.String(), e.String())
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("ztunnel %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runBinary(t, 10*time.Second, nil, "version")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"ztunnel (meshlet) ", "go: go1.", "commit: "} {
		if !strings.Contains(out, want) {
			t.Errorf("version output lacks %q:\n%s", want, out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{nil, "usage: ztunnel"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run"}, "--bootstrap FILE is required"},
		{[]string{"run", "--bootstrap", "x.yaml", "extra"}, "unexpected arguments"},
		{[]string{"run", "--drain-time", "soon"}, "invalid value"},
		{[]string{"run", "--bootstrap", "x.yaml", "--log-level", "loud"}, "--log-level"},
		{[]string{"demo", "--requests", "5"}, "at least 100"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, _, stderr := runBinary(t, 10*time.Second, nil, tt.args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			if !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, stderr)
			}
		})
	}
}

// TestDemo runs the whole demo: backends, control plane, proxy, traffic,
// live weight shift, fault, retries, timeout, mirror, mTLS with RBAC. It must finish in 30
// seconds with no failed request.
func TestDemo(t *testing.T) {
	start := time.Now()
	code, out, stderr := runBinary(t, 30*time.Second, nil, "demo")
	if code != 0 {
		t.Fatalf("demo exit %d after %v\nstdout:\n%s\nstderr:\n%s", code, time.Since(start), out, stderr)
	}
	for _, want := range []string{"[1/10]", "[5/10]", "new split observed", "[9/10]", "[10/10]", "failed requests: 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	checkDemoPolicyOutput(t, out)
	checkDemoMTLSOutput(t, out)
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
}
