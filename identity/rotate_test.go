package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRotationUnderLoad drives 200 requests per second for 5 s through an
// mTLS HTTP server whose certificates (both sides) live 2 s, half the
// requests on fresh connections (a handshake each) and half on kept-alive
// ones, and requires zero failures across the rotations.
func TestRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("5 s load test")
	}
	ca, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	srvID, cliID := ID{"td", "ns", "server"}, ID{"td", "ns", "client"}
	srvSrc, err := ca.Source(context.Background(), srvID, 2*time.Second, RotationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srvSrc.Close()
	cliSrc, err := ca.Source(context.Background(), cliID, 2*time.Second, RotationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cliSrc.Close()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sc := ServerConfig(srvSrc, MatchID(cliID))
	sc.NextProtos = []string{"http/1.1"}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id, err := PeerID(*r.TLS)
			if err != nil || id != cliID {
				http.Error(w, "bad peer", http.StatusForbidden)
				return
			}
			io.WriteString(w, "ok")
		}),
		ErrorLog: nil,
	}
	srvDone := make(chan struct{})
	go func() {
		defer close(srvDone)
		srv.Serve(tls.NewListener(lis, sc))
	}()
	defer func() {
		srv.Close()
		<-srvDone
	}()

	newClient := func(keepAlive bool) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig:   ClientConfig(cliSrc, MatchID(srvID)),
			DisableKeepAlives: !keepAlive,
			ForceAttemptHTTP2: false,
		}}
	}
	clients := []*http.Client{newClient(true), newClient(false)}
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
		}
	}()

	url := "https://" + lis.Addr().String() + "/"
	var ok, failed atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	serials := map[string]bool{}
	// 1000 requests on a fixed 5 ms schedule (200 rps for 5 s) from 16
	// workers, as a load generator such as fortio -qps 200 -c 16 sends
	// them: a late request is sent late rather than piling up, so the
	// test measures rotation, not how an overloaded machine queues.
	const total, workers = 1000, 16
	slots := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(c *http.Client) {
			defer wg.Done()
			for range slots {
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = errors.New(resp.Status)
					}
				}
				if err != nil {
					failed.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					continue
				}
				ok.Add(1)
			}
		}(clients[w%2])
	}
	start := time.Now()
	for i := 0; i < total; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(i) * 5 * time.Millisecond)))
		if c, _ := srvSrc.Certificate(); c != nil {
			serials[c.Leaf.SerialNumber.String()] = true
		}
		slots <- i
	}
	close(slots)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed; first: %v", n, n+ok.Load(), firstErr)
	}
	if ok.Load() != total {
		t.Fatalf("%d requests completed, want %d", ok.Load(), total)
	}
	if r := srvSrc.Rotations(); r < 2 || len(serials) < 3 {
		t.Fatalf("server rotated %d times (%d certificates seen), want >= 2", r, len(serials))
	}
	if r := cliSrc.Rotations(); r < 2 {
		t.Fatalf("client rotated %d times, want >= 2", r)
	}
	t.Logf("%d requests ok; server rotations %d, client rotations %d", ok.Load(), srvSrc.Rotations(), cliSrc.Rotations())
}

func TestRotatingRetriesFailedRenewal(t *testing.T) {
	ca, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	id := ID{"td", "ns", "sa"}
	var calls atomic.Int64
	src, err := NewRotating(context.Background(), func(context.Context) (*tls.Certificate, *x509.CertPool, error) {
		n := calls.Add(1)
		if n == 2 || n == 3 {
			return nil, nil, errors.New("CA unavailable")
		}
		c, err := ca.Issue(id, 2*time.Second)
		return c, ca.Roots(), err
	}, RotationOptions{Fraction: 0.2, RetryMin: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, _ := src.Certificate()
	deadline := time.Now().Add(3 * time.Second)
	for src.Rotations() < 1 && time.Now().Before(deadline) {
		// While renewals fail the last good certificate stays in use.
		if c, err := src.Certificate(); err != nil || c == nil {
			t.Fatalf("Certificate() = %v, %v during failed renewals", c, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if src.Rotations() < 1 || calls.Load() < 4 {
		t.Fatalf("rotations %d after %d fetches, want a renewal after two failures", src.Rotations(), calls.Load())
	}
	if c, _ := src.Certificate(); c.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("certificate not replaced after the retry succeeded")
	}
}

func TestNewRotatingInitialFailure(t *testing.T) {
	_, err := NewRotating(context.Background(), func(context.Context) (*tls.Certificate, *x509.CertPool, error) {
		return nil, nil, errors.New("boom")
	}, RotationOptions{Name: "spiffe://td/ns/a/sa/b"})
	if err == nil || err.Error() != "certificate spiffe://td/ns/a/sa/b: boom" {
		t.Fatalf("err = %v", err)
	}
}
