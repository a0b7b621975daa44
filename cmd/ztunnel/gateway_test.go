package main

import (
	"flag"
	"io"
	"maps"
	"testing"

	"github.com/meshlet/meshlet/dataplane"
)

func TestGatewayFlags(t *testing.T) {
	tests := []struct {
		args      []string
		addr      string
		hosts     map[string]string
		terminate bool
		parseErr  bool
		startErr  bool // startGateway refuses before touching the proxy
	}{
		{args: nil},
		{args: []string{"--gateway", "on"}, addr: dataplane.DefaultGatewayAddr},
		{args: []string{"--gateway", "127.0.0.1:15443", "--gateway-host", "API.example.com=api", "--gateway-host", "*.example.org = wild"},
			addr: "127.0.0.1:15443", hosts: map[string]string{"api.example.com": "api", "*.example.org": "wild"}},
		{args: []string{"--gateway", "on", "--gateway-host", "a=x", "--gateway-host", "A=y"}, parseErr: true},
		{args: []string{"--gateway-host", "noequals"}, parseErr: true},
		{args: []string{"--gateway-host", "=c"}, parseErr: true},
		{args: []string{"--gateway-host", "a=b"}, hosts: map[string]string{"a": "b"}, startErr: true},
		{args: []string{"--gateway-terminate-hbone"}, terminate: true, startErr: true},
		// Terminating needs an identity; the proxy has none here.
		{args: []string{"--gateway", "on", "--gateway-terminate-hbone"}, addr: dataplane.DefaultGatewayAddr, terminate: true, startErr: true},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var o gatewayOptions
		o.register(fs)
		err := fs.Parse(tt.args)
		if (err != nil) != tt.parseErr {
			t.Errorf("%q: parse error %v, want error %v", tt.args, err, tt.parseErr)
			continue
		}
		if err != nil {
			continue
		}
		if o.Addr != tt.addr || o.TerminateHBONE != tt.terminate || !maps.Equal(o.Hosts, tt.hosts) {
			t.Errorf("%q: got %+v", tt.args, o)
		}
		if !tt.startErr {
			continue
		}
		if g, err := startGateway(&o, nil, nil, nil, nil); err == nil || g != nil {
			t.Errorf("%q: startGateway = %v, %v; want an error", tt.args, g, err)
		}
	}
}
