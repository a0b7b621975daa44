#!/usr/bin/env bash
# Regenerates ebpf/{capture,inbound}_bpf{el,eb}.{go,o} from ebpf/bpf/*.c with bpf2go.
# Installs clang, llvm and libbpf-dev (bpf_helpers.h) with apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v clang >/dev/null || need+=(clang)
command -v llvm-strip >/dev/null || need+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
if [ ${#need[@]} -gt 0 ]; then
	echo "bpfgen: installing ${need[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
# The generated Go carries no toolchain paths, so the output is the same
# wherever it is built.
go generate ./ebpf/
echo "bpfgen: regenerated ebpf/{capture,inbound}_bpf{el,eb}.{go,o}" >&2
