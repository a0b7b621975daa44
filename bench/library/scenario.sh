# Library latency scenario (issue 7), sourced by bench/run.sh and
# bench/library/run.sh. Needs from the caller: P, log, wait_quiet, ticks,
# rss_kb, TMP, RES, RUNS, LOAD_CPU, FORTIO_T, MESHLET_PID and a built
# "$TMP/librarybench"; the backend (nginx 18080) and the meshlet proxy (h1
# on 18083, bootstrap "$TMP/meshlet.yaml") must be running.
#
# The same fixed load (1000 rps, 16 workers) goes straight to the backend,
# through net/http to the local meshlet proxy, and through the meshlet
# library's in-process RoundTripper (same bootstrap, the h1 listener's
# route). The bar: the library adds less than half the latency the proxy
# adds (p50, over direct).
library_scenario() {
	local run=$1 mode url t0 t1 cpu
	for mode in direct proxy library; do
		case $mode in
		direct) url="http://127.0.0.1:$(P 18080)/" ;;
		proxy) url="http://127.0.0.1:$(P 18083)/" ;;
		library) url="http://backend/" ;;
		esac
		wait_quiet
		log "run $run/$RUNS library bench: $mode 1000 rps"
		t0=$(ticks "$MESHLET_PID")
		taskset -c "$LOAD_CPU" "$TMP/librarybench" -mode "$mode" -url "$url" -bootstrap "$TMP/meshlet.yaml" \
			-qps 1000 -c 16 -t "$FORTIO_T" > "$TMP/lib.json"
		t1=$(ticks "$MESHLET_PID")
		cpu=$(python3 -c "print(($t1-$t0)/$(getconf CLK_TCK)/${FORTIO_T%s})")
		python3 bench/report.py library "$mode" "$run" "$TMP/lib.json" "$cpu" >> "$RES"
	done
}
