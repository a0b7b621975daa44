package main

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshlet/meshlet/xds"
)

func TestProxyNamespace(t *testing.T) {
	tests := []struct {
		name           string
		node           xds.Node
		env            map[string]string
		wantNS, wantDm string
	}{
		{"from id", xds.Node{ID: "sidecar~10.0.0.1~a.shop~shop.svc.corp.local"}, nil, "shop", "corp.local"},
		{"env wins", xds.Node{ID: "sidecar~10.0.0.1~a.shop~shop.svc.cluster.local"}, map[string]string{"POD_NAMESPACE": "other"}, "other", "cluster.local"},
		{"metadata", xds.Node{ID: "custom", Metadata: map[string]string{"NAMESPACE": "md"}}, nil, "md", "cluster.local"},
		{"nothing", xds.Node{ID: "custom"}, nil, "", "cluster.local"},
	}
	for _, tc := range tests {
		ns, dm := proxyNamespace(tc.node, func(k string) string { return tc.env[k] })
		if ns != tc.wantNS || dm != tc.wantDm {
			t.Errorf("%s: got %q %q, want %q %q", tc.name, ns, dm, tc.wantNS, tc.wantDm)
		}
	}
}

// TestStartDNSOffByDefault: no --dns-proxy and no --capture-dns starts
// nothing; --capture-dns alone means the default address; a missing
// resolv.conf is an error that names the flag.
func TestStartDNSOffByDefault(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var o dnsOptions
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	o.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	rt, err := startDNS(&o, false, nil, &proxyConfig{}, os.Getenv, log)
	if rt != nil || err != nil {
		t.Fatalf("off by default: %v %v", rt, err)
	}
	o.resolvConf = filepath.Join(t.TempDir(), "missing")
	if _, err := startDNS(&o, true, nil, &proxyConfig{}, os.Getenv, log); err == nil {
		t.Fatal("--capture-dns with a missing resolv.conf: no error")
	}
}
