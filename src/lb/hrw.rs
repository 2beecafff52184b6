//! Weighted rendezvous (highest random weight, HRW) hashing over an immutable [`Pool`] of TURN
//! backends. For a client key, every candidate backend gets a score and the highest wins;
//! candidates are the backends of the client's address family that are healthy (the caller's
//! mask) and not draining (the configuration's `drain`). Only the clients of a backend that
//! goes down move, and they move to their next-highest backend; everyone else keeps theirs
//! (Thaler & Ravishankar 1998; research notes `turn-lb.md` §4). This module must not allocate,
//! lock, read a clock or panic in [`Pool::pick`]: it is the only part of the balancer that the
//! workers run, once per Allocate.
//!
//! **The score** is the "logarithmic method" of weighted rendezvous hashing (Schindelhauer &
//! Schomaker, "Weighted Distributed Hash Tables", SPAA 2005; the form `-w / ln(u)` in the research
//! notes §4): with `u` a hash of (seed, backend, client key) mapped uniformly into the open
//! interval (0, 1), `score = -weight / ln(u)`. `-ln(u)` is exponentially distributed, so the
//! backend with the highest score is backend `i` with probability `w_i / Σw` exactly, and
//! removing a backend changes no other backend's score.
//!
//! **The hash** is deterministic across processes and machines (never std's `RandomState`): the
//! fleet's 16-byte [`Seed`] gives two 64-bit keys; each 64-bit input word enters through its own
//! keyed multiply and the MurmurHash3 64-bit finalizer (`fmix64`, a bijection with full
//! avalanche), so two inputs that differ only in the last word never collide, and others
//! collide with probability about 2⁻⁶⁴. A backend's two identity words (from its address) are
//! computed once in [`Pool::new`]; a pick hashes the client key once and then costs two
//! `fmix64` and one `ln` per candidate. It is not a cryptographic PRF, and need not be: a client
//! that chose its source address to land on a given backend gains nothing it could not get by
//! sending its Allocate to that backend directly. The one platform-dependent step is `f64::ln`
//! (the C library's `log`): processes built alike agree bit for bit; two libraries that differ
//! in the last bit could flip a choice only where two scores agree to about 10⁻¹⁶.
//!
//! **The client key** ([`KeyRule`]): the client's IP address (the default), IPv6 addresses
//! masked to a prefix (default /64, [`DEFAULT_IPV6_PREFIX`]: one host or site's privacy
//! addresses stay together), or the full source address ([`HashKey::SourceAddress`]: IP and
//! port, a better spread behind carrier-grade NAT, at the price of a client's components and
//! retries from other ports landing on different backends). IPv4-mapped IPv6 clients
//! (`::ffff:a.b.c.d`) are keyed, and given backends, as the IPv4 address they carry.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The IPv6 prefix length a client's address is masked to by default: a /64 is one subnet, the
/// unit privacy addresses rotate within.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The fleet's seed: every process with the same seed and backends picks the same backend for a
/// client. Change it and most clients move.
pub type Seed = [u8; 16];

/// Domain tags, so a client key and a backend identity never hash alike.
const TAG_CLIENT: u64 = 0x434C_4945_4E54; // "CLIENT"
const TAG_BACKEND_A: u64 = 0x4241_434B_0041; // "BACK" "A"
const TAG_BACKEND_B: u64 = 0x4241_434B_0042; // "BACK" "B"

/// One TURN backend, as the configuration gives it. A backend with addresses of both families is
/// two entries, one per family; each has its own health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Where its clients are sent (the ALTERNATE-SERVER). Also its identity in the hash: the
    /// order of the backends in the configuration does not matter, an address does. An
    /// IPv4-mapped IPv6 address is taken as the IPv4 address it carries.
    pub addr: SocketAddr,
    /// Its share of the clients, relative to the others of its family (at least 1).
    pub weight: u32,
    /// Draining: it gets no new clients (those it has keep their relays; the balancer holds no
    /// state about them).
    pub drain: bool,
}

/// What a client is identified by (`turn_lb.hash_key`: "src_ip", "src_ip_port").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The client's IP address, IPv6 masked to [`KeyRule::ipv6_prefix`] (the default): all of a
    /// client's ICE components, transports and retries land on one backend.
    #[default]
    SourceIp,
    /// The client's IP address (IPv6 masked likewise) and source port: spreads the users behind
    /// one carrier-grade NAT address over the backends, but a client's allocations from
    /// different ports may land on different backends.
    SourceAddress,
}

/// How a client's source address becomes its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRule {
    /// The address alone, or with the port.
    pub hash_key: HashKey,
    /// The prefix length IPv6 client addresses are masked to (0..=128; 128 keys each address).
    pub ipv6_prefix: u8,
}

