package httpproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestH2ServerFlowControl: request and response bodies larger than every
// flow-control window (ours 1 MiB, the client's 64 KiB default) cross the
// proxy intact, on many concurrent streams of one downstream connection.
func TestH2ServerFlowControl(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Echo the body back, streaming.
		_, _ = io.Copy(w, r.Body)
	}))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	_, tr := h2cClient(t)
	cc, err := tr.NewClientConn(context.Background(), "http", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tests := []struct {
		name    string
		size    int
		streams int
	}{
		{"empty", 0, 4},
		{"small", 5, 32},
		{"over stream window", 3 << 20, 2},
		{"over connection window together", 700 << 10, 8},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, tc.streams)
			for i := range tc.streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					body := bytes.Repeat([]byte{byte('a' + i%26)}, tc.size)
					req, _ := http.NewRequest("POST", fmt.Sprintf("http://%s/echo/%d", e.addr, i), bytes.NewReader(body))
					resp, err := cc.RoundTrip(req)
					if err != nil {
						errs <- err
						return
					}
					got, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil || resp.StatusCode != 200 || sha256.Sum256(got) != sha256.Sum256(body) {
						errs <- fmt.Errorf("stream %d: status %d, %d bytes back of %d, err %v", i, resp.StatusCode, len(got), tc.size, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
