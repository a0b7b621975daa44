package config

import (
	"path/filepath"
	"testing"
)

// TestShippedBootstraps loads every bootstrap the repository ships (the
// README's examples and the benchmark's), so they cannot rot.
func TestShippedBootstraps(t *testing.T) {
	files, err := filepath.Glob("../examples/bootstrap/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../bench/meshlet-bootstrap.yaml")
	if len(files) < 3 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		b, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if b.AdminAddress == "" {
			t.Errorf("%s: no admin address", f)
		}
	}
	b, err := Load("../examples/bootstrap/ads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b.ADS == nil || b.ADS.Address != "127.0.0.1:15010" || b.ADS.Delta {
		t.Errorf("ads.yaml: ADS %+v, want SotW to the xds-grpc cluster's 127.0.0.1:15010", b.ADS)
	}
}
