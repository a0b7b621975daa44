#!/usr/bin/env bash
# The library latency scenario alone (bench/run.sh runs it with the rest):
# nginx backend and a meshlet proxy on cpu1, the load program on cpu0, the
# same fixed 1000 rps from 16 workers direct, via the proxy and via the
# library's in-process RoundTripper. Appends JSON lines to
# bench/out/library.jsonl and prints the summary.
#
#   RUNS=3 FORTIO_T=15s PORT_OFFSET=0 ./bench/library/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/bench/out
mkdir -p "$OUT"
RUNS=${RUNS:-3}
FORTIO_T=${FORTIO_T:-15s}
export PORT_OFFSET=${PORT_OFFSET:-0}
LOAD_CPU=${LOAD_CPU:-0}
SRV_CPU=${SRV_CPU:-1}
TMP=$(mktemp -d /tmp/meshlet-libbench.XXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	[ -f "$TMP/nginx-be.pid" ] && kill "$(cat "$TMP/nginx-be.pid")" 2>/dev/null || true
	sleep 0.3
	rm -rf "$TMP"
}
trap cleanup EXIT
P() { echo $(( $1 + PORT_OFFSET )); }
shiftports() {
	perl -pi -e 's/(?<=127\.0\.0\.1:)(18[01]\d\d|5201)\b/$1+$ENV{PORT_OFFSET}/ge; s/(port_value: )(18[01]\d\d|5201)\b/$1.($2+$ENV{PORT_OFFSET})/ge' "$@"
}
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
ticks() {
	local pid=$1 t=0 p
	for p in $pid $(pgrep -P "$pid" 2>/dev/null); do
		[ -r /proc/$p/stat ] || continue
		t=$((t + $(awk '{print $14+$15}' /proc/$p/stat)))
	done
	echo $t
}
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
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 not up" >&2; return 1; }

go build -o "$TMP/ztunnel" ./cmd/ztunnel
go build -o "$TMP/librarybench" ./bench/library
. bench/library/scenario.sh

mkdir -p "$TMP/nginx-be"
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
}
CONF
shiftports "$TMP/nginx-be.conf"
taskset -c "$SRV_CPU" nginx -c "$TMP/nginx-be.conf" -p "$TMP/nginx-be"
sed -e "s#@@#$TMP#g" bench/meshlet-bootstrap.yaml > "$TMP/meshlet.yaml"
shiftports "$TMP/meshlet.yaml"
GOMAXPROCS=1 taskset -c "$SRV_CPU" "$TMP/ztunnel" run --bootstrap "$TMP/meshlet.yaml" --log-level warn \
	--metrics "" & PIDS+=($!); MESHLET_PID=$!
for p in 18080 18083; do wait_port "$(P $p)"; done

RES=$OUT/library.jsonl
: > "$RES"
for run in $(seq "$RUNS"); do
	library_scenario "$run"
done
python3 bench/report.py library-summary "$RES"
