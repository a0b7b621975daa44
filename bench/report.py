#!/usr/bin/env python3
"""Parses load-tool output into JSON lines and summarizes a bench run.

Usage (called by run.sh):
  report.py fortio TARGET RUN FILE CPU RSS_KB
  report.py wrk|h2load|ghz|iperf TARGET RUN FILE
  report.py summarize RAW.jsonl OUTDIR
  report.py library RUN FILE PROXY_CPU   (bench/library output, one line per mode)
  report.py library-summary RAW.jsonl
"""
import json, re, statistics, sys, os

def emit(**kw):
    print(json.dumps(kw))

def fortio(target, run, path, cpu, rss):
    d = json.load(open(path))
    h = d["DurationHistogram"]
    pct = {p["Percentile"]: p["Value"] * 1000 for p in h.get("Percentiles", [])}
    ok = d.get("RetCodes", {}).get("200", 0)
    emit(target=target, run=int(run), metric="fortio", p50=pct.get(50), p90=pct.get(90),
         p99=pct.get(99), qps=d.get("ActualQPS"), cpu=float(cpu), rss_mb=int(rss) / 1024,
         errors=h["Count"] - ok)

def wrk(target, run, path):
    t = open(path).read()
    m = re.search(r"Requests/sec:\s+([\d.]+)", t)
    err = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    emit(target=target, run=int(run), metric="wrk", rps=float(m.group(1)) if m else 0.0,
         errors=int(err.group(1)) if err else 0)

def h2load(target, run, path):
    t = open(path).read()
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", t)
    st = re.search(r"status codes: (\d+) 2xx", t)
    emit(target=target, run=int(run), metric="h2load", rps=float(m.group(1)) if m else 0.0,
         ok=int(st.group(1)) if st else 0)

def ghz(target, run, path):
    try:
        d = json.load(open(path))
        emit(target=target, run=int(run), metric="ghz", rps=d.get("rps", 0.0),
             p99=next((x["latency"] / 1e6 for x in d.get("latencyDistribution") or [] if x["percentage"] == 99), None),
             ok=d.get("statusCodeDistribution", {}).get("OK", 0))
    except Exception:
        emit(target=target, run=int(run), metric="ghz", rps=0.0, ok=0)

def iperf(target, run, path):
    try:
        d = json.load(open(path))
        bps = d["end"]["sum_received"]["bits_per_second"]
    except Exception:
        bps = 0.0
    emit(target=target, run=int(run), metric="iperf", gbps=bps / 1e9)

def library(run, path, proxy_cpu):
    for line in open(path):
        if not line.strip():
            continue
        d = json.loads(line)
        m = d["mode"]
        emit(target="library-" + m, run=int(run), metric="library", mode=m, p50=d["p50"], p90=d["p90"],
             p99=d["p99"], qps=d["qps"], errors=d["errors"], load_cpu=d["cpu"],
             proxy_cpu=float(proxy_cpu) if m == "proxy" else 0.0)

def library_summary(raw):
    """Added latency of the library RoundTripper vs the local proxy, each
    over direct, medians (min-max) of the runs; bar: library < 0.5x proxy."""
    rows = [json.loads(l) for l in open(raw) if l.strip()]
    rows = [r for r in rows if r.get("metric") == "library"]
    if not rows:
        return
    by = {m: [r for r in rows if r["mode"] == m] for m in ("direct", "proxy", "library")}
    def mmm(xs):
        return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})" if xs else "-"
    print("\n## Library RoundTripper vs local proxy @1000 rps (bench/library: 16 workers, HTTP/1.1 keep-alive, modes in turns of 1 s)\n")
    print("| mode | p50 ms | p90 ms | p99 ms | qps | errors | load-process CPU | proxy CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for m, rs in by.items():
        if rs:
            print(f"| {m} | {mmm([r['p50'] for r in rs])} | {mmm([r['p90'] for r in rs])} | {mmm([r['p99'] for r in rs])} | "
                  f"{mmm([r['qps'] for r in rs])} | {sum(r['errors'] for r in rs)} | {mmm([r['load_cpu'] for r in rs])} | "
                  f"{mmm([r['proxy_cpu'] for r in rs]) if m == 'proxy' else '-'} |")
    if not all(by.values()):
        return
    ok = True
    for p in ("p50", "p90", "p99"):
        d, px, lib = (statistics.median([r[p] for r in by[m]]) for m in ("direct", "proxy", "library"))
        added_px, added_lib = px - d, lib - d
        ratio = added_lib / added_px if added_px > 0 else float("nan")
        if p == "p50":
            ok = added_px > 0 and ratio < 0.5
        print(f"- added {p}: library {added_lib * 1000:.0f} us, proxy {added_px * 1000:.0f} us: x{ratio:.2f}")
    print(f"- bar (library adds < 0.5x the proxy's added p50): {'PASS' if ok else 'FAIL'}")

def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)

