// SPDX-License-Identifier: Apache-2.0
//
// stunedge's XDP fast path: answers the plain STUN Binding request (RFC 8489 §6, the
// attribute-less request Chromium sends) in the driver's receive hook with XDP_TX, and passes
// everything else to the kernel's UDP stack, where stunedge's workers answer it. Built by
// scripts/build-xdp.sh (fixed flags, byte-identical output); the object is committed as
// src/xdp/stun.bpf.o and loaded by src/xdp/mod.rs.
//
// Fast path, every condition required (anything else: XDP_PASS with a counted reason):
//   Ethernet II without VLAN tag; IPv4 with IHL 5, no MF flag, fragment offset 0, a valid
//   header checksum; or IPv6 whose next header is UDP; UDP to a port in the config map;
//   UDP length 28 (8 + a 20-byte STUN header) and the IP length agreeing with it; STUN type
//   0x0001 (Binding request), magic cookie 0x2112A442, message length 0; a non-bogon source
//   (not port 0, not 0/8, multicast or reserved; not ::, not ff00::/8) and a unicast
//   destination; a valid UDP checksum (IPv4: 0 means none and is accepted; IPv6: 0 is invalid,
//   RFC 8200 §8.1, and passed so that the kernel drops it).
//
// Reply, in place: MACs, addresses and ports swapped; IPv4 TTL / IPv6 hop limit 64; IPv4 ID 0,
// DF set, TOS 0 (IPv6 traffic class and flow label 0); STUN type 0x0101, length 12 (IPv4) or
// 24 (IPv6), the same cookie and transaction ID, then XOR-MAPPED-ADDRESS (RFC 8489 §14.2) of
// the request's source: the bytes stunedge's socket path sends for this request under the
// default configuration (no SOFTWARE, no RESPONSE-ORIGIN). Both checksums are recomputed in
// full (the sizes are constant: IPv4 20 bytes of header; UDP 40 bytes (IPv4) or 52 (IPv6)).
//
// Maps:
//   stun_config  ARRAY, one entry: struct config { u32 enabled; u32 ports[8]; } ports in host
//                order, 0 = unused slot; enabled 0 passes everything (reason DISABLED).
//   stun_counters PERCPU_ARRAY of u64, FAMILIES * REASONS entries, index
//                family * REASONS + reason, where
//                family: 0 = none (not IP, or too short to tell), 1 = IPv4, 2 = IPv6;
//                reason: the R_* values below (R_ANSWERED counts XDP_TX answers, the others
//                XDP_PASS). Mirrored by `Family` and `Reason` in src/xdp/mod.rs: keep in step.
//
// Verifier notes: every packet access is preceded by a `ptr + size > data_end` check (an `==`
// comparison is not a bounds check); there is no loop with a variable bound; after
// bpf_xdp_adjust_tail every pointer is re-derived and re-checked.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "limit.bpf.h"

#define MAX_PORTS 8

enum family {
	F_NONE = 0,
	F_V4 = 1,
	F_V6 = 2,
	FAMILIES = 3,
};

enum reason {
	R_ANSWERED = 0,
	R_DISABLED = 1,
	R_NOT_IP = 2,
	R_NOT_UDP = 3,
	R_FRAGMENT = 4,
	R_IP_OPTIONS = 5,
	R_PORT = 6,
	R_TOO_SHORT = 7,
	R_NOT_STUN = 8,
	R_NOT_BINDING_REQUEST = 9,
	R_HAS_ATTRIBUTES = 10,
	R_LENGTH_MISMATCH = 11,
	R_BAD_CHECKSUM = 12,
	R_ZERO_CHECKSUM = 13,
	R_BAD_IP_CHECKSUM = 14,
	R_BOGON = 15,
	R_TAIL_GROW_FAILED = 16,
	R_LIMITED = 17,
	R_LISTED = 18,
	REASONS = 19,
	// Not counted: the reply could not be written after the tail grew (cannot happen).
	R_ABORT = -1,
};

