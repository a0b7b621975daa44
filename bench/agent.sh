#!/usr/bin/env bash
# Idle cost of `ztunnel agent` (issue 7): CPU and resident memory of the real
# binary while a proxyless grpc-go server and client are connected through it
# to a go-control-plane server and nothing changes. Istio's proxyless agent
# baseline is under 1 mCPU and about 25 MiB.
#
#   SECONDS_IDLE=30 RUNS=3 ./bench/agent.sh
#
# Runs integration.TestAgentIdleCost, which starts the rig (control plane, two
# agents, each launching its application), waits for a successful call and 3 s
# of settling, then reads /proc/PID/task/*/schedstat (CPU, ns) and
# /proc/PID/status (VmRSS) of each agent process over the window. Prints one
# AGENT-IDLE line per agent and run, and the median mCPU and RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_IDLE=${SECONDS_IDLE:-30}
RUNS=${RUNS:-1}
OUT=bench/out
mkdir -p "$OUT"
: >"$OUT/agent-idle.txt"
for run in $(seq 1 "$RUNS"); do
	AGENT_IDLE_SECONDS=$SECONDS_IDLE go test -count=1 -run '^TestAgentIdleCost$' -v ./integration/ |
		grep '^AGENT-IDLE' | tee -a "$OUT/agent-idle.txt"
done
# Median, min and max of a column (mawk has no asort).
stat() {
	sed -n "s/.* $1=\([0-9.]*\).*/\1/p" "$OUT/agent-idle.txt" | sort -n |
		awk -v scale="$2" '{ v[NR] = $1 / scale } END { printf "median %.3f (min %.3f, max %.3f) over %d agents", v[int((NR + 1) / 2)], v[1], v[NR], NR }'
}
echo "idle CPU, mCPU: $(stat mcpu 1)"
echo "idle RSS, MiB: $(stat rss_kib 1024)"
