// Package capture steers an unmodified application's traffic into the proxy:
// outbound TCP to the outbound listener (15001), inbound TCP to the inbound
// listener (15006, by NAT REDIRECT or TPROXY) and DNS to the DNS proxy
// (15053), inside one network namespace or on the host.
//
// It owns the Redirector interface and its backends (iptables legacy and
// nft variants, nftables over netlink), the rule plans they program, the
// TPROXY policy route, and the original-destination lookup (SO_ORIGINAL_DST)
// for redirected connections.
//
// Everything it creates carries a MESHLET_ name (chains, the nftables table),
// so Install can first remove whatever a crashed earlier run left behind,
// which makes Install idempotent, and Remove can clean up fully.
//
// Files: capture.go (interface, Config, New), scope_linux.go (running inside
// a netns), origdst_*.go, transparent_linux.go (IP_TRANSPARENT listeners),
// iptables*.go (plan and exec backend), nftables_linux.go, route_linux.go
// (TPROXY fwmark rule and local route table).
// ebpf*.go is the "ebpf" backend: cgroup BPF programs from package ebpf
// attached to the scope's cgroup, pinned under a bpffs directory of ours
// (one per cgroup, so the next Install removes a crashed run's), falling
// back to iptables when the kernel lacks support.
//
// capture must not import dataplane, xds or cmd: dataplane imports capture
// for the original-destination lookup.
package capture
