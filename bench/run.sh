#!/usr/bin/env bash
# Benchmark harness: direct, haproxy, nginx and meshlet measured in one run.
# Placement (2 cores): load tools on cpu0; proxies and backends on cpu1, one
# worker each. Prints a table of medians (min-max) with ratios to haproxy and
# writes bench/out/results.json, bench/out/report.md and bench/out/chart.png.
#
#   RUNS=3 FORTIO_T=15s WRK_D=10s ./bench/run.sh
#
# Also: an mTLS proxy pair (client-side meshlet -> mTLS -> server-side
# meshlet -> nginx) at 1000 rps, CPU per proxy (bar <= 0.05 vCPU each), and
# bench/hbonebench: one HBONE connection vs Go crypto/tls (bar >= 0.6x).
# And bench/library: the library's RoundTripper vs the local proxy vs direct
# at 1000 rps (bar: the library adds < 0.5x the proxy's p50 latency).
# PORT_OFFSET=N shifts every listening port (18000-18199, 5201) by N when
# another run holds them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
mkdir -p "$OUT"
RUNS=${RUNS:-3}
FORTIO_T=${FORTIO_T:-15s}
WRK_D=${WRK_D:-10s}
H2_N=${H2_N:-100000}
GHZ_N=${GHZ_N:-50000}
IPERF_T=${IPERF_T:-5}
HBONE_D=${HBONE_D:-2s}
export PORT_OFFSET=${PORT_OFFSET:-0}
GOBIN=$(go env GOPATH)/bin
LOAD_CPU=${LOAD_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
TMP=$(mktemp -d /tmp/meshlet-bench.XXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -f "$TMP/nginx-be.pid" ] && kill "$(cat "$TMP/nginx-be.pid")" 2>/dev/null || true
	[ -f "$TMP/nginx-px.pid" ] && kill "$(cat "$TMP/nginx-px.pid")" 2>/dev/null || true
	sleep 0.3
	rm -rf "$TMP"
}
trap cleanup EXIT

# P N is port N shifted by PORT_OFFSET; shiftports rewrites a generated
# config the same way.
P() { echo $(( $1 + PORT_OFFSET )); }
shiftports() {
	perl -pi -e 's/(?<=127\.0\.0\.1:)(18[01]\d\d|5201)\b/$1+$ENV{PORT_OFFSET}/ge; s/(port_value: )(18[01]\d\d|5201)\b/$1.($2+$ENV{PORT_OFFSET})/ge' "$@"
}

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

go build -o "$ROOT/bin/ztunnel" ./cmd/ztunnel
go build -o "$TMP/grpcbackend" ./bench/grpcbackend
go build -o "$TMP/hbonebench" ./bench/hbonebench
go build -o "$TMP/librarybench" ./bench/library
. bench/library/scenario.sh # library_scenario: library RoundTripper vs local proxy vs direct

# ---- backends (cpu1) ----
mkdir -p "$TMP/nginx-be" "$TMP/nginx-px"
cat > "$TMP/nginx-be.conf" <<CONF
worker_processes 1;
pid $TMP/nginx-be.pid;
error_log $TMP/nginx-be/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx-be; proxy_temp_path $TMP/nginx-be;
  fastcgi_temp_path $TMP/nginx-be; uwsgi_temp_path $TMP/nginx-be; scgi_temp_path $TMP/nginx-be;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18080; location / { return 200 "hello from backend\n"; } }
  server { listen 127.0.0.1:18089 http2; location / { return 200 "hello from backend\n"; } }
}
CONF
shiftports "$TMP/nginx-be.conf"
taskset -c "$SRV_CPU" nginx -c "$TMP/nginx-be.conf" -p "$TMP/nginx-be"
taskset -c "$SRV_CPU" "$TMP/grpcbackend" -addr "127.0.0.1:$(P 18090)" & PIDS+=($!)
taskset -c "$SRV_CPU" iperf3 -s -B 127.0.0.1 -p "$(P 5201)" >/dev/null 2>&1 & PIDS+=($!)

