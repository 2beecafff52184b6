//! Address prefixes: [`Cidr`] (one IPv4 or IPv6 prefix, parsed from `"192.0.2.0/24"`) and
//! [`PrefixSet`], an immutable longest-prefix-match set of them. A set is built once (from the
//! configuration, on start and on reload) and then only read: the packet path looks an
//! address up with no lock and no allocation. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
//! are looked up as the IPv4 address they carry.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One prefix: a network address (no bits set past the length) and a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix does not parse. The message names the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The prefix `addr/len`; `None` when `len` is past the family's width or `addr` has bits
    /// set past it.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let width = width(addr);
        (len <= width && bits(addr) & !mask(len, width) == 0).then_some(Cidr { addr, len })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is inside it (IPv4-mapped IPv6 addresses as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && bits(ip) & mask(self.len, width(ip)) == bits(self.addr)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `"192.0.2.0/24"`, `"2001:db8::/32"`, or a bare address (a /32 or /128).
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError(format!("\"{s}\" is not an IP address or prefix (\"192.0.2.0/24\")")))?;
        let width = width(addr);
        let len = match len {
            None => width,
            Some(l) => match l.parse::<u8>() {
                Ok(l) if l <= width => l,
                _ => return Err(CidrError(format!("\"{s}\": the prefix length must be 0..={width}"))),
            },
        };
        // An IPv4-mapped prefix (`::ffff:10.0.0.0/104`) is the IPv4 prefix it maps: sources are
        // looked up that way.
        let (addr, len) = match addr {
            IpAddr::V6(v6) if len >= 96 && v6.to_ipv4_mapped().is_some() => (addr.to_canonical(), len - 96),
            _ => (addr, len),
        };
        let width = self::width(addr);
        Cidr::new(addr, len).ok_or_else(|| {
            let network = from_bits(bits(addr) & mask(len, width), addr.is_ipv4());
            CidrError(format!("\"{s}\" has bits set past /{len}; did you mean \"{network}/{len}\"?"))
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

const fn width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

/// The address as an integer (IPv4 in the low 32 bits).
#[inline]
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_bits(b: u128, v4: bool) -> IpAddr {
    if v4 { IpAddr::V4(Ipv4Addr::from(b as u32)) } else { IpAddr::V6(Ipv6Addr::from(b)) }
}

/// The netmask of a `len`-bit prefix in a `width`-bit family, as an integer.
#[inline]
pub(super) const fn mask(len: u8, width: u8) -> u128 {
    if len == 0 { 0 } else { (u128::MAX >> (128 - width as u32)) & !((1u128 << (width - len)) - 1) }
}

/// The address bits of `ip` (IPv4-mapped as IPv4) and whether it is IPv4.
#[inline]
pub(super) fn canonical_bits(ip: IpAddr) -> (u128, bool) {
    let ip = ip.to_canonical();
    (bits(ip), ip.is_ipv4())
}

/// An immutable set of prefixes with longest-prefix match: per family, one sorted array of
/// network addresses per prefix length present, searched from the longest length down.
/// Lookups cost one binary search per distinct length (at most 33 or 129), no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixSet {
    v4: Vec<Level>,
    v6: Vec<Level>,
    entries: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Level {
    len: u8,
    networks: Vec<(u128, u32)>,
}

impl PrefixSet {
    /// The set of `prefixes` (duplicates are kept once).
    pub fn new(prefixes: &[Cidr]) -> PrefixSet {
        let mut entries = prefixes.to_vec();
        entries.sort();
        entries.dedup();
        let mut set = PrefixSet { v4: Vec::new(), v6: Vec::new(), entries };
        for (index, cidr) in set.entries.iter().enumerate() {
            let levels = if cidr.addr.is_ipv4() { &mut set.v4 } else { &mut set.v6 };
            let level = match levels.iter().position(|l| l.len == cidr.len) {
                Some(i) => &mut levels[i],
                None => {
                    levels.push(Level { len: cidr.len, networks: Vec::new() });
                    levels.last_mut().expect("just pushed")
                }
            };
            level.networks.push((bits(cidr.addr), index as u32));
        }
        for levels in [&mut set.v4, &mut set.v6] {
            levels.sort_by_key(|l| std::cmp::Reverse(l.len));
            for level in levels.iter_mut() {
                level.networks.sort_unstable();
            }
        }
        set
    }

    /// The longest prefix that holds `ip`, if any.
    #[inline]
    pub fn lookup(&self, ip: IpAddr) -> Option<&Cidr> {
        let (b, v4) = canonical_bits(ip);
        let (levels, width) = if v4 { (&self.v4, 32) } else { (&self.v6, 128) };
        levels.iter().find_map(|level| {
            let network = b & mask(level.len, width);
            let i = level.networks.binary_search_by(|&(n, _)| n.cmp(&network)).ok()?;
            Some(&self.entries[level.networks[i].1 as usize])
        })
    }

    /// Whether some prefix holds `ip`.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        !self.is_empty() && self.lookup(ip).is_some()
    }

    /// The prefixes, sorted, without duplicates.
    pub fn entries(&self) -> &[Cidr] {
        &self.entries
    }

    /// Whether it holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_names_what_is_wrong() {
        assert_eq!(cidr("192.0.2.0/24").to_string(), "192.0.2.0/24");
        assert_eq!(cidr("192.0.2.7").to_string(), "192.0.2.7/32");
        assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(cidr("::1").prefix_len(), 128);
        assert_eq!(cidr("::ffff:10.0.0.0/104").to_string(), "10.0.0.0/8", "IPv4-mapped is IPv4");
        assert_eq!(cidr("::ffff:192.0.2.9").to_string(), "192.0.2.9/32");
        assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
        let err = |s: &str| s.parse::<Cidr>().unwrap_err().to_string();
        assert_eq!(err("192.0.2.1/24"), "\"192.0.2.1/24\" has bits set past /24; did you mean \"192.0.2.0/24\"?");
        assert_eq!(err("192.0.2.0/33"), "\"192.0.2.0/33\": the prefix length must be 0..=32");
        assert_eq!(err("2001:db8::/129"), "\"2001:db8::/129\": the prefix length must be 0..=128");
        assert_eq!(err("example.org"), "\"example.org\" is not an IP address or prefix (\"192.0.2.0/24\")");
        assert_eq!(err("10.0.0.0/x"), "\"10.0.0.0/x\": the prefix length must be 0..=32");
    }

    #[test]
    fn longest_prefix_wins() {
        let set = PrefixSet::new(&[cidr("10.0.0.0/8"), cidr("10.1.0.0/16"), cidr("10.1.2.3"), cidr("2001:db8::/32")]);
        assert_eq!(set.lookup(ip("10.1.2.3")), Some(&cidr("10.1.2.3/32")));
        assert_eq!(set.lookup(ip("10.1.2.4")), Some(&cidr("10.1.0.0/16")));
        assert_eq!(set.lookup(ip("10.200.0.1")), Some(&cidr("10.0.0.0/8")));
        assert_eq!(set.lookup(ip("11.0.0.1")), None);
        assert_eq!(set.lookup(ip("2001:db8:ffff::1")), Some(&cidr("2001:db8::/32")));
        assert_eq!(set.lookup(ip("2001:db9::1")), None);
        assert_eq!(set.lookup(ip("::ffff:10.1.2.3")), Some(&cidr("10.1.2.3/32")), "IPv4-mapped is IPv4");
        assert!(!PrefixSet::default().contains(ip("10.0.0.1")));
        let everything = PrefixSet::new(&[cidr("0.0.0.0/0"), cidr("::/0")]);
        assert!(everything.contains(ip("203.0.113.9")) && everything.contains(ip("2001:db8::9")));
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.9.9.9")));
        assert!(!cidr("10.0.0.0/8").contains(ip("2001:db8::")));
    }

    /// Against a linear scan over random sets and addresses.
    #[test]
    fn matches_a_linear_scan() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let prefixes: Vec<Cidr> = (0..40)
                .map(|_| {
                    let len = (next() % 33) as u8;
                    let addr = (next() as u32 & 0xFF_FF_00_FF) as u128 & mask(len, 32);
                    Cidr::new(from_bits(addr, true), len).unwrap()
                })
                .collect();
            let set = PrefixSet::new(&prefixes);
            for _ in 0..200 {
                let probe = from_bits((next() as u32 & 0xFF_FF_00_FF) as u128, true);
                let want = prefixes.iter().filter(|c| c.contains(probe)).max_by_key(|c| c.len);
                assert_eq!(set.lookup(probe), want, "{probe}");
            }
        }
    }
}
