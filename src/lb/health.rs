//! The health thread: one dedicated thread ("stunedge-health", never a worker) that probes every
//! backend address of the current [`State`] with STUN requests, and every TCP and TLS address
//! with a TCP connect, and is the only writer of each [`Entry`]'s and [`StreamEntry`]'s health.
//! It owns one UDP socket per address family, sends every probe that is due, starts every
//! connect that is due (non-blocking), waits in `poll(2)` for at most `TICK` for answers and
//! connects, and matches answers by transaction ID *and* source address; per address it keeps
//! at most one probe in flight and the rise/fall run that decides the health. The pure parts,
//! the requests (`emit`), what an answer means (`judge`) and the state machine (`advance`,
//! shared by both kinds of probe), take bytes and values and do no I/O; only `Prober` and the
//! connect helpers touch sockets and clocks. It must never run on, block, or take a lock shared
//! with a worker: workers read the health atomics and nothing else of this module.
//!
//! A TLS address is probed with the same bare TCP connect as a TCP address: no TLS handshake
//! is made. A handshake would have to verify the relay's certificate, which carries the relay's
//! IP address or a name this server is not told (and a probe that skipped verification would
//! prove little more than the connect does); a completed connect proves that something listens
//! on the port, which is what a relay started without its TLS listener, a firewall or a crashed
//! listener takes away. A TLS probe (a handshake against a configured name and CA) could be
//! added later.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::state::{
    Entry, Health, ProbeKind, ProbeResult, ProbeSecret, ProbeSettings, State, StreamEntry, StreamResult,
};
use crate::auth::keys::{Algorithm, RawKey, long_term_key, rest_password};
use crate::io::mmsg::wait_readable;
use crate::stun::attr::{ErrorCode, Lifetime, Nonce, Realm, Username};
use crate::stun::integrity::{Check, check_fingerprint, check_integrity_sha1, mac_sha1};
use crate::stun::registry::{
    ATTR_REQUESTED_TRANSPORT, ERR_ALLOCATION_MISMATCH, ERR_FORBIDDEN, ERR_STALE_NONCE, ERR_UNAUTHENTICATED,
    MAGIC_COOKIE, METHOD_ALLOCATE, METHOD_BINDING, METHOD_REFRESH,
};
use crate::stun::{Class, Message, MessageType, MessageWriter, WriteError};

/// The longest the thread waits before it looks at its commands again (stop, replace): `stop`
/// returns within about this long.
const TICK: Duration = Duration::from_millis(50);

/// The receive buffer and the send buffer: a 401 with the longest REALM and NONCE coturn sends
/// fits; a longer datagram is cut, fails to parse and counts as unexpected.
const BUF_LEN: usize = 2048;

/// Datagrams read from one socket per loop turn at most, so that a flood of strays cannot keep
/// the thread from its deadlines and commands.
const RECV_BURST: usize = 64;

/// REQUESTED-TRANSPORT's value for UDP (RFC 8656 §18.11): protocol 17, then three RFFU bytes.
const TRANSPORT_UDP: [u8; 4] = [17, 0, 0, 0];

/// How far ahead a TURN REST username's expiry is put (the probe's credential lives one hour).
const REST_LIFETIME_SECS: u64 = 3600;

/// Probe jitter: each interval is scaled by a factor in `1 ± JITTER`.
const JITTER: f64 = 0.10;

/// The longest interval or timeout the thread uses (a longer configured one is cut to this), so
/// that no deadline arithmetic can overflow an `Instant`.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// The running health checks: a handle on the "stunedge-health" thread. Dropping it stops and
/// joins the thread, as [`HealthChecker::stop`] does.
#[derive(Debug)]
pub struct HealthChecker {
    commands: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

/// What the handle asks of the thread.
enum Command {
    /// Probe this state from now on.
    Replace(Arc<State>),
    /// End the thread.
    Stop,
}

impl HealthChecker {
    /// Spawns thread "stunedge-health" probing `state`'s entries, each at once and then every
    /// `state.probe.interval` (±10 %). Errors only if the thread or its sockets cannot be
    /// created: one of the two sockets (`0.0.0.0:0`, `[::]:0`) is enough, and the entries of a
    /// family without one count [`ProbeResult::SendError`].
    pub fn spawn(state: Arc<State>) -> io::Result<HealthChecker> {
        let v4 = probe_socket(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        let v6 = probe_socket(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)));
        let (v4, v6) = match (v4, v6) {
            (Err(e), Err(_)) => return Err(e),
            (v4, v6) => (v4, v6),
        };
        for (family, socket) in [("IPv4", &v4), ("IPv6", &v6)] {
            if let Err(e) = socket {
                tracing::info!(family, error = %e, "no health-probe socket: this family's backends count send errors");
            }
        }
        let (commands, inbox) = mpsc::channel();
        let prober = Prober::new(inbox, Net { v4: v4.ok(), v6: v6.ok(), out: [0; BUF_LEN], rng: Rng::new() }, state);
        let thread = std::thread::Builder::new().name("stunedge-health".into()).spawn(move || prober.run())?;
        Ok(HealthChecker { commands, thread: Some(thread) })
    }

    /// A reload: probe `state` from now on. Entries it shares with the previous state (the same
    /// `Arc<Entry>`) keep their health, their rise/fall run and their probe in flight; new ones
    /// are probed at once (within one `TICK`). Never blocks on probes.
    pub fn replace(&self, state: Arc<State>) {
        // A send fails only when the thread is gone; there is nothing left to tell then.
        let _ = self.commands.send(Command::Replace(state));
    }

    /// Stops the thread and joins it: returns within about one `TICK` (50 ms).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the health thread panicked");
            }
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A non-blocking UDP socket bound to `addr`.
fn probe_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// The seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Transaction IDs and jitter: SipHash-1-3 under `RandomState`'s per-process random keys over a
/// counter. Unpredictable to an off-path sender (who would otherwise forge answers that keep a
/// dead backend up) without a read of `/dev/urandom` per probe.
struct Rng {
    keys: RandomState,
    counter: u64,
}

impl Rng {
    fn new() -> Rng {
        Rng { keys: RandomState::new(), counter: 0 }
    }

    fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let mut h = self.keys.build_hasher();
        h.write_u64(self.counter);
        h.finish()
    }

    fn tid(&mut self) -> [u8; 12] {
        let mut tid = [0; 12];
        tid[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        tid[8..].copy_from_slice(&self.next_u64().to_le_bytes()[..4]);
        tid
    }

    /// `interval` scaled by a factor uniform in [0.9, 1.1).
    fn jitter(&mut self, interval: Duration) -> Duration {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit)
    }
}

/// Long-term credentials answering one challenge (RFC 8489 §9.2).
struct Signed {
    username: Vec<u8>,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    /// MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
    key: RawKey,
}

impl Signed {
    /// The credentials for `username` (already in its REST form) under `realm` and `nonce`.
    fn new(secret: &ProbeSecret, username: Vec<u8>, realm: &[u8], nonce: &[u8]) -> Box<Signed> {
        let key = match secret {
            ProbeSecret::Password(password) => long_term_key(Algorithm::Md5, &username, realm, password.as_bytes()),
            ProbeSecret::RestSecret(secret) => {
                let password = rest_password(&mac_sha1(secret.as_bytes()), &username);
                long_term_key(Algorithm::Md5, &username, realm, &password)
            }
        };
        Box::new(Signed { username, realm: realm.to_vec(), nonce: nonce.to_vec(), key })
    }
}

/// The probe user's USERNAME: as configured, or for a TURN REST secret `<expiry>:<user>` with
/// the expiry one hour after `unix_now`.
fn probe_username(username: &str, secret: &ProbeSecret, unix_now: u64) -> Vec<u8> {
    match secret {
        ProbeSecret::Password(_) => username.as_bytes().to_vec(),
        ProbeSecret::RestSecret(_) => {
            format!("{}:{username}", unix_now.saturating_add(REST_LIFETIME_SECS)).into_bytes()
        }
    }
}

