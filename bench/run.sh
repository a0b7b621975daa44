#!/usr/bin/env bash
# Benchmark harness: direct, haproxy, nginx and meshlet measured in one run.
# Placement (2 cores): load tools on cpu0; proxies and backends on cpu1, one
# worker each. Prints a table of medians (min-max) with ratios to haproxy and
# writes bench/out/results.json, bench/out/report.md and bench/out/chart.png.
#
#   RUNS=3 FORTIO_T=15s WRK_D=10s ./bench/run.sh
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

log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

go build -o "$ROOT/bin/ztunnel" ./cmd/ztunnel
go build -o "$TMP/grpcbackend" ./bench/grpcbackend

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
taskset -c "$SRV_CPU" nginx -c "$TMP/nginx-be.conf" -p "$TMP/nginx-be"
taskset -c "$SRV_CPU" "$TMP/grpcbackend" -addr 127.0.0.1:18090 & PIDS+=($!)
taskset -c "$SRV_CPU" iperf3 -s -B 127.0.0.1 -p 5201 >/dev/null 2>&1 & PIDS+=($!)

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
taskset -c "$SRV_CPU" nginx -c "$TMP/nginx-px.conf" -p "$TMP/nginx-px"

sed -e "s#@@#$TMP#g" bench/meshlet-bootstrap.yaml > "$TMP/meshlet.yaml"
GOMAXPROCS=1 taskset -c "$SRV_CPU" "$ROOT/bin/ztunnel" run --bootstrap "$TMP/meshlet.yaml" --log-level warn & PIDS+=($!); MESHLET_PID=$!

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }
for p in 18080 18089 18090 5201 18081 18091 18095 18096 18082 18092 18097 18083 18084 18093 18098 18099; do wait_port $p; done

NGINX_PX_PID=$(cat "$TMP/nginx-px.pid")
declare -A PIDOF=([direct]="" [haproxy]=$HAPROXY_PID [nginx]=$NGINX_PX_PID [meshlet]=$MESHLET_PID)
declare -A H1=([direct]=18080 [haproxy]=18081 [nginx]=18082 [meshlet]=18083)
declare -A H2C=([direct]=18089 [haproxy]=18091 [nginx]=18092 [meshlet]=18093)
declare -A GRPC=([direct]=18090 [haproxy]=18095 [nginx]=18097 [meshlet]=18098)
declare -A TCP=([direct]=5201 [haproxy]=18096 [meshlet]=18099)

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
				-json "$TMP/f.json" "http://127.0.0.1:18084/" >/dev/null 2>&1
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
if command -v gnuplot >/dev/null; then
	gnuplot "$OUT/chart.gp" && echo "chart: $OUT/chart.png"
fi