# ---- proxies (cpu1) ----
cat > "$TMP/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend h1
  bind 127.0.0.1:18081
  default_backend be_h1
frontend h2c
  bind 127.0.0.1:18091 proto h2
  default_backend be_h1
frontend grpc
  bind 127.0.0.1:18095 proto h2
  default_backend be_grpc
backend be_h1
  server s1 127.0.0.1:18080
backend be_grpc
  server g1 127.0.0.1:18090 proto h2
frontend tcp
  mode tcp
  bind 127.0.0.1:18096
  default_backend be_tcp
backend be_tcp
  mode tcp
  server t1 127.0.0.1:5201
CONF
shiftports "$TMP/haproxy.cfg"
taskset -c "$SRV_CPU" haproxy -f "$TMP/haproxy.cfg" -db >"$TMP/haproxy.log" 2>&1 & PIDS+=($!); HAPROXY_PID=$!

cat > "$TMP/nginx-px.conf" <<CONF
worker_processes 1;
pid $TMP/nginx-px.pid;
error_log $TMP/nginx-px/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx-px; proxy_temp_path $TMP/nginx-px;
  fastcgi_temp_path $TMP/nginx-px; uwsgi_temp_path $TMP/nginx-px; scgi_temp_path $TMP/nginx-px;
  keepalive_requests 1000000;
  upstream be { server 127.0.0.1:18080; keepalive 64; keepalive_requests 1000000; }
  upstream gbe { server 127.0.0.1:18090; keepalive 64; }
  server { listen 127.0.0.1:18082;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:18092 http2;
    location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
  server { listen 127.0.0.1:18097 http2; location / { grpc_pass grpc://gbe; } }
}
CONF
shiftports "$TMP/nginx-px.conf"
taskset -c "$SRV_CPU" nginx -c "$TMP/nginx-px.conf" -p "$TMP/nginx-px"

sed -e "s#@@#$TMP#g" bench/meshlet-bootstrap.yaml > "$TMP/meshlet.yaml"
shiftports "$TMP/meshlet.yaml"
GOMAXPROCS=1 taskset -c "$SRV_CPU" "$ROOT/bin/ztunnel" run --bootstrap "$TMP/meshlet.yaml" --log-level warn \
	--metrics "127.0.0.1:$(P 18101)" & PIDS+=($!); MESHLET_PID=$!

# The mTLS pair: identities spiffe://cluster.local/ns/bench/sa/{client,server}
# from one built-in CA (--ca-dir), SDS "default"/"ROOTCA", STRICT inbound.
cp bench/meshlet-mtls-server.yaml bench/meshlet-mtls-client.yaml "$TMP/"
shiftports "$TMP/meshlet-mtls-server.yaml" "$TMP/meshlet-mtls-client.yaml"
for side in server client; do
	POD_NAMESPACE=bench SERVICE_ACCOUNT=$side GOMAXPROCS=1 taskset -c "$SRV_CPU" "$ROOT/bin/ztunnel" run \
		--bootstrap "$TMP/meshlet-mtls-$side.yaml" --ca-dir "$TMP/ca" --log-level warn \
		--metrics "127.0.0.1:$(P $([ $side = server ] && echo 18115 || echo 18114))" & PIDS+=($!)
	if [ $side = server ]; then MTLS_SERVER_PID=$!; else MTLS_CLIENT_PID=$!; fi
	# The server creates the CA root on first start; the client loads it.
	if [ $side = server ]; then
		for _ in $(seq 100); do [ -s "$TMP/ca/ca-cert.pem" ] && break; sleep 0.1; done
	fi
done

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }
for p in 18080 18089 18090 5201 18081 18091 18095 18096 18082 18092 18097 18083 18084 18093 18098 18099 18110 18111; do wait_port "$(P $p)"; done
# The pair answers through mTLS before it is measured.
curl -fsS -o /dev/null "http://127.0.0.1:$(P 18111)/" || { echo "mTLS pair does not answer" >&2; exit 1; }

NGINX_PX_PID=$(cat "$TMP/nginx-px.pid")
declare -A PIDOF=([direct]="" [haproxy]=$HAPROXY_PID [nginx]=$NGINX_PX_PID [meshlet]=$MESHLET_PID)
declare -A H1=([direct]=$(P 18080) [haproxy]=$(P 18081) [nginx]=$(P 18082) [meshlet]=$(P 18083))
declare -A H2C=([direct]=$(P 18089) [haproxy]=$(P 18091) [nginx]=$(P 18092) [meshlet]=$(P 18093))
declare -A GRPC=([direct]=$(P 18090) [haproxy]=$(P 18095) [nginx]=$(P 18097) [meshlet]=$(P 18098))
declare -A TCP=([direct]=$(P 5201) [haproxy]=$(P 18096) [meshlet]=$(P 18099))

# cpu ticks of a process and its children (nginx master + worker)
ticks() {
	local pid=$1 t=0 p
	for p in $pid $(pgrep -P "$pid" 2>/dev/null); do
		[ -r /proc/$p/stat ] || continue
		t=$((t + $(awk '{print $14+$15}' /proc/$p/stat)))
	done
	echo $t
}
rss_kb() {
	local pid=$1 t=0 p
	for p in $pid $(pgrep -P "$pid" 2>/dev/null); do
		[ -r /proc/$p/status ] || continue
		t=$((t + $(awk '/VmRSS/{print $2}' /proc/$p/status)))
	done
	echo $t
}
# Wait until the machine is quiet: total busy < 0.05 cores over 3 s.
wait_quiet() {
	for _ in $(seq 10); do
		local a b
		a=($(head -1 /proc/stat)); sleep 3; b=($(head -1 /proc/stat))
		local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]) - (a[1]+a[2]+a[3]+a[6]+a[7]) ))
		local hz; hz=$(getconf CLK_TCK)
		if [ $((busy * 100 / hz / 3)) -lt 5 ]; then return 0; fi
	done
	echo "warning: machine not quiet" >&2
}

