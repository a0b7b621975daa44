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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/meshlet/meshlet"
)

func main() {
	modes := flag.String("modes", "direct,proxy,library", "comma-separated: direct (net/http to -direct-url), proxy (net/http to -proxy-url, a local meshlet proxy), library (the meshlet RoundTripper in process, -library-url routed by -bootstrap)")
	directURL := flag.String("direct-url", "", "backend URL for direct mode")
	proxyURL := flag.String("proxy-url", "", "local proxy URL for proxy mode")
	libraryURL := flag.String("library-url", "http://backend/", "URL the library routes in library mode")
	bootstrap := flag.String("bootstrap", "", "library mode: bootstrap file")
	listener := flag.String("listener", "h1", "library mode: the listener whose HTTP connection manager routes requests")
	qps := flag.Float64("qps", 1000, "requests per second while a mode runs")
	workers := flag.Int("c", 16, "workers (each sends qps/c requests per second on its own keep-alive connection)")
	dur := flag.Duration("t", 15*time.Second, "measured time per mode")
	slice := flag.Duration("slice", time.Second, "the modes take turns in slices this long until each had -t, so background load drifting over seconds hits them alike; 0 runs each mode once for -t")
	flag.Parse()
	urls := map[string]string{"direct": *directURL, "proxy": *proxyURL, "library": *libraryURL}
	res, err := run(strings.Split(*modes, ","), urls, *bootstrap, *listener, *qps, *workers, *dur, *slice)
	if err != nil {
		fmt.Fprintln(os.Stderr, "library bench:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, r := range res {
		_ = enc.Encode(r)
	}
}

// result is one mode's measurement; latencies in milliseconds.
type result struct {
	Mode     string  `json:"mode"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	QPS      float64 `json:"qps"`
	P50      float64 `json:"p50"`
	P90      float64 `json:"p90"`
	P99      float64 `json:"p99"`
	// CPU is this process's CPU while the mode ran, in cores: the load
	// generator, plus the data plane itself in library mode.
	CPU float64 `json:"cpu"`
}

// target is one mode's client and what it measured so far.
type target struct {
	mode    string
	url     string
	client  *http.Client
	lat     []time.Duration
	errs    int
	cpu     time.Duration
	elapsed time.Duration
}

func run(modes []string, urls map[string]string, bootstrap, listener string, qps float64, workers int, dur, slice time.Duration) ([]*result, error) {
	if workers < 1 || qps <= 0 || dur <= 0 {
		return nil, errors.New("-c, -qps and -t must be positive")
	}
	var targets []*target
	for _, mode := range modes {
		tg := &target{mode: mode, url: urls[mode]}
		if tg.url == "" {
			return nil, fmt.Errorf("mode %s needs its -%s-url", mode, mode)
		}
		var rt http.RoundTripper
		switch mode {
		case "library":
			if bootstrap == "" {
				return nil, errors.New("library mode needs -bootstrap")
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
			rt = &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers, DisableCompression: true}
		default:
			return nil, fmt.Errorf("unknown mode %q", mode)
		}
		tg.client = &http.Client{Transport: rt, Timeout: 5 * time.Second}
		// Warm up: one request per worker opens the keep-alive connections
		// (and, in library mode, the upstream pool) outside the measurement.
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() { _ = tg.get() })
		}
		wg.Wait()
		tg.lat = make([]time.Duration, 0, int(qps*dur.Seconds())+workers)
		targets = append(targets, tg)
	}
	if slice <= 0 || slice > dur {
		slice = dur
	}
	for done := time.Duration(0); done < dur; done += slice {
		for _, tg := range targets {
			tg.phase(qps, workers, min(slice, dur-done))
		}
	}
	out := make([]*result, 0, len(targets))
	for _, tg := range targets {
		r, err := tg.result()
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (tg *target) get() error {
	resp, err := tg.client.Get(tg.url)
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

// phase sends qps requests a second for d. Like fortio -qps, each worker
// keeps its own fixed schedule, offset from the others so the total is
// evenly spaced; a late request is sent at once, with no catch-up burst
// beyond that. Latency is measured from the actual send.
func (tg *target) phase(qps float64, workers int, d time.Duration) {
	interval := time.Duration(float64(workers) * float64(time.Second) / qps)
	lat := make([][]time.Duration, workers)
	errs := make([]int, workers)
	cpu0 := cpuTime()
	start := time.Now().Add(2 * time.Millisecond)
	end := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			next := start.Add(time.Duration(w) * interval / time.Duration(workers))
			for next.Before(end) {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				}
				t0 := time.Now()
				if err := tg.get(); err != nil {
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
	tg.elapsed += time.Since(start)
	tg.cpu += cpuTime() - cpu0
	for w := range workers {
		tg.lat = append(tg.lat, lat[w]...)
		tg.errs += errs[w]
	}
}

func (tg *target) result() (*result, error) {
	all := tg.lat
	slices.Sort(all)
	secs := tg.elapsed.Seconds()
	res := &result{Mode: tg.mode, Requests: len(all), Errors: tg.errs,
		QPS: float64(len(all)+tg.errs) / secs, CPU: tg.cpu.Seconds() / secs}
	if len(all) == 0 {
		return res, fmt.Errorf("mode %s: no request succeeded", tg.mode)
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
