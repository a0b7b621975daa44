package httpproxy

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/meshlet/meshlet/internal/trickle"
	"github.com/meshlet/meshlet/state"
)

// A client too slow for request_timeout says nothing about the upstream
// host: its 408s do not count toward outlier detection, as in Envoy,
// where the connection manager resets such streams. The only host stays
// in rotation after more of them than consecutive_5xx.
func TestRequestTimeoutNotAnOutlier(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Write(body)
	}))
	c := staticCluster("be", state.UpstreamHTTP2, b.addr)
	c.OutlierDetection = &state.OutlierDetection{
		Consecutive5xx: 2, EnforcingConsecutive5xx: 100,
		Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second,
		MaxEjectionPercent: 100, AlwaysEjectOneHost: true,
	}
	e := newH2Env(t, h2EnvOpts{
		hcm:      &state.HTTPConnectionManager{Codec: state.CodecHTTP2, RequestTimeout: 100 * time.Millisecond},
		clusters: []*state.Cluster{c},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)
	for i := range 4 {
		body := trickle.New(100, 30*time.Millisecond, 'b')
		req, _ := http.NewRequest("POST", "http://"+e.addr+"/", body)
		resp, err := client.Do(req)
		body.Close()
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 408 {
			t.Fatalf("slow request %d: %d, want 408", i, resp.StatusCode)
		}
	}
	// With one host, panic routing would still serve it if ejected: look
	// at the detector itself.
	st := e.mgr.Cluster("be").Stats().Outlier
	if st.Active != 0 || len(st.Detected) != 0 {
		t.Fatalf("outlier detection after slow clients: %d ejected, detected %v; want none: the clients' timeouts are not the host's",
			st.Active, st.Detected)
	}
}
