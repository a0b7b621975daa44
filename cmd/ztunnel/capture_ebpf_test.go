package main

import (
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/capture"
)

// TestCaptureEBPFFlags: --capture ebpf defaults to no inbound capture (it
// has none), takes its pin dir from --capture-bpffs, refuses an explicit
// inbound mode only at New, and needs --capture-cgroup.
func TestCaptureEBPFFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		inbound capture.InboundMode
		start   string // error startCapture reports, "" to skip starting
	}{
		{"defaults", []string{"--capture", "ebpf"}, capture.InboundNone, "--capture-cgroup"},
		{"explicit inbound", []string{"--capture", "ebpf", "--capture-inbound", "redirect", "--capture-cgroup", "/nonexistent"},
			capture.InboundRedirect, "does not capture inbound"},
		{"iptables keeps redirect", []string{"--capture", "iptables"}, capture.InboundRedirect, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var o captureOptions
			o.register(fs)
			if err := fs.Parse(append(tc.args, "--capture-bpffs", "/x/bpf")); err != nil {
				t.Fatal(err)
			}
			c, err := o.config()
			if err != nil {
				t.Fatal(err)
			}
			if c.Inbound != tc.inbound || c.BPFPinDir != "/x/bpf" {
				t.Errorf("inbound %v pin dir %q, want %v /x/bpf", c.Inbound, c.BPFPinDir, tc.inbound)
			}
			if tc.start == "" {
				return
			}
			stop, err := startCapture(&o, slog.New(slog.DiscardHandler))
			stop()
			if err == nil || !strings.Contains(err.Error(), tc.start) {
				t.Errorf("startCapture: %v, want an error mentioning %q", err, tc.start)
			}
		})
	}
}