struct config {
	__u32 enabled;
	__u32 ports[MAX_PORTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} stun_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FAMILIES * REASONS);
	__type(key, __u32);
	__type(value, __u64);
} stun_counters SEC(".maps");

// RFC 8489 §5: the magic cookie; §14.2: the XOR-MAPPED-ADDRESS type.
#define STUN_MAGIC_COOKIE 0x2112A442
#define STUN_BINDING_REQUEST 0x0001
#define STUN_BINDING_SUCCESS 0x0101
#define STUN_ATTR_XOR_MAPPED_ADDRESS 0x0020
#define STUN_HEADER 20
#define UDP_HEADER 8
#define REPLY_TTL 64

// The request's UDP datagram: header + bare STUN header.
#define REQ_UDP_LEN (UDP_HEADER + STUN_HEADER)
// The reply's STUN attribute: 4-byte TLV header + family/port + address.
#define XMA4_LEN (4 + 4 + 4)
#define XMA6_LEN (4 + 4 + 16)

struct stun_hdr {
	__be16 type;
	__be16 len;
	__be32 cookie;
	__u8 tid[12];
};

static __always_inline int count(int family, int reason)
{
	__u32 key = family * REASONS + reason;
	__u64 *n = bpf_map_lookup_elem(&stun_counters, &key);

	if (n)
		*n += 1;
	return reason == R_ANSWERED ? XDP_TX : XDP_PASS;
}

