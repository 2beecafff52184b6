//! Spoofed-source floods: each datagram is written whole (IPv4 header, UDP header, a 20-byte
//! Binding request with a random transaction ID) and sent on a raw socket with IP_HDRINCL, so
//! it claims whatever source address and port the flood picks. The server answers that source:
//! the reflection the lab measures. Batches go out with one sendmmsg (`stunedge::io`'s batch,
//! which works on any datagram socket, raw ones included).
//!
//! Linux fills in the IPv4 header's checksum and total length on a raw socket (and the
//! identification when it is 0: raw(7)); the UDP checksum is 0, "not computed", which IPv4
//! allows (RFC 768). IPv4 only: an IPv6 flood would need IPV6_HDRINCL and a UDP checksum.
//!
//! Pacing: datagram k is due at k / rate seconds; each turn sends what is due (at most a
//! batch), and sleeps when nothing is. A sender that cannot keep up sends flat out, and the
//! report's `achieved_rate` says so.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use stunedge::io::mmsg::MmsgBatch;
use stunedge::stun::registry::MAGIC_COOKIE;

use super::{Rng, Seen, V4Prefix};

/// IPv4 header without options.
pub const IPV4_HEADER: usize = 20;
/// UDP header.
pub const UDP_HEADER: usize = 8;
/// A Binding request without attributes.
pub const REQUEST: usize = 20;
/// One flood datagram on the wire, IP header included (what the lab's nft counters count).
pub const DATAGRAM: usize = IPV4_HEADER + UDP_HEADER + REQUEST;

/// IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;

/// Where a flood's spoofed sources come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Random hosts and random ports of the prefix: a victim's network, with its many hosts
    /// and ports (so SO_REUSEPORT spreads it over every worker).
    Victim,
    /// Every address of the prefix once before any repeats (in a scattered order: consecutive
    /// datagrams land in different /24s), random ports: a flood of distinct sources that
    /// churns the limiter's table.
    Distinct,
}

impl Sources {
    /// The name reports use (the `stunedge-flood` subcommand).
    pub const fn name(self) -> &'static str {
        match self {
            Sources::Victim => "victim",
            Sources::Distinct => "random",
        }
    }
}

/// One flood.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// The server (the datagrams' destination).
    pub server: SocketAddrV4,
    /// The spoofed sources' prefix.
    pub prefix: V4Prefix,
    /// How sources are picked in it.
    pub sources: Sources,
    /// Datagrams per second; 0: as fast as the machine sends.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Datagrams per sendmmsg.
    pub batch: usize,
    /// The random generator's seed.
    pub seed: u64,
}

/// What a flood did.
#[derive(Debug, Clone, Serialize)]
pub struct FloodReport {
    /// "victim" or "random".
    pub mode: &'static str,
    /// The server.
    pub server: String,
    /// The sources' prefix.
    pub prefix: String,
    /// Datagrams per second asked for (0: flat out).
    pub target_rate: u64,
    /// Seconds asked for.
    pub duration_s: f64,
    /// Seconds it really sent for.
    pub elapsed_s: f64,
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Datagrams the kernel refused.
    pub send_errors: u64,
    /// Bytes sent, IP and UDP headers included (`sent` × 48).
    pub bytes: u64,
    /// STUN bytes sent (`sent` × 20), what the server's `received_bytes` counts.
    pub payload_bytes: u64,
    /// `sent` ÷ `elapsed_s`.
    pub achieved_rate: f64,
    /// Distinct source addresses used.
    pub distinct_sources: u64,
    /// The seed, to repeat the run.
    pub seed: u64,
}

/// Writes one flood datagram from `src` to `dst` carrying a Binding request with `tid` into
/// `buf`; returns its length ([`DATAGRAM`]).
pub fn write_datagram(buf: &mut [u8], src: SocketAddrV4, dst: SocketAddrV4, tid: [u8; 12]) -> usize {
    let ip = &mut buf[..IPV4_HEADER];
    ip[0] = 0x45; // version 4, 5 words of header
    ip[1] = 0; // DSCP, ECN
    ip[2..4].copy_from_slice(&(DATAGRAM as u16).to_be_bytes()); // total length (the kernel rewrites it)
    ip[4..8].fill(0); // identification 0 (the kernel picks one), no flags, no fragment offset
    ip[8] = 64; // TTL
    ip[9] = IPPROTO_UDP;
    ip[10..12].fill(0); // header checksum (the kernel computes it)
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let udp = &mut buf[IPV4_HEADER..IPV4_HEADER + UDP_HEADER];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&((UDP_HEADER + REQUEST) as u16).to_be_bytes());
    udp[6..8].fill(0); // no checksum (RFC 768)
    let stun = &mut buf[IPV4_HEADER + UDP_HEADER..DATAGRAM];
    stun[0..2].copy_from_slice(&[0x00, 0x01]); // Binding request
    stun[2..4].fill(0); // no attributes
    stun[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    stun[8..20].copy_from_slice(&tid);
    DATAGRAM
}

/// Picks sources for a flood.
#[derive(Debug)]
struct Picker {
    prefix: V4Prefix,
    sources: Sources,
    /// [`Sources::Distinct`]: a random start and an odd stride; `start + k × stride` modulo a
    /// power of two visits every address once per round.
    start: u64,
    stride: u64,
    picked: u64,
}

impl Picker {
    fn new(prefix: V4Prefix, sources: Sources, rng: &mut Rng) -> Picker {
        // An odd stride near the golden ratio of the size: a bijection on the prefix that
        // scatters neighbours far apart.
        let stride = ((prefix.size() as f64 * 0.618_033_988_75) as u64) | 1;
        Picker { prefix, sources, start: rng.below(prefix.size()), stride, picked: 0 }
    }

