//go:build ignore

// Outbound capture with cgroup BPF hooks instead of netfilter.
//
// connect4/connect6 rewrite an application's TCP connect to the proxy's
// outbound listener and remember the original destination under the
// socket's cookie; sockops re-keys it by the client's local port once the
// connection is established, which is the peer port the proxy sees on the
// accepted socket; getsockopt answers SO_ORIGINAL_DST for that accepted
// socket from the port key, so a proxy written for iptables REDIRECT works
// unchanged; getpeername4/6 show the application its real peer. The
// optional fast path puts same-node sockets in a sockhash and lets sk_msg
// hand their data straight to the peer socket.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define SOL_IP 0
#define SOL_IPV6 41
#define SO_ORIGINAL_DST 80 // also IP6T_SO_ORIGINAL_DST

// config.flags
#define FLAG_INCLUDE4 1  // only destinations in include4 are captured (v4)
#define FLAG_INCLUDE6 2  // same for v6
#define FLAG_NO_IPV6 4   // leave v6 destinations alone
#define FLAG_FASTPATH 8  // sockhash fast path for same-node sockets
#define FLAG_MARK 16     // proxy_mark is meaningful

struct config {
	__u32 proxy_uid;
	__u32 proxy_gid;
	__u32 proxy_mark;
	__u16 outbound_port; // host order
	__u16 flags;
};

// orig is where a captured connection was headed.
struct orig {
	__u32 addr[4];       // v4 in addr[0]; network order
	__u16 port;          // network order
	__u16 family;        // of the original destination
	__u16 proxy_family;  // of the connection the proxy accepts
	__u16 pad;
};

// port_key finds an original destination from the proxy's accepted
// socket: same netns, its peer port, the family it sees.
struct port_key {
	__u64 netns;
	__u32 port;   // client's local port, host order
	__u32 family;
};

struct lpm4 {
	__u32 prefixlen;
	__u32 addr;
};

struct lpm6 {
	__u32 prefixlen;
	__u32 addr[4];
};

// sock_key is a connection's 4-tuple as its own socket sees it.
struct sock_key {
	__u32 sip[4];
	__u32 dip[4];
	__u32 sport; // host order
	__u32 dport; // host order
	__u32 family;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config_map SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u16);
	__type(value, __u8);
} exclude_ports SEC(".maps");

#define LPM(name, keytype)                            \
	struct {                                      \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE);  \
		__uint(max_entries, 256);             \
		__uint(map_flags, BPF_F_NO_PREALLOC); \
		__type(key, keytype);                 \
		__type(value, __u8);                  \
	} name SEC(".maps")

LPM(exclude4, struct lpm4);
LPM(exclude6, struct lpm6);
LPM(include4, struct lpm4);
LPM(include6, struct lpm6);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct orig);
} orig_by_cookie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct port_key);
	__type(value, struct orig);
} orig_by_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sock_key);
	__type(value, __u64);
} fastpath SEC(".maps");

// stats counts events for tests and metrics; index STAT_*.
#define STAT_CAPTURED 0
#define STAT_FASTPATH 1
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &i);
	if (v)
		*v += 1;
}

// barrier keeps clang from merging adjacent 32-bit context accesses into
// one 64-bit access, which the verifier rejects.
#define barrier() asm volatile("" ::: "memory")

static __always_inline struct config *get_config(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config_map, &zero);
}

// own reports whether the connecting socket is the proxy's.
static __always_inline int own(struct config *cfg, struct bpf_sock_addr *ctx)
{
	__u64 ug = bpf_get_current_uid_gid();
	if ((__u32)ug == cfg->proxy_uid || (__u32)(ug >> 32) == cfg->proxy_gid)
		return 1;
	if (cfg->flags & FLAG_MARK) {
		struct bpf_sock *sk = ctx->sk;
		if (sk && sk->mark == cfg->proxy_mark)
			return 1;
	}
	return 0;
}

static __always_inline int excluded_port(__u16 port)
{
	return bpf_map_lookup_elem(&exclude_ports, &port) != NULL;
}

static __always_inline int skip4(struct config *cfg, __u32 ip, __u16 port)
{
	if ((bpf_ntohl(ip) >> 24) == 127)
		return 1;
	if (excluded_port(port))
		return 1;
	struct lpm4 k = {.prefixlen = 32, .addr = ip};
	if (bpf_map_lookup_elem(&exclude4, &k))
		return 1;
	if ((cfg->flags & FLAG_INCLUDE4) && !bpf_map_lookup_elem(&include4, &k))
		return 1;
	return 0;
}

static __always_inline void redirect4(struct bpf_sock_addr *ctx, struct config *cfg)
{
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(cfg->outbound_port);
}

