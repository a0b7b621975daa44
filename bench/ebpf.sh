#!/usr/bin/env bash
# eBPF capture bench (root): the added latency of eBPF capture vs iptables
# capture at a fixed 1000 rps, and the sockmap fast path vs a direct
# loopback connection. Everything runs in a network namespace of its own
# with cgroup2 and bpffs mounted under a temporary directory.
#
#   RUNS=3 FORTIO_T=10s ./bench/ebpf.sh
#
# Placement (2 cores): fortio load on cpu0; proxy (GOMAXPROCS=1) and the
# fortio backends on cpu1. The client runs as uid 1000 (the proxy runs as
# root and --capture-uid 0 keeps its own traffic out of the capture).
# Scenarios, each with keep-alive connections and with a new connection per
# request (-keepalive=false, where capture happens on every request):
#   direct      fortio -> backend 127.0.0.1:18080
#   proxy       fortio -> proxy listener 127.0.0.1:15080 -> backend (no capture)
#   iptables    fortio -> 10.99.0.1:80, NAT REDIRECT to 15001 -> backend
#   ebpf        fortio -> 10.99.0.1:80, cgroup connect4 to 15001 -> backend
# and with keep-alive only:
#   loopback    fortio -> backend 127.0.0.1:18081 (both in one cgroup)
#   sockmap     the same with --capture-ebpf-fastpath on that cgroup
# and sequential connects (bench/ebpfbench connect, uid 1000) to the
# proxy's own listener (no capture) and to 10.99.0.1:80 captured by
# iptables and by eBPF: connect(2) is where capture costs; and a ping-pong
# of 64-byte messages over one loopback connection
# (bench/ebpfbench, where the TCP stack rather than HTTP dominates), direct
# and with the fast path.
# Prints medians of RUNS (min-max) and writes bench/out/ebpf.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-3}
FORTIO_T=${FORTIO_T:-10s}
QPS=${QPS:-1000}
CONC=${CONC:-16}
LOAD_CPU=${LOAD_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
QUIET_MAX=${QUIET_MAX:-20} # seconds to wait for a quiet machine before each run
[ "$(id -u)" = 0 ] || { echo "bench/ebpf.sh: needs root" >&2; exit 1; }
for t in ip jq taskset setpriv; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
FORTIO_SRC=$(command -v fortio || echo "$(go env GOPATH)/bin/fortio")
[ -x "$FORTIO_SRC" ] || { echo "needs fortio: go install fortio.org/fortio@v1.68.2" >&2; exit 1; }

TMP=$(mktemp -d /tmp/meshlet-ebpfbench.XXXX)
chmod 755 "$TMP"
NS=mebench$(printf %04x $((RANDOM % 65536)))
PIDS=()
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	sleep 0.5
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	ip netns del "$NS" 2>/dev/null
	for d in app proxy fast; do [ -d "$TMP/cg/$d" ] && rmdir "$TMP/cg/$d" 2>/dev/null; done
	umount "$TMP/bpf" 2>/dev/null
	umount "$TMP/cg" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

go build -o "$TMP/ztunnel" ./cmd/ztunnel
go build -o "$TMP/ebpfbench" ./bench/ebpfbench
cp "$FORTIO_SRC" "$TMP/fortio"
mkdir -p "$TMP/cg" "$TMP/bpf" "$TMP/out"
chmod 777 "$TMP/out"
mount -t cgroup2 none "$TMP/cg"
mount -t bpf bpf "$TMP/bpf"
mkdir "$TMP/cg/app" "$TMP/cg/proxy" "$TMP/cg/fast"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" addr add 10.99.0.1/32 dev lo

# inns CGROUP CMD...: run CMD inside the namespace and the cgroup. Every
# step execs the next, so a background inns's $! is CMD's pid: use it as
# "exec inns ..." in a subshell or through INCG directly.
INCG='echo $$ > "$0/cgroup.procs" && exec "$@"'
inns() {
	local cg=$1
	shift
	ip netns exec "$NS" sh -c "$INCG" "$TMP/cg/$cg" "$@"
}

# Backends: fortio's HTTP echo server, one outside any captured cgroup and
# one inside the fast-path cgroup.
ip netns exec "$NS" sh -c "$INCG" "$TMP/cg/proxy" taskset -c "$SRV_CPU" "$TMP/fortio" server -http-port 127.0.0.1:18080 -grpc-port disabled \
	-redirect-port disabled -tcp-port disabled -udp-port disabled -ui-path "" >"$TMP/be1.log" 2>&1 &
PIDS+=($!)
ip netns exec "$NS" sh -c "$INCG" "$TMP/cg/fast" taskset -c "$SRV_CPU" "$TMP/fortio" server -http-port 127.0.0.1:18081 -grpc-port disabled \
	-redirect-port disabled -tcp-port disabled -udp-port disabled -ui-path "" >"$TMP/be2.log" 2>&1 &
PIDS+=($!)

cat >"$TMP/bootstrap.yaml" <<YAML
node: {id: sidecar~10.99.0.1~bench.default~default.svc.cluster.local, cluster: bench}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
static_resources:
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 18080}}}}]}]
  - name: passthrough
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: passthrough, cluster: passthrough}
  - name: 10.99.0.1_80
    address: {socket_address: {address: 10.99.0.1, port_value: 80}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: svc, cluster: backend}
  - name: explicit
    address: {socket_address: {address: 127.0.0.1, port_value: 15080}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: explicit, cluster: backend}
