package httpproxy

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkInprocRoundTrip measures the library's in-process path: the
// application's request through Proxy.RoundTrip to an HTTP/1.1 backend
// over loopback (compare BenchmarkProxyH1, the same through a socket).
func BenchmarkInprocRoundTrip(b *testing.B) {
	be := newRawBackend(b)
	hcm := simpleHCM("c")
	e := newProxyEnvOpts(b, hcm, Options{}, h1Cluster("c", be))
	req, err := http.NewRequest("GET", "http://example.com/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := e.proxy.RoundTrip(req, hcm, nil)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := resp.Body.Read(buf); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		resp.Body.Close()
	}
}

// BenchmarkDirectTransport is the baseline the library is measured
// against: net/http's Transport straight to the same backend.
func BenchmarkDirectTransport(b *testing.B) {
	be := newRawBackend(b)
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest("GET", "http://"+be+"/bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := tr.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := resp.Body.Read(buf); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		resp.Body.Close()
	}
}