/// A request the prober sends.
#[derive(Clone, Copy)]
enum Request<'a> {
    /// Binding with FINGERPRINT.
    Binding,
    /// Allocate for UDP, signed when credentials are given.
    Allocate(Option<&'a Signed>),
    /// Refresh with LIFETIME 0 (RFC 8656 §7.3: deletes the allocation), signed when given.
    Release(Option<&'a Signed>),
}

/// Writes `request` with transaction ID `tid` into `buf`; returns its length.
fn emit(buf: &mut [u8], tid: &[u8; 12], request: Request<'_>) -> Result<usize, WriteError> {
    let mut cookie_and_id = [0u8; 16];
    cookie_and_id[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    cookie_and_id[4..].copy_from_slice(tid);
    let (method, signed) = match request {
        Request::Binding => (METHOD_BINDING, None),
        Request::Allocate(signed) => (METHOD_ALLOCATE, signed),
        Request::Release(signed) => (METHOD_REFRESH, signed),
    };
    let mut w = MessageWriter::new(buf, MessageType::new(method, Class::Request), &cookie_and_id)?;
    match request {
        Request::Binding => {}
        Request::Allocate(_) => w.add_raw(ATTR_REQUESTED_TRANSPORT, &TRANSPORT_UDP)?,
        Request::Release(_) => w.add(&Lifetime(0))?,
    }
    if let Some(s) = signed {
        w.add(&Username(&s.username))?;
        w.add(&Realm(&s.realm))?;
        w.add(&Nonce(&s.nonce))?;
        w.add_integrity_sha1(s.key.as_bytes())?;
    }
    w.add_fingerprint()?;
    Ok(w.finish())
}

/// Where a probe in flight stands: what its current request expects.
enum Step {
    /// One request whose answer ends the probe (`Allocate`, `Binding`).
    Single,
    /// `AllocateAuth`'s first, unsigned Allocate: expects the 401 challenge.
    Challenge,
    /// `AllocateAuth`'s signed Allocate; `retried` once a 438 has been answered.
    Signed { creds: Box<Signed>, retried: bool },
}

/// What an answer to the current request means.
enum Verdict {
    /// The probe ends with this result.
    Done(ProbeResult),
    /// The probe ends Ok and the backend now holds an allocation for the prober's address:
    /// free it with a Refresh of lifetime 0, signed with these credentials when there are some.
    Release(Option<Box<Signed>>),
    /// Send the signed Allocate of this step.
    Next(Step),
}

/// What `answer` to the request of `step` means for a probe of `kind`. `unix_now` dates a REST
/// username. Never panics, whatever the message holds.
fn judge(kind: &ProbeKind, step: Step, answer: &Message<'_>, unix_now: u64) -> Verdict {
    let expected = if matches!(kind, ProbeKind::Binding) { METHOD_BINDING } else { METHOD_ALLOCATE };
    let message_type = answer.message_type();
    if message_type.method != expected || answer.is_classic() || check_fingerprint(answer) == Check::Invalid {
        return Verdict::Done(ProbeResult::Unexpected);
    }
    let code = match message_type.class {
        Class::SuccessResponse => None,
        Class::ErrorResponse => match answer.get::<ErrorCode>() {
            Some(Ok(e)) => Some(e.code),
            _ => return Verdict::Done(ProbeResult::Unexpected),
        },
        Class::Request | Class::Indication => return Verdict::Done(ProbeResult::Unexpected),
    };
    match (kind, step, code) {
        (ProbeKind::Binding, _, None) => Verdict::Done(ProbeResult::Ok),
        (ProbeKind::Binding, _, Some(_)) => Verdict::Done(ProbeResult::Unexpected),
        // coturn's drain mode answers every Allocate 403 (RFC 8656 §7.2 lets a server refuse).
        (_, _, Some(ERR_FORBIDDEN)) => Verdict::Done(ProbeResult::Draining),
        // An unauthenticated Allocate that succeeds: a backend without authentication.
        (_, Step::Single | Step::Challenge, None) => Verdict::Release(None),
        // This address already holds an allocation there (a lost release, RFC 8656 §7.2 step
        // 2): the backend works; release it again rather than fail until its lifetime ends.
        (_, Step::Single | Step::Challenge, Some(ERR_ALLOCATION_MISMATCH)) => Verdict::Release(None),
        (_, Step::Single, Some(ERR_UNAUTHENTICATED)) => Verdict::Done(ProbeResult::Ok),
        (ProbeKind::AllocateAuth { username, secret }, Step::Challenge, Some(ERR_UNAUTHENTICATED)) => {
            match (answer.get::<Realm>(), answer.get::<Nonce>()) {
                (Some(Ok(realm)), Some(Ok(nonce))) => {
                    let name = probe_username(username, secret, unix_now);
                    let creds = Signed::new(secret, name, realm.0, nonce.0);
                    Verdict::Next(Step::Signed { creds, retried: false })
                }
                _ => Verdict::Done(ProbeResult::Unexpected),
            }
        }
        (_, Step::Signed { creds, .. }, None) => {
            // RFC 8489 §9.2.4: the answer to a signed request is signed; a wrong MAC is not our
            // backend's answer. An unsigned success is taken (some servers omit it).
            if check_integrity_sha1(answer, creds.key.as_bytes()) == Check::Invalid {
                Verdict::Done(ProbeResult::Unexpected)
            } else {
                Verdict::Release(Some(creds))
            }
        }
        (_, Step::Signed { creds, .. }, Some(ERR_ALLOCATION_MISMATCH)) => Verdict::Release(Some(creds)),
        // RFC 8489 §9.2.5: a stale nonce is retried once with the new one.
        (ProbeKind::AllocateAuth { secret, .. }, Step::Signed { creds, retried: false }, Some(ERR_STALE_NONCE)) => {
            let Signed { username, realm: old_realm, .. } = *creds;
            let realm = match answer.get::<Realm>() {
                Some(Ok(realm)) => realm.0,
                _ => &old_realm[..],
            };
            match answer.get::<Nonce>() {
                Some(Ok(nonce)) => {
                    let creds = Signed::new(secret, username, realm, nonce.0);
                    Verdict::Next(Step::Signed { creds, retried: true })
                }
                _ => Verdict::Done(ProbeResult::Unexpected),
            }
        }
        _ => Verdict::Done(ProbeResult::Unexpected),
    }
}

/// Results in a row since the last change of health.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Run {
    oks: u32,
    fails: u32,
}

/// What one probe's result means to the state machine, whichever kind of probe it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The probe passed.
    Pass,
    /// It failed.
    Fail,
    /// The backend is draining (a 403 to a STUN probe; a connect never says so).
    Drain,
}

impl From<ProbeResult> for Outcome {
    fn from(result: ProbeResult) -> Outcome {
        match result {
            ProbeResult::Ok => Outcome::Pass,
            ProbeResult::Draining => Outcome::Drain,
            ProbeResult::Timeout | ProbeResult::Unexpected | ProbeResult::SendError => Outcome::Fail,
        }
    }
}

impl StreamResult {
    /// What it says of the backend; `None`: nothing (the probe could not be made here).
    fn outcome(self) -> Option<Outcome> {
        match self {
            StreamResult::Ok => Some(Outcome::Pass),
            StreamResult::Refused | StreamResult::Timeout | StreamResult::Error => Some(Outcome::Fail),
            StreamResult::LocalError => None,
        }
    }
}

/// The health after `outcome`. Unknown: the first result decides. Up: `fall` failures in a row
/// → Down. Down or Draining: `rise` passes in a row → Up. Draining: `fall` failures in a row →
/// Down (a drained backend that stopped answering is down). Any Drain → Draining at once.
/// A `rise` or `fall` of 0 counts as 1.
fn advance(health: Health, run: &mut Run, outcome: Outcome, rise: u32, fall: u32) -> Health {
    let (rise, fall) = (rise.max(1), fall.max(1));
    match outcome {
        Outcome::Pass => *run = Run { oks: run.oks.saturating_add(1), fails: 0 },
        Outcome::Drain => {
            *run = Run::default();
            return Health::Draining;
        }
        Outcome::Fail => *run = Run { oks: 0, fails: run.fails.saturating_add(1) },
    }
    let next = match health {
        Health::Unknown if run.oks > 0 => Health::Up,
        Health::Unknown => Health::Down,
        Health::Up if run.fails >= fall => Health::Down,
        Health::Down | Health::Draining if run.oks >= rise => Health::Up,
        Health::Draining if run.fails >= fall => Health::Down,
        other => other,
    };
    if next != health {
        *run = Run::default();
    }
    next
}

/// A probe in flight.
struct InFlight {
    tid: [u8; 12],
    step: Step,
    /// When the current request went out: it times out at `sent + timeout`.
    sent: Instant,
    /// The first round trip, once answered (the probe's reported RTT).
    first_rtt: Option<Duration>,
}

