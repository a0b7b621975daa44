// Command hbonebench measures one HBONE tunneled connection's throughput
// against Go's crypto/tls single-connection limit in the same run, on
// loopback: the issue-4 bar is HBONE >= 0.6x TLS.
//
//	go run ./bench/hbonebench [-d 2s] [-runs 3] [-json]
//
// Each scenario moves bytes one way over one connection for -d and reports
// the median of -runs with min and max. Both sides run in this process, so
// pin it (taskset) and keep GOMAXPROCS equal across comparisons.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"time"

	"github.com/meshlet/meshlet/hbone"
)

type source struct {
	cert  *tls.Certificate
	roots *x509.CertPool
}

func (s *source) Certificate() (*tls.Certificate, error) { return s.cert, nil }
func (s *source) Roots() (*x509.CertPool, error)         { return s.roots, nil }

type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA() *ca {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &ca{cert, key, pool}
}

func (c *ca) source(id string, serial int64) *source {
	u, _ := url.Parse(id)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	leaf, _ := x509.ParseCertificate(der)
	return &source{cert: &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots: c.pool}
}

const chunk = 256 << 10

// pump writes to w for d and returns bytes/s as the reader side counted
// them (reader returns its total when w's stream ends).
func pump(w io.WriteCloser, counted <-chan int64, d time.Duration) float64 {
	buf := make([]byte, chunk)
	start := time.Now()
	for time.Since(start) < d {
		if _, err := w.Write(buf); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			break
		}
	}
	if cw, ok := w.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		w.Close()
	}
	n := <-counted
	return float64(n) / time.Since(start).Seconds()
}

func drain(r io.Reader, out chan<- int64) {
	n, _ := io.Copy(io.Discard, r)
	out <- n
}

func runTLS(c *ca, d time.Duration) float64 {
	srv := c.source("spiffe://bench/ns/b/sa/server", 2)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*srv.cert}, MinVersion: tls.VersionTLS13})
	must(err)
	defer ln.Close()
	counted := make(chan int64, 1)
	go func() {
		conn, err := ln.Accept()
		must(err)
		drain(conn, counted)
		conn.Close()
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // bench
	must(err)
	defer conn.Close()
	return pump(conn, counted, d)
}

// runHBONE: upload = client writes through the tunnel to a sink behind
// the server; download = a source behind the server writes to the client.
func runHBONE(c *ca, d time.Duration, upload bool) float64 {
	counted := make(chan int64, 1)
	dest, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	defer dest.Close()
	go func() {
		conn, err := dest.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if upload {
			drain(conn, counted)
			return
		}
		counted <- 0 // unused
		_ = pumpTo(conn, d)
	}()
	srv := &hbone.Server{Source: c.source("spiffe://bench/ns/b/sa/server", 3)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	cl := &hbone.Client{Source: c.source("spiffe://bench/ns/b/sa/client", 4)}
	defer cl.Close()
	conn, err := cl.Dial(context.Background(), hbone.Key{Src: "spiffe://bench/ns/b/sa/client", Dst: "spiffe://bench/ns/b/sa/server", Addr: ln.Addr().String()},
		dest.Addr().String(), hbone.Meta{})
	must(err)
	defer conn.Close()
	if upload {
		return pump(conn, counted, d)
	}
	start := time.Now()
	n, _ := io.Copy(io.Discard, conn)
	<-counted
	return float64(n) / time.Since(start).Seconds()
}

func pumpTo(w net.Conn, d time.Duration) error {
	buf := make([]byte, chunk)
	start := time.Now()
	for time.Since(start) < d {
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return w.(*net.TCPConn).CloseWrite()
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "hbonebench:", err)
		os.Exit(1)
	}
}

type result struct {
	Name       string  `json:"name"`
	MedianMBps float64 `json:"median_mbps"`
	MinMBps    float64 `json:"min_mbps"`
	MaxMBps    float64 `json:"max_mbps"`
	RatioToTLS float64 `json:"ratio_to_tls"`
}

func main() {
	d := flag.Duration("d", 2*time.Second, "duration of each run")
	runs := flag.Int("runs", 3, "runs per scenario (median reported)")
	asJSON := flag.Bool("json", false, "print JSON")
	flag.Parse()
	c := newCA()
	scenarios := []struct {
		name string
		fn   func() float64
	}{
		{"tls13-single-conn", func() float64 { return runTLS(c, *d) }},
		{"hbone-upload", func() float64 { return runHBONE(c, *d, true) }},
		{"hbone-download", func() float64 { return runHBONE(c, *d, false) }},
	}
	// Interleave scenarios run by run so drift hits all of them alike.
	samples := make([][]float64, len(scenarios))
	for range *runs {
		for i, s := range scenarios {
			samples[i] = append(samples[i], s.fn()/1e6)
		}
	}
	var out []result
	var base float64
	for i, s := range scenarios {
		v := slices.Clone(samples[i])
		slices.Sort(v)
		r := result{Name: s.name, MedianMBps: v[len(v)/2], MinMBps: v[0], MaxMBps: v[len(v)-1]}
		if i == 0 {
			base = r.MedianMBps
		}
		r.RatioToTLS = r.MedianMBps / base
		out = append(out, r)
	}
	if *asJSON {
		_ = json.NewEncoder(os.Stdout).Encode(out)
		return
	}
	fmt.Printf("%-20s %10s %10s %10s %8s\n", "scenario", "MB/s", "min", "max", "x TLS")
	for _, r := range out {
		fmt.Printf("%-20s %10.0f %10.0f %10.0f %8.2f\n", r.Name, r.MedianMBps, r.MinMBps, r.MaxMBps, r.RatioToTLS)
	}
	bar := "PASS"
	for _, r := range out[1:] {
		if r.RatioToTLS < 0.6 {
			bar = "FAIL"
		}
	}
	fmt.Printf("bar (every HBONE direction >= 0.6x TLS): %s\n", bar)
}