RES=$OUT/raw.jsonl
: > "$RES"
emit() { echo "$1" >> "$RES"; }

for run in $(seq "$RUNS"); do
	for t in direct haproxy nginx meshlet; do
		wait_quiet
		log "run $run/$RUNS $t: fortio 1000 rps"
		pid=${PIDOF[$t]}
		t0=0; [ -n "$pid" ] && t0=$(ticks "$pid")
		taskset -c "$LOAD_CPU" "$GOBIN/fortio" load -quiet -qps 1000 -c 16 -t "$FORTIO_T" -r 0.00001 \
			-json "$TMP/f.json" "http://127.0.0.1:${H1[$t]}/" >/dev/null 2>&1
		cpu=0; rss=0
		if [ -n "$pid" ]; then
			t1=$(ticks "$pid"); rss=$(rss_kb "$pid")
			secs=${FORTIO_T%s}
			cpu=$(python3 -c "print(($t1-$t0)/$(getconf CLK_TCK)/$secs)")
		fi
		python3 bench/report.py fortio "$t" "$run" "$TMP/f.json" "$cpu" "$rss" >> "$RES"

		log "run $run/$RUNS $t: wrk max rps"
		taskset -c "$LOAD_CPU" wrk -t1 -c64 -d"$WRK_D" "http://127.0.0.1:${H1[$t]}/" > "$TMP/w.txt" 2>&1 || true
		python3 bench/report.py wrk "$t" "$run" "$TMP/w.txt" >> "$RES"

		log "run $run/$RUNS $t: h2load h2c"
		taskset -c "$LOAD_CPU" h2load -n "$H2_N" -c 16 -m 10 "http://127.0.0.1:${H2C[$t]}/" > "$TMP/h.txt" 2>&1 || true
		python3 bench/report.py h2load "$t" "$run" "$TMP/h.txt" >> "$RES"

		log "run $run/$RUNS $t: ghz gRPC unary"
		taskset -c "$LOAD_CPU" "$GOBIN/ghz" --insecure --call grpc.testing.TestService/EmptyCall \
			-n "$GHZ_N" -c 16 --connections 1 -O json "127.0.0.1:${GRPC[$t]}" > "$TMP/g.json" 2>/dev/null || true
		python3 bench/report.py ghz "$t" "$run" "$TMP/g.json" >> "$RES"

		if [ "$t" = meshlet ]; then
			# The same fixed load on the h1 route with retries + fault (0%):
			# CPU per request against the plain route above.
			wait_quiet
			log "run $run/$RUNS meshlet-policy: fortio 1000 rps"
			t0=$(ticks "$MESHLET_PID")
			taskset -c "$LOAD_CPU" "$GOBIN/fortio" load -quiet -qps 1000 -c 16 -t "$FORTIO_T" -r 0.00001 \
				-json "$TMP/f.json" "http://127.0.0.1:$(P 18084)/" >/dev/null 2>&1
			t1=$(ticks "$MESHLET_PID"); rss=$(rss_kb "$MESHLET_PID")
			cpu=$(python3 -c "print(($t1-$t0)/$(getconf CLK_TCK)/${FORTIO_T%s})")
			python3 bench/report.py fortio meshlet-policy "$run" "$TMP/f.json" "$cpu" "$rss" >> "$RES"
		fi

		if [ -n "${TCP[$t]:-}" ]; then
			log "run $run/$RUNS $t: iperf3 TCP"
			taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "${TCP[$t]}" -t "$IPERF_T" -J > "$TMP/i.json" 2>/dev/null || true
			python3 bench/report.py iperf "$t" "$run" "$TMP/i.json" >> "$RES"
		fi
	done

	# mTLS pair at the same fixed load: CPU of each proxy separately.
	wait_quiet
	log "run $run/$RUNS meshlet mTLS pair: fortio 1000 rps"
	c0=$(ticks "$MTLS_CLIENT_PID"); s0=$(ticks "$MTLS_SERVER_PID")
	taskset -c "$LOAD_CPU" "$GOBIN/fortio" load -quiet -qps 1000 -c 16 -t "$FORTIO_T" -r 0.00001 \
		-json "$TMP/f.json" "http://127.0.0.1:$(P 18111)/" >/dev/null 2>&1
	c1=$(ticks "$MTLS_CLIENT_PID"); s1=$(ticks "$MTLS_SERVER_PID")
	python3 - "$TMP/f.json" "$run" "$((c1 - c0))" "$((s1 - s0))" "$(getconf CLK_TCK)" "${FORTIO_T%s}" \
		"$(rss_kb "$MTLS_CLIENT_PID")" "$(rss_kb "$MTLS_SERVER_PID")" >> "$RES" <<'PY'