SEC("cgroup/connect4")
int connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct config *cfg = get_config();
	if (!cfg || cfg->outbound_port == 0 || own(cfg, ctx))
		return 1;
	__u32 ip = ctx->user_ip4;
	__u16 nport = (__u16)ctx->user_port;
	if (skip4(cfg, ip, bpf_ntohs(nport)))
		return 1;
	struct orig o = {.port = nport, .family = AF_INET, .proxy_family = AF_INET};
	o.addr[0] = ip;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&orig_by_cookie, &cookie, &o, BPF_ANY);
	count(STAT_CAPTURED);
	redirect4(ctx, cfg);
	return 1;
}

SEC("cgroup/connect6")
int connect6(struct bpf_sock_addr *ctx)
{
	if (ctx->type != SOCK_STREAM)
		return 1;
	struct config *cfg = get_config();
	if (!cfg || cfg->outbound_port == 0 || own(cfg, ctx))
		return 1;
	__u32 a0 = ctx->user_ip6[0];
	barrier();
	__u32 a1 = ctx->user_ip6[1];
	barrier();
	__u32 a2 = ctx->user_ip6[2];
	barrier();
	__u32 a3 = ctx->user_ip6[3];
	__u16 nport = (__u16)ctx->user_port;
	__u16 port = bpf_ntohs(nport);
	__u64 cookie = bpf_get_socket_cookie(ctx);

	if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) {
		// A v4-mapped destination: the kernel connects over IPv4, so
		// the proxy sees an IPv4 peer.
		if (skip4(cfg, a3, port))
			return 1;
		struct orig o = {.port = nport, .family = AF_INET, .proxy_family = AF_INET};
		o.addr[0] = a3;
		bpf_map_update_elem(&orig_by_cookie, &cookie, &o, BPF_ANY);
		count(STAT_CAPTURED);
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
		barrier();
		ctx->user_port = bpf_htons(cfg->outbound_port);
		return 1;
	}
	if (cfg->flags & FLAG_NO_IPV6)
		return 1;
	if (a0 == 0 && a1 == 0 && a2 == 0 && a3 == bpf_htonl(1))
		return 1; // ::1
	if (excluded_port(port))
		return 1;
	struct lpm6 k = {.prefixlen = 128};
	k.addr[0] = a0;
	k.addr[1] = a1;
	k.addr[2] = a2;
	k.addr[3] = a3;
	if (bpf_map_lookup_elem(&exclude6, &k))
		return 1;
	if ((cfg->flags & FLAG_INCLUDE6) && !bpf_map_lookup_elem(&include6, &k))
		return 1;
	struct orig o = {.port = nport, .family = AF_INET6, .proxy_family = AF_INET6};
	o.addr[0] = a0;
	o.addr[1] = a1;
	o.addr[2] = a2;
	o.addr[3] = a3;
	bpf_map_update_elem(&orig_by_cookie, &cookie, &o, BPF_ANY);
	count(STAT_CAPTURED);
	ctx->user_ip6[0] = 0;
	barrier();
	ctx->user_ip6[1] = 0;
	barrier();
	ctx->user_ip6[2] = 0;
	barrier();
	ctx->user_ip6[3] = bpf_htonl(1);
	barrier();
	ctx->user_port = bpf_htons(cfg->outbound_port);
	return 1;
}

// local_pair reports whether both ends of the connection are on this
// node (loopback, or the same address), the fast path's condition.
static __always_inline int local_pair(struct bpf_sock_ops *skops)
{
	if (skops->family == AF_INET) {
		__u32 l = skops->local_ip4, r = skops->remote_ip4;
		return l == r || (bpf_ntohl(r) >> 24) == 127;
	}
	if (skops->family == AF_INET6) {
		__u32 r0 = skops->remote_ip6[0];
		barrier();
		__u32 r1 = skops->remote_ip6[1];
		barrier();
		__u32 r2 = skops->remote_ip6[2];
		barrier();
		__u32 r3 = skops->remote_ip6[3];
		return r0 == 0 && r1 == 0 && r2 == 0 && r3 == bpf_htonl(1);
	}
	return 0;
}

static __always_inline void add_fastpath(struct bpf_sock_ops *skops)
{
	struct sock_key k = {.family = skops->family, .sport = skops->local_port,
			     .dport = bpf_ntohl(skops->remote_port)};
	if (skops->family == AF_INET) {
		k.sip[0] = skops->local_ip4;
		k.dip[0] = skops->remote_ip4;
	} else {
		k.sip[0] = skops->local_ip6[0];
		barrier();
		k.sip[1] = skops->local_ip6[1];
		barrier();
		k.sip[2] = skops->local_ip6[2];
		barrier();
		k.sip[3] = skops->local_ip6[3];
		barrier();
		k.dip[0] = skops->remote_ip6[0];
		barrier();
		k.dip[1] = skops->remote_ip6[1];
		barrier();
		k.dip[2] = skops->remote_ip6[2];
		barrier();
		k.dip[3] = skops->remote_ip6[3];
	}
	bpf_sock_hash_update(skops, &fastpath, &k, BPF_ANY);
}

