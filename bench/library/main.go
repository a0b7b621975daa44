package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/meshlet/meshlet"
)

func main() {
	mode := flag.String("mode", "library", "library (meshlet RoundTripper in process), proxy (net/http via -url, a local meshlet proxy) or direct (net/http via -url, the backend)")
	url := flag.String("url", "", "request URL; in library mode the mesh routes it (default http://backend/)")
	bootstrap := flag.String("bootstrap", "", "library mode: bootstrap file")
	listener := flag.String("listener", "h1", "library mode: the listener whose HTTP connection manager routes requests")
	qps := flag.Float64("qps", 1000, "total requests per second")
	workers := flag.Int("c", 16, "workers (each sends qps/c requests per second on its own keep-alive connection)")
	dur := flag.Duration("t", 15*time.Second, "measured duration")
	flag.Parse()
	res, err := run(*mode, *url, *bootstrap, *listener, *qps, *workers, *dur)
	if err != nil {
		fmt.Fprintln(os.Stderr, "library bench:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

// result is one run's measurement; latencies in milliseconds.
type result struct {
	Mode     string  `json:"mode"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	QPS      float64 `json:"qps"`
	P50      float64 `json:"p50"`
	P90      float64 `json:"p90"`
	P99      float64 `json:"p99"`
	// CPU is this process's CPU over the measured run in cores: the load
	// generator, plus the data plane itself in library mode.
	CPU float64 `json:"cpu"`
}

func run(mode, url, bootstrap, listener string, qps float64, workers int, dur time.Duration) (*result, error) {
	if workers < 1 || qps <= 0 {
		return nil, errors.New("-c and -qps must be positive")
	}
	var rt http.RoundTripper
	switch mode {
	case "library":
		if bootstrap == "" {
			return nil, errors.New("library mode needs -bootstrap")
		}
		if url == "" {
			url = "http://backend/"
		}
		srv := &meshlet.Server{Bootstrap: bootstrap, OutboundListener: listener,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := srv.Start(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
		rt = srv.RoundTripper()
	case "proxy", "direct":
		if url == "" {
			return nil, fmt.Errorf("%s mode needs -url", mode)
		}
		rt = &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers, DisableCompression: true}
	default:
		return nil, fmt.Errorf("unknown -mode %q", mode)
	}
	client := &http.Client{Transport: rt, Timeout: 5 * time.Second}
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		return err
	}
	// Warm up: one request per worker opens the keep-alive connections
	// (and, in library mode, the upstream pool) outside the measurement.
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { _ = get() })
	}
	wg.Wait()

	// Like fortio -qps: each worker keeps its own fixed schedule, offset
	// from the others so the total is evenly spaced; a late request is
	// sent at once (no catch-up burst beyond that).
	interval := time.Duration(float64(workers) * float64(time.Second) / qps)
	expected := int(qps*dur.Seconds()) + workers
	lat := make([][]time.Duration, workers)
	errs := make([]int, workers)
	cpu0 := cpuTime()
	start := time.Now().Add(10 * time.Millisecond)
	end := start.Add(dur)
	for w := range workers {
		lat[w] = make([]time.Duration, 0, expected/workers+1)
		wg.Go(func() {
			next := start.Add(time.Duration(w) * interval / time.Duration(workers))
			for next.Before(end) {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				t0 := time.Now()
				if err := get(); err != nil {
					errs[w]++
				} else {
					lat[w] = append(lat[w], time.Since(t0))
				}
				next = next.Add(interval)
				if now := time.Now(); next.Before(now) {
					next = now
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := (cpuTime() - cpu0).Seconds() / elapsed.Seconds()
	all := slices.Concat(lat...)
	slices.Sort(all)
	res := &result{Mode: mode, Requests: len(all), CPU: cpu}
	for _, e := range errs {
		res.Errors += e
	}
	res.QPS = float64(len(all)+res.Errors) / elapsed.Seconds()
	if len(all) == 0 {
		return res, errors.New("no request succeeded")
	}
	pct := func(p float64) float64 {
		i := min(len(all)-1, int(p/100*float64(len(all))))
		return float64(all[i]) / float64(time.Millisecond)
	}
	res.P50, res.P90, res.P99 = pct(50), pct(90), pct(99)
	return res, nil
}

// cpuTime is the user+system CPU this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