import json, sys
path, run, ct, st, hz, secs, crss, srss = sys.argv[1:]
d = json.load(open(path))
h = d["DurationHistogram"]
pct = {p["Percentile"]: p["Value"] * 1000 for p in h.get("Percentiles", [])}
print(json.dumps(dict(target="meshlet-mtls-pair", run=int(run), metric="mtls", qps=d.get("ActualQPS"),
    p50=pct.get(50), p99=pct.get(99), errors=h["Count"] - d.get("RetCodes", {}).get("200", 0),
    cpu_client=int(ct) / int(hz) / float(secs), cpu_server=int(st) / int(hz) / float(secs),
    rss_client_mb=int(crss) / 1024, rss_server_mb=int(srss) / 1024)))
PY

	# One HBONE connection vs one crypto/tls connection, same process, same
	# run; both ends get a core each (GOMAXPROCS=2 on both cpus).
	wait_quiet
	log "run $run/$RUNS hbonebench: HBONE vs crypto/tls single connection"
	GOMAXPROCS=2 taskset -c "$LOAD_CPU,$SRV_CPU" "$TMP/hbonebench" -d "$HBONE_D" -runs 1 -json > "$TMP/hb.json"
	python3 - "$TMP/hb.json" "$run" >> "$RES" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1])):
    print(json.dumps(dict(target=r["name"], run=int(sys.argv[2]), metric="hbone", mbps=r["median_mbps"], ratio=r["ratio_to_tls"])))
