package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshlet/meshlet/capture"
)

// fakeRedirector is a backend by name only.
type fakeRedirector struct{ name string }

func (f fakeRedirector) Install(context.Context, capture.Scope) error { return nil }
func (f fakeRedirector) Remove(context.Context) error                 { return nil }
func (f fakeRedirector) Name() string                                 { return f.name }
func (f fakeRedirector) OriginalDst(net.Conn) (netip.AddrPort, error) {
	return netip.AddrPort{}, errors.New("fake")
}

// fakeStatsRedirector also reports program counters.
type fakeStatsRedirector struct {
	fakeRedirector
	st  capture.Stats
	err error
}

func (f *fakeStatsRedirector) Stats() (capture.Stats, error) { return f.st, f.err }

// gatherSeries registers c in a pedantic registry (which checks the
// series against Describe) and renders what a scrape shows as
// name{k="v",...} -> value.
func gatherSeries(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := f.GetName()
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// TestCaptureCollector: the info series names the backend actually in
// place (iptables after an eBPF fallback, with the inbound mode it
// implements), and the eBPF counters appear for the directions whose
// programs are loaded, with the programs' values.
func TestCaptureCollector(t *testing.T) {
	const (
		captured = "meshlet_capture_ebpf_outbound_captured_total"
		fast     = "meshlet_capture_ebpf_fastpath_messages_total"
		steered  = "meshlet_capture_ebpf_inbound_steered_total"
		refused  = "meshlet_capture_ebpf_inbound_refused_total"
	)
	info := func(backend, inbound, fallback string) string {
		return fmt.Sprintf(`meshlet_capture_info{backend=%q,fallback=%q,inbound=%q}`, backend, fallback, inbound)
	}
	for _, tc := range []struct {
		name string
		opts captureOptions
		r    capture.Redirector // nil: --capture none
		want map[string]float64
	}{{
		name: "no capture",
		opts: captureOptions{backend: "none"},
		want: map[string]float64{info("none", "none", "false"): 1},
	}, {
		name: "iptables-nft is iptables",
		opts: captureOptions{backend: "iptables"},
		r:    fakeRedirector{name: "iptables-nft"},
		want: map[string]float64{info("iptables", "redirect", "false"): 1},
	}, {
		name: "nftables tproxy",
		opts: captureOptions{backend: "nftables", inbound: "tproxy"},
		r:    fakeRedirector{name: "nftables"},
		want: map[string]float64{info("nftables", "tproxy", "false"): 1},
	}, {
		name: "ebpf fell back to iptables",
		opts: captureOptions{backend: "ebpf", inbound: "ebpf"},
		r:    fakeRedirector{name: "iptables-legacy"},
		want: map[string]float64{info("iptables", "redirect", "true"): 1},
	}, {
		name: "ebpf outbound and inbound",
		opts: captureOptions{backend: "ebpf", inbound: "ebpf"},
		r: &fakeStatsRedirector{fakeRedirector: fakeRedirector{name: "ebpf"}, st: capture.Stats{
			Outbound: true, Captured: 7, FastPath: 3, Inbound: true, InboundSteered: 5, InboundRefused: 2}},
		want: map[string]float64{info("ebpf", "ebpf", "false"): 1, captured: 7, fast: 3, steered: 5, refused: 2},
	}, {
		name: "ebpf outbound only",
		opts: captureOptions{backend: "ebpf"},
		r: &fakeStatsRedirector{fakeRedirector: fakeRedirector{name: "ebpf"}, st: capture.Stats{
			Outbound: true, Captured: 1}},
		want: map[string]float64{info("ebpf", "none", "false"): 1, captured: 1, fast: 0},
	}, {
		name: "inbound map unreadable: outbound still shown",
		opts: captureOptions{backend: "ebpf", inbound: "ebpf"},
		r: &fakeStatsRedirector{fakeRedirector: fakeRedirector{name: "ebpf"}, st: capture.Stats{
			Outbound: true, Captured: 4}, err: errors.New("inbound stats: bad map")},
		want: map[string]float64{info("ebpf", "ebpf", "false"): 1, captured: 4, fast: 0},
	}, {
		name: "programs removed",
		opts: captureOptions{backend: "ebpf", inbound: "ebpf"},
		r:    &fakeStatsRedirector{fakeRedirector: fakeRedirector{name: "ebpf"}},
		want: map[string]float64{info("ebpf", "ebpf", "false"): 1},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			got := gatherSeries(t, newCaptureCollector(&tc.opts, tc.r, log))
			if !maps.Equal(got, tc.want) {
				t.Errorf("series:\n%s\nwant:\n%s", render(got), render(tc.want))
			}
		})
	}
}

// TestCaptureCollectorReadsOnScrape: counters are read from the source on
// every scrape, not copied once.
func TestCaptureCollectorReadsOnScrape(t *testing.T) {
	src := &fakeStatsRedirector{fakeRedirector: fakeRedirector{name: "ebpf"}, st: capture.Stats{Inbound: true, InboundSteered: 1}}
	c := newCaptureCollector(&captureOptions{backend: "ebpf", inbound: "ebpf"}, src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	const steered = "meshlet_capture_ebpf_inbound_steered_total"
	if got := gatherSeries(t, c)[steered]; got != 1 {
		t.Fatalf("first scrape: steered %v, want 1", got)
	}
	src.st.InboundSteered = 9
	if got := gatherSeries(t, c)[steered]; got != 9 {
		t.Errorf("second scrape: steered %v, want 9", got)
	}
}

// TestStartCaptureNoneExposesInfo: with --capture none, start-up still
// registers the info series, so an operator sees that nothing captures.
func TestStartCaptureNoneExposesInfo(t *testing.T) {
	var got []prometheus.Collector
	o := &captureOptions{backend: "none", addCollector: func(c prometheus.Collector) { got = append(got, c) }}
	stop, err := startCapture(o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if len(got) != 1 {
		t.Fatalf("%d collectors registered, want 1", len(got))
	}
	if s := gatherSeries(t, got[0]); s[`meshlet_capture_info{backend="none",fallback="false",inbound="none"}`] != 1 {
		t.Errorf("series: %v", s)
	}
}

func render(m map[string]float64) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "  %s %v\n", k, m[k])
	}
	return b.String()
}
