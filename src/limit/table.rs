//! The shared load table: fixed memory allocated once, relaxed atomics, no locks. A
//! Space-Saving sketch (Metwally, Agrawal and El Abbadi, "Efficient computation of frequent and
//! top-k elements in data streams", 2005) with exponential decay instead of counts, in the shape
//! Knot DNS 3.4 describes for its response rate limiting: lines of slots, each slot a key's
//! fingerprint and its decayed load.
//!
//! - A [`Key`] is a line index and a 16-bit fingerprint, both from one keyed 64-bit hash of the
//!   key's bits ([`Table::key`]); the hash key is random per table (per process), so nobody
//!   outside can plan collisions.
//! - A line is one 64-byte cache line of 8 slots; a slot is `fingerprint:16 | tick:20 |
//!   load:28`, one `u64`, so a key is read and updated with one atomic word and a level of the
//!   limiter costs one cache line. A key lives in at most one slot of its line.
//! - Loads decay exponentially with time constant τ ([`Decay`]), each slot from its own tick
//!   (16 ms units, wrapping every 4.6 hours; a load is forgotten within 20 time constants,
//!   20 minutes at most, and the serve loop's sweep empties forgotten slots): a key hit at a
//!   steady rate r settles at a load of `r · τ · price`. Nothing decays a line in bulk, so
//!   passing traffic writes one word per level and limited traffic none.
//! - A key that is not in its line is estimated at the line's smallest load, and when it is
//!   added it takes that slot *and inherits its load* (Space-Saving): every error makes a key
//!   look heavier, never lighter. A flood of new keys evicts only the lightest slots, so a heavy
//!   (limited) key survives any number of one-off keys and memory never grows.
//!
//! Reading ([`Table::probe`]) writes nothing, so a key that is over its limit costs no cache-line
//! ping-pong between the workers that see it. Must not allocate or lock after [`Table::new`].

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Key slots per line.
pub const SLOTS: usize = 8;
/// Bits of a slot's load.
const LOAD_BITS: u32 = 28;
/// The largest load a slot holds (charges saturate there).
pub const CAPACITY: u64 = (1 << LOAD_BITS) - 1;
/// The load at which a key is over its budget: half the capacity, so that answers admitted by
/// several workers at once (each read the key under the limit before any charged it) are still
/// counted above the limit rather than cut off by the saturation.
pub const LIMIT: u64 = CAPACITY / 2;
/// Bits of a slot's tick (its last update), above the load.
const TICK_BITS: u32 = 20;
const TICK_MASK: u64 = (1 << TICK_BITS) - 1;
/// Bits of a fingerprint (the top of the slot).
const FP_BITS: u32 = 64 - TICK_BITS - LOAD_BITS;
const FP_SHIFT: u32 = TICK_BITS + LOAD_BITS;
/// Fixed-point scale of decay factors: 1.0 is `1 << FACTOR_BITS`.
const FACTOR_BITS: u32 = 32;
const ONE: u64 = 1 << FACTOR_BITS;
/// Decay steps below this many ticks come from the fine table, above from the coarse one.
const FINE: usize = 256;
/// Beyond this many time constants a load has decayed to nothing (e^-20 · 2^28 < 1).
const FORGET_TAUS: f64 = 20.0;

/// One line: one cache line of slots.
#[repr(C, align(64))]
#[derive(Debug)]
struct Line([AtomicU64; SLOTS]);

/// Where a key lives: its line and its fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    line: u32,
    fp: u64,
}

impl Key {
    /// The same prefix in another namespace (answer class, leak budget…): the same line, a
    /// different fingerprint, so one cache line serves all of a prefix's budgets.
    #[inline]
    pub fn namespaced(self, namespace: u8) -> Key {
        // Odd multiples spread small namespace numbers over the fingerprint's bits.
        let fp = (self.fp ^ (namespace as u64).wrapping_mul(0x9E37)) & ((1 << FP_BITS) - 1);
        Key { line: self.line, fp }
    }
}

/// Exponential decay with time constant τ, in ticks, as fixed-point factors `e^(-dt/τ)`:
/// a fine table for steps under 256 ticks and a coarse one for multiples of 256.
#[derive(Debug, Clone, PartialEq)]
pub struct Decay {
    fine: Box<[u64]>,
    coarse: Box<[u64]>,
}

