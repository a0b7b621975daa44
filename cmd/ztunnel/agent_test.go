package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAgentCmd(t *testing.T) {
	dir := t.TempDir()
	common := []string{"agent", "--xds-listen", "127.0.0.1:0", "--bootstrap-out", filepath.Join(dir, "b.json")}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string // in stderr
	}{
		{"no control plane address", []string{"agent"}, exitUsage, "--xds-address"},
		{"arguments without --", append(common, "--xds-address", "127.0.0.1:1", "true"), exitUsage, "put the application after --"},
		{"refresh longer than the renewal margin", append(common, "--xds-address", "127.0.0.1:1", "--ca-dir", filepath.Join(dir, "ca"),
			"--cert-lifetime", "1m", "--cert-refresh", "40s"), exitUsage, "--cert-refresh 40s must be shorter than the 30s"},
		{"incomplete file source", append(common, "--xds-address", "127.0.0.1:1", "--cert-file", "c.pem"), exitUsage, "go together"},
		{"file source: the bootstrap names the files as absolute paths", append(common, "--xds-address", "127.0.0.1:1",
			"--cert-file", "c.pem", "--key-file", "k.pem", "--roots-file", "r.pem",
			"--", "sh", "-c", `grep -q '"certificate_file": "/.*/c.pem"' "$GRPC_XDS_BOOTSTRAP"`), exitOK, ""},
		{"application exit code", append(common, "--xds-address", "127.0.0.1:1", "--", "sh", "-c", "exit 3"), 3, ""},
		{"application killed by a signal", append(common, "--xds-address", "127.0.0.1:1", "--", "sh", "-c", "kill -TERM $$"), exitSignalBase + 15, ""},
		{"application not found", append(common, "--xds-address", "127.0.0.1:1", "--", filepath.Join(dir, "missing")), exitAppNotFound, "starting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runBinary(t, 20*time.Second, []string{"XDS_ADDRESS=", "OUTPUT_CERTS="}, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", code, tt.wantCode, stderr)
			}
			if tt.wantErr != "" && !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, stderr)
			}
		})
	}
}