impl Default for KeyRule {
    fn default() -> KeyRule {
        KeyRule { hash_key: HashKey::SourceIp, ipv6_prefix: DEFAULT_IPV6_PREFIX }
    }
}

/// Why [`Pool::new`] refuses its backends. Indexes are positions in the list it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// A backend with weight 0 (a backend that should get no clients is drained instead).
    ZeroWeight {
        /// The backend's index.
        index: usize,
    },
    /// Two backends with one address (after IPv4-mapped addresses are unmapped).
    Duplicate {
        /// The first backend's index.
        first: usize,
        /// The second backend's index.
        second: usize,
    },
    /// An IPv6 prefix length over 128.
    Ipv6Prefix(u8),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PoolError::ZeroWeight { index } => {
                write!(f, "backend {index} has weight 0 (drain it instead)")
            }
            PoolError::Duplicate { first, second } => {
                write!(f, "backends {first} and {second} have the same address")
            }
            PoolError::Ipv6Prefix(len) => write!(f, "IPv6 prefix length {len} is over 128"),
        }
    }
}

impl std::error::Error for PoolError {}

/// The backend [`Pool::choose`] picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Its index in the list [`Pool::new`] was given (and in the `healthy` mask).
    pub index: usize,
    /// Its address.
    pub addr: SocketAddr,
}

/// One candidate, with what a pick needs precomputed.
#[derive(Debug, Clone, Copy)]
struct Entry {
    index: usize,
    addr: SocketAddr,
    drain: bool,
    weight: f64,
    ident: [u64; 2],
}

/// The backends and the key rule, immutable once built: the workers share it (behind the
/// handler snapshot, planned) and read it without a lock.
#[derive(Debug, Clone)]
pub struct Pool {
    backends: Vec<Backend>,
    v4: Vec<Entry>,
    v6: Vec<Entry>,
    keys: [u64; 2],
    rule: KeyRule,
}

impl Pool {
    /// The pool of `backends` (their order only fixes their indexes: the mask's and
    /// [`Choice::index`]), hashed with the fleet's `seed`, keying clients by `rule`.
    pub fn new(backends: &[Backend], seed: Seed, rule: KeyRule) -> Result<Pool, PoolError> {
        if rule.ipv6_prefix > 128 {
            return Err(PoolError::Ipv6Prefix(rule.ipv6_prefix));
        }
        let canonical: Vec<Backend> = backends.iter().map(|b| Backend { addr: canonical(b.addr), ..*b }).collect();
        for (index, b) in canonical.iter().enumerate() {
            if b.weight == 0 {
                return Err(PoolError::ZeroWeight { index });
            }
            if let Some(first) = canonical[..index].iter().position(|a| a.addr == b.addr) {
                return Err(PoolError::Duplicate { first, second: index });
            }
        }
        // The second key multiplies, so it is made odd (a bijection).
        let seed = u128::from_le_bytes(seed);
        let keys = [seed as u64, (seed >> 64) as u64 | 1];
        let mut pool = Pool { backends: canonical, v4: Vec::new(), v6: Vec::new(), keys, rule };
        for (index, b) in pool.backends.iter().enumerate() {
            let words = address_words(b.addr.ip(), 128, u64::from(b.addr.port()));
            let entry = Entry {
                index,
                addr: b.addr,
                drain: b.drain,
                weight: f64::from(b.weight),
                ident: [hash(keys, TAG_BACKEND_A, words), hash(keys, TAG_BACKEND_B, words)],
            };
            match b.addr {
                SocketAddr::V4(_) => pool.v4.push(entry),
                SocketAddr::V6(_) => pool.v6.push(entry),
            }
        }
        Ok(pool)
    }

    /// The backends, in the order given (IPv4-mapped addresses unmapped).
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// How clients are keyed.
    pub fn rule(&self) -> KeyRule {
        self.rule
    }

    /// The backend for `client`'s Allocate: the highest score among the backends of its family
    /// (after unmapping an IPv4-mapped address) with `healthy[index]` true and not draining;
    /// `None` when there is none. A backend past the end of `healthy` counts as down. O(backends
    /// of the family), no allocation, no lock, no panic.
    pub fn choose(&self, client: SocketAddr, healthy: &[bool]) -> Option<Choice> {
        self.choose_by(client, |index| healthy.get(index).copied().unwrap_or(false))
    }

