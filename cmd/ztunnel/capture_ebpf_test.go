package main

import (
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/capture"
)

// TestCaptureEBPFFlags: --capture ebpf defaults to no inbound capture,
// takes its pin dir from --capture-bpffs and needs --capture-cgroup;
// --capture-inbound ebpf (sk_lookup) is its inbound mode, which needs the
// proxy's listeners, while the netfilter modes are refused with it and
// ebpf without it.
func TestCaptureEBPFFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		inbound capture.InboundMode
		config  string // error config reports
		start   string // error startCapture reports, "" to skip starting
	}{
		{"defaults", []string{"--capture", "ebpf"}, capture.InboundNone, "", "--capture-cgroup"},
		{"inbound ebpf", []string{"--capture", "ebpf", "--capture-inbound", "ebpf", "--capture-cgroup", "/nonexistent"},
			capture.InboundRedirect, "", "proxy's listeners"},
		{"netfilter inbound refused", []string{"--capture", "ebpf", "--capture-inbound", "redirect"}, 0, "netfilter mode", ""},
		{"tproxy refused", []string{"--capture", "ebpf", "--capture-inbound", "tproxy"}, 0, "netfilter mode", ""},
		{"ebpf inbound needs the ebpf backend", []string{"--capture", "iptables", "--capture-inbound", "ebpf"}, 0, "needs --capture ebpf", ""},
		{"iptables keeps redirect", []string{"--capture", "iptables"}, capture.InboundRedirect, "", ""},
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
			if tc.config != "" {
				if err == nil || !strings.Contains(err.Error(), tc.config) {
					t.Fatalf("config: %v, want an error mentioning %q", err, tc.config)
				}
				return
			}
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
