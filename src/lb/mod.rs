//! TURN load balancing (issue 16): which TURN backend an Allocate is redirected to with a 300
//! (Try Alternate), and whether that backend is alive. A [`Balancer`] is built from the
//! configuration (on start and on reload) and then only read by the workers: its
//! [`Balancer::redirect`] runs weighted rendezvous (HRW) hashing ([`hrw`]) over the backends of
//! the client's address family that are neither draining nor down, in O(backends), with no
//! allocation, no lock, no clock and no panic; every process given the same backends and seed
//! picks the same backend for a client. The backends' health lives in a shared [`State`]
//! (`state`), written by the health thread ([`health`]), which is the only part of this room
//! that does I/O and never runs on a worker.

pub mod health;
pub mod hrw;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

pub use self::hrw::{Backend, Choice, DEFAULT_IPV6_PREFIX, HashKey, KeyRule, Pool, PoolError, Seed};
pub use self::state::{Entry, Health, PROBE_MICROS_BUCKETS, ProbeKind, ProbeResult, ProbeSecret, ProbeSettings, State};
use crate::auth::Authenticator;

/// What an Allocate gets when no backend of its family is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NoBackend {
    /// 508 Insufficient Capacity (RFC 8656 §7.2): the client tries its next TURN server at once.
    #[default]
    Reject,
    /// Nothing: the client retransmits and times out (its next server only after ~39.5 s).
    Drop,
}

/// One configured backend address: the backend's name, the address, and the backend's weight
/// and drain flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    /// The backend's name (a backend with an IPv4 and an IPv6 address is two of these).
    pub name: String,
    /// One of its addresses.
    pub addr: SocketAddr,
    /// Its share of the clients (at least 1).
    pub weight: u32,
    /// Set to drain: no new clients.
    pub drain: bool,
    /// The same backend's address of this family for TURN over TCP and over TLS (RFC 8656
    /// §3.1), indexed by [`Transport::stream_index`]; `None`: it takes no clients over that
    /// transport.
    pub stream: [Option<SocketAddr>; 2],
}

/// The transport an Allocate came over: a redirect names the backend's address for the same
/// one (RFC 8489 §10: the client retries "using the same transport protocol").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// UDP (and the default).
    #[default]
    Udp,
    /// TCP (RFC 8489 §6.2.2).
    Tcp,
    /// TLS over TCP (RFC 8489 §6.2.3).
    Tls,
}

impl Transport {
    /// The index of a stream transport in [`BackendAddr::stream`]; `None` for UDP.
    pub const fn stream_index(self) -> Option<usize> {
        match self {
            Transport::Udp => None,
            Transport::Tcp => Some(0),
            Transport::Tls => Some(1),
        }
    }

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// Where one Allocate is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirect {
    /// The chosen backend address, of the client's family (the first ALTERNATE-SERVER).
    pub addr: SocketAddr,
    /// The same backend's address of the other family, when it has one that is up and the
    /// balancer is configured to add it (the second ALTERNATE-SERVER, RFC 8489 §10's SHOULD).
    pub other: Option<SocketAddr>,
    /// The chosen entry's index (its counters are `state.entries[index]`).
    pub index: usize,
}

/// The balancer a listener redirects Allocates with: the pool, its live state and the answer
/// settings. Immutable; shared by every worker behind the handler snapshot.
#[derive(Debug)]
pub struct Balancer {
    /// The backends and the hash.
    pub pool: Pool,
    /// Each backend address's health and counters (the health thread writes them).
    pub state: Arc<State>,
    /// Long-term mode: Allocates are challenged and the 300 is signed (RFC 8489 §14.8); `None`:
    /// the 300 goes out before any challenge, as coturn sends it.
    pub auth: Option<Arc<Authenticator>>,
    /// What an Allocate gets when no backend is up.
    pub on_no_backend: NoBackend,
    /// Add the chosen backend's address of the other family as a second ALTERNATE-SERVER.
    pub other_family: bool,
    /// Per entry: the index of the same backend's address of the other family.
    sibling: Box<[Option<usize>]>,
    /// Per entry: its TCP and TLS addresses ([`BackendAddr::stream`]).
    stream: Box<[[Option<SocketAddr>; 2]]>,
}

impl Balancer {
    /// The balancer over `backends` (`seed` and `rule` as [`Pool::new`]), probed as `probe`
    /// says; the health and counters of each backend address that `previous` also has (same
    /// name and address) carry over.
    pub fn new(
        backends: &[BackendAddr],
        seed: Seed,
        rule: KeyRule,
        probe: ProbeSettings,
        previous: Option<&State>,
    ) -> Result<Balancer, PoolError> {
        let pool_backends: Vec<Backend> =
            backends.iter().map(|b| Backend { addr: b.addr, weight: b.weight, drain: b.drain }).collect();
        let pool = Pool::new(&pool_backends, seed, rule)?;
        let named: Vec<(&str, SocketAddr)> =
            backends.iter().zip(pool.backends()).map(|(b, p)| (b.name.as_str(), p.addr)).collect();
        let sibling = named
            .iter()
            .map(|&(name, addr)| named.iter().position(|&(n, a)| n == name && a.is_ipv4() != addr.is_ipv4()))
            .collect();
        let state = Arc::new(State::new(&named, probe, previous));
        let stream = backends.iter().map(|b| b.stream).collect();
        Ok(Balancer { pool, state, auth: None, on_no_backend: NoBackend::Reject, other_family: true, sibling, stream })
    }

