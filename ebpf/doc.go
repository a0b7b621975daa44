// Package ebpf holds meshlet's BPF programs for outbound and inbound
// capture and the Go code that loads and attaches them (cilium/ebpf).
//
// The programs (bpf/capture.c, compiled by bpf2go into capture_bpfel.o and
// capture_bpfeb.o with their Go bindings, all committed) are attached to a
// cgroup v2 directory: cgroup/connect4 and connect6 send an application's
// TCP connects to the proxy's outbound port on loopback and remember the
// original destination by socket cookie; sockops re-keys it by the client's local port when the
// connection is established; cgroup/getsockopt answers SO_ORIGINAL_DST for
// the proxy's accepted socket from that key, so a proxy written for
// iptables REDIRECT needs no change; cgroup/getpeername4/6 show the
// application its real peer. An optional fast path (sockops + sk_msg over a
// sockhash) hands data between same-node sockets without the TCP stack;
// splice(2) does not see such data, so those sockets need a read/write
// loop (see Accelerated).
//
// Inbound (bpf/inbound.c, inbound_bpf{el,eb}.{go,o}) is a separate object
// so that outbound capture still loads on kernels without it: an sk_lookup
// program attached to a network namespace hands new TCP connections from
// the network to the proxy's inbound listener, held in a sockmap, without
// rewriting them, so the accepted socket's local address is the original
// destination (as with TPROXY, without IP_TRANSPARENT). Ports of the proxy
// (ProxyPorts) and an exclude set pass, an optional include set limits
// it, and connections from the namespace itself are never steered. With
// no listener in the map, steerable connections are refused (fail closed).
// It needs Linux 5.17 (the context's ingress_ifindex).
//
// As in cilium/ebpf, parsing is separate from loading: LoadSpec parses the
// embedded object (pure, no kernel), Spec.Load creates the live maps and
// programs, Objects.Attach attaches them to cgroups. Whatever the kernel
// lacks wraps ErrNotSupported, which callers test to fall back to netfilter.
//
// Files: gen.go (go:generate), spec.go (Config, LoadSpec), inbound.go
// (InboundConfig, LoadInboundSpec), inbound_linux.go (Inbound: load,
// SetListener, AttachNetNS, pins, AttachedInbound), load_linux.go
// (live objects, Attach, pins), origdst_linux.go (map lookups, Accelerated,
// Stats), support_linux.go (feature probes), query_linux.go (what is
// attached to a cgroup). Off Linux only the spec side builds.
//
// ebpf must not import capture, dataplane, xds or cmd: capture imports it.
package ebpf