/// A TCP connect probe in flight: the non-blocking socket, which `poll(2)` reports writable
/// (or in error) once the handshake has completed or failed.
struct Connecting {
    socket: Socket,
    /// When the SYN went out: it times out at `sent + timeout`.
    sent: Instant,
}

/// A probe in flight of either kind.
trait Pending {
    /// When its current request or connect went out.
    fn sent(&self) -> Instant;
}

impl Pending for InFlight {
    fn sent(&self) -> Instant {
        self.sent
    }
}

impl Pending for Connecting {
    fn sent(&self) -> Instant {
        self.sent
    }
}

/// One address's probing state, kept across reloads by its entry's `Arc` identity: an
/// [`Entry`] with STUN probes ([`InFlight`]), or a [`StreamEntry`] with connects
/// ([`Connecting`]).
struct Track<E, P> {
    entry: Arc<E>,
    /// When the next probe goes out (once none is in flight).
    due: Instant,
    run: Run,
    probe: Option<P>,
}

impl<E, P: Pending> Track<E, P> {
    /// Whether a probe should start now: none in flight and due. If so, the next one is
    /// scheduled one jittered `interval` from `now`.
    fn start(&mut self, now: Instant, interval: Duration, rng: &mut Rng) -> bool {
        if self.probe.is_some() || now < self.due {
            return false;
        }
        self.due = now + rng.jitter(interval);
        true
    }

    /// Whether its probe in flight has gone unanswered for `timeout` at `now`.
    fn overdue(&self, now: Instant, timeout: Duration) -> bool {
        self.probe.as_ref().is_some_and(|p| now >= p.sent() + timeout)
    }

    /// When it next needs the thread: its probe's deadline, or its next probe.
    fn next(&self, timeout: Duration) -> Instant {
        self.probe.as_ref().map_or(self.due, |p| p.sent() + timeout)
    }
}

/// A backend address's track: STUN probes.
type UdpTrack = Track<Entry, InFlight>;

/// A TCP or TLS address's track: connects.
type StreamTrack = Track<StreamEntry, Connecting>;

/// The tracks for `entries` (probed every `interval`): those of `old` whose entry it keeps
/// (same `Arc`), with the next probe no later than one new interval away; a fresh, due-now
/// track for every other entry.
fn tracks<'a, E: 'a, P>(
    entries: impl Iterator<Item = &'a Arc<E>>,
    mut old: Vec<Track<E, P>>,
    interval: Duration,
    now: Instant,
    rng: &mut Rng,
) -> Vec<Track<E, P>> {
    let mut out: Vec<Track<E, P>> = Vec::new();
    for entry in entries {
        if out.iter().any(|t| Arc::ptr_eq(&t.entry, entry)) {
            continue; // the same entry twice: one prober is enough
        }
        let track = match old.iter().position(|t| Arc::ptr_eq(&t.entry, entry)) {
            Some(i) => {
                let mut t = old.swap_remove(i);
                t.due = t.due.min(now + rng.jitter(interval.min(LONGEST)));
                t
            }
            None => Track { entry: entry.clone(), due: now, run: Run::default(), probe: None },
        };
        out.push(track);
    }
    out
}

/// How a non-blocking connect began.
enum Connect {
    /// In progress: `poll(2)` reports the socket writable when it ends.
    Pending(Socket),
    /// It ended at once (refused on loopback, no route, no socket).
    Done(StreamResult),
}

/// Starts a non-blocking TCP connect to `addr`. The socket closes with a reset (SO_LINGER 0)
/// when dropped: a probe leaves no FIN exchange and no TIME_WAIT on either side.
fn start_connect(addr: SocketAddr) -> Connect {
    // Without a socket of its own (out of descriptors: a connection flood here) the probe
    // says nothing about the backend.
    let socket = match Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)) {
        Ok(s) => s,
        Err(_) => return Connect::Done(StreamResult::LocalError),
    };
    if socket.set_nonblocking(true).is_err() || socket.set_linger(Some(Duration::ZERO)).is_err() {
        return Connect::Done(StreamResult::LocalError);
    }
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => Connect::Done(StreamResult::Ok),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Connect::Pending(socket),
        Err(e) => Connect::Done(connect_error(&e)),
    }
}

/// What a connect that ended with `error` counts as.
fn connect_error(error: &io::Error) -> StreamResult {
    match error.raw_os_error() {
        Some(libc::ECONNREFUSED) => StreamResult::Refused,
        Some(libc::ETIMEDOUT) => StreamResult::Timeout,
        // This host's own shortage, not the backend's.
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL) => {
            StreamResult::LocalError
        }
        _ => StreamResult::Error,
    }
}

/// How a connect that `poll(2)` reported ended (writable, or in error).
fn connect_ended(socket: &Socket) -> StreamResult {
    connect_state(socket).unwrap_or(StreamResult::Error)
}

/// Whether a connect has ended, and how: its pending error (SO_ERROR) if it has one — a reset
/// after the handshake is a connect that completed (a relay at its cap, or a proxy, that
/// accepts and resets), as deterministic as one the probe reset itself — else Ok when it has
/// a peer; `None` while it is still in progress.
fn connect_state(socket: &Socket) -> Option<StreamResult> {
    match socket.take_error() {
        Ok(Some(e)) if e.raw_os_error() == Some(libc::ECONNRESET) => Some(StreamResult::Ok),
        Ok(Some(e)) => Some(connect_error(&e)),
        Ok(None) if socket.peer_addr().is_ok() => Some(StreamResult::Ok),
        Ok(None) => None,
        Err(_) => Some(StreamResult::Error),
    }
}

/// Why a request did not go out.
enum SendFailure {
    /// It could not be written (a REALM or NONCE too long for the buffer): the answer that
    /// carried them is unexpected.
    Build,
    /// No socket for the family, or the socket refused.
    Io,
}

/// The sockets and what sending needs.
struct Net {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    out: [u8; BUF_LEN],
    rng: Rng,
}

impl Net {
    fn send(&mut self, to: SocketAddr, tid: &[u8; 12], request: Request<'_>) -> Result<(), SendFailure> {
        let len = emit(&mut self.out, tid, request).map_err(|_| SendFailure::Build)?;
        let socket = if to.is_ipv4() { &self.v4 } else { &self.v6 };
        match socket {
            Some(s) => s.send_to(&self.out[..len], to).map(|_| ()).map_err(|_| SendFailure::Io),
            None => Err(SendFailure::Io),
        }
    }
}

/// Whether a datagram from `from` comes from `backend` (flow label and scope ignored: the
/// kernel fills them in on receive).
fn same_addr(backend: SocketAddr, from: SocketAddr) -> bool {
    backend.ip() == from.ip() && backend.port() == from.port()
}

/// The state probed, each entry's track and each TCP or TLS address's track.
struct Book {
    state: Arc<State>,
    tracks: Vec<UdpTrack>,
    streams: Vec<StreamTrack>,
}

impl Book {
    /// The tracks for `state`, carrying over those of `old` (a previous book's tracks and
    /// stream tracks, see [`tracks`]).
    fn new(state: Arc<State>, old: (Vec<UdpTrack>, Vec<StreamTrack>), now: Instant, rng: &mut Rng) -> Book {
        let (old_tracks, old_streams) = old;
        let interval = state.probe.interval;
        let udp = tracks(state.entries.iter(), old_tracks, interval, now, rng);
        let streams = tracks(state.streams.iter().flatten().flatten(), old_streams, interval, now, rng);
        Book { state, tracks: udp, streams }
    }

    fn settings(&self) -> &ProbeSettings {
        &self.state.probe
    }

    /// Ends track `i`'s probe with `result`: counts it, moves the health, logs a change.
    fn finish(&mut self, i: usize, result: ProbeResult, rtt: Option<Duration>) {
        let (rise, fall) = (self.settings().rise, self.settings().fall);
        let track = &mut self.tracks[i];
        track.probe = None;
        let entry = &track.entry;
        let rtt = if matches!(result, ProbeResult::Timeout | ProbeResult::SendError) { None } else { rtt };
        entry.count_probe(result, rtt);
        let old = entry.health();
        let new = advance(old, &mut track.run, result.into(), rise, fall);
        if new == old {
            return;
        }
        entry.set_health(new);
        let (backend, addr, from, to, last) = (&entry.name, entry.addr, old.name(), new.name(), result.name());
        match new {
            Health::Down => tracing::warn!(backend = %backend, %addr, from, to, last, "TURN backend down"),
            Health::Up => tracing::info!(backend = %backend, %addr, from, to, last, "TURN backend up"),
            Health::Draining => tracing::info!(backend = %backend, %addr, from, to, last, "TURN backend draining"),
            Health::Unknown => {}
        }
    }

