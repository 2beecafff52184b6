//! TURN load balancing (issue 16): which TURN backend an Allocate is redirected to with a 300
//! (Try Alternate), and whether that backend is alive. A [`Balancer`] is built from the
//! configuration (on start and on reload) and then only read by the workers: its
//! [`Balancer::redirect`] runs weighted rendezvous (HRW) hashing ([`hrw`]) over the backends of
//! the client's address family that are neither draining nor down, in O(backends), with no
//! allocation, no lock, no clock and no panic; every process given the same backends and seed
//! picks the same backend for a client. [`Balancer::redirect_over`] does the same for an
//! Allocate that came over TCP or TLS, among the backends whose address for that transport is
//! also up. The backends' health (each UDP address's, and each TCP and TLS address's) lives in
//! a shared [`State`] (`state`), written by the health thread ([`health`]), which is the only
//! part of this room that does I/O and never runs on a worker.

pub mod health;
pub mod hrw;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;

pub use self::hrw::{Backend, Choice, DEFAULT_IPV6_PREFIX, HashKey, KeyRule, Pool, PoolError, Seed};
pub use self::state::{
    Entry, Health, Named, PROBE_MICROS_BUCKETS, ProbeKind, ProbeResult, ProbeSecret, ProbeSettings, State, StreamEntry,
    StreamResult,
};
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
    /// transport. Each is probed with TCP connects of its own ([`StreamEntry`]).
    pub stream: [Option<SocketAddr>; 2],
}

impl BackendAddr {
    /// `name`'s address `addr` with weight 1, not draining, and no TCP or TLS address.
    pub fn new(name: &str, addr: SocketAddr) -> BackendAddr {
        BackendAddr { name: name.to_owned(), addr, weight: 1, drain: false, stream: [None; 2] }
    }
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
}

