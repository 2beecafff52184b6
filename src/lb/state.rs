//! The pool's live state, shared by the workers (who read each backend's health once per
//! Allocate and count their redirects), the health thread (who writes the health and counts its
//! probes) and the exporter (who reads everything at scrape time). One [`Entry`] per backend
//! address, in the [`Pool`](super::Pool)'s index order; plain atomics, no lock. An entry
//! survives a reload that keeps its backend's name and address, so a reload neither forgets a
//! dead backend nor resets its counters. A backend address's TCP and TLS addresses (where it
//! has them) have a [`StreamEntry`] each, the health of their own connect probes, carried over
//! a reload that keeps the backend's name, the transport and the address.
//!
//! The redirect counters are shared atomics, not per-worker counters (DESIGN invariant 8 keeps
//! per-worker counters for the packet path): a client sends its first Allocate to the balancer
//! once per TURN server when it gathers (what the browser lab saw of Chromium and libnice,
//! docs/real-clients.md), each backend's counter has a cache line of its own, and the Binding
//! path never touches them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

use super::Transport;

/// What the health checks last concluded about a backend address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// Not probed yet (just started, or just added by a reload): given clients, so that a
    /// restart does not answer 508 until the first probes return. The first probe's result
    /// decides at once; `rise` and `fall` count from then on.
    Unknown = 0,
    /// Answering probes: given clients.
    Up = 1,
    /// `fall` probes in a row failed: given no clients until `rise` probes pass.
    Down = 2,
    /// The backend answered its probe with 403 (coturn's drain mode): given no new clients,
    /// without an alert; its existing relays keep working.
    Draining = 3,
}

impl Health {
    /// Every state, in metric order.
    pub const ALL: [Health; 4] = [Health::Unknown, Health::Up, Health::Down, Health::Draining];

    /// Its label value in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
            Health::Draining => "draining",
        }
    }

    /// Whether a backend in this state gets new clients.
    pub const fn accepts(self) -> bool {
        matches!(self, Health::Unknown | Health::Up)
    }

    const fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            3 => Health::Draining,
            _ => Health::Unknown,
        }
    }
}

/// A [`Health`] that one thread writes and others read, one relaxed atomic.
#[derive(Debug)]
struct HealthCell(AtomicU8);

impl HealthCell {
    fn new() -> HealthCell {
        HealthCell(AtomicU8::new(Health::Unknown as u8))
    }

    #[inline]
    fn get(&self) -> Health {
        Health::from_u8(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, health: Health) -> Health {
        Health::from_u8(self.0.swap(health as u8, Ordering::Relaxed))
    }
}

/// How a probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum ProbeResult {
    /// The expected answer (401 or a success for an Allocate probe, a success for Binding).
    Ok,
    /// 403: the backend is draining.
    Draining,
    /// No answer within the timeout.
    Timeout,
    /// An answer, but not the expected one (another error code, a malformed response).
    Unexpected,
    /// The probe could not be sent (no route, socket error).
    SendError,
}

impl ProbeResult {
    /// Every result, in index order.
    pub const ALL: [ProbeResult; 5] =
        [ProbeResult::Ok, ProbeResult::Draining, ProbeResult::Timeout, ProbeResult::Unexpected, ProbeResult::SendError];

    /// Its label value in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            ProbeResult::Ok => "ok",
            ProbeResult::Draining => "draining",
            ProbeResult::Timeout => "timeout",
            ProbeResult::Unexpected => "unexpected",
            ProbeResult::SendError => "send_error",
        }
    }
}

/// Upper bounds of the probe round-trip histogram's buckets, in microseconds; +Inf follows.
pub const PROBE_MICROS_BUCKETS: [u64; 10] = [100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 500_000];