    /// Ends TCP or TLS address track `i`'s connect with `result` (dropping its socket resets
    /// the connection): counts it, moves the address's health, logs a change.
    fn finish_stream(&mut self, i: usize, result: StreamResult) {
        let (rise, fall) = (self.settings().rise, self.settings().fall);
        let track = &mut self.streams[i];
        track.probe = None;
        let entry = &track.entry;
        entry.count_probe(result);
        let old = entry.health();
        let Some(outcome) = result.outcome() else { return };
        let new = advance(old, &mut track.run, outcome, rise, fall);
        if new == old {
            return;
        }
        entry.set_health(new);
        let (backend, addr, transport) = (&entry.name, entry.addr, entry.transport.label());
        let (from, to, last) = (old.name(), new.name(), result.name());
        match new {
            Health::Down => tracing::warn!(
                backend = %backend, %addr, transport, from, to, last,
                "TURN backend stream address down: no new clients over this transport"
            ),
            _ => tracing::info!(backend = %backend, %addr, transport, from, to, last, "TURN backend stream address up"),
        }
    }

    /// Ends every probe whose current request or connect has gone unanswered for the timeout.
    fn expire(&mut self, now: Instant) {
        let timeout = self.settings().timeout.min(LONGEST);
        for i in 0..self.tracks.len() {
            if self.tracks[i].overdue(now, timeout) {
                self.finish(i, ProbeResult::Timeout, None);
            }
        }
        for i in 0..self.streams.len() {
            if self.streams[i].overdue(now, timeout) {
                // A connect that ended since the last poll counts as it ended, not as late.
                let ended = self.streams[i].probe.as_ref().and_then(|p| connect_state(&p.socket));
                self.finish_stream(i, ended.unwrap_or(StreamResult::Timeout));
            }
        }
    }

    /// Starts every connect that is due; one that ends at once is finished at once.
    fn start_connects(&mut self, now: Instant, rng: &mut Rng) {
        let interval = self.settings().interval.min(LONGEST);
        for i in 0..self.streams.len() {
            let track = &mut self.streams[i];
            if !track.start(now, interval, rng) {
                continue;
            }
            match start_connect(track.entry.addr) {
                Connect::Pending(socket) => track.probe = Some(Connecting { socket, sent: now }),
                Connect::Done(result) => self.finish_stream(i, result),
            }
        }
    }

    /// Appends a `POLLOUT` wait for every connect in flight to `fds`, and its track's index to
    /// `polled`, in the same order.
    fn connect_fds(&self, fds: &mut Vec<libc::pollfd>, polled: &mut Vec<usize>) {
        for (i, track) in self.streams.iter().enumerate() {
            if let Some(c) = &track.probe {
                fds.push(libc::pollfd { fd: c.socket.as_raw_fd(), events: libc::POLLOUT, revents: 0 });
                polled.push(i);
            }
        }
    }

    /// Finishes every connect `poll(2)` reported as ended: `ready` pairs a track index from
    /// [`Book::connect_fds`] with its `revents`.
    fn connects_ended(&mut self, ready: impl Iterator<Item = (usize, libc::c_short)>) {
        for (i, revents) in ready {
            if revents == 0 {
                continue;
            }
            let Some(result) = self.streams.get(i).and_then(|t| t.probe.as_ref()).map(|c| connect_ended(&c.socket))
            else {
                continue;
            };
            self.finish_stream(i, result);
        }
    }

    /// Sends the first request of every probe that is due.
    fn start_due(&mut self, now: Instant, net: &mut Net) {
        let interval = self.settings().interval.min(LONGEST);
        for i in 0..self.tracks.len() {
            let track = &mut self.tracks[i];
            if !track.start(now, interval, &mut net.rng) {
                continue;
            }
            let (step, request) = match self.state.probe.kind {
                ProbeKind::Allocate => (Step::Single, Request::Allocate(None)),
                ProbeKind::AllocateAuth { .. } => (Step::Challenge, Request::Allocate(None)),
                ProbeKind::Binding => (Step::Single, Request::Binding),
            };
            let tid = net.rng.tid();
            match net.send(track.entry.addr, &tid, request) {
                Ok(()) => track.probe = Some(InFlight { tid, step, sent: now, first_rtt: None }),
                Err(_) => self.finish(i, ProbeResult::SendError, None),
            }
        }
    }

    /// Takes one datagram received at `now` from `from`.
    fn answer(&mut self, bytes: &[u8], from: SocketAddr, now: Instant, net: &mut Net) {
        let Ok(message) = Message::parse(bytes) else {
            // Not STUN, from a backend with a probe in flight: its answer, garbled.
            for i in 0..self.tracks.len() {
                let t = &self.tracks[i];
                if t.probe.is_some() && same_addr(t.entry.addr, from) {
                    let rtt = t.probe.as_ref().map(|p| p.first_rtt.unwrap_or(now - p.sent));
                    self.finish(i, ProbeResult::Unexpected, rtt);
                }
            }
            return;
        };
        let tid = message.transaction_id().0;
        // Another transaction ID (a late answer, the answer to a release) or another sender
        // (a spoof, a misrouted answer) is no answer to anything in flight.
        let Some(i) = self
            .tracks
            .iter()
            .position(|t| same_addr(t.entry.addr, from) && t.probe.as_ref().is_some_and(|p| p.tid == tid))
        else {
            return;
        };
        let Some(probe) = self.tracks[i].probe.take() else { return };
        let rtt = probe.first_rtt.unwrap_or(now - probe.sent);
        let addr = self.tracks[i].entry.addr;
        match judge(&self.state.probe.kind, probe.step, &message, unix_now()) {
            Verdict::Done(result) => self.finish(i, result, Some(rtt)),
            Verdict::Release(creds) => {
                // Fire and forget: its answer carries a transaction ID nothing waits for.
                let tid = net.rng.tid();
                let _ = net.send(addr, &tid, Request::Release(creds.as_deref()));
                self.finish(i, ProbeResult::Ok, Some(rtt));
            }
            Verdict::Next(step) => {
                let tid = net.rng.tid();
                let Step::Signed { creds, .. } = &step else {
                    self.finish(i, ProbeResult::Unexpected, Some(rtt));
                    return;
                };
                match net.send(addr, &tid, Request::Allocate(Some(creds))) {
                    Ok(()) => self.tracks[i].probe = Some(InFlight { tid, step, sent: now, first_rtt: Some(rtt) }),
                    Err(SendFailure::Build) => self.finish(i, ProbeResult::Unexpected, Some(rtt)),
                    Err(SendFailure::Io) => self.finish(i, ProbeResult::SendError, None),
                }
            }
        }
    }

    /// How long the thread may wait for answers and connects: until the next deadline or due
    /// probe, at most one `TICK`.
    fn wait(&self, now: Instant) -> Duration {
        let timeout = self.settings().timeout.min(LONGEST);
        let udp = self.tracks.iter().map(|t| t.next(timeout));
        let streams = self.streams.iter().map(|t| t.next(timeout));
        udp.chain(streams).min().map_or(TICK, |at| at.saturating_duration_since(now).min(TICK))
    }
}

/// The thread's whole state.
struct Prober {
    commands: Receiver<Command>,
    net: Net,
    book: Book,
    recv: [u8; BUF_LEN],
    /// What one `poll(2)` waits on: the UDP sockets (readable), then each connect in flight
    /// (writable); kept to reuse its memory.
    fds: Vec<libc::pollfd>,
    /// The stream track of each connect in `fds`, in order.
    polled: Vec<usize>,
}

impl Prober {
    /// The prober of `state` over `net`, taking its commands from `commands`; every address
    /// is due at once.
    fn new(commands: Receiver<Command>, mut net: Net, state: Arc<State>) -> Prober {
        let book = Book::new(state, Default::default(), Instant::now(), &mut net.rng);
        Prober { commands, net, book, recv: [0; BUF_LEN], fds: Vec::new(), polled: Vec::new() }
    }

