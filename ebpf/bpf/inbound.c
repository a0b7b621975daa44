//go:build ignore

// Inbound capture with an sk_lookup program instead of netfilter.
//
// Attached to a network namespace, inbound_lookup runs when a TCP SYN finds
// no established socket and the kernel is about to pick a listener. It
// picks the proxy's inbound listener instead (bpf_sk_assign) without
// touching the packet, so the accepted socket's local address is the
// original destination, as with TPROXY, and no IP_TRANSPARENT is needed.
//
// Istio's inbound rules, mirrored: TCP only; traffic from this namespace
// itself (local clients, and the proxy's own delivery to the application)
// is never steered, which also breaks the loop; the proxy's
// own ports and the configured exclude set pass; with an include set only
// its ports are steered. With no listener in the map, steerable
// connections are refused, as a REDIRECT to a closed port would be: they
// never bypass the proxy.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

// The loopback device is always ifindex 1 in every network namespace.
#define LOOPBACK_IFINDEX 1

// inbound_config.flags
#define INB_INCLUDE 1 // only ports in inbound_include are steered
#define INB_NO_IPV6 2 // leave IPv6 connections alone

struct inbound_config {
	__u32 flags;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct inbound_config);
} inbound_config_map SEC(".maps");

// Ports in host order.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} inbound_exclude SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} inbound_include SEC(".maps");

// The proxy's inbound listener: slot 0 an AF_INET socket, slot 1 an
// AF_INET6 one (which also takes IPv4 unless it is v6-only).
#define SLOT_V4 0
#define SLOT_V6 1
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} inbound_listener SEC(".maps");

#define INB_STAT_STEERED 0
#define INB_STAT_REFUSED 1
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} inbound_stats SEC(".maps");

// barrier keeps clang from merging adjacent 32-bit context reads into one
// 64-bit read, which the verifier rejects.
#define barrier() asm volatile("" ::: "memory")

// local_origin reports whether the connection was opened from inside this
// namespace. Netfilter sees such packets come in on lo, but sk_lookup's
// ingress_ifindex is the device that holds the destination address (the
// route's output device), so it catches only 127.0.0.0/8 and ::1
// destinations. A local connection to the pod's own address has a local
// source too: a loopback one (the proxy binds 127.0.0.6 in Istio) or,
// without a bind, that same address. A packet from the network with a
// local source is a martian the routing code has dropped already.
static __always_inline int local_origin(struct bpf_sk_lookup *ctx)
{
	if (ctx->ingress_ifindex == LOOPBACK_IFINDEX)
		return 1;
	if (ctx->family == AF_INET) {
		__u32 r = ctx->remote_ip4;
		barrier();
		__u32 l = ctx->local_ip4;
		return (bpf_ntohl(r) >> 24) == 127 || r == l;
	}
	__u32 r0 = ctx->remote_ip6[0];
	barrier();
	__u32 r1 = ctx->remote_ip6[1];
	barrier();
	__u32 r2 = ctx->remote_ip6[2];
	barrier();
	__u32 r3 = ctx->remote_ip6[3];
	barrier();
	if (r0 == 0 && r1 == 0 && r2 == 0 && r3 == bpf_htonl(1))
		return 1;
	__u32 l0 = ctx->local_ip6[0];
	barrier();
	__u32 l1 = ctx->local_ip6[1];
	barrier();
	__u32 l2 = ctx->local_ip6[2];
	barrier();
	__u32 l3 = ctx->local_ip6[3];
	return r0 == l0 && r1 == l1 && r2 == l2 && r3 == l3;
}

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&inbound_stats, &i);
	if (v)
		*v += 1;
}

// assign hands the connection to the listener in slot; 0 on success.
static __always_inline long assign(struct bpf_sk_lookup *ctx, __u32 slot)
{
	struct bpf_sock *sk = bpf_map_lookup_elem(&inbound_listener, &slot);
	if (!sk)
		return -1;
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	return err;
}

SEC("sk_lookup")
int inbound_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	if (local_origin(ctx))
		return SK_PASS;
	__u32 zero = 0;
	struct inbound_config *cfg = bpf_map_lookup_elem(&inbound_config_map, &zero);
	if (!cfg)
		return SK_PASS;
	__u32 family = ctx->family;
	if (family == AF_INET6 && (cfg->flags & INB_NO_IPV6))
		return SK_PASS;
	__u16 port = (__u16)ctx->local_port; // host order
	if (bpf_map_lookup_elem(&inbound_exclude, &port))
		return SK_PASS;
	if ((cfg->flags & INB_INCLUDE) && !bpf_map_lookup_elem(&inbound_include, &port))
		return SK_PASS;
	long err;
	if (family == AF_INET) {
		err = assign(ctx, SLOT_V4);
		if (err)
			err = assign(ctx, SLOT_V6); // a dual-stack listener
	} else {
		err = assign(ctx, SLOT_V6);
	}
	if (err) {
		count(INB_STAT_REFUSED);
		return SK_DROP;
	}
	count(INB_STAT_STEERED);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