    /// This balancer with the live health and counters of `previous` (a reload): the entries
    /// whose backend name and address stayed are carried over, the others start afresh.
    pub fn rebased(&self, previous: &State) -> Balancer {
        let named: Vec<(&str, SocketAddr)> = self.state.entries.iter().map(|e| (e.name.as_str(), e.addr)).collect();
        let state = Arc::new(State::new(&named, self.state.probe.clone(), Some(previous)));
        Balancer {
            pool: self.pool.clone(),
            state,
            auth: self.auth.clone(),
            sibling: self.sibling.clone(),
            stream: self.stream.clone(),
            ..*self
        }
    }

    /// Where `client`'s Allocate goes: its backend among those of its family that accept new
    /// clients, and that backend's other-family address when wanted and up; `None` when no
    /// backend of its family accepts. No allocation, no lock, no panic.
    #[inline]
    pub fn redirect(&self, client: SocketAddr) -> Option<Redirect> {
        let state = &*self.state;
        let choice = self.pool.choose_by(client, |i| state.accepts(i))?;
        let other = match self.sibling.get(choice.index) {
            Some(&Some(i)) if self.other_family && state.accepts(i) && !self.pool.backends()[i].drain => {
                Some(self.pool.backends()[i].addr)
            }
            _ => None,
        };
        Some(Redirect { addr: choice.addr, other, index: choice.index })
    }

    /// [`Balancer::redirect`] for an Allocate that came over `transport`: over TCP or TLS, the
    /// client's backend among those that accept new clients *and* have an address for that
    /// transport (the same rendezvous order, so a client whose backend serves every transport
    /// goes to the same one whatever it uses), redirected to that address, and the sibling's
    /// address for the transport as the second. Health is the UDP address's (its probes).
    #[inline]
    pub fn redirect_over(&self, client: SocketAddr, transport: Transport) -> Option<Redirect> {
        let Some(t) = transport.stream_index() else { return self.redirect(client) };
        let state = &*self.state;
        let has = |i: usize| self.stream.get(i).and_then(|s| s[t]);
        let choice = self.pool.choose_by(client, |i| state.accepts(i) && has(i).is_some())?;
        let addr = has(choice.index)?;
        let other = match self.sibling.get(choice.index) {
            Some(&Some(i)) if self.other_family && state.accepts(i) && !self.pool.backends()[i].drain => has(i),
            _ => None,
        };
        Some(Redirect { addr, other, index: choice.index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: &str, a: &str) -> BackendAddr {
        BackendAddr { name: name.into(), addr: a.parse().unwrap(), weight: 1, drain: false, stream: [None; 2] }
    }

    fn balancer() -> Balancer {
        let backends = [
            addr("a", "192.0.2.1:3478"),
            addr("a", "[2001:db8::1]:3478"),
            addr("b", "192.0.2.2:3478"),
            addr("b", "[2001:db8::2]:3478"),
        ];
        Balancer::new(&backends, *b"0123456789abcdef", KeyRule::default(), ProbeSettings::default(), None).unwrap()
    }

    #[test]
    fn a_redirect_names_the_same_backends_other_family_address() {
        let b = balancer();
        for i in 0..200u32 {
            let client = SocketAddr::from(([198, 51, 100, (i % 250) as u8], 40_000 + i as u16));
            let r = b.redirect(client).unwrap();
            assert!(r.addr.is_ipv4());
            let name = &b.state.entries[r.index].name;
            let other = r.other.expect("the sibling is up");
            assert!(other.is_ipv6());
            assert_eq!(&b.state.entries.iter().find(|e| e.addr == other).unwrap().name, name);
        }
    }

    #[test]
    fn a_down_sibling_or_the_option_off_leaves_the_second_address_out() {
        let mut b = balancer();
        let client: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let r = b.redirect(client).unwrap();
        let sibling = b.state.entries.iter().position(|e| Some(e.addr) == r.other).unwrap();
        b.state.entries[sibling].set_health(Health::Down);
        assert_eq!(b.redirect(client).unwrap(), Redirect { other: None, ..r });
        b.state.entries[sibling].set_health(Health::Up);
        b.other_family = false;
        assert_eq!(b.redirect(client).unwrap().other, None);
    }

    #[test]
    fn no_backend_up_is_none_and_a_down_backend_moves_its_clients() {
        let b = balancer();
        let client: SocketAddr = "[2001:db8:77::5]:4000".parse().unwrap();
        let first = b.redirect(client).unwrap();
        assert!(first.addr.is_ipv6());
        b.state.entries[first.index].set_health(Health::Down);
        let second = b.redirect(client).unwrap();
        assert_ne!(second.addr, first.addr);
        b.state.entries[second.index].set_health(Health::Draining);
        assert_eq!(b.redirect(client), None);
    }
}
