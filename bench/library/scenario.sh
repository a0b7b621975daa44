# Library latency scenario (issue 7), sourced by bench/run.sh and
# bench/library/run.sh. Needs from the caller: P, log, wait_quiet, ticks,
# TMP, RES, RUNS, LOAD_CPU, FORTIO_T, MESHLET_PID and a built
# "$TMP/librarybench"; the backend (nginx 18080) and the meshlet proxy (h1
# on 18083, bootstrap "$TMP/meshlet.yaml") must be running.
#
# The same fixed load (1000 rps, 16 workers, FORTIO_T per mode) goes
# straight to the backend, through net/http to the local meshlet proxy, and
# through the meshlet library's in-process RoundTripper (same bootstrap, the
# h1 listener's route). The modes take turns in 1 s slices so load from
# elsewhere on the machine hits all three alike. The bar: the library adds
# less than half the latency the proxy adds (p50, over direct).
library_scenario() {
	local run=$1 t0 t1 cpu
	wait_quiet
	log "run $run/$RUNS library bench: direct/proxy/library 1000 rps, taking turns"
	t0=$(ticks "$MESHLET_PID")
	taskset -c "$LOAD_CPU" "$TMP/librarybench" -modes direct,proxy,library \
		-direct-url "http://127.0.0.1:$(P 18080)/" -proxy-url "http://127.0.0.1:$(P 18083)/" \
		-library-url "http://backend/" -bootstrap "$TMP/meshlet.yaml" \
		-qps 1000 -c 16 -t "$FORTIO_T" -slice 1s > "$TMP/lib.json"
	t1=$(ticks "$MESHLET_PID")
	# The proxy only works during the proxy mode's slices: FORTIO_T of them.
	cpu=$(python3 -c "print(($t1-$t0)/$(getconf CLK_TCK)/${FORTIO_T%s})")
	python3 bench/report.py library "$run" "$TMP/lib.json" "$cpu" >> "$RES"
}