def summarize(raw, out):
    rows = [json.loads(l) for l in open(raw) if l.strip()]
    targets = ["direct", "haproxy", "nginx", "meshlet"]
    series = [
        ("HTTP/1.1 max rps (wrk)", "wrk", "rps", True),
        ("p50 ms @1000rps", "fortio", "p50", False),
        ("p99 ms @1000rps", "fortio", "p99", False),
        ("proxy CPU cores @1000rps", "fortio", "cpu", False),
        ("proxy RSS MB @1000rps", "fortio", "rss_mb", False),
        ("h2c rps (h2load)", "h2load", "rps", True),
        ("gRPC unary rps (ghz)", "ghz", "rps", True),
        ("TCP Gbit/s (iperf3)", "iperf", "gbps", True),
    ]
    table = {}
    for name, metric, field, _ in series:
        for t in targets:
            vals = [r.get(field) for r in rows if r["target"] == t and r["metric"] == metric]
            table[(name, t)] = med(vals)
    # added latency relative to direct
    lines = ["| metric | " + " | ".join(targets) + " | meshlet/haproxy |", "|---" * (len(targets) + 2) + "|"]
    for name, metric, field, higher in series:
        cells = []
        for t in targets:
            m, lo, hi = table[(name, t)]
            cells.append("-" if m is None else f"{m:.3g} ({lo:.3g}-{hi:.3g})")
        mh, mm = table[(name, "haproxy")][0], table[(name, "meshlet")][0]
        ratio = "-" if not mh or mm is None else f"{mm / mh:.2f}x"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} |")
    d99 = table[("p99 ms @1000rps", "direct")][0]
    extra = []
    if d99 is not None:
        for t in ("haproxy", "nginx", "meshlet"):
            v = table[("p99 ms @1000rps", t)][0]
            if v is not None:
                extra.append(f"added p99 {t}: {v - d99:.3f} ms")
        h, m = table[("p99 ms @1000rps", "haproxy")][0], table[("p99 ms @1000rps", "meshlet")][0]
        if h is not None and m is not None and h - d99 > 0:
            extra.append(f"meshlet added p99 / haproxy added p99: {(m - d99) / (h - d99):.2f}x")
    dt, mt = table[("TCP Gbit/s (iperf3)", "direct")][0], table[("TCP Gbit/s (iperf3)", "meshlet")][0]
    if dt and mt is not None:
        extra.append(f"meshlet TCP / direct: {mt / dt:.2f}x")
    report = "\n".join(lines) + "\n\n" + "\n".join(extra) + "\n"
    print(report)
    open(os.path.join(out, "report.md"), "w").write(report)
    json.dump({f"{k[0]}|{k[1]}": v for k, v in table.items()}, open(os.path.join(out, "results.json"), "w"), indent=1)
    # gnuplot chart: each metric normalized to haproxy = 1.0
    dat = os.path.join(out, "chart.dat")
    with open(dat, "w") as f:
        f.write("metric " + " ".join(targets) + "\n")
        for name, metric, field, _ in series:
            base = table[(name, "haproxy")][0]
            if name.startswith("TCP"):
                base = table[(name, "direct")][0]
            vals = []
            for t in targets:
                v = table[(name, t)][0]
                vals.append("0" if (v is None or not base) else f"{v / base:.3f}")
            f.write('"' + name + '" ' + " ".join(vals) + "\n")
    open(os.path.join(out, "chart.gp"), "w").write(f"""set terminal pngcairo size 1400,600 noenhanced
set output '{os.path.join(out, "chart.png")}'
set title 'meshlet vs haproxy / nginx / direct (ratio to haproxy; TCP ratio to direct)'
set style data histogram
set style histogram cluster gap 1
set style fill solid border -1
set key top left
set xtics rotate by -20
set yrange [0:*]
plot '{dat}' using 2:xtic(1) title 'direct', '' using 3 title 'haproxy', '' using 4 title 'nginx', '' using 5 title 'meshlet'
""")

if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "fortio":
        fortio(*sys.argv[2:7])
    elif cmd == "library":
        library(*sys.argv[2:5])
    elif cmd == "library-summary":
        library_summary(sys.argv[2])
    elif cmd == "summarize":
        summarize(sys.argv[2], sys.argv[3])
    else:
        globals()[cmd](*sys.argv[2:5])
