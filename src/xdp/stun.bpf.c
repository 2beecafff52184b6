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
//   0x0001 (Binding request), magic cookie 0x2112A442, message length 0 — or 8 with a valid
//   FINGERPRINT as the only attribute (the answer then carries one too); a non-bogon source
//   (not port 0, not 0/8, multicast or reserved; not ::, not ff00::/8) and a unicast
//   destination; a valid UDP checksum (IPv4: 0 means none and is accepted; IPv6: 0 is invalid,
//   RFC 8200 §8.1, and passed so that the kernel drops it).
//
// Reply, written afresh after the frame grows at the front (into the headroom XDP guarantees:
// bpf_xdp_adjust_head): MACs, addresses and ports swapped; IPv4 TTL / IPv6 hop limit 64;
// IPv4 ID 0, DF set, TOS 0 (IPv6 traffic class and flow label 0); STUN type 0x0101, length 12 (IPv4) or
// 24 (IPv6), the same cookie and transaction ID, then XOR-MAPPED-ADDRESS (RFC 8489 §14.2) of
// the request's source: the bytes stunedge's socket path sends for this request under the
// default configuration (no SOFTWARE, no RESPONSE-ORIGIN). Both checksums are recomputed in
// full (the sizes are constant: IPv4 20 bytes of header; UDP 40 bytes (IPv4) or 52 (IPv6)).
//
// Maps:
//   stun_config  ARRAY, one entry: struct config { u32 enabled; struct listen listen[8]; },
//                each listen entry { u32 kind; u32 addr[4]; }: kind = port (host order) |
//                family << 16 (4 or 6) | wildcard << 24, 0 = unused slot; addr the address in
//                network order (IPv4 in addr[0]), ignored for a wildcard. enabled 0 passes
//                everything (reason DISABLED).
//   stun_counters PERCPU_ARRAY of u64, FAMILIES * REASONS entries, index
//                family * REASONS + reason, where
//                family: 0 = none (not IP, or too short to tell), 1 = IPv4, 2 = IPv6;
//                reason: the R_* values below (R_ANSWERED counts XDP_TX answers, the others
//                XDP_PASS). Mirrored by `Family` and `Reason` in src/xdp/mod.rs: keep in step.
//
// Verifier notes: every packet access is preceded by a `ptr + size > data_end` check (an `==`
// comparison is not a bounds check); there is no loop with a variable bound; after
// bpf_xdp_adjust_head (and _tail) every pointer is re-derived and re-checked, and what the
// reply needs from the request is read into locals before.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "limit.bpf.h"

#define MAX_LISTEN 8

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
	R_DESTINATION = 6,
	R_TOO_SHORT = 7,
	R_NOT_STUN = 8,
	R_NOT_BINDING_REQUEST = 9,
	R_HAS_ATTRIBUTES = 10,
	R_LENGTH_MISMATCH = 11,
	R_BAD_CHECKSUM = 12,
	R_ZERO_CHECKSUM = 13,
	R_BAD_IP_CHECKSUM = 14,
	R_BOGON = 15,
	R_GROW_FAILED = 16,
	R_LIMITED = 17,
	R_LISTED = 18,
	R_BAD_FINGERPRINT = 19,
	REASONS = 20,
	// Not counted: check_stun's verdict for a request with FINGERPRINT and nothing else.
	R_FINGERPRINT_REQUEST = 100,
	// Not counted: the reply could not be written after the tail grew (cannot happen).
	R_ABORT = -1,
};