/// One backend address: its identity and its live state.
#[derive(Debug)]
pub struct Entry {
    /// The backend's name in the configuration (the `backend` label).
    pub name: String,
    /// The address its clients are sent to and its probes go to.
    pub addr: SocketAddr,
    health: HealthCell,
    redirects: CachePadded<AtomicU64>,
    probes: [AtomicU64; ProbeResult::ALL.len()],
    /// Round-trip times of answered probes: bucket counts (cumulative at export), then the sum
    /// in microseconds.
    probe_micros: [AtomicU64; PROBE_MICROS_BUCKETS.len() + 1],
    probe_micros_sum: AtomicU64,
}

impl Entry {
    /// A fresh entry, health [`Health::Unknown`], every counter 0.
    pub fn new(name: &str, addr: SocketAddr) -> Entry {
        Entry {
            name: name.to_owned(),
            addr,
            health: HealthCell::new(),
            redirects: CachePadded::new(AtomicU64::new(0)),
            probes: Default::default(),
            probe_micros: Default::default(),
            probe_micros_sum: AtomicU64::new(0),
        }
    }

    /// The current health.
    #[inline]
    pub fn health(&self) -> Health {
        self.health.get()
    }

    /// Sets the health (the health thread); returns the previous one.
    pub fn set_health(&self, health: Health) -> Health {
        self.health.set(health)
    }

    /// Counts one redirect to this backend (a worker, once per 300 sent).
    #[inline]
    pub fn count_redirect(&self) {
        self.redirects.fetch_add(1, Ordering::Relaxed);
    }

    /// Redirects sent to this backend since it was first configured.
    pub fn redirects(&self) -> u64 {
        self.redirects.load(Ordering::Relaxed)
    }

    /// Counts one probe's result, and its round-trip time when it was answered.
    pub fn count_probe(&self, result: ProbeResult, rtt: Option<Duration>) {
        self.probes[result as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(rtt) = rtt {
            let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
            let bucket = PROBE_MICROS_BUCKETS.iter().position(|&b| micros <= b).unwrap_or(PROBE_MICROS_BUCKETS.len());
            self.probe_micros[bucket].fetch_add(1, Ordering::Relaxed);
            self.probe_micros_sum.fetch_add(micros, Ordering::Relaxed);
        }
    }

    /// Probes that ended with `result`.
    pub fn probes(&self, result: ProbeResult) -> u64 {
        self.probes[result as usize].load(Ordering::Relaxed)
    }

    /// The round-trip histogram: per-bucket counts (not cumulative; the last is +Inf) and the
    /// sum in microseconds.
    pub fn probe_micros(&self) -> ([u64; PROBE_MICROS_BUCKETS.len() + 1], u64) {
        (
            std::array::from_fn(|i| self.probe_micros[i].load(Ordering::Relaxed)),
            self.probe_micros_sum.load(Ordering::Relaxed),
        )
    }
}

/// How a TCP connect probe of a backend's TCP or TLS address ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum StreamResult {
    /// The connection was established (and reset at once).
    Ok,
    /// The backend's host refused it (a TCP RST to the SYN: nothing listens on the port).
    Refused,
    /// Not established within the timeout (a firewall dropping the SYN, a dead host).
    Timeout,
    /// Another failure: no route, an ICMP error.
    Error,
    /// No probe could be made from here (out of file descriptors or buffers, no local
    /// address): counted, but it says nothing about the backend, whose health is left as it
    /// was.
    LocalError,
}

impl StreamResult {
    /// Every result, in index order.
    pub const ALL: [StreamResult; 5] =
        [StreamResult::Ok, StreamResult::Refused, StreamResult::Timeout, StreamResult::Error, StreamResult::LocalError];

    /// Its label value in metrics and logs.
    pub const fn name(self) -> &'static str {
        match self {
            StreamResult::Ok => "ok",
            StreamResult::Refused => "refused",
            StreamResult::Timeout => "timeout",
            StreamResult::Error => "error",
            StreamResult::LocalError => "local_error",
        }
    }
}

