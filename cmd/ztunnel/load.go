package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"
)

// result is one request's outcome: the backend version that answered, or
// err when the request failed.
type result struct {
	version string
	latency time.Duration
	err     error
	// outcome labels an answer for the traffic-policy steps, where some
	// non-200 answers are expected: "200", "503", "504 UT" (status and
	// response flags). attempt is the x-envoy-attempt-count the backend
	// reported. Both are empty in the routing steps.
	outcome string
	attempt string
}

// tally aggregates results.
type tally struct {
	byVersion map[string]int
	byOutcome map[string]int
	byAttempt map[string]int
	latencies []time.Duration
	failed    int
	firstErr  error
}

func (t *tally) total() int { return len(t.latencies) + t.failed }

func (t *tally) add(r result) {
	if t.byVersion == nil {
		t.byVersion = map[string]int{}
		t.byOutcome = map[string]int{}
		t.byAttempt = map[string]int{}
	}
	if r.err != nil {
		t.failed++
		if t.firstErr == nil {
			t.firstErr = r.err
		}
		return
	}
	if r.version != "" {
		t.byVersion[r.version]++
	}
	if r.outcome != "" {
		t.byOutcome[r.outcome]++
	}
	if r.attempt != "" {
		t.byAttempt[r.attempt]++
	}
	t.latencies = append(t.latencies, r.latency)
}

// share is the fraction of successful requests served by version.
func (t *tally) share(version string) float64 {
	ok := len(t.latencies)
	if ok == 0 {
		return 0
	}
	return float64(t.byVersion[version]) / float64(ok)
}

func (t *tally) percentile(p float64) time.Duration {
	if len(t.latencies) == 0 {
		return 0
	}
	s := slices.Clone(t.latencies)
	slices.Sort(s)
	return s[int(p*float64(len(s)-1))]
}

// runLoad sends n requests with at most conc in flight.
func runLoad(ctx context.Context, n, conc int, do func(context.Context) result) *tally {
	jobs := make(chan struct{})
	results := make(chan result, conc)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				results <- do(ctx)
			}
		}()
	}
	go func() {
		defer close(jobs)
		for range n {
			select {
			case jobs <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() { wg.Wait(); close(results) }()
	t := &tally{}
	for r := range results {
		t.add(r)
	}
	if sent := t.total(); sent < n {
		t.failed += n - sent
		if t.firstErr == nil {
			t.firstErr = fmt.Errorf("%d requests not sent: %v", n-sent, ctx.Err())
		}
	}
	return t
}

// printSplit writes the version table: count, observed and expected share.
func printSplit(w io.Writer, t *tally, expected map[string]float64) {
	versions := make([]string, 0, len(t.byVersion)+len(expected))
	for v := range t.byVersion {
		versions = append(versions, v)
	}
	for v := range expected {
		if _, ok := t.byVersion[v]; !ok {
			versions = append(versions, v)
		}
	}
	sort.Strings(versions)
	fmt.Fprintf(w, "    %-8s %7s %8s %9s\n", "version", "count", "share", "expected")
	for _, v := range versions {
		fmt.Fprintf(w, "    %-8s %7d %7.1f%% %8.1f%%\n", v, t.byVersion[v], 100*t.share(v), 100*expected[v])
	}
	if t.failed > 0 {
		fmt.Fprintf(w, "    %-8s %7d   (first error: %v)\n", "failed", t.failed, t.firstErr)
	}
}

func printLatency(w io.Writer, t *tally) {
	fmt.Fprintf(w, "    latency  p50 %v  p90 %v  p99 %v\n",
		roundLatency(t.percentile(0.50)), roundLatency(t.percentile(0.90)), roundLatency(t.percentile(0.99)))
}

func roundLatency(d time.Duration) string {
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// drain drains and closes a response body so the connection is reused.
func drain(resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	return io.Copy(io.Discard, resp.Body)
}