struct config {
	__u32 enabled;
	struct listen {
		__u32 kind;
		__u32 addr[4];
	} listen[MAX_LISTEN];
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
#define STUN_ATTR_FINGERPRINT 0x8028
// RFC 8489 §14.7: FINGERPRINT is the CRC-32 of the message before it, XORed with "STUN".
#define FINGERPRINT_XOR 0x5354554E
// The FINGERPRINT attribute: 4-byte TLV header + the CRC.
#define FP_LEN 8
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

// Whether a fast-pathed listener has the destination `port` (host order) at `addr` (network
// order; IPv4: addr[0] only) of `family` (4 or 6): the same address and port, or a wildcard
// address of the family on the port. Returns at the first match (an accumulated flag would
// give the verifier 2^8 paths).
static __always_inline int listened(const struct config *cfg, int family, __u16 port, const __u32 *addr)
{
	if (port == 0)
		return 0;
	__u32 kind = port | (__u32)family << 16;
	_Pragma("unroll") for (int i = 0; i < MAX_LISTEN; i++) {
		const struct listen *l = &cfg->listen[i];
		if (l->kind == (kind | 1u << 24))
			return 1;
		if (l->kind == kind && l->addr[0] == addr[0] &&
		    (family == 4 || (l->addr[1] == addr[1] && l->addr[2] == addr[2] && l->addr[3] == addr[3])))
			return 1;
	}
	return 0;
}

static __always_inline void reply_eth(struct ethhdr *eth, const struct ethhdr *request, __u16 proto)
{
	__builtin_memcpy(eth->h_dest, request->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, request->h_dest, ETH_ALEN);
	eth->h_proto = bpf_htons(proto);
}

// Makes the frame exactly `want` bytes long from a request whose headers announce `have`
// (the rest of the frame, if any, is link-layer padding): the reply grows at the front, into
// the headroom XDP guarantees every driver (XDP_PACKET_HEADROOM, 256 bytes), because tailroom
// is what a veth frame from a local socket lacks in native mode (research notes, xdp.md §3);
// the padding is cut from the tail. The caller then writes the whole reply afresh. Non-zero
// when a helper refused.
static __always_inline int resize(struct xdp_md *ctx, int want, int have)
{
	int padding = (int)(ctx->data_end - ctx->data) - have;
	if (bpf_xdp_adjust_head(ctx, have - want))
		return 1;
	return padding > 0 ? bpf_xdp_adjust_tail(ctx, -padding) : 0;
}

// The reply's UDP header (checksum 0 until the caller sums the datagram) and STUN header: a
// Binding success response with `stun_len` bytes of attributes and the request's transaction ID.
static __always_inline void reply_udp_stun(struct udphdr *udp, struct stun_hdr *stun, __be16 server_port,
					   __be16 client_port, int stun_len, const __u32 tid[3])
{
	udp->source = server_port;
	udp->dest = client_port;
	udp->len = bpf_htons(REQ_UDP_LEN + stun_len);
	udp->check = 0;
	stun->type = bpf_htons(STUN_BINDING_SUCCESS);
	stun->len = bpf_htons(stun_len);
	stun->cookie = bpf_htonl(STUN_MAGIC_COOKIE);
	__builtin_memcpy(stun->tid, tid, 12);
}

// The STUN checks shared by both families: `udp_len` is the UDP length field (host order),
// already known to fit in the packet and to be at least REQ_UDP_LEN. Returns R_ANSWERED when
// the message is the plain Binding request.
// CRC-32 (ISO-HDLC, reflected polynomial 0xEDB88320), byte-wise from a table in .rodata.
static const __u32 crc32_table[256] = {
	0x00000000, 0x77073096, 0xee0e612c, 0x990951ba, 0x076dc419, 0x706af48f,
	0xe963a535, 0x9e6495a3, 0x0edb8832, 0x79dcb8a4, 0xe0d5e91e, 0x97d2d988,
	0x09b64c2b, 0x7eb17cbd, 0xe7b82d07, 0x90bf1d91, 0x1db71064, 0x6ab020f2,
	0xf3b97148, 0x84be41de, 0x1adad47d, 0x6ddde4eb, 0xf4d4b551, 0x83d385c7,
	0x136c9856, 0x646ba8c0, 0xfd62f97a, 0x8a65c9ec, 0x14015c4f, 0x63066cd9,
	0xfa0f3d63, 0x8d080df5, 0x3b6e20c8, 0x4c69105e, 0xd56041e4, 0xa2677172,
	0x3c03e4d1, 0x4b04d447, 0xd20d85fd, 0xa50ab56b, 0x35b5a8fa, 0x42b2986c,
	0xdbbbc9d6, 0xacbcf940, 0x32d86ce3, 0x45df5c75, 0xdcd60dcf, 0xabd13d59,
	0x26d930ac, 0x51de003a, 0xc8d75180, 0xbfd06116, 0x21b4f4b5, 0x56b3c423,
	0xcfba9599, 0xb8bda50f, 0x2802b89e, 0x5f058808, 0xc60cd9b2, 0xb10be924,
	0x2f6f7c87, 0x58684c11, 0xc1611dab, 0xb6662d3d, 0x76dc4190, 0x01db7106,
	0x98d220bc, 0xefd5102a, 0x71b18589, 0x06b6b51f, 0x9fbfe4a5, 0xe8b8d433,
	0x7807c9a2, 0x0f00f934, 0x9609a88e, 0xe10e9818, 0x7f6a0dbb, 0x086d3d2d,
	0x91646c97, 0xe6635c01, 0x6b6b51f4, 0x1c6c6162, 0x856530d8, 0xf262004e,
	0x6c0695ed, 0x1b01a57b, 0x8208f4c1, 0xf50fc457, 0x65b0d9c6, 0x12b7e950,
	0x8bbeb8ea, 0xfcb9887c, 0x62dd1ddf, 0x15da2d49, 0x8cd37cf3, 0xfbd44c65,
	0x4db26158, 0x3ab551ce, 0xa3bc0074, 0xd4bb30e2, 0x4adfa541, 0x3dd895d7,
	0xa4d1c46d, 0xd3d6f4fb, 0x4369e96a, 0x346ed9fc, 0xad678846, 0xda60b8d0,
	0x44042d73, 0x33031de5, 0xaa0a4c5f, 0xdd0d7cc9, 0x5005713c, 0x270241aa,
	0xbe0b1010, 0xc90c2086, 0x5768b525, 0x206f85b3, 0xb966d409, 0xce61e49f,
	0x5edef90e, 0x29d9c998, 0xb0d09822, 0xc7d7a8b4, 0x59b33d17, 0x2eb40d81,
	0xb7bd5c3b, 0xc0ba6cad, 0xedb88320, 0x9abfb3b6, 0x03b6e20c, 0x74b1d29a,
	0xead54739, 0x9dd277af, 0x04db2615, 0x73dc1683, 0xe3630b12, 0x94643b84,
	0x0d6d6a3e, 0x7a6a5aa8, 0xe40ecf0b, 0x9309ff9d, 0x0a00ae27, 0x7d079eb1,
	0xf00f9344, 0x8708a3d2, 0x1e01f268, 0x6906c2fe, 0xf762575d, 0x806567cb,
	0x196c3671, 0x6e6b06e7, 0xfed41b76, 0x89d32be0, 0x10da7a5a, 0x67dd4acc,
	0xf9b9df6f, 0x8ebeeff9, 0x17b7be43, 0x60b08ed5, 0xd6d6a3e8, 0xa1d1937e,
	0x38d8c2c4, 0x4fdff252, 0xd1bb67f1, 0xa6bc5767, 0x3fb506dd, 0x48b2364b,
	0xd80d2bda, 0xaf0a1b4c, 0x36034af6, 0x41047a60, 0xdf60efc3, 0xa867df55,
	0x316e8eef, 0x4669be79, 0xcb61b38c, 0xbc66831a, 0x256fd2a0, 0x5268e236,
	0xcc0c7795, 0xbb0b4703, 0x220216b9, 0x5505262f, 0xc5ba3bbe, 0xb2bd0b28,
	0x2bb45a92, 0x5cb36a04, 0xc2d7ffa7, 0xb5d0cf31, 0x2cd99e8b, 0x5bdeae1d,
	0x9b64c2b0, 0xec63f226, 0x756aa39c, 0x026d930a, 0x9c0906a9, 0xeb0e363f,
	0x72076785, 0x05005713, 0x95bf4a82, 0xe2b87a14, 0x7bb12bae, 0x0cb61b38,
	0x92d28e9b, 0xe5d5be0d, 0x7cdcefb7, 0x0bdbdf21, 0x86d3d2d4, 0xf1d4e242,
	0x68ddb3f8, 0x1fda836e, 0x81be16cd, 0xf6b9265b, 0x6fb077e1, 0x18b74777,
	0x88085ae6, 0xff0f6a70, 0x66063bca, 0x11010b5c, 0x8f659eff, 0xf862ae69,
	0x616bffd3, 0x166ccf45, 0xa00ae278, 0xd70dd2ee, 0x4e048354, 0x3903b3c2,
	0xa7672661, 0xd06016f7, 0x4969474d, 0x3e6e77db, 0xaed16a4a, 0xd9d65adc,
	0x40df0b66, 0x37d83bf0, 0xa9bcae53, 0xdebb9ec5, 0x47b2cf7f, 0x30b5ffe9,
	0xbdbdf21c, 0xcabac28a, 0x53b39330, 0x24b4a3a6, 0xbad03605, 0xcdd70693,
	0x54de5729, 0x23d967bf, 0xb3667a2e, 0xc4614ab8, 0x5d681b02, 0x2a6f2b94,
	0xb40bbe37, 0xc30c8ea1, 0x5a05df1b, 0x2d02ef8d,
};

// The CRC-32 of `n` bytes at `p` (a constant n: the loop unrolls); the caller checked that
// they are in the packet.
#define CRC32(out, p, n)                                                                   \
	do {                                                                                \
		const __u8 *b_ = (const __u8 *)(p);                                         \
		__u32 c_ = 0xFFFFFFFF;                                                      \
		_Pragma("unroll") for (int i_ = 0; i_ < (n); i_++)                          \
			c_ = crc32_table[(c_ ^ b_[i_]) & 0xFF] ^ (c_ >> 8);                 \
		(out) = ~c_;                                                                \
	} while (0)

// The rest of a request's UDP checksum check: `sum` holds the pseudo-header; adds the datagram
// at `udp` (with the FINGERPRINT attribute when `fp`). 0 when it verifies, else the reason.
static __always_inline int request_checksum(__u64 sum, const void *udp, int fp, void *data_end)
{
	if (fp) {
		if (udp + REQ_UDP_LEN + FP_LEN > data_end)
			return R_TOO_SHORT;
		SUM(sum, udp, REQ_UDP_LEN + FP_LEN);
	} else {
		SUM(sum, udp, REQ_UDP_LEN);
	}
	return fold(sum) == 0xFFFF ? 0 : R_BAD_CHECKSUM;
}

// The end of an answer whose XOR-MAPPED-ADDRESS is `xma_len` bytes (a constant: IPv4's or
// IPv6's): FINGERPRINT when `fp` (RFC 8489 §7.3.1), then the UDP datagram added to `sum` (which
// holds the pseudo-header). Non-zero when the FINGERPRINT would not fit (cannot happen).
static __always_inline int answer_tail(__u64 *sum, struct stun_hdr *stun, void *udp, const int xma_len, int fp,
				       void *data_end)
{
	if (fp) {
		__u8 *tail = (__u8 *)(stun + 1) + xma_len;
		if ((void *)(tail + FP_LEN) > data_end)
			return 1;
		__u32 crc;
		CRC32(crc, stun, STUN_HEADER + xma_len);
		*(__be16 *)(tail + 0) = bpf_htons(STUN_ATTR_FINGERPRINT);
		*(__be16 *)(tail + 2) = bpf_htons(4);
		*(__be32 *)(tail + 4) = bpf_htonl(crc ^ FINGERPRINT_XOR);
		SUM(*sum, udp, REQ_UDP_LEN + xma_len + FP_LEN);
	} else {
		SUM(*sum, udp, REQ_UDP_LEN + xma_len);
	}
	return 0;
}

// The limiter's verdict for `source` of `family` (0 IPv4, 1 IPv6) as a reason: R_ANSWERED to
// answer, R_LIMITED or R_LISTED to pass to the workers.
static __always_inline int limit_reason(int family, const __u32 source[4])
{
	switch (limit_admit(family, source)) {
	case LIMIT_OVER:
		return R_LIMITED;
	case LIMIT_LISTED:
		return R_LISTED;
	default:
		return R_ANSWERED;
	}
}

static __always_inline int check_stun(const struct stun_hdr *stun, __u16 udp_len, void *data_end)
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
	if (len != udp_len - REQ_UDP_LEN)
		return R_LENGTH_MISMATCH;
	// FINGERPRINT and nothing else: answered too, with a FINGERPRINT (RFC 8489 §7.3.1).
	const __u8 *attr = (const __u8 *)(stun + 1);
	if (len == FP_LEN && (void *)(attr + FP_LEN) <= data_end &&
	    *(const __be16 *)attr == bpf_htons(STUN_ATTR_FINGERPRINT) &&
	    *(const __be16 *)(attr + 2) == bpf_htons(4)) {
		// RFC 8489 §7.3: a FINGERPRINT that does not verify is discarded (the workers drop it).
		__u32 crc;
		CRC32(crc, stun, STUN_HEADER);
		if (*(const __be32 *)(attr + 4) != bpf_htonl(crc ^ FINGERPRINT_XOR))
			return R_BAD_FINGERPRINT;
		return R_FINGERPRINT_REQUEST;
	}
	return R_HAS_ATTRIBUTES;
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
	if (!listened(cfg, 4, bpf_ntohs(udp->dest), &ip->daddr))
		return R_DESTINATION;