// The one's-complement sum folded to 16 bits (the 32-bit word sums below fold to the same
// 16-bit sum as 16-bit words would: RFC 1071 §2(B)).
static __always_inline __u16 fold(__u64 sum)
{
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

// Adds the `bytes` bytes at `p` (a constant multiple of 4) to `sum` as 32-bit words: half the
// loads of 16-bit words, unrolled, no variable bound.
#define SUM(sum, p, bytes)                                             \
	do {                                                           \
		const __u32 *w_ = (const __u32 *)(p);                  \
		_Pragma("unroll") for (int i_ = 0; i_ < (bytes) / 4; i_++) \
			(sum) += w_[i_];                               \
	} while (0)

static __always_inline int port_wanted(const struct config *cfg, __u16 port)
{
	// Return at the first match: an accumulated flag would give the verifier 2^8 paths.
	if (port == 0)
		return 0;
	_Pragma("unroll") for (int i = 0; i < MAX_PORTS; i++)
		if (cfg->ports[i] == port)
			return 1;
	return 0;
}

static __always_inline void swap_mac(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

// The STUN checks shared by both families: `udp_len` is the UDP length field (host order),
// already known to fit in the packet and to be at least REQ_UDP_LEN. Returns R_ANSWERED when
// the message is the plain Binding request.
// The limiter's verdict for `source` of `family` (0 IPv4, 1 IPv6) as a reason: R_ANSWERED to
// answer, R_LIMITED or R_LISTED to pass to the workers.
static __always_inline int limit_reason(int family, const __u32 source[4])
{
	switch (limit_admit(family, source, bpf_ktime_get_ns())) {
	case LIMIT_OVER:
		return R_LIMITED;
	case LIMIT_LISTED:
		return R_LISTED;
	default:
		return R_ANSWERED;
	}
}

static __always_inline int check_stun(const struct stun_hdr *stun, __u16 udp_len)
{
	__u16 type = bpf_ntohs(stun->type);
	__u16 len = bpf_ntohs(stun->len);

	// RFC 8489 §5: the top two bits are zero; §6: the cookie. A classic (RFC 3489) request
	// has no cookie and is the workers' to answer.
	if ((type & 0xC000) || stun->cookie != bpf_htonl(STUN_MAGIC_COOKIE))
		return R_NOT_STUN;
	if (type != STUN_BINDING_REQUEST)
		return R_NOT_BINDING_REQUEST;
	if (udp_len == REQ_UDP_LEN)
		return len == 0 ? R_ANSWERED : R_LENGTH_MISMATCH;
	return len == udp_len - REQ_UDP_LEN ? R_HAS_ATTRIBUTES : R_LENGTH_MISMATCH;
}

// The reason for the IPv4 frame at ctx (R_ANSWERED: the reply is in place).
static __always_inline int handle_v4(struct xdp_md *ctx, const struct config *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);
	struct stun_hdr *stun = (void *)(udp + 1);

	if ((void *)(ip + 1) > data_end)
		return R_TOO_SHORT;
	if (ip->version != 4)
		return R_NOT_IP;
	if (ip->ihl != 5)
		return R_IP_OPTIONS;
	// MF flag or a fragment offset (DF and the reserved bit are allowed).
	if (ip->frag_off & bpf_htons(0x3FFF))
		return R_FRAGMENT;
	if (ip->protocol != IPPROTO_UDP)
		return R_NOT_UDP;
	if ((void *)(udp + 1) > data_end)
		return R_TOO_SHORT;
	if (!port_wanted(cfg, bpf_ntohs(udp->dest)))
		return R_PORT;

	__u16 udp_len = bpf_ntohs(udp->len);
	__u16 tot_len = bpf_ntohs(ip->tot_len);
	if (udp_len < REQ_UDP_LEN)
		return R_TOO_SHORT;
	if (tot_len != sizeof(*ip) + udp_len)
		return R_LENGTH_MISMATCH;
	// The datagram the headers announce is not all there: a truncated frame.
	if (data + sizeof(*eth) + tot_len > data_end || (void *)(stun + 1) > data_end)
		return R_TOO_SHORT;
	int verdict = check_stun(stun, udp_len);
	if (verdict != R_ANSWERED)
		return verdict;

	// Bogons (RFC 6890): a source that cannot receive (port 0, 0/8, 224/4, 240/4), or a
	// destination that is not one host (multicast, reserved, broadcast).
	__u8 src_top = ((__u8 *)&ip->saddr)[0];
	__u8 dst_top = ((__u8 *)&ip->daddr)[0];
	if (udp->source == 0 || src_top == 0 || src_top >= 224 || dst_top >= 224 || ip->saddr == ip->daddr)
		return R_BOGON;

	__u64 sum = 0;
	SUM(sum, ip, sizeof(*ip));
	if (fold(sum) != 0xFFFF)
		return R_BAD_IP_CHECKSUM;
	if (udp->check != 0) {
		// Pseudo-header (RFC 768): addresses, protocol, UDP length; then the datagram.
		sum = bpf_htons(IPPROTO_UDP) + udp->len;
		SUM(sum, &ip->saddr, 8);
		SUM(sum, udp, REQ_UDP_LEN);
		if (fold(sum) != 0xFFFF)
			return R_BAD_CHECKSUM;
	}

	// The reflection defence (limit.bpf.h): over budget or listed, the workers decide.
	__u32 source[4] = { ip->saddr, 0, 0, 0 };
	int limited = limit_reason(0, source);
	if (limited != R_ANSWERED)
		return limited;

	// Grow to exactly the reply (a padded frame may shrink).
	int want = sizeof(*eth) + sizeof(*ip) + REQ_UDP_LEN + XMA4_LEN;
	if (bpf_xdp_adjust_tail(ctx, want - (int)(data_end - data)))
		return R_TAIL_GROW_FAILED;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + want > data_end)
		return R_ABORT; // cannot happen: the helper just made it this long
	eth = data;
	ip = data + sizeof(*eth);
	udp = (void *)(ip + 1);
	stun = (void *)(udp + 1);
	__u8 *attr = (void *)(stun + 1);

	swap_mac(eth);
	__be32 client = ip->saddr;
	__be16 client_port = udp->source;
	ip->saddr = ip->daddr;
	ip->daddr = client;
	ip->tos = 0;
	ip->tot_len = bpf_htons(want - sizeof(*eth));
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); // DF
	ip->ttl = REPLY_TTL;
	ip->check = 0;
	udp->source = udp->dest;
	udp->dest = client_port;
	udp->len = bpf_htons(REQ_UDP_LEN + XMA4_LEN);
	udp->check = 0;
	stun->type = bpf_htons(STUN_BINDING_SUCCESS);
	stun->len = bpf_htons(XMA4_LEN);
	// XOR-MAPPED-ADDRESS: type, length 8, reserved 0, family 1, port ^ 0x2112, address ^ cookie.
	*(__be16 *)(attr + 0) = bpf_htons(STUN_ATTR_XOR_MAPPED_ADDRESS);
	*(__be16 *)(attr + 2) = bpf_htons(XMA4_LEN - 4);
	*(__be16 *)(attr + 4) = bpf_htons(0x0001);
	*(__be16 *)(attr + 6) = client_port ^ bpf_htons(STUN_MAGIC_COOKIE >> 16);
	*(__be32 *)(attr + 8) = client ^ bpf_htonl(STUN_MAGIC_COOKIE);

	sum = 0;
	SUM(sum, ip, sizeof(*ip));
	ip->check = ~fold(sum);
	sum = bpf_htons(IPPROTO_UDP) + udp->len;
	SUM(sum, &ip->saddr, 8);
	SUM(sum, udp, REQ_UDP_LEN + XMA4_LEN);
	__u16 check = ~fold(sum);
	udp->check = check ? check : 0xFFFF; // RFC 768: a computed 0 is sent as all ones
	return R_ANSWERED;
}

