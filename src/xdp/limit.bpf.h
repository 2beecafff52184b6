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
// The counts are a count-min sketch with one row per level: a fixed array of slots, a prefix
// counted in the slot its keyed hash picks. Prefixes that share a slot share its count, so a
// count is never lower than its prefix's own (no attacker can make a victim look lighter, and
// nothing is ever evicted or forgotten within a window); a collision can only make an innocent
// prefix look heavier, and then its requests go to the workers, whose exact limiter answers
// them. The hash key (seed) is random per load, so nobody outside can aim collisions. Every
// operation is an inlined array access and an atomic add: no helper call, no hash-table walk
// (the LRU hash this replaced cost ~300 ns per answer here, its four lookups and the clock
// read being most of the program's time).
//
// There is no clock read either: stunedge writes its monotonic milliseconds into limit_clock
// (the serve loop, every 50 ms). Should the process stall, the clock stops, windows stop
// restarting and sources stop earning new budget: the failure is towards passing, not
// answering.
//
// Maps (filled by src/xdp/mod.rs from `[limit]`):
//   limit_config  ARRAY, one struct limit_config: mode (0 off, 1 enforce, 2 dry run), how many
//                 prefixes limit_listed holds (0: the trie is not looked up), the window in ms,
//                 the hash's five random multipliers, the budget per window of each level (IPv4
//                 /32 /24 /20 /18, IPv6 /128 /64 /56 /48) and its prefix as a mask of four
//                 network-order words (IPv4: the first).
//   limit_clock   ARRAY, one __u32: milliseconds (wrapping), written by stunedge.
//   limit_slots   ARRAY of LIMIT_LEVELS * LIMIT_SLOTS __u64, shared by every CPU (a per-CPU
//                 table would give a victim spread over CPUs by RSS one budget per CPU): the
//                 high 32 bits the slot's window start (ms), the low 32 bits its count. Counts
//                 are added atomically; a window restarts when it has passed (a racing restart
//                 can lose a few counts: at most one per CPU).
//   limit_listed  LPM_TRIE of the allow and deny prefixes (IPv4 as IPv4-mapped IPv6): a match
//                 is passed to the workers.

#define LIMIT_LEVELS 4
// Slots per level: 2^18 (8 MiB for the four levels). A flood from random sources at 10 Mpps
// puts ~40 requests per second in each /32 slot, a tenth of the default budget.
#define LIMIT_SLOT_BITS 18
#define LIMIT_SLOTS (1u << LIMIT_SLOT_BITS)
#define LIMIT_LISTED_ENTRIES 4096

struct limit_config {
	__u32 mode;
	__u32 listed;
	__u32 window_ms;
	__u32 pad;
	__u64 seed[5];
	__u32 budget[2][LIMIT_LEVELS];
	__u32 mask[2][LIMIT_LEVELS][4];
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
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} limit_clock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LIMIT_LEVELS * LIMIT_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} limit_slots SEC(".maps");

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

// The slot of `level` for the source `addr` (network order; IPv4 in addr[0]) of `family`
// (0 IPv4, 1 IPv6): multiply-shift hashing of the vector (the family, the address's 32-bit
// words under the level's mask) with the random 64-bit multipliers of `cfg->seed`
// (Dietzfelbinger et al., 1997; Thorup, "High speed hashing for integers and strings", 2015:
// the sum of products of 64-bit keys and 32-bit words, its top bits): universal, so two
// prefixes share a slot with probability about 2^-LIMIT_SLOT_BITS whatever they are.
static __always_inline __u32 limit_slot(const struct limit_config *cfg, int family, int level, const __u32 addr[4])
{
	const __u32 *mask = cfg->mask[family & 1][level];
	__u64 h = cfg->seed[0] * (__u32)(family + 1) + cfg->seed[1] * (addr[0] & mask[0]);
	if (family) {
		h += cfg->seed[2] * (addr[1] & mask[1]);
		h += cfg->seed[3] * (addr[2] & mask[2]);
		h += cfg->seed[4] * (addr[3] & mask[3]);
	}
	return level * LIMIT_SLOTS + (__u32)(h >> (64 - LIMIT_SLOT_BITS));
}

// Whether the source `addr` of `family` (0 IPv4, 1 IPv6) may be answered here.
static __always_inline enum limit_verdict limit_admit(int family, const __u32 addr[4])
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

	__u32 *clock = bpf_map_lookup_elem(&limit_clock, &zero);
	__u32 now = clock ? *clock : 0;
	__u64 *slots[LIMIT_LEVELS];
	int over = 0;
	// Phase one: read every level; a prefix over budget charges nothing.
#pragma unroll
	for (int level = 0; level < LIMIT_LEVELS; level++) {
		__u32 index = limit_slot(cfg, family, level, addr);
		__u64 *slot = bpf_map_lookup_elem(&limit_slots, &index);
		if (!slot)
			return LIMIT_OVER; // cannot happen: the index is in range
		slots[level] = slot;
		__u64 v = *slot;
		if (now - (__u32)(v >> 32) < cfg->window_ms && (__u32)v >= cfg->budget[family & 1][level])
			over = 1;
	}
	if (over)
		return cfg->mode == 2 ? LIMIT_ANSWER : LIMIT_OVER;
	// Phase two: charge every level (an empty slot, or one whose window has passed, starts a
	// window at 1).
#pragma unroll
	for (int level = 0; level < LIMIT_LEVELS; level++) {
		__u64 *slot = slots[level];
		__u64 v = *slot;
		if ((__u32)v != 0 && now - (__u32)(v >> 32) < cfg->window_ms)
			__sync_fetch_and_add(slot, 1);
		else
			*slot = (__u64)now << 32 | 1;
	}
	return LIMIT_ANSWER;
}