impl Decay {
    /// Decay with time constant `tau_ticks` (at least 1).
    pub fn new(tau_ticks: f64) -> Decay {
        let tau = tau_ticks.max(1.0);
        let factor = |dt: f64| ((-dt / tau).exp() * ONE as f64).round() as u64;
        let fine = (0..FINE).map(|dt| factor(dt as f64)).collect();
        let coarse_len = (FORGET_TAUS * tau / FINE as f64).ceil() as usize + 1;
        let coarse = (0..coarse_len).map(|k| factor((k * FINE) as f64)).collect();
        Decay { fine, coarse }
    }

    /// `load` (at most [`CAPACITY`]) after `dt` ticks.
    #[inline]
    pub fn apply(&self, load: u64, dt: u64) -> u64 {
        if dt == 0 {
            return load;
        }
        let fine = self.fine[(dt % FINE as u64) as usize];
        match self.coarse.get((dt / FINE as u64) as usize) {
            // Two 32-bit factors make one; a 28-bit load times it fits 64 bits.
            Some(&coarse) => (load * ((fine as u128 * coarse as u128) >> FACTOR_BITS) as u64) >> FACTOR_BITS,
            None => 0,
        }
    }
}

#[inline]
const fn load_of(slot: u64) -> u64 {
    slot & CAPACITY
}

#[inline]
const fn fp_of(slot: u64) -> u64 {
    slot >> FP_SHIFT
}

/// The slot's load decayed to tick `now` (a slot last written "after" `now`, by a worker whose
/// clock ran ahead, has not decayed).
#[inline]
fn decayed(slot: u64, now: u64, decay: &Decay) -> u64 {
    match since(slot, now) {
        Some(dt) => decay.apply(load_of(slot), dt),
        None => load_of(slot),
    }
}

/// The ticks from the slot's tick to `now`; `None` when the slot's tick is ahead of `now` (a
/// worker whose batch clock ran ahead wrote it: more than half the tick range back counts as
/// ahead).
#[inline]
fn since(slot: u64, now: u64) -> Option<u64> {
    let dt = now.wrapping_sub(slot >> LOAD_BITS) & TICK_MASK;
    (dt <= TICK_MASK / 2).then_some(dt)
}

/// A slot holding `fp` with `load` at tick `now`.
#[inline]
const fn slot(fp: u64, now: u64, load: u64) -> u64 {
    fp << FP_SHIFT | (now & TICK_MASK) << LOAD_BITS | load
}

/// The table: a power of two of lines, allocated once.
#[derive(Debug)]
pub struct Table {
    lines: Box<[Line]>,
    mask: u64,
    seed: [u64; 2],
}