    fn run(mut self) {
        loop {
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Replace(state)) => {
                        let old = (std::mem::take(&mut self.book.tracks), std::mem::take(&mut self.book.streams));
                        self.book = Book::new(state, old, Instant::now(), &mut self.net.rng);
                    }
                    // Stop, or the handle is gone.
                    Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return,
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            self.book.expire(now);
            self.book.start_due(now, &mut self.net);
            self.book.start_connects(now, &mut self.net.rng);
            self.wait(self.book.wait(Instant::now()));
            self.connects_ended();
            self.receive();
        }
    }

    /// Waits in poll(2) until a UDP socket is readable, a connect in flight has ended, or
    /// `wait` passes; `fds` and `polled` then hold what was waited on and what happened.
    fn wait(&mut self, wait: Duration) {
        self.fds.clear();
        self.polled.clear();
        for socket in [&self.net.v4, &self.net.v6].into_iter().flatten() {
            self.fds.push(libc::pollfd { fd: socket.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        self.book.connect_fds(&mut self.fds, &mut self.polled);
        // Rounded up, so that a deadline 0.4 ms away is not polled for in a busy loop.
        let ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        if wait_readable(&mut self.fds, ms).is_err() {
            std::thread::sleep(wait);
        }
    }

    /// Finishes the connects the last wait saw end.
    fn connects_ended(&mut self) {
        let first = self.fds.len() - self.polled.len();
        let ready = self.polled.iter().copied().zip(self.fds[first..].iter().map(|p| p.revents));
        self.book.connects_ended(ready);
    }

    /// Reads what both sockets hold (a bounded burst each) and takes each datagram.
    fn receive(&mut self) {
        for v6 in [false, true] {
            for _ in 0..RECV_BURST {
                let socket = if v6 { &self.net.v6 } else { &self.net.v4 };
                let Some(socket) = socket else { break };
                match socket.recv_from(&mut self.recv) {
                    Ok((len, from)) => {
                        let now = Instant::now();
                        self.book.answer(&self.recv[..len], from, now, &mut self.net);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // WouldBlock: drained. Anything else (an ICMP error reported late): the
                    // next turn reads on.
                    Err(_) => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::lb::Transport;
    use crate::stun::attr::XorMappedAddress;
    use crate::stun::registry::{ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME};

    const MS: Duration = Duration::from_millis(1);

    fn settings(kind: ProbeKind) -> ProbeSettings {
        ProbeSettings { kind, interval: 50 * MS, timeout: 100 * MS, rise: 2, fall: 2 }
    }

    fn state(backends: &[(&str, SocketAddr)], kind: ProbeKind) -> Arc<State> {
        Arc::new(State::new(backends, settings(kind), None))
    }

    /// Polls `done` every 2 ms for up to 3 s.
    fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(2 * MS);
        }
    }

    /// A response to `request` of `class`: `attributes`, then FINGERPRINT.
    fn response(
        request: &Message<'_>,
        class: Class,
        attributes: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    ) -> Vec<u8> {
        let mut buf = [0u8; 512];
        let mut w =
            MessageWriter::new(&mut buf, request.message_type().with_class(class), &request.cookie_and_id()).unwrap();
        attributes(&mut w).unwrap();
        w.add_fingerprint().unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    }

    fn error(request: &Message<'_>, code: u16) -> Vec<u8> {
        response(request, Class::ErrorResponse, |w| w.add_error(code, ""))
    }

    fn challenge(request: &Message<'_>, code: u16, nonce: &[u8]) -> Vec<u8> {
        response(request, Class::ErrorResponse, |w| {
            w.add_error(code, "")?;
            w.add(&Realm(b"example.org"))?;
            w.add(&Nonce(nonce))
        })
    }

    type Answerer = dyn Fn(&Message<'_>) -> Option<Vec<u8>> + Send + Sync;

    /// A fake TURN backend on loopback: answers each well-formed request with what `answer`
    /// returns (from `reply_from` when given, else from its own socket), counts the requests,
    /// and counts malformed ones (bad FINGERPRINT, not a request) apart.
    struct Fake {
        addr: SocketAddr,
        requests: Arc<AtomicUsize>,
        malformed: Arc<AtomicUsize>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl Fake {
        fn new(answer: impl Fn(&Message<'_>) -> Option<Vec<u8>> + Send + Sync + 'static) -> Fake {
            Fake::with_reply_socket(None, Box::new(answer))
        }

        fn with_reply_socket(reply_from: Option<UdpSocket>, answer: Box<Answerer>) -> Fake {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_read_timeout(Some(5 * MS)).unwrap();
            let addr = socket.local_addr().unwrap();
            let (requests, malformed, stop) = Default::default();
            let (r, m, s): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicBool>) =
                (Arc::clone(&requests), Arc::clone(&malformed), Arc::clone(&stop));
            let thread = std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !s.load(Ordering::Relaxed) {
                    let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                    let Ok(msg) = Message::parse(&buf[..n]) else {
                        m.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    if msg.message_type().class != Class::Request || check_fingerprint(&msg) != Check::Valid {
                        m.fetch_add(1, Ordering::Relaxed);
                    }
                    r.fetch_add(1, Ordering::Relaxed);
                    if let Some(out) = answer(&msg) {
                        reply_from.as_ref().unwrap_or(&socket).send_to(&out, from).unwrap();
                    }
                }
            });
            Fake { addr, requests, malformed, stop, thread: Some(thread) }
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::Relaxed)
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            let joined = self.thread.take().map(JoinHandle::join);
            if !std::thread::panicking() {
                if let Some(Err(panic)) = joined {
                    std::panic::resume_unwind(panic); // the fake's own assertion failed
                }
                assert_eq!(self.malformed.load(Ordering::Relaxed), 0, "the prober sent a malformed request");
            }
        }
    }

    /// Answers an unsigned Allocate 401 with REALM and NONCE; anything else unexpected fails.
    fn answer_401(msg: &Message<'_>) -> Option<Vec<u8>> {
        assert_eq!(msg.message_type(), MessageType::new(METHOD_ALLOCATE, Class::Request));
        assert_eq!(msg.value(ATTR_REQUESTED_TRANSPORT), Some(&TRANSPORT_UDP[..]));
        assert_eq!(msg.value(ATTR_USERNAME), None);
        Some(challenge(msg, ERR_UNAUTHENTICATED, b"n1"))
    }

    #[test]
    fn health_follows_rise_and_fall() {
        use Health::*;
        use ProbeResult::{Draining as Drain, Ok as Pass, SendError, Timeout, Unexpected};
        // (start, results, health after each)
        let cases: &[(Health, &[ProbeResult], &[Health])] = &[
            (Unknown, &[Pass], &[Up]),
            (Unknown, &[Timeout], &[Down]),
            (Unknown, &[Drain], &[Draining]),
            (Up, &[Timeout, Pass, Unexpected, SendError, Pass], &[Up, Up, Up, Down, Down]),
            (Down, &[Pass, Timeout, Pass, Pass, Pass], &[Down, Down, Down, Up, Up]),
            (Up, &[Drain, Pass, Pass, Timeout], &[Draining, Draining, Up, Up]),
            (Down, &[Drain], &[Draining]),
            (Draining, &[Timeout, Timeout, Pass, Pass], &[Draining, Down, Down, Up]),
            (Draining, &[Pass, Drain, Pass, Pass], &[Draining, Draining, Draining, Up]),
        ];
        for (start, results, expected) in cases {
            let (mut health, mut run) = (*start, Run::default());
            let seen: Vec<Health> = results
                .iter()
                .map(|&r| {
                    health = advance(health, &mut run, r.into(), 2, 2);
                    health
                })
                .collect();
            assert_eq!(&seen, expected, "from {start:?} through {results:?}");
        }
        // rise = fall = 0 behaves as 1.
        assert_eq!(advance(Up, &mut Run::default(), Timeout.into(), 0, 0), Down);
        assert_eq!(advance(Down, &mut Run::default(), Pass.into(), 0, 0), Up);
    }

    #[test]
    fn requests_are_well_formed() {
        let tid = [7u8; 12];
        let mut buf = [0u8; BUF_LEN];
        let n = emit(&mut buf, &tid, Request::Allocate(None)).unwrap();
        // Allocate request 0x0003, 16 bytes of attributes, cookie, ID; REQUESTED-TRANSPORT UDP.
        assert_eq!(buf[..24], [0, 3, 0, 16, 0x21, 0x12, 0xA4, 0x42, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 0, 0x19, 0, 4]);
        assert_eq!(buf[24..28], [17, 0, 0, 0]);
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(check_fingerprint(&msg), Check::Valid);

        let n = emit(&mut buf, &tid, Request::Binding).unwrap();
        assert_eq!((n, &buf[..4]), (28, &[0u8, 1, 0, 8][..]));

        let creds = Signed::new(&ProbeSecret::Password("pw".into()), b"user".to_vec(), b"realm", b"nonce");
        let n = emit(&mut buf, &tid, Request::Release(Some(&creds))).unwrap();
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(msg.message_type(), MessageType::new(METHOD_REFRESH, Class::Request));
        assert_eq!(msg.get::<Lifetime>(), Some(Ok(Lifetime(0))));
        assert_eq!(msg.value(ATTR_USERNAME), Some(&b"user"[..]));
        let key = long_term_key(Algorithm::Md5, b"user", b"realm", b"pw");
        assert_eq!(check_integrity_sha1(&msg, key.as_bytes()), Check::Valid);
        assert_eq!(check_fingerprint(&msg), Check::Valid);
    }

    #[test]
    fn answers_are_judged() {
        let mut buf = [0u8; BUF_LEN];
        let n = emit(&mut buf, &[1; 12], Request::Allocate(None)).unwrap();
        let request = Message::parse(&buf[..n]).unwrap();
        let result =
            |kind: &ProbeKind, step: Step, bytes: &[u8]| match judge(kind, step, &Message::parse(bytes).unwrap(), 0) {
                Verdict::Done(r) => format!("{r:?}"),
                Verdict::Release(c) => format!("release signed={}", c.is_some()),
                Verdict::Next(Step::Signed { retried, .. }) => format!("signed retried={retried}"),
                Verdict::Next(_) => "next?".into(),
            };
        let auth = ProbeKind::AllocateAuth { username: "u".into(), secret: ProbeSecret::Password("p".into()) };
        let a = &ProbeKind::Allocate;
        assert_eq!(result(a, Step::Single, &error(&request, 401)), "Ok");
        assert_eq!(result(a, Step::Single, &error(&request, 403)), "Draining");
        assert_eq!(result(a, Step::Single, &error(&request, 500)), "Unexpected");
        assert_eq!(result(a, Step::Single, &error(&request, 437)), "release signed=false");
        assert_eq!(
            result(a, Step::Single, &response(&request, Class::SuccessResponse, |_| Ok(()))),
            "release signed=false"
        );
        assert_eq!(result(&ProbeKind::Binding, Step::Single, &error(&request, 401)), "Unexpected", "wrong method");
        assert_eq!(result(&auth, Step::Challenge, &challenge(&request, 401, b"n")), "signed retried=false");
        assert_eq!(result(&auth, Step::Challenge, &error(&request, 401)), "Unexpected", "no REALM, NONCE");
        assert_eq!(result(&auth, Step::Challenge, &error(&request, 403)), "Draining");
        let creds = || Signed::new(&ProbeSecret::Password("p".into()), b"u".to_vec(), b"example.org", b"n");
        let signed = |retried| Step::Signed { creds: creds(), retried };
        assert_eq!(result(&auth, signed(false), &challenge(&request, 438, b"m")), "signed retried=true");
        assert_eq!(result(&auth, signed(true), &challenge(&request, 438, b"m")), "Unexpected", "one retry");
        assert_eq!(result(&auth, signed(false), &error(&request, 401)), "Unexpected", "wrong credentials");
        let key = creds().key;
        let signed_ok = response(&request, Class::SuccessResponse, |w| w.add_integrity_sha1(key.as_bytes()));
        assert_eq!(result(&auth, signed(false), &signed_ok), "release signed=true");
        let forged = response(&request, Class::SuccessResponse, |w| w.add_integrity_sha1(b"other"));
        assert_eq!(result(&auth, signed(false), &forged), "Unexpected", "a wrong MAC");
        // A bad FINGERPRINT.
        let mut bad = error(&request, 401);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(result(a, Step::Single, &bad), "Unexpected");
    }

    proptest::proptest! {
        /// No bytes panic the judge, in any step of any kind.
        #[test]
        fn no_answer_panics_the_judge(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 20..200),
            auth: bool,
        ) {
            // A valid header over random attributes, so that the walker and decoders are reached.
            let len = ((bytes.len() - 20) & !3) as u16;
            bytes.truncate(20 + usize::from(len));
            bytes[0] &= 0x3F;
            bytes[2..4].copy_from_slice(&len.to_be_bytes());
            bytes[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            if let Ok(msg) = Message::parse(&bytes) {
                let kind = if auth {
                    ProbeKind::AllocateAuth { username: "u".into(), secret: ProbeSecret::RestSecret("s".into()) }
                } else {
                    ProbeKind::Allocate
                };
                let creds = Signed::new(&ProbeSecret::Password("p".into()), b"u".to_vec(), b"r", b"n");
                for step in [Step::Single, Step::Challenge, Step::Signed { creds, retried: false }] {
                    let _ = judge(&kind, step, &msg, u64::MAX);
                }
            }
        }
    }

    #[test]
    fn a_401_brings_an_unknown_backend_up_at_once() {
        let fake = Fake::new(answer_401);
        let st = state(&[("a", fake.addr)], ProbeKind::Allocate);
        let entry = Arc::clone(&st.entries[0]);
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("the first probe", || entry.probes(ProbeResult::Ok) >= 1);
        assert_eq!(entry.health(), Health::Up, "the first Ok decides");
        let (buckets, _) = entry.probe_micros();
        assert!(buckets.iter().sum::<u64>() >= 1, "the round trip is recorded");
        // Probes keep coming, one per interval (50 ms ± 10 %), and stay up.
        wait_for("more probes", || entry.probes(ProbeResult::Ok) >= 4);
        checker.stop();
        for r in [ProbeResult::Timeout, ProbeResult::Unexpected, ProbeResult::SendError, ProbeResult::Draining] {
            assert_eq!(entry.probes(r), 0, "{r:?}");
        }
        assert_eq!(entry.health(), Health::Up);
    }

    #[test]
    fn fall_silences_take_it_down_and_rise_answers_bring_it_back() {
        let silent = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&silent);
        let fake = Fake::new(move |m| if s.load(Ordering::Relaxed) { None } else { answer_401(m) });
        // A 100 ms interval and timeout: the exact counts read below stay put for ~90 ms.
        let settings = ProbeSettings { interval: 100 * MS, ..settings(ProbeKind::Allocate) };
        let st = Arc::new(State::new(&[("a", fake.addr)], settings, None));
        let e = Arc::clone(&st.entries[0]);
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("up", || e.health() == Health::Up);
        let probes = |r| e.probes(r);
        let count = |ok| if ok { probes(ProbeResult::Ok) } else { probes(ProbeResult::Timeout) };
        falls_then_rises(
            || e.health(),
            count,
            || silent.store(true, Ordering::Relaxed),
            || silent.store(false, Ordering::Relaxed),
        );
        checker.stop();
    }

    /// With an address up (rise and fall 2), breaks it with `fail` and checks that it goes
    /// down after exactly `fall` failures, then mends it with `mend` and checks that it comes
    /// back after exactly `rise` passes; returns what `mend` returned. `health` reads its
    /// state, `count(true)` its passes and `count(false)` the failures `fail` causes. Exact
    /// counts need an interval of about 100 ms (they stay put that long).
    fn falls_then_rises<T>(
        health: impl Fn() -> Health,
        count: impl Fn(bool) -> u64,
        fail: impl FnOnce(),
        mend: impl FnOnce() -> T,
    ) -> T {
        assert_eq!(health(), Health::Up);
        let failed = count(false);
        fail();
        wait_for("one failure", || count(false) > failed);
        if count(false) == failed + 1 {
            assert_eq!(health(), Health::Up, "one failure is not `fall`");
        }
        wait_for("down", || health() == Health::Down);
        assert_eq!(count(false), failed + 2, "down after exactly `fall` failures");
        let passed = count(true);
        let mended = mend();
        wait_for("one pass", || count(true) > passed);
        if count(true) == passed + 1 {
            assert_eq!(health(), Health::Down, "one pass is not `rise`");
        }
        wait_for("up again", || health() == Health::Up);
        assert_eq!(count(true), passed + 2, "up after exactly `rise` passes");
        mended
    }

    #[test]
    fn a_403_drains_at_once_and_a_401_brings_it_back() {
        let draining = Arc::new(AtomicBool::new(true));
        let d = Arc::clone(&draining);
        let fake = Fake::new(move |m| if d.load(Ordering::Relaxed) { Some(error(m, 403)) } else { answer_401(m) });
        let st = state(&[("a", fake.addr)], ProbeKind::Allocate);
        let e = Arc::clone(&st.entries[0]);
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("draining", || e.health() == Health::Draining);
        assert_eq!(e.probes(ProbeResult::Ok), 0);
        assert!(!e.health().accepts());
        draining.store(false, Ordering::Relaxed);
        wait_for("up", || e.health() == Health::Up);
        assert!(e.probes(ProbeResult::Ok) >= 2, "`rise` Oks leave drain mode");
        checker.stop();
    }

    #[test]
    fn an_answer_from_another_address_is_ignored() {
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let fake = Fake::with_reply_socket(Some(other), Box::new(answer_401));
        let st = state(&[("a", fake.addr)], ProbeKind::Allocate);
        let e = Arc::clone(&st.entries[0]);
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("two timeouts", || e.probes(ProbeResult::Timeout) >= 2);
        checker.stop();
        assert!(fake.requests() >= 2, "the fake answered");
        assert_eq!((e.health(), e.probes(ProbeResult::Ok), e.probes(ProbeResult::Unexpected)), (Health::Down, 0, 0));
    }

    #[test]
    fn garbage_and_other_codes_are_unexpected() {
        let n = Arc::new(AtomicUsize::new(0));
        let fake = Fake::new(move |m| {
            Some(match n.fetch_add(1, Ordering::Relaxed) % 2 {
                0 => b"not a STUN message at all".to_vec(),
                _ => error(m, 500),
            })
        });
        let st = state(&[("a", fake.addr)], ProbeKind::Allocate);
        let e = Arc::clone(&st.entries[0]);
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("two unexpected", || e.probes(ProbeResult::Unexpected) >= 2);
        checker.stop();
        assert_eq!((e.health(), e.probes(ProbeResult::Ok), e.probes(ProbeResult::Timeout)), (Health::Down, 0, 0));
    }

    /// What the authenticated fake saw: signed Allocates whose MAC verified, Refreshes of
    /// lifetime 0 whose MAC verified, and the usernames.
    #[derive(Default)]
    struct Seen {
        allocations: AtomicUsize,
        releases: AtomicUsize,
        bad_macs: AtomicUsize,
        usernames: Mutex<Vec<String>>,
    }

    /// A long-term-auth backend: 401 to unsigned requests, 438 once to the first signed
    /// Allocate, then a signed success; `password` gives the password for a username.
    fn auth_backend(password: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> (Fake, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let s = Arc::clone(&seen);
        let stale_sent = AtomicBool::new(false);
        let fake = Fake::new(move |m| {
            let Some(username) = m.value(ATTR_USERNAME) else {
                return answer_401(m);
            };
            s.usernames.lock().unwrap().push(String::from_utf8_lossy(username).into_owned());
            let nonce = m.get::<Nonce>().unwrap().unwrap().0;
            let key = long_term_key(Algorithm::Md5, username, b"example.org", &password(username));
            assert!(m.value(ATTR_MESSAGE_INTEGRITY).is_some());
            if check_integrity_sha1(m, key.as_bytes()) != Check::Valid {
                s.bad_macs.fetch_add(1, Ordering::Relaxed);
                return Some(challenge(m, ERR_UNAUTHENTICATED, b"n1"));
            }
            if m.message_type().method == METHOD_REFRESH {
                assert_eq!(m.get::<Lifetime>(), Some(Ok(Lifetime(0))));
                s.releases.fetch_add(1, Ordering::Relaxed);
                return Some(response(m, Class::SuccessResponse, |w| w.add_integrity_sha1(key.as_bytes())));
            }
            assert_eq!(m.value(ATTR_REQUESTED_TRANSPORT), Some(&TRANSPORT_UDP[..]));
            if !stale_sent.swap(true, Ordering::Relaxed) {
                assert_eq!(nonce, b"n1");
                return Some(challenge(m, ERR_STALE_NONCE, b"n2"));
            }
            s.allocations.fetch_add(1, Ordering::Relaxed);
            Some(response(m, Class::SuccessResponse, |w| {
                w.add(&XorMappedAddress("192.0.2.9:4000".parse().unwrap()))?;
                w.add_integrity_sha1(key.as_bytes())
            }))
        });
        (fake, seen)
    }

    #[test]
    fn allocate_auth_with_a_password_signs_retries_a_stale_nonce_and_releases() {
        let (fake, seen) = auth_backend(|_| b"secret pw".to_vec());
        let kind =
            ProbeKind::AllocateAuth { username: "probe".into(), secret: ProbeSecret::Password("secret pw".into()) };
        let st = state(&[("a", fake.addr)], kind);
        let e = Arc::clone(&st.entries[0]);
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("two releases", || seen.releases.load(Ordering::Relaxed) >= 2);
        checker.stop();
        assert_eq!(e.health(), Health::Up);
        assert_eq!(e.probes(ProbeResult::Ok), seen.allocations.load(Ordering::Relaxed) as u64);
        assert_eq!(e.probes(ProbeResult::Unexpected) + e.probes(ProbeResult::Timeout), 0);
        assert_eq!(seen.bad_macs.load(Ordering::Relaxed), 0);
        assert!(seen.usernames.lock().unwrap().iter().all(|u| u == "probe"));
    }

    #[test]
    fn allocate_auth_with_a_rest_secret() {
        let secret = "rest-secret";
        let (fake, seen) = auth_backend(move |u| rest_password(&mac_sha1(secret.as_bytes()), u).to_vec());
        let kind = ProbeKind::AllocateAuth { username: "probe".into(), secret: ProbeSecret::RestSecret(secret.into()) };
        let st = state(&[("a", fake.addr)], kind);
        let e = Arc::clone(&st.entries[0]);
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("a release", || seen.releases.load(Ordering::Relaxed) >= 1);
        checker.stop();
        assert_eq!((e.health(), seen.bad_macs.load(Ordering::Relaxed)), (Health::Up, 0));
        let now = unix_now();
        for name in seen.usernames.lock().unwrap().iter() {
            let (expiry, user) = name.split_once(':').unwrap();
            let expiry: u64 = expiry.parse().unwrap();
            assert_eq!(user, "probe");
            assert!(expiry.abs_diff(now + 3600) <= 5, "{name} expires in an hour");
        }
    }

    #[test]
    fn a_binding_probe_expects_a_binding_success() {
        let fake = Fake::new(|m| {
            assert_eq!(m.message_type(), MessageType::BINDING_REQUEST);
            Some(response(m, Class::SuccessResponse, |w| w.add(&XorMappedAddress("127.0.0.1:9".parse().unwrap()))))
        });
        let st = state(&[("a", fake.addr)], ProbeKind::Binding);
        let e = Arc::clone(&st.entries[0]);
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("up", || e.health() == Health::Up);
        checker.stop();
        assert_eq!(e.probes(ProbeResult::Unexpected), 0);
    }

    #[test]
    fn replace_keeps_a_carried_entry_and_probes_a_new_one() {
        let silent = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&silent);
        let a = Fake::new(move |m| if s.load(Ordering::Relaxed) { None } else { answer_401(m) });
        let b = Fake::new(answer_401);
        let mut slow = settings(ProbeKind::Allocate);
        slow.timeout = 150 * MS;
        let first = Arc::new(State::new(&[("a", a.addr)], slow.clone(), None));
        let ea = Arc::clone(&first.entries[0]);
        let checker = HealthChecker::spawn(Arc::clone(&first)).unwrap();
        wait_for("a up", || ea.health() == Health::Up);
        // One failure before the reload, the second after: the run carries over.
        silent.store(true, Ordering::Relaxed);
        wait_for("a's first timeout", || ea.probes(ProbeResult::Timeout) >= 1);
        let second = Arc::new(State::new(&[("b", b.addr), ("a", a.addr)], slow, Some(&first)));
        assert!(Arc::ptr_eq(&second.entries[1], &ea));
        let eb = Arc::clone(&second.entries[0]);
        checker.replace(second);
        assert_eq!(ea.health(), Health::Up, "a reload keeps the health");
        wait_for("b probed", || eb.health() == Health::Up);
        wait_for("a down", || ea.health() == Health::Down);
        assert_eq!(ea.probes(ProbeResult::Timeout), 2, "down after `fall`, counted across the reload");
        // A reload that drops `a` stops probing it.
        checker.replace(Arc::new(State::new(&[("b", b.addr)], settings(ProbeKind::Allocate), None)));
        std::thread::sleep(200 * MS);
        let asked = a.requests();
        std::thread::sleep(200 * MS);
        assert_eq!(a.requests(), asked, "a removed entry is not probed");
        checker.stop();
    }

    /// A TCP listener on `addr` (port 0: any free one) with SO_REUSEADDR, so that a test can
    /// listen on a port again at once after dropping the listener, and a `backlog` (its probes
    /// are reset, never accepted, and stay queued).
    fn listener(addr: SocketAddr, backlog: i32) -> (Socket, SocketAddr) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket.bind(&addr.into()).unwrap();
        socket.listen(backlog).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        (socket, addr)
    }

    /// A loopback TCP port nothing listens on (for now).
    fn closed_port() -> SocketAddr {
        listener("127.0.0.1:0".parse().unwrap(), 1).1
    }

    #[test]
    fn a_tcp_address_goes_down_after_fall_refusals_and_up_after_rise_connects() {
        let fake = Fake::new(answer_401);
        let (tcp, addr) = listener("127.0.0.1:0".parse().unwrap(), 1024);
        // A 100 ms interval: the exact counts read below stay put for ~90 ms.
        let settings = ProbeSettings { interval: 100 * MS, ..settings(ProbeKind::Allocate) };
        let fall = settings.fall;
        let st = Arc::new(State::with_streams(&[("a", fake.addr, [Some(addr), None])], settings, None));
        let (udp, e) = (Arc::clone(&st.entries[0]), st.streams[0][0].clone().unwrap());
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("up", || e.health() == Health::Up);
        assert_eq!(e.probes(StreamResult::Ok), 1, "the first connect decides");
        // Refused once nothing listens; connects again on a new listener on the same port.
        let count = |ok| e.probes(if ok { StreamResult::Ok } else { StreamResult::Refused });
        let _again = falls_then_rises(|| e.health(), count, || drop(tcp), || listener(addr, 1024));
        checker.stop();
        assert_eq!((e.probes(StreamResult::Timeout), e.probes(StreamResult::Error)), (0, 0));
        // The UDP address's health is its own: down only through its own failed probes (a
        // loaded machine may have let the fake backend miss one).
        let fall = u64::from(fall.max(1));
        assert!(
            udp.health() == Health::Up || udp.probes(ProbeResult::Timeout) >= fall,
            "UDP {:?} after {} timeouts",
            udp.health(),
            udp.probes(ProbeResult::Timeout)
        );
    }

    #[test]
    fn a_connect_accepted_then_reset_by_the_backend_completed() {
        let (server, addr) = listener("127.0.0.1:0".parse().unwrap(), 16);
        let Connect::Pending(socket) = start_connect(addr) else { panic!("a loopback connect is in progress first") };
        let (accepted, _) = server.accept().unwrap();
        accepted.set_linger(Some(Duration::ZERO)).unwrap();
        drop(accepted);
        std::thread::sleep(50 * MS);
        assert_eq!(connect_ended(&socket), StreamResult::Ok);
        // One still in progress is not ended (a full backlog of 0 holds the SYN).
        let (_full, addr) = listener("127.0.0.1:0".parse().unwrap(), 0);
        let _queued = start_connect(addr);
        let Connect::Pending(waiting) = start_connect(addr) else { panic!("in progress") };
        assert_eq!(connect_state(&waiting), None);
    }

    #[test]
    fn a_connect_that_never_completes_times_out_and_a_tls_address_is_probed_alike() {
        let fake = Fake::new(answer_401);
        // A backlog of 0 never accepted: once one connection is queued, Linux drops the SYNs.
        let (_full, stuck) = listener("127.0.0.1:0".parse().unwrap(), 0);
        let refused = closed_port();
        let st = Arc::new(State::with_streams(
            &[("a", fake.addr, [Some(stuck), Some(refused)])],
            settings(ProbeKind::Allocate),
            None,
        ));
        let (tcp, tls) = (st.streams[0][0].clone().unwrap(), st.streams[0][1].clone().unwrap());
        let checker = HealthChecker::spawn(st).unwrap();
        wait_for("the stuck address down", || tcp.health() == Health::Down);
        wait_for("the TLS address down", || tls.health() == Health::Down);
        checker.stop();
        assert!(tcp.probes(StreamResult::Timeout) >= 2, "timeouts: {}", tcp.probes(StreamResult::Timeout));
        assert_eq!(tcp.probes(StreamResult::Refused), 0);
        assert!(tls.probes(StreamResult::Refused) >= 1);
        assert_eq!(tls.transport, Transport::Tls);
    }

    #[test]
    fn replace_keeps_a_stream_addresss_health_and_run() {
        let fake = Fake::new(answer_401);
        let tcp = closed_port();
        let mut slow = settings(ProbeKind::Allocate);
        (slow.rise, slow.fall, slow.interval) = (1, 3, 100 * MS);
        let first = Arc::new(State::with_streams(&[("a", fake.addr, [Some(tcp), None])], slow.clone(), None));
        let e = first.streams[0][0].clone().unwrap();
        let checker = HealthChecker::spawn(Arc::clone(&first)).unwrap();
        wait_for("down at the first refusal", || e.health() == Health::Down);
        // Up (rise 1) on a listener, then one refusal before the reload and two after: the run
        // of failures carries over.
        let (listening, _) = listener(tcp, 1024);
        wait_for("up", || e.health() == Health::Up);
        let refused = e.probes(StreamResult::Refused);
        drop(listening);
        wait_for("one more refusal", || e.probes(StreamResult::Refused) > refused);
        let second = Arc::new(State::with_streams(&[("a", fake.addr, [Some(tcp), None])], slow, Some(&first)));
        assert!(Arc::ptr_eq(second.streams[0][0].as_ref().unwrap(), &e));
        checker.replace(second);
        wait_for("down again", || e.health() == Health::Down);
        assert_eq!(e.probes(StreamResult::Refused), refused + 3, "down after `fall`, counted across the reload");
        checker.stop();
    }

    #[test]
    fn connect_errors_are_classified() {
        let err = |code| connect_error(&io::Error::from_raw_os_error(code));
        assert_eq!(err(libc::ECONNREFUSED), StreamResult::Refused);
        assert_eq!(err(libc::ETIMEDOUT), StreamResult::Timeout);
        assert_eq!(err(libc::ENETUNREACH), StreamResult::Error);
        assert_eq!(err(libc::EHOSTUNREACH), StreamResult::Error);
        for local in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::EADDRNOTAVAIL] {
            assert_eq!(err(local), StreamResult::LocalError, "{local}");
        }
        // Only the backend's own answers move its health.
        assert_eq!(StreamResult::LocalError.outcome(), None);
        assert_eq!(StreamResult::Error.outcome(), Some(Outcome::Fail));
    }

    #[test]
    fn stop_returns_promptly_and_the_thread_is_gone() {
        let fake = Fake::new(|_| None);
        let mut slow = settings(ProbeKind::Allocate);
        slow.timeout = Duration::from_secs(5);
        let checker = HealthChecker::spawn(Arc::new(State::new(&[("a", fake.addr)], slow, None))).unwrap();
        wait_for("a probe in flight", || fake.requests() >= 1);
        let started = Instant::now();
        checker.stop();
        assert!(started.elapsed() < 200 * MS, "stop took {:?}", started.elapsed());
        let asked = fake.requests();
        std::thread::sleep(150 * MS);
        assert_eq!(fake.requests(), asked);
    }

    #[test]
    fn a_family_without_a_socket_counts_send_errors() {
        // A host without IPv6 (simulated: the prober has no IPv6 socket) still probes IPv4.
        let fake = Fake::new(answer_401);
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        let st = state(&[("a", fake.addr), ("a", v6)], ProbeKind::Allocate);
        let (e4, e6) = (Arc::clone(&st.entries[0]), Arc::clone(&st.entries[1]));
        let (commands, inbox) = mpsc::channel();
        let v4 = probe_socket("0.0.0.0:0".parse().unwrap()).unwrap();
        let prober = Prober::new(inbox, Net { v4: Some(v4), v6: None, out: [0; BUF_LEN], rng: Rng::new() }, st);
        let thread = std::thread::spawn(move || prober.run());
        wait_for("both probed", || e4.health() == Health::Up && e6.probes(ProbeResult::SendError) >= 2);
        commands.send(Command::Stop).unwrap();
        thread.join().unwrap();
        assert_eq!(e6.health(), Health::Down);
    }
}
