//! The pool's live state, shared by the workers (who read each backend's health once per
//! Allocate and count their redirects), the health thread (who writes the health and counts its
//! probes) and the exporter (who reads everything at scrape time). One [`Entry`] per backend
//! address, in the [`Pool`](super::Pool)'s index order; plain atomics, no lock. An entry
//! survives a reload that keeps its backend's name and address, so a reload neither forgets a
//! dead backend nor resets its counters.
//!
//! The redirect counters are shared atomics, not per-worker counters (DESIGN invariant 8 keeps
//! per-worker counters for the packet path): a client sends its first Allocate to the balancer
//! once per TURN server when it gathers (what the browser lab saw of Chromium and libnice,
//! docs/real-clients.md), each backend's counter has a cache line of its own, and the Binding
//! path never touches them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_utils::CachePadded;

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
    health: AtomicU8,
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
            health: AtomicU8::new(Health::Unknown as u8),
            redirects: CachePadded::new(AtomicU64::new(0)),
            probes: Default::default(),
            probe_micros: Default::default(),
            probe_micros_sum: AtomicU64::new(0),
        }
    }

    /// The current health.
    #[inline]
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Sets the health (the health thread); returns the previous one.
    pub fn set_health(&self, health: Health) -> Health {
        Health::from_u8(self.health.swap(health as u8, Ordering::Relaxed))
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

/// The pool's live state: one entry per backend address (the pool's index order) and the probe
/// settings. Replaced whole on a reload, keeping the entries whose name and address stayed.
#[derive(Debug)]
pub struct State {
    /// The entries, indexed like the pool's backends.
    pub entries: Box<[std::sync::Arc<Entry>]>,
    /// How they are probed.
    pub probe: ProbeSettings,
}

impl State {
    /// The state for `backends` (name, address), taking each entry that `previous` has for the
    /// same name and address (health and counters carried over), a fresh one otherwise.
    pub fn new(backends: &[(&str, SocketAddr)], probe: ProbeSettings, previous: Option<&State>) -> State {
        let entries = backends
            .iter()
            .map(|&(name, addr)| {
                previous
                    .and_then(|p| p.entries.iter().find(|e| e.name == name && e.addr == addr))
                    .cloned()
                    .unwrap_or_else(|| std::sync::Arc::new(Entry::new(name, addr)))
            })
            .collect();
        State { entries, probe }
    }

    /// Whether backend `index` gets new clients (false past the end).
    #[inline]
    pub fn accepts(&self, index: usize) -> bool {
        self.entries.get(index).is_some_and(|e| e.health().accepts())
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
        assert!(std::sync::Arc::ptr_eq(&new.entries[1], &old.entries[0]), "a kept");
        assert!(std::sync::Arc::ptr_eq(&new.entries[0], &old.entries[1]), "b kept");
        assert_eq!(new.entries[1].health(), Health::Down);
        assert_eq!(new.entries[1].redirects(), 1);
        assert_eq!(new.entries[2].health(), Health::Unknown, "a new name is a new entry");
        assert!(!new.accepts(1) && new.accepts(0) && new.accepts(2) && !new.accepts(3));
    }
}