	__u16 udp_len = bpf_ntohs(udp->len);
	__u16 tot_len = bpf_ntohs(ip->tot_len);
	if (udp_len < REQ_UDP_LEN)
		return R_TOO_SHORT;
	if (tot_len != sizeof(*ip) + udp_len)
		return R_LENGTH_MISMATCH;
	// The datagram the headers announce is not all there: a truncated frame.
	if (data + sizeof(*eth) + tot_len > data_end || (void *)(stun + 1) > data_end)
		return R_TOO_SHORT;
	int verdict = check_stun(stun, udp_len, data_end);
	int fp = verdict == R_FINGERPRINT_REQUEST;
	if (verdict != R_ANSWERED && !fp)
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
		int bad = request_checksum(sum, udp, fp, data_end);
		if (bad)
			return bad;
	}

	// The reflection defence (limit.bpf.h): over budget or listed, the workers decide.
	__u32 source[4] = { ip->saddr, 0, 0, 0 };
	int limited = limit_reason(0, source);
	if (limited != R_ANSWERED)
		return limited;

	// What the reply needs from the request, read before the frame moves.
	struct ethhdr mac = *eth;
	__be32 client = ip->saddr;
	__be32 server = ip->daddr;
	__be16 client_port = udp->source;
	__be16 server_port = udp->dest;
	__u32 tid[3];
	__builtin_memcpy(tid, stun->tid, sizeof(tid));

	int extra = fp ? FP_LEN : 0;
	int want = sizeof(*eth) + sizeof(*ip) + REQ_UDP_LEN + XMA4_LEN + extra;
	if (resize(ctx, want, sizeof(*eth) + tot_len))
		return R_GROW_FAILED;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(*eth) + sizeof(*ip) + REQ_UDP_LEN + XMA4_LEN > data_end)
		return R_ABORT; // cannot happen: the helper just made it this long
	eth = data;
	ip = data + sizeof(*eth);
	udp = (void *)(ip + 1);
	stun = (void *)(udp + 1);
	__u8 *attr = (void *)(stun + 1);

	reply_eth(eth, &mac, ETH_P_IP);
	*(__be16 *)ip = bpf_htons(0x4500); // version 4, IHL 5, TOS 0
	ip->tot_len = bpf_htons(want - sizeof(*eth));
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000); // DF
	ip->ttl = REPLY_TTL;
	ip->protocol = IPPROTO_UDP;
	ip->check = 0;
	ip->saddr = server;
	ip->daddr = client;
	reply_udp_stun(udp, stun, server_port, client_port, XMA4_LEN + extra, tid);
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
	if (answer_tail(&sum, stun, udp, XMA4_LEN, fp, data_end))
		return R_ABORT; // cannot happen: the tail was grown for it
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
	if (!listened(cfg, 6, bpf_ntohs(udp->dest), (const __u32 *)&ip6->daddr))
		return R_DESTINATION;

	__u16 udp_len = bpf_ntohs(udp->len);
	if (udp_len < REQ_UDP_LEN)
		return R_TOO_SHORT;
	if (bpf_ntohs(ip6->payload_len) != udp_len)
		return R_LENGTH_MISMATCH;
	if (data + sizeof(*eth) + sizeof(*ip6) + udp_len > data_end || (void *)(stun + 1) > data_end)
		return R_TOO_SHORT;
	int verdict = check_stun(stun, udp_len, data_end);
	int fp = verdict == R_FINGERPRINT_REQUEST;
	if (verdict != R_ANSWERED && !fp)
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
	int bad = request_checksum(sum, udp, fp, data_end);
	if (bad)
		return bad;

	__u32 source[4] = { s[0], s[1], s[2], s[3] };
	int limited = limit_reason(1, source);
	if (limited != R_ANSWERED)
		return limited;

	// What the reply needs from the request, read before the frame moves.
	struct ethhdr mac = *eth;
	struct in6_addr client = ip6->saddr;
	struct in6_addr server = ip6->daddr;
	__be16 client_port = udp->source;
	__be16 server_port = udp->dest;
	__u32 tid[3];
	__builtin_memcpy(tid, stun->tid, sizeof(tid));

	int extra = fp ? FP_LEN : 0;
	int want = sizeof(*eth) + sizeof(*ip6) + REQ_UDP_LEN + XMA6_LEN + extra;
	if (resize(ctx, want, sizeof(*eth) + sizeof(*ip6) + udp_len))
		return R_GROW_FAILED;

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + sizeof(*eth) + sizeof(*ip6) + REQ_UDP_LEN + XMA6_LEN > data_end)
		return R_ABORT; // cannot happen: the helper just made it this long
	eth = data;
	ip6 = data + sizeof(*eth);
	udp = (void *)(ip6 + 1);
	stun = (void *)(udp + 1);
	__u8 *attr = (void *)(stun + 1);

	reply_eth(eth, &mac, ETH_P_IPV6);
	*(__be32 *)ip6 = bpf_htonl(0x60000000); // version 6, traffic class 0, flow label 0
	ip6->payload_len = bpf_htons(REQ_UDP_LEN + XMA6_LEN + extra);
	ip6->nexthdr = IPPROTO_UDP;
	ip6->hop_limit = REPLY_TTL;
	ip6->saddr = server;
	ip6->daddr = client;
	reply_udp_stun(udp, stun, server_port, client_port, XMA6_LEN + extra, tid);
	// XOR-MAPPED-ADDRESS: type, length 20, reserved 0, family 2, port ^ 0x2112, address ^
	// (cookie || transaction ID).
	*(__be16 *)(attr + 0) = bpf_htons(STUN_ATTR_XOR_MAPPED_ADDRESS);
	*(__be16 *)(attr + 2) = bpf_htons(XMA6_LEN - 4);
	*(__be16 *)(attr + 4) = bpf_htons(0x0002);
	*(__be16 *)(attr + 6) = client_port ^ bpf_htons(STUN_MAGIC_COOKIE >> 16);
	*(__be32 *)(attr + 8) = client.in6_u.u6_addr32[0] ^ bpf_htonl(STUN_MAGIC_COOKIE);
	_Pragma("unroll") for (int i = 0; i < 3; i++)
		*(__u32 *)(attr + 12 + 4 * i) = client.in6_u.u6_addr32[i + 1] ^ tid[i];

	sum = bpf_htons(IPPROTO_UDP) + udp->len;
	SUM(sum, &ip6->saddr, 32);
	if (answer_tail(&sum, stun, udp, XMA6_LEN, fp, data_end))
		return R_ABORT; // cannot happen: the tail was grown for it
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