impl Table {
    /// A table holding at least `entries` keys (rounded up to a power of two of 8-slot lines,
    /// at least one line), with a random hash key.
    pub fn new(entries: usize) -> Table {
        let lines = entries.div_ceil(SLOTS).max(1).next_power_of_two();
        // Two independent random words from the standard library's per-process random keys.
        let state = std::collections::hash_map::RandomState::new();
        let seed = [state.hash_one(0x5354_554E_u64), state.hash_one(0x4544_4745_u64) | 1];
        Table {
            lines: (0..lines).map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0)))).collect(),
            mask: lines as u64 - 1,
            seed,
        }
    }

    /// How many keys it holds: lines × 8.
    pub fn capacity(&self) -> usize {
        self.lines.len() * SLOTS
    }

    /// Its memory, in bytes.
    pub fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.lines)
    }

    /// Slots whose load, decayed to `now`, is still above zero. Walks the whole table: for the
    /// exporter at scrape time, never for the packet path.
    pub fn occupied(&self, now: u64, decay: &Decay) -> usize {
        self.lines.iter().flat_map(|line| &line.0).filter(|s| decayed(s.load(Relaxed), now, decay) > 0).count()
    }

    /// Lines in the table.
    pub fn lines(&self) -> usize {
        self.lines.len()
    }

    /// Empties the slots of `count` lines from line `from` (wrapping around) whose load has
    /// decayed to nothing by tick `now`, and returns the line to continue from. Run over the
    /// whole table every minute or so (the server's main loop does), it keeps every slot's tick
    /// within minutes of the clock, far inside the 20-bit tick's half range (2.3 hours), so a
    /// long-forgotten key can never be mistaken for a fresh one when the tick wraps. One CAS per
    /// emptied slot; a slot charged meanwhile is left alone.
    pub fn sweep(&self, from: usize, count: usize, now: u64, decay: &Decay) -> usize {
        let n = self.lines.len();
        for i in 0..count.min(n) {
            for s in &self.lines[(from + i) % n].0 {
                let v = s.load(Relaxed);
                if v != 0 && decayed(v, now, decay) == 0 {
                    let _ = s.compare_exchange(v, 0, Relaxed, Relaxed);
                }
            }
        }
        (from + count) % n
    }

    /// The key of `bits` (already masked to the prefix) under `tag` (family, prefix length,
    /// namespace: anything that must tell two equal bit patterns apart).
    #[inline]
    pub fn key(&self, tag: u64, bits: u128) -> Key {
        let h = self.hash(tag, bits);
        Key { line: (h & self.mask) as u32, fp: h >> FP_SHIFT }
    }

    /// The keyed 64-bit hash behind [`Table::key`] (also the limiter's random draws): each
    /// 64-bit input word (the prefix's low and high halves, the tag) enters through its own
    /// keyed multiply after the previous ones are mixed, so no two inputs collide by
    /// construction; with a random key per process, collisions cannot be planned from outside
    /// (no output of it ever leaves the process). Cheap: three multiply-xorshift rounds.
    #[inline]
    pub fn hash(&self, tag: u64, bits: u128) -> u64 {
        let [k0, k1] = self.seed;
        let round = |h: u64, word: u64, k: u64| {
            let x = (h ^ word).wrapping_mul(k);
            x ^ (x >> 31)
        };
        let mut h = round(k0, bits as u64, k1);
        h = round(h, (bits >> 64) as u64, 0xBF58_476D_1CE4_E5B9 ^ k0 | 1);
        h = round(h, tag, 0x94D0_49BB_1331_11EB ^ k1 | 1);
        h ^ (h >> 29)
    }

    /// Where the key is in its line (or the slot it would take) and its load decayed to tick
    /// `now`: the matching slot's, or, for a key not in its line, the lightest slot's, which it
    /// would inherit. Reads only; the fingerprint compare comes first, so a key that is
    /// present costs one decay, not eight.
    #[inline]
    pub fn probe(&self, key: Key, now: u64, decay: &Decay) -> Probe {
        // One read of the line: the match and, failing it, the lightest slot come from the same
        // snapshot, so a key another worker inserts meanwhile is not inserted twice.
        let line = &self.lines[key.line as usize].0;
        let words: [u64; SLOTS] = std::array::from_fn(|i| line[i].load(Relaxed));
        for (i, &v) in words.iter().enumerate() {
            if fp_of(v) == key.fp && load_of(v) != 0 {
                return Probe { index: i as u8, seen: v, load: decayed(v, now, decay) };
            }
        }
        lightest(&words, now, decay)
    }

    /// The key's load decayed to tick `now` ([`Table::probe`]'s). Reads only. (Tests.)
    #[cfg(test)]
    pub(crate) fn load(&self, key: Key, now: u64, decay: &Decay) -> u64 {
        self.probe(key, now, decay).load
    }

    /// Adds `price` to a probed key's load at tick `now` (saturating at [`CAPACITY`]): one CAS
    /// on the probed slot; when another worker changed it since the probe, probes again and
    /// retries until it lands (lock-free: each failure is another worker's success), so no
    /// charge is lost.
    #[inline]
    pub fn charge(&self, key: Key, mut probe: Probe, price: u64, now: u64, decay: &Decay) {
        let line = &self.lines[key.line as usize].0;
        loop {
            // Workers read the clock once per batch, so one may be a tick behind another: never
            // move a slot's tick back (the next reader would decay the same interval twice and
            // undercount; the lab's two-worker test caught it).
            let tick = if since(probe.seen, now).is_some() { now } else { (probe.seen >> LOAD_BITS) & TICK_MASK };
            let taken = slot(key.fp, tick, (probe.load + price).min(CAPACITY));
            if line[probe.index as usize].compare_exchange(probe.seen, taken, Relaxed, Relaxed).is_ok() {
                return;
            }
            probe = self.probe(key, now, decay);
        }
    }

    /// [`Table::probe`] then [`Table::charge`]. (Tests.)
    #[cfg(test)]
    pub(crate) fn add(&self, key: Key, price: u64, now: u64, decay: &Decay) {
        self.charge(key, self.probe(key, now, decay), price, now, decay);
    }
}