/// One backend address's TCP or TLS address: its identity, the health of its connect probes
/// and their counters. Its health is [`Health::Unknown`], [`Health::Up`] or [`Health::Down`]
/// (a connect cannot say "draining"); the workers give a client over its transport only a
/// backend whose UDP [`Entry`] *and* this accept.
#[derive(Debug)]
pub struct StreamEntry {
    /// The backend's name in the configuration (the `backend` label).
    pub name: String,
    /// [`Transport::Tcp`] or [`Transport::Tls`].
    pub transport: Transport,
    /// The address its clients over `transport` are sent to and its connect probes go to.
    pub addr: SocketAddr,
    health: HealthCell,
    probes: [AtomicU64; StreamResult::ALL.len()],
}

impl StreamEntry {
    /// A fresh entry, health [`Health::Unknown`], every counter 0.
    pub fn new(name: &str, transport: Transport, addr: SocketAddr) -> StreamEntry {
        StreamEntry { name: name.to_owned(), transport, addr, health: HealthCell::new(), probes: Default::default() }
    }

    /// The current health.
    #[inline]
    pub fn health(&self) -> Health {
        self.health.get()
    }

    /// Sets the health (the health thread); returns the previous one.
    pub fn set_health(&self, health: Health) -> Health {
        self.health.set(health)
    }

    /// Counts one probe's result.
    pub fn count_probe(&self, result: StreamResult) {
        self.probes[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Probes that ended with `result`.
    pub fn probes(&self, result: StreamResult) -> u64 {
        self.probes[result as usize].load(Ordering::Relaxed)
    }
}

/// What the health probe sends, and what it expects back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ProbeKind {
    /// An Allocate without credentials; a 401 (or a success) means up, 403 draining. Proves
    /// the TURN state machine answers, costs the backend no state (the default).
    #[default]
    Allocate,
    /// An Allocate with the probe's credentials after the 401: a success means up (the
    /// allocation is released at once with a Refresh of lifetime 0), 403 draining. Proves that
    /// authentication and relay-port allocation work.
    AllocateAuth {
        /// The probe's user name (for a TURN REST secret: `expiry:user` is made from it).
        username: String,
        /// Its password, or the REST secret its password is derived from.
        secret: ProbeSecret,
    },
    /// A Binding request; a success means up. The cheapest, but wrong for backends that
    /// ignore Binding (coturn's `--no-stun`).
    Binding,
}

/// The probe user's secret.
#[derive(Clone, PartialEq, Eq)]
pub enum ProbeSecret {
    /// A static long-term password.
    Password(String),
    /// A TURN REST shared secret: the username becomes `<expiry>:<username>` and the password
    /// base64(HMAC-SHA1(secret, username)).
    RestSecret(String),
}

impl std::fmt::Debug for ProbeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProbeSecret::Password(_) => "Password(<redacted>)",
            ProbeSecret::RestSecret(_) => "RestSecret(<redacted>)",
        })
    }
}

/// The health checks' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    /// What is sent.
    pub kind: ProbeKind,
    /// Time between two probes of one backend (each probe is jittered by ±10 %).
    pub interval: Duration,
    /// How long a probe waits for its answer.
    pub timeout: Duration,
    /// Passed probes in a row that bring a down backend up.
    pub rise: u32,
    /// Failed probes in a row that take an up backend down.
    pub fall: u32,
}