YAML

PROXY_PID=
# start_proxy ARGS...: the proxy in its own cgroup, pinned to the server CPU.
start_proxy() {
	stop_proxy
	: >"$TMP/proxy.log"
	ip netns exec "$NS" sh -c "$INCG" "$TMP/cg/proxy" env GOMAXPROCS=1 taskset -c "$SRV_CPU" "$TMP/ztunnel" run --bootstrap "$TMP/bootstrap.yaml" \
		--metrics "" --drain-time 1s --capture-uid 0 --capture-gid 0 "$@" >>"$TMP/proxy.log" 2>&1 &
	PROXY_PID=$!
	PIDS+=($PROXY_PID)
	for _ in $(seq 100); do
		grep -q "proxy started" "$TMP/proxy.log" && return 0
		sleep 0.1
	done
	cat "$TMP/proxy.log" >&2
	return 1
}
stop_proxy() {
	[ -n "$PROXY_PID" ] || return 0
	kill "$PROXY_PID" 2>/dev/null || true
	wait "$PROXY_PID" 2>/dev/null || true
	PROXY_PID=
}

# busy: cores in use over 3 s, from /proc/stat.
busy() {
	read -r _ a1 b1 c1 d1 e1 f1 g1 h1 _ </proc/stat
	sleep 3
	read -r _ a2 b2 c2 d2 e2 f2 g2 h2 _ </proc/stat
	local used=$(((a2 + b2 + c2 + f2 + g2 + h2) - (a1 + b1 + c1 + f1 + g1 + h1)))
	local total=$(((a2 + b2 + c2 + d2 + e2 + f2 + g2 + h2) - (a1 + b1 + c1 + d1 + e1 + f1 + g1 + h1)))
	echo "scale=3; $used * $(nproc) / $total" | bc
}
wait_quiet() {
	local deadline=$((SECONDS + QUIET_MAX)) b
	while :; do
		b=$(busy)
		if [ "$(echo "$b < 0.05" | bc)" = 1 ]; then return 0; fi
		if [ $SECONDS -ge $deadline ]; then
			log "machine not quiet ($b cores busy); measuring anyway"
			NOISY=$((NOISY + 1))
			return 0
		fi
	done
}
NOISY=0

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# load NAME CGROUP URL KEEPALIVE: one fortio run, appends a JSON line.
load() {
	local name=$1 cg=$2 url=$3 ka=$4 run=$5
	wait_quiet
	local pid=${PROXY_PID:-}
	local t0 c0
	t0=$(date +%s.%N)
	c0=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
	inns "$cg" taskset -c "$LOAD_CPU" setpriv --reuid 1000 --regid 1000 --clear-groups \
		"$TMP/fortio" load -quiet -qps "$QPS" -c "$CONC" -t "$FORTIO_T" -r 0.00001 -keepalive="$ka" \
		-json "$TMP/out/r.json" "$url" >/dev/null 2>&1
	local c1 t1
	c1=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
	t1=$(date +%s.%N)
	local cpu
	cpu=$(echo "scale=4; ($c1 - $c0) / $(getconf CLK_TCK) / ($t1 - $t0)" | bc)
	jq -c --arg name "$name" --arg ka "$ka" --arg cpu "$cpu" --argjson run "$run" '{
		name: $name, keepalive: ($ka == "true"), run: $run, cpu: ($cpu | tonumber),
		qps: .ActualQPS, errors: ((.RetCodes | to_entries | map(select(.key != "200") | .value) | add) // 0),
		p50: (.DurationHistogram.Percentiles[] | select(.Percentile == 50) | .Value * 1000),
		p90: (.DurationHistogram.Percentiles[] | select(.Percentile == 90) | .Value * 1000),
		p99: (.DurationHistogram.Percentiles[] | select(.Percentile == 99) | .Value * 1000)}' \
		"$TMP/out/r.json" >>"$TMP/results.jsonl"
	log "$name keepalive=$ka run $run: $(tail -1 "$TMP/results.jsonl")"
}