/// The slot a new key takes in a line read as `words`: an empty one, else the one with the
/// smallest decayed load (which the key inherits).
#[cold]
fn lightest(words: &[u64; SLOTS], now: u64, decay: &Decay) -> Probe {
    let mut lightest = Probe { index: 0, seen: words[0], load: u64::MAX };
    for (i, &v) in words.iter().enumerate() {
        if load_of(v) == 0 {
            return Probe { index: i as u8, seen: v, load: 0 };
        }
        let load = decayed(v, now, decay);
        if load < lightest.load {
            lightest = Probe { index: i as u8, seen: v, load };
        }
    }
    lightest
}

/// What [`Table::probe`] found: the slot, the word it read there, the key's decayed load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    index: u8,
    seen: u64,
    /// The key's load, decayed to the probe's tick (inherited when it is not in its line).
    pub load: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decay() -> Decay {
        Decay::new(100.0)
    }

    #[test]
    fn decay_is_exponential_and_forgets() {
        let d = decay();
        let load = 1u64 << 23;
        assert_eq!(d.apply(load, 0), load);
        for dt in [1u64, 50, 100, 255, 256, 300, 1000] {
            let want = load as f64 * (-(dt as f64) / 100.0).exp();
            let got = d.apply(load, dt) as f64;
            assert!((got - want).abs() <= want * 1e-6 + 2.0, "dt {dt}: {got} vs {want}");
        }
        assert_eq!(d.apply(CAPACITY, 2000), 0, "20 τ forgets everything");
        assert_eq!(d.apply(CAPACITY, u64::MAX), 0);
        // A load never grows by decaying, whatever the step.
        for dt in 0..2000 {
            assert!(d.apply(CAPACITY, dt) <= CAPACITY);
        }
    }

    #[test]
    fn a_key_accumulates_then_decays() {
        let t = Table::new(64);
        let d = decay();
        let k = t.key(1, 42);
        assert_eq!(t.load(k, 0, &d), 0);
        for _ in 0..10 {
            t.add(k, 1000, 0, &d);
        }
        assert_eq!(t.load(k, 0, &d), 10_000);
        let later = t.load(k, 100, &d);
        assert!((3670..=3680).contains(&later), "one τ later: {later}");
        t.add(k, 1000, 100, &d);
        let now = t.load(k, 100, &d);
        assert!((4670..=4680).contains(&now), "decayed then added: {now}");
    }

    #[test]
    fn loads_saturate_at_capacity() {
        let t = Table::new(16);
        let d = decay();
        let k = t.key(0, 7);
        for _ in 0..5 {
            t.add(k, CAPACITY / 2, 0, &d);
        }
        assert_eq!(t.load(k, 0, &d), CAPACITY);
    }

    #[test]
    fn distinct_tags_and_bits_are_distinct_keys() {
        let t = Table::new(1 << 16);
        let a = t.key(32, 0x0A00_0001);
        assert_eq!(a, t.key(32, 0x0A00_0001), "deterministic");
        assert_ne!(a, t.key(24, 0x0A00_0001), "the tag counts");
        assert_ne!(a, t.key(32, 0x0A00_0002), "the bits count");
        assert_ne!(a.namespaced(1), a.namespaced(2));
        assert_eq!(a.namespaced(1).line, a.line, "namespaces share the line");
        // Two tables hash differently: the key is random.
        let other = Table::new(1 << 16);
        let same = (0..64u128).filter(|&b| t.key(32, b) == other.key(32, b)).count();
        assert!(same < 4, "{same} of 64 keys equal across random seeds");
    }

    #[test]
    fn keys_spread_over_lines() {
        let t = Table::new(1 << 12);
        let lines = t.lines.len();
        let mut per_line = vec![0u32; lines];
        for b in 0..(lines as u128 * 8) {
            per_line[t.key(32, b << 8).line as usize] += 1;
        }
        let max = *per_line.iter().max().unwrap();
        assert!(max < 30, "worst line holds {max} of mean 8");
    }

    /// A fingerprint collision makes two keys share one budget: the error is towards limiting.
    #[test]
    fn a_colliding_key_shares_the_load() {
        let t = Table::new(16);
        let d = decay();
        let a = t.key(1, 1);
        let twin = Key { line: a.line, fp: a.fp };
        t.add(a, 5000, 0, &d);
        assert_eq!(t.load(twin, 0, &d), 5000);
    }

    /// Space-Saving: a heavy key survives a flood of one-off keys through its line, and a new
    /// key inherits the lightest load (never less than zero, never a fresh start for the heavy).
    #[test]
    fn heavy_hitters_survive_a_flood_of_new_keys() {
        let t = Table::new(SLOTS); // one line: every key competes for it
        let d = decay();
        let heavy = t.key(32, 0xC0FF_EE00);
        for _ in 0..100 {
            t.add(heavy, 10_000, 0, &d);
        }
        for b in 0..1_000_000u128 {
            let k = t.key(32, b);
            if k.fp != heavy.fp {
                t.add(k, 1, 0, &d);
            }
        }
        assert_eq!(t.load(heavy, 0, &d), 1_000_000, "the heavy key kept its whole load");
        // Every slot is taken, so a brand new key is estimated at the lightest load, not 0.
        let fresh = Key { line: heavy.line, fp: heavy.fp ^ 1 };
        assert!(t.load(fresh, 0, &d) > 0);
        assert_eq!(t.capacity(), SLOTS);
        assert_eq!(t.occupied(0, &d), SLOTS);
        assert_eq!(t.occupied(10_000, &d), 0, "all forgotten after 100 τ");
    }

    #[test]
    fn shared_between_threads_without_losing_much() {
        let t = std::sync::Arc::new(Table::new(1 << 10));
        let d = std::sync::Arc::new(decay());
        let k = t.key(32, 99);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (t, d) = (t.clone(), d.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        t.add(k, 1, 0, &d);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.load(k, 0, &d), 40_000, "a charge retries until it lands: none is lost");
    }

    /// A charge from a worker whose clock lags a tick never moves the slot's tick back (that
    /// would decay the same interval twice, letting two workers pass more than the budget).
    #[test]
    fn a_lagging_clock_never_moves_a_tick_back() {
        let t = Table::new(64);
        let d = decay();
        let k = t.key(1, 7);
        t.add(k, 10_000, 100, &d);
        t.add(k, 10_000, 99, &d); // a worker one tick behind
        // Read at tick 101: one tick of decay on 20,000, not two ticks on part of it.
        let want = d.apply(20_000, 1);
        assert_eq!(t.load(k, 101, &d), want);
    }

    /// The sweep empties dead slots (so a wrapped tick cannot revive them) and keeps live ones.
    #[test]
    fn the_sweep_empties_only_forgotten_slots() {
        let t = Table::new(64);
        let d = decay();
        let (old, live) = (t.key(1, 1), t.key(1, 2));
        t.add(old, 1_000_000, 0, &d);
        t.add(live, 1_000_000, 5000, &d);
        let mut at = 0;
        for _ in 0..t.lines() {
            at = t.sweep(at, 1, 5000, &d);
        }
        assert_eq!(at, 0, "a full round");
        assert_eq!(t.occupied(5000, &d), 1);
        assert!(t.load(live, 5000, &d) > 0);
        // Without the sweep, the dead slot would look fresh once the clock wraps round to it.
        let wrapped = 1 << TICK_BITS;
        assert_eq!(t.load(old, wrapped, &d), 0);
        let unswept = Table::new(64);
        unswept.add(old, 1_000_000, 0, &d);
        assert_eq!(unswept.load(old, wrapped, &d), 1_000_000, "the wrap this sweep exists for");
    }

    #[test]
    fn sizes() {
        assert_eq!(std::mem::size_of::<Line>(), 64);
        let t = Table::new(524_288);
        assert_eq!(t.capacity(), 524_288);
        assert_eq!(t.bytes(), 4 << 20);
        assert_eq!(Table::new(0).capacity(), SLOTS);
    }
}