PY

	library_scenario "$run"
done

python3 bench/report.py summarize "$RES" "$OUT"
# Traffic-policy overhead: CPU per request of the retry+fault route vs the
# plain route, medians over the runs (bar: <= 1.10).
python3 - "$RES" <<'PY'
import json, statistics, sys
cpu = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("metric") == "fortio" and r.get("target") in ("meshlet", "meshlet-policy"):
        cpu.setdefault(r["target"], []).append(float(r.get("cpu") or 0))
if cpu.get("meshlet") and cpu.get("meshlet-policy"):
    plain, pol = statistics.median(cpu["meshlet"]), statistics.median(cpu["meshlet-policy"])
    ratio = pol / plain if plain else float("nan")
    print(f"policy route CPU @1000rps: {pol:.4f} vs plain {plain:.4f} cores: x{ratio:.3f} "
          f"({'OK' if ratio <= 1.10 else 'OVER'} the 10% bar)")
PY
# mTLS pair CPU per proxy (bar: <= 0.05 vCPU each) and HBONE vs crypto/tls
# (bar: every direction >= 0.6x), medians (min-max) over the runs; appended
# to report.md.
python3 - "$RES" <<'PY' | tee -a "$OUT/report.md"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def mmm(xs):
    return f"{statistics.median(xs):.4g} ({min(xs):.4g}-{max(xs):.4g})" if xs else "-"
m = [r for r in rows if r["metric"] == "mtls"]
if m:
    cc, sc = [r["cpu_client"] for r in m], [r["cpu_server"] for r in m]
    print("\n## mTLS proxy pair @1000 rps (fortio -c 16; client meshlet -> mTLS -> server meshlet -> nginx)\n")
    print(f"- client-side proxy CPU: {mmm(cc)} vCPU, RSS {mmm([r['rss_client_mb'] for r in m])} MB")
    print(f"- server-side proxy CPU: {mmm(sc)} vCPU, RSS {mmm([r['rss_server_mb'] for r in m])} MB")
    print(f"- p50 {mmm([r['p50'] for r in m])} ms, p99 {mmm([r['p99'] for r in m])} ms, qps {mmm([r['qps'] for r in m])}, errors {sum(r['errors'] for r in m)}")
    ok = max(statistics.median(cc), statistics.median(sc)) <= 0.05
    print(f"- bar (each proxy <= 0.05 vCPU): {'PASS' if ok else 'FAIL'}")
h = [r for r in rows if r["metric"] == "hbone"]
if h:
    print("\n## HBONE single connection vs Go crypto/tls (bench/hbonebench, same run)\n")
    names = list(dict.fromkeys(r["target"] for r in h))
    ok = True
    for n in names:
        xs = [r for r in h if r["target"] == n]
        ratio = statistics.median([r["ratio"] for r in xs])
        if n.startswith("hbone") and ratio < 0.6:
            ok = False
        print(f"- {n}: {mmm([r['mbps'] for r in xs])} MB/s, x{ratio:.2f} of TLS")
    print(f"- bar (every HBONE direction >= 0.6x TLS): {'PASS' if ok else 'FAIL'}")
PY
python3 bench/report.py library-summary "$RES" | tee -a "$OUT/report.md"
if command -v gnuplot >/dev/null; then
	gnuplot "$OUT/chart.gp" && echo "chart: $OUT/chart.png"
fi