# pingpong NAME RUN: bench/ebpfbench pingpong inside the fast-path cgroup.
# connects NAME RUN ADDR: bench/ebpfbench connect as uid 1000 in app.
pingpong() {
	wait_quiet
	inns fast taskset -c "$LOAD_CPU,$SRV_CPU" "$TMP/ebpfbench" pingpong -n 20000 | record "$1" "$2"
}
connects() {
	wait_quiet
	inns app taskset -c "$LOAD_CPU" setpriv --reuid 1000 --regid 1000 --clear-groups \
		"$TMP/ebpfbench" connect -n 2000 -addr "$3" | record "$1" "$2"
}
# record NAME RUN: an ebpfbench result line from stdin into pingpong.jsonl.
record() {
	jq -c --arg name "$1" --argjson run "$2" '{name: $name, run: $run, p50_us: .p50, p90_us: .p90, p99_us: .p99}' \
		>>"$TMP/pingpong.jsonl"
	log "$1 run $2: $(tail -1 "$TMP/pingpong.jsonl")"
}

: >"$TMP/results.jsonl"
: >"$TMP/pingpong.jsonl"
# Scenarios take turns within each run, so drift in the machine's load
# spreads over all of them.
for run in $(seq "$RUNS"); do
	log "run $run: direct and loopback (no proxy)"
	for ka in true false; do load direct app http://127.0.0.1:18080/ $ka "$run"; done
	load loopback fast http://127.0.0.1:18081/ true "$run"
	pingpong pingpong-loopback "$run"

	log "run $run: proxy, no capture"
	start_proxy
	for ka in true false; do load proxy app http://127.0.0.1:15080/ $ka "$run"; done
	connects connect-proxy "$run" 127.0.0.1:15080

	log "run $run: iptables capture"
	start_proxy --capture iptables --capture-inbound none
	grep -q "capture installed" "$TMP/proxy.log"
	for ka in true false; do load iptables app http://10.99.0.1/ $ka "$run"; done
	connects connect-iptables "$run" 10.99.0.1:80
	stop_proxy

	log "run $run: ebpf capture"
	start_proxy --capture ebpf --capture-cgroup "$TMP/cg/app" --capture-bpffs "$TMP/bpf/meshlet"
	grep -q "backend=ebpf" "$TMP/proxy.log" || { cat "$TMP/proxy.log"; exit 1; }
	for ka in true false; do load ebpf app http://10.99.0.1/ $ka "$run"; done
	connects connect-ebpf "$run" 10.99.0.1:80
	"$TMP/ebpfbench" stats "$TMP/bpf/meshlet" >&2
	stop_proxy

	log "run $run: sockmap fast path"
	start_proxy --capture ebpf --capture-cgroup "$TMP/cg/fast" --capture-bpffs "$TMP/bpf/meshlet" --capture-ebpf-fastpath
	load sockmap fast http://127.0.0.1:18081/ true "$run"
	pingpong pingpong-sockmap "$run"
	"$TMP/ebpfbench" stats "$TMP/bpf/meshlet" | tee -a "$TMP/fastpath.txt" >&2
	stop_proxy
done

mkdir -p "$ROOT/bench/out"
cat "$TMP/results.jsonl" "$TMP/pingpong.jsonl" >"$ROOT/bench/out/ebpf.jsonl"
python3 - "$TMP/results.jsonl" "$TMP/pingpong.jsonl" "$NOISY" "$QPS" "$CONC" "$FORTIO_T" "$RUNS" >"$ROOT/bench/out/ebpf.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
pp = [json.loads(l) for l in open(sys.argv[2])]
noisy, qps, conc, dur, runs = sys.argv[3:]
groups = {}
for r in rows:
    groups.setdefault((r["name"], r["keepalive"]), []).append(r)
