// SPDX-License-Identifier: Apache-2.0
//
// The reflection defence on the XDP fast path (issue 18, item 2). The program answers a plain
// Binding request only while every prefix level of its source is inside the same budget the
// workers' limiter gives Binding successes (`[limit]`: rate × the level's multiplier, over a
// window of burst_seconds); a source over budget, or on the allow or deny list, is passed to
// the workers, whose limiter (with its leak, hard cap, allow budgets and deny drop) decides.
// So the fast path never answers what the workers would refuse, and a prefix receives at most
// its XDP budget plus what the workers' limiter grants it: twice the workers' bound in the
// worst case, still a fixed plateau however hard it is attacked. With `[limit] mode = "off"`
// the fast path does not count; in "dry-run" it counts, answers everything, and passes
// nothing for being over budget (the workers count their own would_* decisions).
//
// Maps (filled by src/xdp/mod.rs from `[limit]`):
//   limit_config  ARRAY, one struct limit_config: mode (0 off, 1 enforce, 2 dry run), how
//                 many prefixes limit_listed holds (0: the trie is not looked up), the window in ns, the budget per window of each level (IPv4 /32 /24 /20 /18,
//                 IPv6 /128 /64 /56 /48) and the prefix lengths.
//   limit_table   LRU_HASH from struct limit_key (family, prefix length, masked address) to
//                 struct limit_value (the window's start and its count): shared by every CPU
//                 (a per-CPU table would give a victim spread over CPUs by RSS one budget per
//                 CPU); counts are added atomically, a window restarts when it has passed.
//                 Bounded (max_entries); under a flood of spoofed sources the LRU evicts the
//                 least recently used keys, which can forget a victim's count: it then gets
//                 at most one more window's budget from XDP before the count fills again.
//   limit_listed  LPM_TRIE of the allow and deny prefixes (IPv4 as IPv4-mapped IPv6): a match
//                 is passed to the workers.

#define LIMIT_LEVELS 4
#define LIMIT_TABLE_ENTRIES 262144
#define LIMIT_LISTED_ENTRIES 4096

struct limit_config {
	__u32 mode;
	__u32 listed;
	__u64 window_ns;
	__u64 budget[2][LIMIT_LEVELS];
	__u32 prefix_len[2][LIMIT_LEVELS];
};

struct limit_key {
	__u32 addr[4];
	__u8 family;
	__u8 len;
	__u16 pad;
};

struct limit_value {
	__u64 start_ns;
	__u64 count;
};

struct lpm_v6_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct limit_config);
} limit_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, LIMIT_TABLE_ENTRIES);
	__type(key, struct limit_key);
	__type(value, struct limit_value);
} limit_table SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, LIMIT_LISTED_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} limit_listed SEC(".maps");

enum limit_verdict {
	LIMIT_ANSWER = 0,
	LIMIT_OVER = 1,
	LIMIT_LISTED = 2,
};

// The address `addr` (network order; IPv4 in addr[0], the rest 0) cut to `len` bits.
static __always_inline void limit_mask(__u32 out[4], const __u32 addr[4], __u32 len)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 bits = len > (__u32)(32 * i) ? len - 32 * i : 0;
		__u32 mask = bits >= 32 ? 0xffffffff : (bits == 0 ? 0 : ~((1u << (32 - bits)) - 1));
		out[i] = addr[i] & bpf_htonl(mask);
	}
}

// Whether the source `addr` of `family` (0 IPv4, 1 IPv6) may be answered here at `now`.
static __always_inline enum limit_verdict limit_admit(int family, const __u32 addr[4], __u64 now)
{
	__u32 zero = 0;
	struct limit_config *cfg = bpf_map_lookup_elem(&limit_config, &zero);
	if (!cfg || cfg->mode == 0)
		return LIMIT_ANSWER;

	if (cfg->listed) {
		struct lpm_v6_key lpm = { .prefixlen = 128 };
		if (family == 0) {
			// IPv4 as IPv4-mapped IPv6 (::ffff:a.b.c.d).
			lpm.addr[10] = 0xff;
			lpm.addr[11] = 0xff;
			__builtin_memcpy(&lpm.addr[12], &addr[0], 4);
		} else {
			__builtin_memcpy(lpm.addr, addr, 16);
		}
		if (bpf_map_lookup_elem(&limit_listed, &lpm))
			return LIMIT_LISTED;
	}

	struct limit_key keys[LIMIT_LEVELS];
	struct limit_value *values[LIMIT_LEVELS];
	int over = 0;
	// Phase one: read every level; a prefix over budget charges nothing.
#pragma unroll
	for (int level = 0; level < LIMIT_LEVELS; level++) {
		struct limit_key *k = &keys[level];
		__builtin_memset(k, 0, sizeof(*k));
		k->family = family;
		k->len = cfg->prefix_len[family & 1][level];
		limit_mask(k->addr, addr, k->len);
		struct limit_value *v = bpf_map_lookup_elem(&limit_table, k);
		values[level] = v;
		if (v && now - v->start_ns < cfg->window_ns && v->count >= cfg->budget[family & 1][level])
			over = 1;
	}
	if (over)
		return cfg->mode == 2 ? LIMIT_ANSWER : LIMIT_OVER;
	// Phase two: charge every level (a new window, or a new key, starts at 1).
#pragma unroll
	for (int level = 0; level < LIMIT_LEVELS; level++) {
		struct limit_value *v = values[level];
		if (v && now - v->start_ns < cfg->window_ns) {
			__sync_fetch_and_add(&v->count, 1);
		} else if (v) {
			v->start_ns = now;
			v->count = 1;
		} else {
			struct limit_value fresh = { .start_ns = now, .count = 1 };
			bpf_map_update_elem(&limit_table, &keys[level], &fresh, BPF_ANY);
		}
	}
	return LIMIT_ANSWER;
}