    /// The next source's offset in the prefix.
    fn next(&mut self, rng: &mut Rng) -> u64 {
        let k = self.picked;
        self.picked += 1;
        match self.sources {
            Sources::Victim => rng.below(self.prefix.size()),
            Sources::Distinct => self.start.wrapping_add(k.wrapping_mul(self.stride)) & (self.prefix.size() - 1),
        }
    }
}

/// Runs one flood. Needs CAP_NET_RAW (root in the lab's namespace).
pub fn flood(config: &FloodConfig) -> io::Result<FloodReport> {
    // IPPROTO_RAW implies IP_HDRINCL; set it anyway, it documents the intent.
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))?;
    socket.set_header_included_v4(true)?;
    let _ = socket.set_send_buffer_size(4 << 20);
    let fd = socket.as_raw_fd();
    let batch_size = config.batch.clamp(1, 1024);
    let mut batch = MmsgBatch::new(batch_size);
    // A raw socket takes the destination from the IP header; the address only routes it.
    let to = SocketAddr::V4(SocketAddrV4::new(*config.server.ip(), 0));
    let mut rng = Rng::new(config.seed);
    let mut picker = Picker::new(config.prefix, config.sources, &mut rng);
    let mut seen = Seen::new(&config.prefix);
    let (mut scheduled, mut sent, mut errors) = (0u64, 0u64, 0u64);
    let duration_ns = config.duration.as_nanos() as u64;
    let start = Instant::now();
    loop {
        let now = start.elapsed().as_nanos() as u64;
        if now >= duration_ns {
            break;
        }
        let due = if config.rate == 0 {
            scheduled + batch_size as u64
        } else {
            (u128::from(now) * u128::from(config.rate) / 1_000_000_000) as u64
        };
        if due <= scheduled {
            let next = (u128::from(scheduled + 1) * 1_000_000_000).div_ceil(u128::from(config.rate)) as u64;
            std::thread::sleep(Duration::from_nanos(next.saturating_sub(now).min(1_000_000)));
            continue;
        }
        let n = ((due - scheduled) as usize).min(batch_size);
        for k in 0..n {
            let offset = picker.next(&mut rng);
            seen.mark(offset);
            let src = SocketAddrV4::new(config.prefix.at(offset), rng.port());
            let len = write_datagram(batch.buffer_mut(k), src, config.server, rng.tid());
            batch.queue_to(k, len, to);
        }
        let tally = batch.flush(fd);
        sent += tally.sent_datagrams;
        errors += tally.send_errors.total();
        scheduled += n as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(FloodReport {
        mode: config.sources.name(),
        server: config.server.to_string(),
        prefix: format!("{}/{}", Ipv4Addr::from(config.prefix.base), 32 - config.prefix.host_bits),
        target_rate: config.rate,
        duration_s: config.duration.as_secs_f64(),
        elapsed_s: elapsed,
        sent,
        send_errors: errors,
        bytes: sent * DATAGRAM as u64,
        payload_bytes: sent * REQUEST as u64,
        achieved_rate: sent as f64 / elapsed.max(1e-9),
        distinct_sources: seen.count(),
        seed: config.seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stunedge::stun::{Message, MessageType};

    #[test]
    fn a_datagram_is_ipv4_udp_and_a_binding_request() {
        let mut buf = [0u8; 64];
        let src: SocketAddrV4 = "10.99.1.7:40000".parse().unwrap();
        let dst: SocketAddrV4 = "10.99.0.1:3478".parse().unwrap();
        let n = write_datagram(&mut buf, src, dst, [9; 12]);
        assert_eq!(n, 48);
        assert_eq!(
            &buf[..28],
            &[
                0x45, 0, 0, 48, 0, 0, 0, 0, 64, 17, 0, 0, 10, 99, 1, 7, 10, 99, 0, 1, // IPv4
                0x9C, 0x40, 0x0D, 0x96, 0, 28, 0, 0, // UDP: 40000 → 3478, 28 bytes, no checksum
            ]
        );
        let msg = Message::parse(&buf[28..n]).unwrap();
        assert_eq!(msg.message_type(), MessageType::BINDING_REQUEST);
        assert_eq!(msg.transaction_id().0, [9; 12]);
    }

    #[test]
    fn distinct_sources_visit_every_address_once_per_round() {
        let prefix = V4Prefix::new("10.128.0.0/16".parse().unwrap()).unwrap();
        let mut rng = Rng::new(1);
        let mut picker = Picker::new(prefix, Sources::Distinct, &mut rng);
        let mut seen = Seen::new(&prefix);
        let first: Vec<u64> = (0..4).map(|_| picker.next(&mut rng)).collect();
        first.iter().for_each(|&o| seen.mark(o));
        for _ in 4..prefix.size() {
            seen.mark(picker.next(&mut rng));
        }
        assert_eq!(seen.count(), prefix.size());
        assert!(first.windows(2).all(|w| w[0] >> 8 != w[1] >> 8), "neighbours land in different /24s: {first:?}");
        assert_eq!(picker.next(&mut rng), first[0], "the next round starts over");
    }

    #[test]
    fn victim_sources_stay_in_the_prefix() {
        let prefix = V4Prefix::new("10.99.1.0/24".parse().unwrap()).unwrap();
        let mut rng = Rng::new(2);
        let mut picker = Picker::new(prefix, Sources::Victim, &mut rng);
        let mut seen = Seen::new(&prefix);
        for _ in 0..10_000 {
            let offset = picker.next(&mut rng);
            assert!(offset < 256);
            seen.mark(offset);
        }
        assert_eq!(seen.count(), 256, "10 000 random picks cover a /24");
    }
}
