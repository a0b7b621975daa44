package main

import (
	"flag"
	"io"
	"net/netip"
	"slices"
	"testing"

	"github.com/meshlet/meshlet/capture"
)

func TestCaptureFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr bool
		check   func(t *testing.T, c capture.Config)
	}{
		{name: "defaults", check: func(t *testing.T, c capture.Config) {
			if c.ProxyUID != 1337 || c.ProxyGID != 1337 || !c.DisableDNS || c.Inbound != capture.InboundRedirect {
				t.Errorf("config = %+v", c)
			}
			if !slices.Equal(c.InboundExcludePorts, []uint16{15008, 15020, 15021, 15090}) {
				t.Errorf("inbound exclude = %v", c.InboundExcludePorts)
			}
		}},
		{name: "uid 0 kept, tproxy, ports, cidrs", args: []string{"--capture-uid", "0", "--capture-inbound", "tproxy",
			"--capture-exclude-ports", "22, 443", "--capture-exclude-cidrs", "10.0.0.0/8,fd00::/8", "--capture-dns"},
			check: func(t *testing.T, c capture.Config) {
				if c.ProxyUID != 0 || !c.ProxyUIDSet || c.Inbound != capture.InboundTProxy || c.DisableDNS {
					t.Errorf("config = %+v", c)
				}
				if !slices.Equal(c.OutboundExcludePorts, []uint16{22, 443}) {
					t.Errorf("ports = %v", c.OutboundExcludePorts)
				}
				if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}; !slices.Equal(c.OutboundExcludeCIDRs, want) {
					t.Errorf("cidrs = %v", c.OutboundExcludeCIDRs)
				}
			}},
		{name: "bad port", args: []string{"--capture-exclude-ports", "http"}, wantErr: true},
		{name: "port 0", args: []string{"--capture-exclude-ports", "0"}, wantErr: true},
		{name: "bad cidr", args: []string{"--capture-exclude-cidrs", "10.0.0.0"}, wantErr: true},
		{name: "bad mode", args: []string{"--capture-inbound", "ebpf"}, wantErr: true},
		{name: "negative uid", args: []string{"--capture-uid", "-1"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("run", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var o captureOptions
			o.register(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			c, err := o.config()
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err == nil && tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// An unknown backend fails the start instead of running uncaptured.
func TestStartCaptureUnknownBackend(t *testing.T) {
	o := captureOptions{backend: "pf", inbound: "redirect"}
	if _, err := startCapture(&o, nil); err == nil {
		t.Fatal("unknown backend accepted")
	}
	o.backend = "none"
	stop, err := startCapture(&o, nil)
	if err != nil || stop == nil {
		t.Fatalf("none: %v", err)
	}
	stop()
}
