#!/usr/bin/env bash
# Installs the benchmark peers (not needed by make test).
set -euo pipefail
pkgs=(haproxy nginx wrk nghttp2-client iperf3 gnuplot-nox)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
gobin="$(go env GOPATH)/bin"
[ -x "$gobin/fortio" ] || go install fortio.org/fortio@v1.68.2
[ -x "$gobin/ghz" ] || go install github.com/bojand/ghz/cmd/ghz@v0.120.0