SEC("sockops")
int sock_ops(struct bpf_sock_ops *skops)
{
	struct config *cfg = get_config();
	if (!cfg)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		__u64 cookie = bpf_get_socket_cookie(skops);
		struct orig *o = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
		if (o) {
			struct port_key k = {.netns = bpf_get_netns_cookie(skops),
					     .port = skops->local_port,
					     .family = o->proxy_family};
			bpf_map_update_elem(&orig_by_port, &k, o, BPF_ANY);
		}
		if ((cfg->flags & FLAG_FASTPATH) && local_pair(skops))
			add_fastpath(skops);
		break;
	}
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if ((cfg->flags & FLAG_FASTPATH) && local_pair(skops))
			add_fastpath(skops);
		break;
	}
	return 1;
}

SEC("sk_msg")
int fastpath_msg(struct sk_msg_md *msg)
{
	// The peer's socket has this 4-tuple reversed.
	struct sock_key k = {.family = msg->family, .sport = bpf_ntohl(msg->remote_port),
			     .dport = msg->local_port};
	if (msg->family == AF_INET) {
		k.sip[0] = msg->remote_ip4;
		k.dip[0] = msg->local_ip4;
	} else {
		k.sip[0] = msg->remote_ip6[0];
		barrier();
		k.sip[1] = msg->remote_ip6[1];
		barrier();
		k.sip[2] = msg->remote_ip6[2];
		barrier();
		k.sip[3] = msg->remote_ip6[3];
		barrier();
		k.dip[0] = msg->local_ip6[0];
		barrier();
		k.dip[1] = msg->local_ip6[1];
		barrier();
		k.dip[2] = msg->local_ip6[2];
		barrier();
		k.dip[3] = msg->local_ip6[3];
	}
	// Without a peer in the map the message takes the normal path.
	if (bpf_msg_redirect_hash(msg, &fastpath, &k, BPF_F_INGRESS) == SK_PASS)
		count(STAT_FASTPATH);
	return SK_PASS;
}

// sockaddr_in and sockaddr_in6 as getsockopt(SO_ORIGINAL_DST) fills them.
struct sa4 {
	__u16 family;
	__u16 port;
	__u32 addr;
	__u8 zero[8];
};

struct sa6 {
	__u16 family;
	__u16 port;
	__u32 flowinfo;
	__u32 addr[4];
	__u32 scope_id;
};

SEC("cgroup/getsockopt")
int get_sockopt(struct bpf_sockopt *ctx)
{
	if (ctx->optname != SO_ORIGINAL_DST)
		return 1;
	if (ctx->level != SOL_IP && ctx->level != SOL_IPV6)
		return 1;
	struct bpf_sock *sk = ctx->sk;
	struct config *cfg = get_config();
	if (!sk || !cfg || sk->src_port != cfg->outbound_port)
		return 1;
	struct port_key k = {.netns = bpf_get_netns_cookie(ctx),
			     .port = bpf_ntohs(sk->dst_port),
			     .family = ctx->level == SOL_IP ? AF_INET : AF_INET6};
	struct orig *o = bpf_map_lookup_elem(&orig_by_port, &k);
	if (!o)
		return 1;
	if (o->family == AF_INET) {
		struct sa4 *sa = ctx->optval;
		if ((void *)(sa + 1) > ctx->optval_end)
			return 1;
		__builtin_memset(sa, 0, sizeof(*sa));
		sa->family = AF_INET;
		sa->port = o->port;
		sa->addr = o->addr[0];
		ctx->optlen = sizeof(*sa);
	} else {
		struct sa6 *sa = ctx->optval;
		if ((void *)(sa + 1) > ctx->optval_end)
			return 1;
		__builtin_memset(sa, 0, sizeof(*sa));
		sa->family = AF_INET6;
		sa->port = o->port;
		sa->addr[0] = o->addr[0];
		sa->addr[1] = o->addr[1];
		sa->addr[2] = o->addr[2];
		sa->addr[3] = o->addr[3];
		ctx->optlen = sizeof(*sa);
	}
	ctx->retval = 0;
	return 1;
}

SEC("cgroup/getpeername4")
int getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig *o = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
	if (!o || o->family != AF_INET)
		return 1;
	ctx->user_ip4 = o->addr[0];
	ctx->user_port = o->port;
	return 1;
}

SEC("cgroup/getpeername6")
int getpeername6(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct orig *o = bpf_map_lookup_elem(&orig_by_cookie, &cookie);
	if (!o)
		return 1;
	if (o->family == AF_INET) {
		ctx->user_ip6[0] = 0;
		barrier();
		ctx->user_ip6[1] = 0;
		barrier();
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		barrier();
		ctx->user_ip6[3] = o->addr[0];
	} else {
		ctx->user_ip6[0] = o->addr[0];
		barrier();
		ctx->user_ip6[1] = o->addr[1];
		barrier();
		ctx->user_ip6[2] = o->addr[2];
		barrier();
		ctx->user_ip6[3] = o->addr[3];
	}
	barrier();
	ctx->user_port = o->port;
	return 1;
}

char _license[] SEC("license") = "GPL";
