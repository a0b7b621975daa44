#!/usr/bin/env bash
# Installs what `make test` needs when it is missing: apt packages for the
# privileged and peer tests, and Go tools. Idempotent; quiet when all present.
set -euo pipefail

apt_pkgs=(iptables nftables iproute2 libpcap-dev)
missing=()
for p in "${apt_pkgs[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
	echo "deps: installing ${missing[*]}"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/staticcheck" ]; then
	echo "deps: installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