impl Default for ProbeSettings {
    /// HAProxy's defaults (2 s, rise 2, fall 3) and a 1 s timeout.
    fn default() -> ProbeSettings {
        ProbeSettings {
            kind: ProbeKind::Allocate,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// One backend address as [`State::with_streams`] takes it: the backend's name, the address,
/// and its TCP and TLS addresses (indexed by [`Transport::stream_index`]).
pub type Named<'a> = (&'a str, SocketAddr, [Option<SocketAddr>; 2]);

/// The pool's live state: one entry per backend address (the pool's index order), the health
/// of each one's TCP and TLS addresses, and the probe settings. Replaced whole on a reload,
/// keeping the entries whose name and address stayed.
#[derive(Debug)]
pub struct State {
    /// The entries, indexed like the pool's backends.
    pub entries: Box<[Arc<Entry>]>,
    /// Per entry (same index): its TCP and TLS addresses' entries, indexed by
    /// [`Transport::stream_index`]; `None` where it has no address for that transport.
    pub streams: Box<[[Option<Arc<StreamEntry>>; 2]]>,
    /// How they are probed.
    pub probe: ProbeSettings,
}

impl State {
    /// The state for `backends` (name, address) without TCP or TLS addresses: see
    /// [`State::with_streams`].
    pub fn new(backends: &[(&str, SocketAddr)], probe: ProbeSettings, previous: Option<&State>) -> State {
        let named: Vec<Named<'_>> = backends.iter().map(|&(name, addr)| (name, addr, [None; 2])).collect();
        State::with_streams(&named, probe, previous)
    }

    /// The state for `backends` (name, address, TCP and TLS addresses), taking each entry that
    /// `previous` has for the same name and address (health and counters carried over), a
    /// fresh one otherwise; likewise each TCP or TLS entry that `previous` has for the same
    /// name, transport and address (whatever the UDP address it came with).
    pub fn with_streams(backends: &[Named<'_>], probe: ProbeSettings, previous: Option<&State>) -> State {
        let entries = backends
            .iter()
            .map(|&(name, addr, _)| {
                previous
                    .and_then(|p| p.entries.iter().find(|e| e.name == name && e.addr == addr))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Entry::new(name, addr)))
            })
            .collect();
        let streams = backends
            .iter()
            .map(|&(name, _, stream)| {
                let carried = |transport: Transport, addr: SocketAddr| {
                    previous?
                        .streams
                        .iter()
                        .flatten()
                        .flatten()
                        .find(|s| s.name == name && s.transport == transport && s.addr == addr)
                        .cloned()
                };
                [Transport::Tcp, Transport::Tls].map(|transport| {
                    let addr = transport.stream_index().and_then(|t| stream[t])?;
                    Some(carried(transport, addr).unwrap_or_else(|| Arc::new(StreamEntry::new(name, transport, addr))))
                })
            })
            .collect();
        State { entries, streams, probe }
    }

    /// Whether backend `index` gets new clients (false past the end).
    #[inline]
    pub fn accepts(&self, index: usize) -> bool {
        self.entries.get(index).is_some_and(|e| e.health().accepts())
    }

    /// Backend `index`'s address for stream transport `t` ([`Transport::stream_index`]), up or
    /// not; `None` when it has none (or past the end).
    #[inline]
    pub fn stream_addr(&self, index: usize, t: usize) -> Option<SocketAddr> {
        Some(self.stream(index, t)?.addr)
    }

    /// Whether backend `index` has an address for stream transport `t` whose connect probes
    /// accept it (up, or not probed yet). Says nothing of its UDP health ([`State::accepts`]).
    #[inline]
    pub fn stream_accepts(&self, index: usize, t: usize) -> bool {
        self.stream(index, t).is_some_and(|s| s.health().accepts())
    }

    #[inline]
    fn stream(&self, index: usize, t: usize) -> Option<&StreamEntry> {
        self.streams.get(index)?.get(t)?.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_round_trips_and_only_up_or_unknown_accepts() {
        let e = Entry::new("a", "192.0.2.1:3478".parse().unwrap());
        assert_eq!(e.health(), Health::Unknown);
        for h in Health::ALL {
            e.set_health(h);
            assert_eq!(e.health(), h);
        }
        let accepting: Vec<_> = Health::ALL.iter().filter(|h| h.accepts()).collect();
        assert_eq!(accepting, [&Health::Unknown, &Health::Up]);
    }

    #[test]
    fn probe_results_and_round_trips_are_counted() {
        let e = Entry::new("a", "192.0.2.1:3478".parse().unwrap());
        e.count_probe(ProbeResult::Ok, Some(Duration::from_micros(300)));
        e.count_probe(ProbeResult::Ok, Some(Duration::from_secs(2)));
        e.count_probe(ProbeResult::Timeout, None);
        assert_eq!(e.probes(ProbeResult::Ok), 2);
        assert_eq!(e.probes(ProbeResult::Timeout), 1);
        assert_eq!(e.probes(ProbeResult::Draining), 0);
        let (buckets, sum) = e.probe_micros();
        assert_eq!(buckets[2], 1, "300 µs is in the ≤ 500 µs bucket");
        assert_eq!(buckets[PROBE_MICROS_BUCKETS.len()], 1, "2 s is in +Inf");
        assert_eq!(sum, 2_000_300);
    }

    #[test]
    fn a_reload_keeps_the_entries_of_unchanged_backends() {
        let a: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:3478".parse().unwrap();
        let old = State::new(&[("a", a), ("b", b)], ProbeSettings::default(), None);
        old.entries[0].set_health(Health::Down);
        old.entries[0].count_redirect();
        let new = State::new(&[("b", b), ("a", a), ("c", a)], ProbeSettings::default(), Some(&old));
        assert!(Arc::ptr_eq(&new.entries[1], &old.entries[0]), "a kept");
        assert!(Arc::ptr_eq(&new.entries[0], &old.entries[1]), "b kept");
        assert_eq!(new.entries[1].health(), Health::Down);
        assert_eq!(new.entries[1].redirects(), 1);
        assert_eq!(new.entries[2].health(), Health::Unknown, "a new name is a new entry");
        assert!(!new.accepts(1) && new.accepts(0) && new.accepts(2) && !new.accepts(3));
    }

    #[test]
    fn a_reload_keeps_the_stream_entries_of_the_same_name_transport_and_address() {
        let (a, b): (SocketAddr, SocketAddr) = ("192.0.2.1:3478".parse().unwrap(), "192.0.2.2:3478".parse().unwrap());
        let (tcp, tls): (SocketAddr, SocketAddr) =
            ("192.0.2.1:3478".parse().unwrap(), "192.0.2.1:5349".parse().unwrap());
        let old = State::with_streams(
            &[("a", a, [Some(tcp), Some(tls)]), ("b", b, [None; 2])],
            ProbeSettings::default(),
            None,
        );
        let old_tcp = old.streams[0][0].clone().unwrap();
        old_tcp.set_health(Health::Down);
        old_tcp.count_probe(StreamResult::Refused);
        assert_eq!((old_tcp.transport, old_tcp.addr, old_tcp.name.as_str()), (Transport::Tcp, tcp, "a"));
        assert_eq!(old.streams[0][1].as_ref().unwrap().transport, Transport::Tls);
        assert!(!old.stream_accepts(0, 0) && old.stream_accepts(0, 1) && !old.stream_accepts(1, 0));
        assert_eq!((old.stream_addr(0, 1), old.stream_addr(1, 0), old.stream_addr(9, 0)), (Some(tls), None, None));
        // `a` moved its UDP port (a new UDP entry) and its TLS port; its TCP address stayed.
        let a2: SocketAddr = "192.0.2.1:3479".parse().unwrap();
        let tls2: SocketAddr = "192.0.2.1:5350".parse().unwrap();
        let new = State::with_streams(
            &[("b", b, [Some(tcp), None]), ("a", a2, [Some(tcp), Some(tls2)])],
            ProbeSettings::default(),
            Some(&old),
        );
        assert!(Arc::ptr_eq(new.streams[1][0].as_ref().unwrap(), &old_tcp), "a's TCP address kept");
        assert_eq!(new.streams[1][0].as_ref().unwrap().probes(StreamResult::Refused), 1);
        assert!(!new.stream_accepts(1, 0));
        assert_eq!(new.streams[1][1].as_ref().unwrap().health(), Health::Unknown, "a new TLS address");
        assert_eq!(new.entries[1].health(), Health::Unknown, "a new UDP address");
        assert!(!Arc::ptr_eq(new.streams[0][0].as_ref().unwrap(), &old_tcp), "another backend's is its own");
        assert!(new.stream_accepts(0, 0));
        assert!(State::new(&[("a", a)], ProbeSettings::default(), Some(&old)).streams[0].iter().all(Option::is_none));
    }
}