// The reason for the IPv6 frame at ctx (R_ANSWERED: the reply is in place).
static __always_inline int handle_v6(struct xdp_md *ctx, const struct config *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip6 + 1);
	struct stun_hdr *stun = (void *)(udp + 1);

	if ((void *)(ip6 + 1) > data_end)
		return R_TOO_SHORT;
	if (ip6->version != 6)
		return R_NOT_IP;
	// Extension headers are not walked: a fragment header is a fragment, the rest not UDP.
	if (ip6->nexthdr == IPPROTO_FRAGMENT)
		return R_FRAGMENT;
	if (ip6->nexthdr != IPPROTO_UDP)
		return R_NOT_UDP;
	if ((void *)(udp + 1) > data_end)
		return R_TOO_SHORT;
	if (!port_wanted(cfg, bpf_ntohs(udp->dest)))
		return R_PORT;

	__u16 udp_len = bpf_ntohs(udp->len);
	if (udp_len < REQ_UDP_LEN)
		return R_TOO_SHORT;
	if (bpf_ntohs(ip6->payload_len) != udp_len)
		return R_LENGTH_MISMATCH;
	if (data + sizeof(*eth) + sizeof(*ip6) + udp_len > data_end || (void *)(stun + 1) > data_end)
		return R_TOO_SHORT;
	int verdict = check_stun(stun, udp_len);
	if (verdict != R_ANSWERED)
		return verdict;

	// Bogons (RFC 4291): source port 0, source :: or multicast, multicast destination.
	__u32 *s = (__u32 *)&ip6->saddr;
	__u32 *d = (__u32 *)&ip6->daddr;
	if (udp->source == 0 || (s[0] | s[1] | s[2] | s[3]) == 0 ||
	    ((__u8 *)&ip6->saddr)[0] == 0xFF || ((__u8 *)&ip6->daddr)[0] == 0xFF ||
	    (s[0] == d[0] && s[1] == d[1] && s[2] == d[2] && s[3] == d[3]))
		return R_BOGON;

	// RFC 8200 §8.1: a zero UDP checksum over IPv6 is invalid; the kernel drops it.
	if (udp->check == 0)
		return R_ZERO_CHECKSUM;
	__u64 sum = bpf_htons(IPPROTO_UDP) + udp->len;
	SUM(sum, &ip6->saddr, 32);
	SUM(sum, udp, REQ_UDP_LEN);
	if (fold(sum) != 0xFFFF)
		return R_BAD_CHECKSUM;

	__u32 source[4] = { s[0], s[1], s[2], s[3] };
	int limited = limit_reason(1, source);
	if (limited != R_ANSWERED)
		return limited;

	int want = sizeof(*eth) + sizeof(*ip6) + REQ_UDP_LEN + XMA6_LEN;
	if (bpf_xdp_adjust_tail(ctx, want - (int)(data_end - data)))
		return R_TAIL_GROW_FAILED;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + want > data_end)
		return R_ABORT; // cannot happen: the helper just made it this long
	eth = data;
	ip6 = data + sizeof(*eth);
	udp = (void *)(ip6 + 1);
	stun = (void *)(udp + 1);
	__u8 *attr = (void *)(stun + 1);

	swap_mac(eth);
	struct in6_addr client = ip6->saddr;
	__be16 client_port = udp->source;
	ip6->saddr = ip6->daddr;
	ip6->daddr = client;
	*(__be32 *)ip6 = bpf_htonl(0x60000000); // version 6, traffic class 0, flow label 0
	ip6->payload_len = bpf_htons(REQ_UDP_LEN + XMA6_LEN);
	ip6->hop_limit = REPLY_TTL;
	udp->source = udp->dest;
	udp->dest = client_port;
	udp->len = bpf_htons(REQ_UDP_LEN + XMA6_LEN);
	udp->check = 0;
	stun->type = bpf_htons(STUN_BINDING_SUCCESS);
	stun->len = bpf_htons(XMA6_LEN);
	// XOR-MAPPED-ADDRESS: type, length 20, reserved 0, family 2, port ^ 0x2112, address ^
	// (cookie || transaction ID).
	*(__be16 *)(attr + 0) = bpf_htons(STUN_ATTR_XOR_MAPPED_ADDRESS);
	*(__be16 *)(attr + 2) = bpf_htons(XMA6_LEN - 4);
	*(__be16 *)(attr + 4) = bpf_htons(0x0002);
	*(__be16 *)(attr + 6) = client_port ^ bpf_htons(STUN_MAGIC_COOKIE >> 16);
	*(__be32 *)(attr + 8) = client.in6_u.u6_addr32[0] ^ bpf_htonl(STUN_MAGIC_COOKIE);
	_Pragma("unroll") for (int i = 0; i < 3; i++)
		*(__u32 *)(attr + 12 + 4 * i) = client.in6_u.u6_addr32[i + 1] ^ *(__u32 *)(stun->tid + 4 * i);

	sum = bpf_htons(IPPROTO_UDP) + udp->len;
	SUM(sum, &ip6->saddr, 32);
	SUM(sum, udp, REQ_UDP_LEN + XMA6_LEN);
	__u16 check = ~fold(sum);
	udp->check = check ? check : 0xFFFF;
	return R_ANSWERED;
}

SEC("xdp")
int xdp_stun(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 zero = 0;

	if ((void *)(eth + 1) > data_end)
		return count(F_NONE, R_TOO_SHORT);
	int family = eth->h_proto == bpf_htons(ETH_P_IP)     ? F_V4
		     : eth->h_proto == bpf_htons(ETH_P_IPV6) ? F_V6
							     : F_NONE;
	// VLAN tags, ARP and everything else: the kernel's.
	if (family == F_NONE)
		return count(F_NONE, R_NOT_IP);
	struct config *cfg = bpf_map_lookup_elem(&stun_config, &zero);
	if (!cfg || !cfg->enabled)
		return count(family, R_DISABLED);
	int reason = family == F_V4 ? handle_v4(ctx, cfg) : handle_v6(ctx, cfg);
	if (reason == R_ABORT)
		return XDP_ABORTED;
	return count(family, reason);
}

// An empty program: the cost baseline for measurements, and the XDP_PASS program a veth peer
// needs so that XDP_TX frames sent to it are received (drivers/net/veth.c).
SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Apache-2.0";