impl Balancer {
    /// The balancer over `backends` (`seed` and `rule` as [`Pool::new`]), probed as `probe`
    /// says; the health and counters of each backend address that `previous` also has (same
    /// name and address) carry over, and the health of each TCP and TLS address it also has
    /// (same name, transport and address).
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
        let named: Vec<Named<'_>> =
            backends.iter().zip(pool.backends()).map(|(b, p)| (b.name.as_str(), p.addr, b.stream)).collect();
        let sibling = named
            .iter()
            .map(|&(name, addr, _)| named.iter().position(|&(n, a, _)| n == name && a.is_ipv4() != addr.is_ipv4()))
            .collect();
        let state = Arc::new(State::with_streams(&named, probe, previous));
        Ok(Balancer { pool, state, auth: None, on_no_backend: NoBackend::Reject, other_family: true, sibling })
    }

    /// This balancer with the live health and counters of `previous` (a reload): the entries
    /// whose backend name and address stayed are carried over, and the TCP and TLS entries
    /// whose backend name, transport and address stayed; the others start afresh.
    pub fn rebased(&self, previous: &State) -> Balancer {
        let named: Vec<Named<'_>> = self
            .state
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.as_str(), e.addr, [0, 1].map(|t| self.state.stream_addr(i, t))))
            .collect();
        let state = Arc::new(State::with_streams(&named, self.state.probe.clone(), Some(previous)));
        Balancer { pool: self.pool.clone(), state, auth: self.auth.clone(), sibling: self.sibling.clone(), ..*self }
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
    /// client's backend among those that accept new clients (their UDP health and drain, as
    /// for UDP) *and* have an address for that transport whose connect probes are up (or not
    /// probed yet), redirected to that address, and the sibling's address for the transport
    /// as the second under the same two conditions. The same rendezvous order, so a client
    /// whose backend serves every transport goes to the same one whatever it uses, and only the
    /// clients of a backend whose port went down move. `None` (the `on_no_backend` answer)
    /// when no backend of the client's family has that transport up. Two relaxed atomic loads
    /// per candidate; no allocation, no lock, no panic.
    #[inline]
    pub fn redirect_over(&self, client: SocketAddr, transport: Transport) -> Option<Redirect> {
        let Some(t) = transport.stream_index() else { return self.redirect(client) };
        let state = &*self.state;
        let usable = |i: usize| state.accepts(i) && state.stream_accepts(i, t);
        let choice = self.pool.choose_by(client, usable)?;
        // Addresses never change within a state: the chosen entry has one.
        let addr = state.stream_addr(choice.index, t)?;
        let other = match self.sibling.get(choice.index) {
            Some(&Some(i)) if self.other_family && usable(i) && !self.pool.backends()[i].drain => {
                state.stream_addr(i, t)
            }
            _ => None,
        };
        Some(Redirect { addr, other, index: choice.index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(name: &str, a: &str) -> BackendAddr {
        BackendAddr::new(name, a.parse().unwrap())
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

    /// Backends `a` to `e` with an IPv4 and an IPv6 address each, every address with a TCP
    /// address (its port + 1000), and `f` (IPv4) with none.
    fn with_tcp() -> Balancer {
        let mut backends = Vec::new();
        for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            for ip in [format!("192.0.2.{}", i + 1), format!("[2001:db8::{}]", i + 1)] {
                let mut b = addr(name, &format!("{ip}:3478"));
                b.stream[0] = Some(format!("{ip}:4478").parse().unwrap());
                backends.push(b);
            }
        }
        backends.push(addr("f", "192.0.2.6:3478"));
        Balancer::new(&backends, *b"0123456789abcdef", KeyRule::default(), ProbeSettings::default(), None).unwrap()
    }

    fn clients() -> impl Iterator<Item = SocketAddr> {
        (0..300u32).map(|i| SocketAddr::from(([198, 51, (i / 250) as u8, (i % 250) as u8], 40_000)))
    }

    /// The entry of `name`'s IPv4 address, and its TCP entry.
    fn v4(b: &Balancer, name: &str) -> (usize, Arc<StreamEntry>) {
        let i = b.state.entries.iter().position(|e| e.name == name && e.addr.is_ipv4()).unwrap();
        (i, b.state.streams[i][0].clone().unwrap())
    }

    #[test]
    fn over_tcp_the_order_is_the_udp_order_among_backends_with_a_tcp_address() {
        let b = with_tcp();
        let f = b.state.entries.iter().position(|e| e.name == "f").unwrap();
        let mut on_f = 0;
        for client in clients() {
            let udp = b.redirect(client).unwrap();
            let tcp = b.redirect_over(client, Transport::Tcp).unwrap();
            assert_eq!(b.redirect_over(client, Transport::Udp), Some(udp));
            assert_eq!(b.redirect_over(client, Transport::Tls), None, "no backend has a TLS address");
            assert_ne!(tcp.index, f, "f has no TCP address");
            assert_eq!(Some(tcp.addr), b.state.stream_addr(tcp.index, 0));
            let sibling = b.sibling[tcp.index].unwrap();
            assert_eq!(tcp.other, b.state.stream_addr(sibling, 0), "the sibling's TCP address second");
            if udp.index == f {
                on_f += 1;
            } else {
                assert_eq!(tcp.index, udp.index, "{client}: the same backend over both transports");
            }
        }
        assert!(on_f > 0, "some clients are f's over UDP");
    }

    #[test]
    fn a_backend_whose_tcp_address_is_down_gets_no_tcp_clients_but_keeps_its_udp_ones() {
        let b = with_tcp();
        let before: Vec<Redirect> = clients().map(|c| b.redirect_over(c, Transport::Tcp).unwrap()).collect();
        let udp_before: Vec<Redirect> = clients().map(|c| b.redirect(c).unwrap()).collect();
        let (c, c_tcp) = v4(&b, "c");
        assert!(before.iter().any(|r| r.index == c), "some clients are c's");
        c_tcp.set_health(Health::Down);
        assert_eq!(b.state.entries[c].health(), Health::Unknown, "its UDP health accepts");
        for ((client, was), udp) in clients().zip(&before).zip(&udp_before) {
            let now = b.redirect_over(client, Transport::Tcp).unwrap();
            if was.index == c {
                assert_ne!(now.index, c, "{client} moves off c over TCP");
                // To its next backend in the same order: the highest of the others with a TCP
                // address.
                let next = b.pool.choose_by(client, |i| i != c && b.state.stream_addr(i, 0).is_some()).unwrap();
                assert_eq!(now.index, next.index, "{client}: the next in the same order");
            } else {
                assert_eq!(now, *was, "{client} stays");
            }
            assert_eq!(b.redirect(client).unwrap(), *udp, "{client}: UDP redirects are unchanged");
        }
        // Up again (or not probed yet): its clients come back.
        c_tcp.set_health(Health::Up);
        assert!(clients().zip(&before).all(|(client, was)| b.redirect_over(client, Transport::Tcp) == Some(*was)));
    }

    #[test]
    fn over_tcp_both_healths_count_and_none_up_is_none() {
        let b = with_tcp();
        let client: SocketAddr = "198.51.100.7:4000".parse().unwrap();
        let first = b.redirect_over(client, Transport::Tcp).unwrap();
        // The sibling's TCP address down: no second ALTERNATE-SERVER, over TCP only.
        let sibling = b.sibling[first.index].unwrap();
        let sibling_tcp = b.state.streams[sibling][0].clone().unwrap();
        sibling_tcp.set_health(Health::Down);
        assert_eq!(b.redirect_over(client, Transport::Tcp), Some(Redirect { other: None, ..first }));
        assert!(b.redirect(client).unwrap().other.is_some(), "the UDP sibling is still named");
        sibling_tcp.set_health(Health::Unknown);
        // UDP health down with the TCP address up: not chosen over TCP either.
        b.state.entries[first.index].set_health(Health::Down);
        assert_ne!(b.redirect_over(client, Transport::Tcp).unwrap().index, first.index);
        // Every IPv4 TCP address down: the on_no_backend answer, while UDP still redirects.
        for i in 0..b.state.entries.len() {
            if let (true, Some(tcp)) = (b.state.entries[i].addr.is_ipv4(), &b.state.streams[i][0]) {
                tcp.set_health(Health::Down);
            }
        }
        assert_eq!(b.redirect_over(client, Transport::Tcp), None);
        assert!(b.redirect(client).is_some());
        let v6: SocketAddr = "[2001:db8:77::5]:4000".parse().unwrap();
        assert!(b.redirect_over(v6, Transport::Tcp).is_some(), "the IPv6 TCP addresses are still up");
    }

    #[test]
    fn a_rebased_balancer_keeps_the_tcp_health_of_the_running_one() {
        let running = with_tcp();
        let (_, tcp) = v4(&running, "c");
        tcp.set_health(Health::Down);
        let reloaded = with_tcp().rebased(&running.state);
        assert!(Arc::ptr_eq(&v4(&reloaded, "c").1, &tcp));
        assert_eq!(v4(&reloaded, "c").1.health(), Health::Down);
    }
}