    /// [`Pool::choose`] with the health of backend `index` asked of `healthy(index)` (the
    /// workers read it from the pool's shared [`State`](super::State), one relaxed load per
    /// candidate).
    #[inline]
    pub fn choose_by(&self, client: SocketAddr, healthy: impl Fn(usize) -> bool) -> Option<Choice> {
        let ip = client.ip().to_canonical();
        let port = match self.rule.hash_key {
            HashKey::SourceIp => 0,
            HashKey::SourceAddress => u64::from(client.port()),
        };
        let key = hash(self.keys, TAG_CLIENT, address_words(ip, self.rule.ipv6_prefix, port));
        let candidates = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        let mut best: Option<(f64, u64, &Entry)> = None;
        for e in candidates {
            if e.drain || !healthy(e.index) {
                continue;
            }
            let h = fmix64(fmix64(key ^ e.ident[0]) ^ e.ident[1]);
            // The logarithmic method: -ln(u) > 0 for u in (0, 1), so the score is finite.
            let score = e.weight / -unit(h).ln();
            // Ties (never in practice) go to the higher hash, not to the list order, so
            // processes whose configurations list the backends in different orders agree.
            let better = match best {
                None => true,
                Some((s, bh, _)) => score > s || (score == s && h > bh),
            };
            if better {
                best = Some((score, h, e));
            }
        }
        best.map(|(_, _, e)| Choice { index: e.index, addr: e.addr })
    }

    /// [`Pool::choose`]'s address.
    pub fn pick(&self, client: SocketAddr, healthy: &[bool]) -> Option<SocketAddr> {
        self.choose(client, healthy).map(|c| c.addr)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The words an address is hashed as: the family (in the tag word), the address bits (IPv6
/// masked to `ipv6_prefix`, at most 128), and `port` (0 when the port is not part of the key).
fn address_words(ip: IpAddr, ipv6_prefix: u8, port: u64) -> [u64; 4] {
    let (family, bits) = match ip {
        IpAddr::V4(v4) => (4, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(ipv6_prefix.min(128))).unwrap_or(0);
            (6, u128::from(v6) & mask)
        }
    };
    [family, bits as u64, (bits >> 64) as u64, port]
}

/// The keyed hash of a domain `tag` and four words. Each word enters through its own keyed
/// round after the previous ones are mixed (a bijection of the word for a given state).
fn hash(keys: [u64; 2], tag: u64, words: [u64; 4]) -> u64 {
    let [k0, k1] = keys;
    let mut h = fmix64(k0 ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    for w in words {
        h = fmix64((h ^ w).wrapping_mul(k1)).wrapping_add(k0);
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finalizer (Appleby): a bijection in which every input bit flips each
/// output bit with probability close to ½.
const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

/// A hash as a uniform float strictly inside (0, 1): the top 52 bits and a half, over 2⁵². Both
/// ends, 2⁻⁵³ and 1 − 2⁻⁵³, are exact in an f64, so `ln` is finite and never 0.
fn unit(h: u64) -> f64 {
    ((h >> 12) as f64 + 0.5) * (1.0 / (1u64 << 52) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SEED: Seed = *b"stunedge-fleet-1";

    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn v4_clients(n: usize, seed: u64) -> Vec<SocketAddr> {
        let mut s = seed;
        (0..n).map(|_| SocketAddr::new(Ipv4Addr::from(splitmix(&mut s) as u32).into(), 50_000)).collect()
    }

    fn backend(addr: &str, weight: u32) -> Backend {
        Backend { addr: addr.parse().unwrap(), weight, drain: false }
    }

    fn four() -> Vec<Backend> {
        vec![
            backend("192.0.2.1:3478", 1),
            backend("192.0.2.2:3478", 1),
            backend("192.0.2.3:3478", 2),
            backend("192.0.2.4:3478", 1),
        ]
    }

    fn picks(pool: &Pool, clients: &[SocketAddr], healthy: &[bool]) -> Vec<Option<usize>> {
        clients.iter().map(|&c| pool.choose(c, healthy).map(|c| c.index)).collect()
    }

    #[test]
    fn the_same_inputs_pick_the_same_backend_in_separately_built_pools() {
        let backends = four();
        let a = Pool::new(&backends, SEED, KeyRule::default()).unwrap();
        let mut reversed = backends.clone();
        reversed.reverse();
        let b = Pool::new(&reversed, SEED, KeyRule::default()).unwrap();
        let clients = v4_clients(10_000, 1);
        let up = [true; 4];
        for &c in &clients {
            let pa = a.pick(c, &up).unwrap();
            assert_eq!(a.pick(c, &up), Some(pa));
            // The order of the configuration does not matter, the addresses do.
            assert_eq!(b.pick(c, &up), Some(pa));
        }
        // A fixed vector, so a change to the hash (which would move a fleet's clients) is seen.
        let fixed: Vec<_> = clients[..8].iter().map(|&c| a.choose(c, &up).unwrap().index).collect();
        assert_eq!(fixed, FIXED_PICKS);
        // Another seed is another assignment.
        let other = Pool::new(&backends, *b"another-fleet-02", KeyRule::default()).unwrap();
        let moved = clients.iter().filter(|&&c| other.pick(c, &up) != a.pick(c, &up)).count();
        assert!(moved > 5_000, "{moved}");
    }

    const FIXED_PICKS: [usize; 8] = [3, 1, 2, 3, 2, 0, 2, 3];

    #[test]
    fn clients_spread_in_proportion_to_the_weights() {
        for weights in [&[1u32, 1, 2][..], &[1, 2, 3, 4], &[1, 1, 1, 1, 1, 1, 1, 1], &[1, 100]] {
            let backends: Vec<_> =
                weights.iter().enumerate().map(|(i, &w)| backend(&format!("198.51.100.{}:3478", i + 1), w)).collect();
            let pool = Pool::new(&backends, SEED, KeyRule::default()).unwrap();
            // Random addresses, and 100,000 consecutive ones (10.0.0.0 up: real clients cluster).
            let consecutive: Vec<_> =
                (0..100_000u32).map(|i| SocketAddr::new(Ipv4Addr::from(0x0A00_0000 + i).into(), 50_000)).collect();
            for (name, clients) in [("random", v4_clients(100_000, 7)), ("consecutive", consecutive)] {
                let mut counts = vec![0usize; weights.len()];
                for i in picks(&pool, &clients, &vec![true; weights.len()]) {
                    counts[i.unwrap()] += 1;
                }
                let total: u32 = weights.iter().sum();
                for (i, &w) in weights.iter().enumerate() {
                    let expected = f64::from(w) / f64::from(total);
                    let share = counts[i] as f64 / clients.len() as f64;
                    println!("{name} clients, weights {weights:?}: backend {i} expected {expected:.4} got {share:.4}");
                    // ±1 % absolute: about 7 standard deviations of a fair draw at 100,000 clients.
                    assert!(
                        (share - expected).abs() < 0.01,
                        "{name}, weights {weights:?}: backend {i}: {share} vs {expected}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_backend_going_down_moves_only_its_own_clients() {
        let pool = Pool::new(&four(), SEED, KeyRule::default()).unwrap();
        let clients = v4_clients(50_000, 3);
        let before = picks(&pool, &clients, &[true; 4]);
        for down in 0..4 {
            let mut healthy = [true; 4];
            healthy[down] = false;
            let after = picks(&pool, &clients, &healthy);
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                if *b == Some(down) {
                    moved += 1;
                    assert!(a.is_some() && *a != Some(down));
                } else {
                    assert_eq!(a, b, "a client of a healthy backend moved");
                }
            }
            assert!(moved > 5_000, "{moved}");
            // And back: everyone returns to where they were.
            assert_eq!(picks(&pool, &clients, &[true; 4]), before);
        }
    }

    #[test]
    fn draining_is_down_for_new_picks() {
        let mut backends = four();
        let pool = Pool::new(&backends, SEED, KeyRule::default()).unwrap();
        backends[2].drain = true;
        let draining = Pool::new(&backends, SEED, KeyRule::default()).unwrap();
        let clients = v4_clients(20_000, 5);
        let expected = picks(&pool, &clients, &[true, true, false, true]);
        assert_eq!(picks(&draining, &clients, &[true; 4]), expected);
        assert!(expected.iter().all(|p| *p != Some(2)));
    }

    #[test]
    fn ipv6_clients_in_one_64_share_a_backend_unless_keyed_per_address() {
        let backends: Vec<_> = (1..=4).map(|i| backend(&format!("[2001:db8::{i}]:3478"), 1)).collect();
        let up = [true; 4];
        let site =
            |i: u64| SocketAddr::new(Ipv6Addr::from((0x2001_0db8_0001_0002u128 << 64) | u128::from(i)).into(), 4000);
        let per64 = Pool::new(&backends, SEED, KeyRule::default()).unwrap();
        let first = per64.pick(site(1), &up).unwrap();
        let mut s = 9;
        for _ in 0..1_000 {
            assert_eq!(per64.pick(site(splitmix(&mut s)), &up), Some(first));
        }
        let per128 = Pool::new(&backends, SEED, KeyRule { ipv6_prefix: 128, ..KeyRule::default() }).unwrap();
        let distinct: std::collections::HashSet<_> =
            (0..1_000).map(|_| per128.pick(site(splitmix(&mut s)), &up)).collect();
        assert_eq!(distinct.len(), 4);
        // An IPv6 client gets an IPv6 backend.
        assert!(first.is_ipv6());
    }

    #[test]
    fn the_source_address_key_separates_ports() {
        let rule = KeyRule { hash_key: HashKey::SourceAddress, ..KeyRule::default() };
        let pool = Pool::new(&four(), SEED, rule).unwrap();
        let up = [true; 4];
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let distinct: std::collections::HashSet<_> =
            (1024..2048).map(|port| pool.pick(SocketAddr::new(ip, port), &up)).collect();
        assert_eq!(distinct.len(), 4);
        let c = SocketAddr::new(ip, 1234);
        assert_eq!(pool.pick(c, &up), pool.pick(c, &up));
        // By IP alone, the port does not matter.
        let by_ip = Pool::new(&four(), SEED, KeyRule::default()).unwrap();
        assert_eq!(by_ip.pick(SocketAddr::new(ip, 1), &up), by_ip.pick(SocketAddr::new(ip, 2), &up));
    }

    #[test]
    fn no_candidate_of_the_family_is_none() {
        let v4_only = Pool::new(&four(), SEED, KeyRule::default()).unwrap();
        let v6_client: SocketAddr = "[2001:db8::9]:5000".parse().unwrap();
        let v4_client: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        assert_eq!(v4_only.pick(v6_client, &[true; 4]), None);
        assert_eq!(v4_only.pick(v4_client, &[false; 4]), None);
        // A mask too short counts the backends past its end as down.
        assert_eq!(v4_only.pick(v4_client, &[]), None);
        let empty = Pool::new(&[], SEED, KeyRule::default()).unwrap();
        assert_eq!(empty.pick(v4_client, &[true; 4]), None);
        // An IPv4-mapped client is an IPv4 client.
        let mapped: SocketAddr = "[::ffff:203.0.113.9]:5000".parse().unwrap();
        assert_eq!(v4_only.pick(mapped, &[true; 4]), v4_only.pick(v4_client, &[true; 4]));
        assert!(v4_only.pick(mapped, &[true; 4]).is_some());
    }

    #[test]
    fn bad_pools_are_refused() {
        let mut backends = four();
        backends[1].weight = 0;
        assert_eq!(Pool::new(&backends, SEED, KeyRule::default()).unwrap_err(), PoolError::ZeroWeight { index: 1 });
        let mut backends = four();
        backends.push(backend("[::ffff:192.0.2.3]:3478", 1));
        assert_eq!(
            Pool::new(&backends, SEED, KeyRule::default()).unwrap_err(),
            PoolError::Duplicate { first: 2, second: 4 }
        );
        let rule = KeyRule { ipv6_prefix: 129, ..KeyRule::default() };
        assert_eq!(Pool::new(&four(), SEED, rule).unwrap_err(), PoolError::Ipv6Prefix(129));
    }

    fn mixed_backends() -> Vec<Backend> {
        let mut b = four();
        b.extend((1..=3).map(|i| backend(&format!("[2001:db8::{i}]:3478"), i)));
        b[1].drain = true;
        b[5].drain = true;
        b
    }

    proptest! {
        #[test]
        fn pick_never_panics_and_honours_family_health_and_drain(
            v4 in any::<bool>(),
            bits in any::<u128>(),
            port in any::<u16>(),
            healthy in proptest::collection::vec(any::<bool>(), 0..10),
            prefix in 0u8..=128,
            per_port in any::<bool>(),
            seed in any::<[u8; 16]>(),
        ) {
            let hash_key = if per_port { HashKey::SourceAddress } else { HashKey::SourceIp };
            let backends = mixed_backends();
            let pool = Pool::new(&backends, seed, KeyRule { hash_key, ipv6_prefix: prefix }).unwrap();
            let ip: IpAddr = if v4 { Ipv4Addr::from(bits as u32).into() } else { Ipv6Addr::from(bits).into() };
            let client = SocketAddr::new(ip, port);
            match pool.choose(client, &healthy) {
                Some(c) => {
                    prop_assert_eq!(c.addr.is_ipv4(), ip.to_canonical().is_ipv4());
                    prop_assert!(healthy[c.index] && !backends[c.index].drain);
                    prop_assert_eq!(c.addr, backends[c.index].addr);
                }
                None => {
                    let family = ip.to_canonical().is_ipv4();
                    let none_usable = backends.iter().enumerate().all(|(i, b)| {
                        b.addr.is_ipv4() != family || b.drain || !healthy.get(i).copied().unwrap_or(false)
                    });
                    prop_assert!(none_usable);
                }
            }
        }
    }
}
