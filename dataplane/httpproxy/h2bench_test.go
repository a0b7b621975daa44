package httpproxy

import (
	"io"
	"net/http"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// BenchmarkProxyH2 measures h2c client -> proxy -> h2c backend over
// loopback with a small response; allocs/op include client and backend.
func BenchmarkProxyH2(b *testing.B) {
	payload := []byte("hello world")
	be := newH2Backend(b, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }))
	e := newH2Env(b, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, be.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(b)
	url := "http://" + e.addr + "/bench"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkDirectH2 is the baseline for BenchmarkProxyH2: the same client
// and backend without the proxy.
func BenchmarkDirectH2(b *testing.B) {
	payload := []byte("hello world")
	be := newH2Backend(b, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(payload) }))
	client, _ := h2cClient(b)
	url := "http://" + be.addr + "/bench"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
