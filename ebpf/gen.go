package ebpf

// The BPF object and its Go bindings are committed so that builds need no
// clang; scripts/bpfgen.sh regenerates them after bpf/capture.c changes.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -target bpfel,bpfeb -type config -type orig -type port_key -type sock_key capture bpf/capture.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -target bpfel,bpfeb -type inbound_config inbound bpf/inbound.c -- -O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu
