//! The reflection lab's traffic (`stunedge-flood`, run by `scripts/reflect-lab.sh`): spoofed
//! floods that make a server reflect answers at a victim, and well-behaved clients whose
//! success the reflection defence must keep; and the stream plane's connection floods. Every run is bounded by its duration and paced at
//! its rate, and reports what it really did (achieved rate, distinct sources) as one JSON line.
//!
//! - [`raw`]: IPv4/UDP datagrams written whole to a raw socket (IP_HDRINCL), so each carries
//!   any source address and port: `victim` (random hosts and ports of one prefix) and `random`
//!   (every address of a large prefix once, in scattered order).
//! - [`clients`]: real bound UDP sockets: `legit` (RFC 8489 §6.2.1 transactions with
//!   retransmission, the answer's XOR-MAPPED-ADDRESS checked against the socket's address) and
//!   `cgnat` (many users behind one address: periodic Bindings and ICE-like bursts, each sent
//!   once, every one expected to be answered).
//! - [`stream`]: connection floods on a STUN-over-TCP/TLS plane: idle connections, slowloris,
//!   half-open TLS handshakes (`stream`, run by `scripts/bench-stream.sh`).
//!
//! A tool, not the server's packet path: it allocates where convenient, and reaches syscalls
//! only through std, socket2's safe API and `stunedge::io` (no `unsafe`).

pub mod clients;
pub mod raw;
pub mod stream;

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};

use stunedge::limit::Cidr;

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014):
/// fast and well mixed, enough to scatter addresses, ports, phases and transaction IDs. Not
/// cryptographic; seeded per run (and reported, so a run can be repeated).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed that differs between runs (std's per-process random hash keys).
    pub fn fresh_seed() -> u64 {
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; `n` ≥ 1).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A random transaction ID.
    pub fn tid(&mut self) -> [u8; 12] {
        let (a, b) = (self.next_u64().to_be_bytes(), self.next_u64().to_be_bytes());
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&a);
        tid[8..].copy_from_slice(&b[..4]);
        tid
    }

    /// A random port of the unprivileged range, 1024..=65535, as clients use.
    pub fn port(&mut self) -> u16 {
        1024 + self.below(65536 - 1024) as u16
    }
}

/// An IPv4 prefix as the tools use it: its first address and its size in addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V4Prefix {
    /// The network address, host order.
    pub base: u32,
    /// Host bits (32 − the prefix length).
    pub host_bits: u32,
}

impl V4Prefix {
    /// The widest prefix a tool accepts: a /8 (16 M addresses; a bitmap of them is 2 MiB).
    pub const WIDEST: u8 = 8;

    /// `cidr` if it is IPv4 and no wider than [`V4Prefix::WIDEST`].
    pub fn new(cidr: Cidr) -> Result<V4Prefix, String> {
        match cidr.addr() {
            IpAddr::V4(ip) if cidr.prefix_len() >= Self::WIDEST => {
                Ok(V4Prefix { base: u32::from(ip), host_bits: 32 - u32::from(cidr.prefix_len()) })
            }
            IpAddr::V4(_) => Err(format!("{cidr}: at most a /{} (16 M addresses)", Self::WIDEST)),
            IpAddr::V6(_) => Err(format!("{cidr}: an IPv4 prefix is needed (raw IPv4 sockets)")),
        }
    }

    /// The number of addresses.
    pub fn size(&self) -> u64 {
        1 << self.host_bits
    }

    /// The address at `offset` (taken modulo the size).
    pub fn at(&self, offset: u64) -> Ipv4Addr {
        Ipv4Addr::from(self.base | (offset & (self.size() - 1)) as u32)
    }
}

/// Which addresses of a prefix have been seen: one bit each.
#[derive(Debug, Clone)]
pub struct Seen {
    bits: Vec<u64>,
    count: u64,
}

impl Seen {
    /// Nothing seen yet, of `prefix`'s addresses.
    pub fn new(prefix: &V4Prefix) -> Seen {
        Seen { bits: vec![0; prefix.size().div_ceil(64) as usize], count: 0 }
    }

    /// Marks the address at `offset` in the prefix.
    pub fn mark(&mut self, offset: u64) {
        let (word, bit) = ((offset / 64) as usize, 1u64 << (offset % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.count += 1;
        }
    }

    /// Distinct addresses marked.
    pub fn count(&self) -> u64 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
        for _ in 0..10_000 {
            assert!(a.below(10) < 10);
            assert!(a.port() >= 1024);
            assert!((0.0..1.0).contains(&a.unit()));
        }
    }

    #[test]
    fn prefixes_and_seen_addresses() {
        let p = V4Prefix::new("10.99.1.0/24".parse().unwrap()).unwrap();
        assert_eq!(p.size(), 256);
        assert_eq!(p.at(5), Ipv4Addr::new(10, 99, 1, 5));
        assert_eq!(p.at(256 + 7), Ipv4Addr::new(10, 99, 1, 7), "wraps inside the prefix");
        assert!(V4Prefix::new("10.0.0.0/7".parse().unwrap()).unwrap_err().contains("at most a /8"));
        assert!(V4Prefix::new("2001:db8::/48".parse().unwrap()).is_err());
        let mut seen = Seen::new(&p);
        for offset in [1, 2, 1, 255, 2] {
            seen.mark(offset);
        }
        assert_eq!(seen.count(), 3);
    }
}