def med(key, rs):
    vs = [r[key] for r in rs]
    return statistics.median(vs), min(vs), max(vs)
def fmt(v, unit=""):
    m, lo, hi = v
    return f"{m:.3f}{unit} ({lo:.3f}-{hi:.3f})"
base = {ka: med("p50", groups[("direct", ka)])[0] for ka in (True, False) if ("direct", ka) in groups}
lb = med("p50", groups[("loopback", True)])[0] if ("loopback", True) in groups else None
print(f"# eBPF capture bench\n\nfortio -qps {qps} -c {conc} -t {dur}, medians of {runs} runs (min-max), latency in ms."
      f" Runs on a machine that was not quiet: {noisy}.\n")
print("| scenario | keep-alive | p50 | p90 | p99 | added p50 vs direct | proxy CPU (cores) | errors |")
print("|---|---|---|---|---|---|---|---|")
order = ["direct", "proxy", "iptables", "ebpf", "loopback", "sockmap"]
for name in order:
    for ka in (True, False):
        rs = groups.get((name, ka))
        if not rs:
            continue
        p50 = med("p50", rs)
        ref = lb if name in ("loopback", "sockmap") else base.get(ka)
        added = f"{p50[0] - ref:+.3f}" if ref is not None else "-"
        cpu = med("cpu", rs)[0] if name in ("proxy", "iptables", "ebpf") else None
        errs = sum(r["errors"] for r in rs)
        print(f"| {name} | {'yes' if ka else 'no'} | {fmt(p50)} | {fmt(med('p90', rs))} | {fmt(med('p99', rs))} | {added} | "
              f"{'-' if cpu is None else f'{cpu:.3f}'} | {errs} |")
def p50(name, ka):
    rs = groups.get((name, ka))
    return med("p50", rs)[0] if rs else None
print()
for ka in (True, False):
    i, e, p = p50("iptables", ka), p50("ebpf", ka), p50("proxy", ka)
    if None not in (i, e, p):
        print(f"- keep-alive {'on' if ka else 'off'}: capture adds {i - p:+.3f} ms (iptables) vs {e - p:+.3f} ms (ebpf) to the proxy's p50;"
              f" ebpf {'<' if e < i else '>='} iptables")
s, l = p50("sockmap", True), p50("loopback", True)
if None not in (s, l):
    print(f"- fortio: sockmap same-node p50 {s:.3f} ms vs direct loopback {l:.3f} ms ({'below' if s < l else 'not below'})")
ppg = {}
for r in pp:
    ppg.setdefault(r["name"], []).append(r)
if ppg:
    print("\nSequential connects (connect(2) time) and ping-pong of 64-byte messages over one loopback connection"
          " (microseconds, medians of runs, min-max):\n")
    print("| scenario | p50 | p90 | p99 |")
    print("|---|---|---|---|")
    for name in ("connect-proxy", "connect-iptables", "connect-ebpf", "pingpong-loopback", "pingpong-sockmap"):
        if name in ppg:
            print(f"| {name} | {fmt(med('p50_us', ppg[name]))} | {fmt(med('p90_us', ppg[name]))} | {fmt(med('p99_us', ppg[name]))} |")
    if all(k in ppg for k in ("connect-proxy", "connect-iptables", "connect-ebpf")):
        p0 = med("p50_us", ppg["connect-proxy"])[0]
        i, e = med("p50_us", ppg["connect-iptables"])[0] - p0, med("p50_us", ppg["connect-ebpf"])[0] - p0
        print(f"\n- connect: capture adds {i:+.2f} us (iptables) vs {e:+.2f} us (ebpf) to connect(2) p50; ebpf {'<' if e < i else '>='} iptables")
    if "pingpong-sockmap" in ppg and "pingpong-loopback" in ppg:
        a, b = med("p50_us", ppg["pingpong-sockmap"])[0], med("p50_us", ppg["pingpong-loopback"])[0]
        print(f"\n- ping-pong: sockmap p50 {a:.2f} us vs direct loopback {b:.2f} us ({'below' if a < b else 'not below'})")
PY
printf '\nFast path counters after each sockmap run (pin, connects captured, messages redirected):\n\n' >>"$ROOT/bench/out/ebpf.md"
sed 's/^/    /' "$TMP/fastpath.txt" >>"$ROOT/bench/out/ebpf.md"
cat "$ROOT/bench/out/ebpf.md"
