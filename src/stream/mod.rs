//! STUN over TCP and TLS (RFC 8489 §6.2.2–6.2.3; docs/stream.md): the stream plane. A fixed
//! number of threads (`stream.threads`), separate from the UDP workers, each with its own epoll
//! instance and its own SO_REUSEPORT socket per listener, serve every connection; never a
//! thread per connection. Each whole message ([`frame`]) goes to the same `handler::handle` as a
//! datagram, and the answer goes back on its connection.
//!
//! Bounded: open connections at most `max_connections` (TLS ones `max_tls_connections`), per
//! source /32 or /64 `max_connections_per_prefix` (loopback exempt), TLS handshakes in progress
//! per thread `max_handshakes` — each excess connection is closed at once and counted by
//! reason, except that at the global cap the oldest connection that has not sent a whole
//! message yet is closed instead (`evicted`), so a flood of silent connections cannot lock
//! out clients that speak; a handshake must end within `handshake_timeout`, the first message arrive within
//! `first_message_timeout`, and a connection without a whole message for `idle_timeout` is
//! closed; past `message_burst` messages a connection is read at `messages_per_second`
//! (TCP pushes back on the client; nothing is lost); a message longer than `max_message_size`,
//! or bytes that are not STUN, close it (there is no way to find the next message); a client
//! that does not read its answers is not read either, and closed after [`WRITE_STALL`].
//! Memory per connection: the kernel's socket (~5 KB idle), at most `2 × max_message_size`
//! of unprocessed input and [`MAX_PENDING`] of unsent answers here, and a TLS session's buffers
//! (~7–20 KB): fixed bounds times the caps.

pub mod frame;
pub mod tls;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;
use rustls::server::{Acceptor, ServerConnection};

use crate::config::{StreamLimits, StreamPlan};
use crate::counters::{Stats, WorkerSlot};
use crate::handler::{Action, HandlerConfig, Meta, handle};
use crate::io::BUFFER_SIZE;
use crate::io::epoll::{Epoll, Event, HANGUP, READ, WRITE};
use crate::lb::Transport;
use crate::metrics::{StreamView, TransportCounts};
use frame::Frame;
use tls::TlsConfigs;

/// Answers not yet sent on one connection at most; past it the connection is not read.
pub const MAX_PENDING: usize = 16 * 1024;
/// A connection whose unsent answers make no progress this long is closed (`write_stall`).
pub const WRITE_STALL: Duration = Duration::from_secs(10);
/// How often a thread resumes its paused connections (those over their message rate).
const SWEEP: Duration = Duration::from_millis(50);
/// How often it looks at the connections' timers (their granularity): a scan of every slot's
/// deadline, so not at the paused ones' pace.
const TIMERS: Duration = Duration::from_millis(250);
/// Connections open on a thread at its busiest past which, once half have gone, the memory
/// they left is returned to the system.
const RELEASE_AFTER: usize = 256;
/// Connections accepted per listener per wakeup at most.
const ACCEPT_BATCH: usize = 64;
/// The listen backlog.
const BACKLOG: i32 = 1024;
/// A token's top bit marks a listener; otherwise the low 32 bits are a connection's slot and
/// the next 31 its generation (a slot reused within one wait cannot take the old one's event).
const LISTENER: u64 = 1 << 63;

/// Why a connection was closed at once on accept (the discriminant indexes [`REFUSED`] and
/// the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    GlobalCap,
    TlsCap,
    PrefixCap,
    HandshakeCap,
    FdLimit,
    Denied,
    Error,
}

const REFUSED: [(Refused, &str); 7] = [
    (Refused::GlobalCap, "global_cap"),
    (Refused::TlsCap, "tls_cap"),
    (Refused::PrefixCap, "prefix_cap"),
    (Refused::HandshakeCap, "handshake_cap"),
    (Refused::FdLimit, "fd_limit"),
    (Refused::Denied, "denied"),
    (Refused::Error, "error"),
];

/// Why a connection was closed (the discriminant indexes [`CLOSED`] and the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    Client,
    Idle,
    HandshakeTimeout,
    FirstMessageTimeout,
    NotStun,
    BadHeader,
    TooLarge,
    TlsError,
    WriteStall,
    IoError,
    Stopped,
    Evicted,
}

const CLOSED: [(Closed, &str); 12] = [
    (Closed::Client, "client"),
    (Closed::Idle, "idle"),
    (Closed::HandshakeTimeout, "handshake_timeout"),
    (Closed::FirstMessageTimeout, "first_message_timeout"),
    (Closed::NotStun, "not_stun"),
    (Closed::BadHeader, "bad_header"),
    (Closed::TooLarge, "too_large"),
    (Closed::TlsError, "tls_error"),
    (Closed::WriteStall, "write_stall"),
    (Closed::IoError, "io_error"),
    (Closed::Stopped, "stopped"),
    (Closed::Evicted, "evicted"),
];

impl Closed {
    /// Whether a connection closed for this reason is reset rather than closed: one that
    /// stopped reading its answers, or one never answered (it never sent a whole message) that
    /// timed out, was evicted or sent what is not STUN — nothing of theirs is lost, and a flood
    /// of them leaves no FIN exchange and no TIME_WAIT here. A client's own close, an idle
    /// timeout, a TLS error (its alert must arrive), the stop and any connection with answers
    /// close gracefully.
    fn resets(self, answered: bool) -> bool {
        match self {
            Closed::WriteStall => true,
            Closed::HandshakeTimeout
            | Closed::FirstMessageTimeout
            | Closed::Evicted
            | Closed::NotStun
            | Closed::BadHeader
            | Closed::TooLarge => !answered,
            _ => false,
        }
    }
}

/// Makes the coming close of `sock` a reset (SO_LINGER 0).
fn abort(sock: &TcpStream) {
    let _ = socket2::SockRef::from(sock).set_linger(Some(Duration::ZERO));
}

impl From<frame::FrameError> for Closed {
    fn from(e: frame::FrameError) -> Closed {
        match e {
            frame::FrameError::NotStun => Closed::NotStun,
            frame::FrameError::BadHeader => Closed::BadHeader,
            frame::FrameError::TooLarge => Closed::TooLarge,
        }
    }
}

/// Why a TLS handshake failed.
const TLS_FAILURES: [&str; 4] = ["protocol", "timeout", "closed", "evicted"];

/// One thread's counters for one transport (relaxed atomics; only the thread writes).
#[derive(Debug, Default)]
struct TransportCounters {
    accepted: AtomicU64,
    closed_total: AtomicU64,
    messages: AtomicU64,
    answers: AtomicU64,
    channel_data: AtomicU64,
    refused: [AtomicU64; REFUSED.len()],
    closed: [AtomicU64; CLOSED.len()],
}

/// One thread's counters.
#[derive(Debug, Default)]
struct Counters {
    /// TCP, TLS.
    transport: [TransportCounters; 2],
    handshaking: AtomicU64,
    /// TLS 1.3, TLS 1.2.
    tls_handshakes: [AtomicU64; 2],
    tls_failures: [AtomicU64; TLS_FAILURES.len()],
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

/// What every thread reads: the answer settings and the TLS configurations (swapped whole on
/// reload), the limits, the shared counts.
struct Shared {
    stop: AtomicBool,
    generation: AtomicU64,
    current: Mutex<Arc<Snapshot>>,
    limits: StreamLimits,
    /// Open connections, and open TLS ones, over every thread.
    open: AtomicUsize,
    open_tls: AtomicUsize,
    /// Open connections per source prefix (loopback not counted). Locked once per accept and
    /// per close, never per message; entries exist only for open connections, so it holds at
    /// most `max_connections` of them.
    prefixes: Mutex<HashMap<u128, usize>>,
    counters: Box<[CachePadded<Counters>]>,
    slots: Box<[WorkerSlot]>,
}

/// The reloadable part.
struct Snapshot {
    /// Per listener.
    handlers: Vec<HandlerConfig>,
    tls: Option<TlsConfigs>,
    /// `[limit]`'s deny lists, applied on accept.
    deny: crate::limit::Limit,
}

fn snapshot(plan: &StreamPlan) -> Result<Snapshot, rustls::Error> {
    let tls = plan.tls.as_ref().map(|identity| TlsConfigs::new(&identity.key)).transpose()?;
    Ok(Snapshot { handlers: plan.handlers.clone(), tls, deny: plan.deny.clone() })
}

/// The running stream plane.
pub struct Plane {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    local: Vec<(SocketAddr, Transport)>,
}

impl std::fmt::Debug for Plane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plane").field("local", &self.local).finish_non_exhaustive()
    }
}

/// A listening socket with SO_REUSEPORT (each thread binds its own), non-blocking.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

impl Plane {
    /// Binds every listener on every thread and starts the threads; `None` without listeners.
    /// A port 0 is chosen by the first bind and kept for the other threads.
    pub fn start(plan: &StreamPlan) -> io::Result<Option<Plane>> {
        if plan.listeners.is_empty() {
            return Ok(None);
        }
        let current = snapshot(plan).map_err(|e| io::Error::other(format!("TLS configuration: {e}")))?;
        // Every connection is a descriptor: room for the cap and the rest of the process.
        let want = plan.limits.max_connections as u64 + 1024;
        match crate::io::raise_open_files(want) {
            Ok(have) if have < want => tracing::warn!(
                "the open-file limit is {have} (hard limit), under stream.max_connections + 1024 = {want}: \
                 connections past it are refused (fd_limit)"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot read or raise the open-file limit: {e}"),
        }
        let mut per_thread: Vec<Vec<(TcpListener, SocketAddr, usize, Transport)>> =
            (0..plan.threads).map(|_| Vec::new()).collect();
        let mut local = Vec::new();
        for (i, &(addr, transport)) in plan.listeners.iter().enumerate() {
            let first = bind(addr).map_err(|e| io::Error::new(e.kind(), format!("stream listener {addr}: {e}")))?;
            let bound = first.local_addr()?;
            local.push((bound, transport));
            per_thread[0].push((first, bound, i, transport));
            for thread in per_thread.iter_mut().skip(1) {
                let l = bind(bound).map_err(|e| io::Error::new(e.kind(), format!("stream listener {bound}: {e}")))?;
                thread.push((l, bound, i, transport));
            }
        }
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(current)),
            limits: plan.limits,
            open: AtomicUsize::new(0),
            open_tls: AtomicUsize::new(0),
            prefixes: Mutex::new(HashMap::with_capacity(plan.limits.max_connections.min(1 << 16))),
            counters: (0..plan.threads).map(|_| CachePadded::new(Counters::default())).collect(),
            slots: (0..plan.threads).map(|_| WorkerSlot::default()).collect(),
        });
        let mut threads = Vec::new();
        for (index, listeners) in per_thread.into_iter().enumerate() {
            let shared = shared.clone();
            let cpu = (!plan.cpus.is_empty()).then(|| plan.cpus[index % plan.cpus.len()]);
            let thread = std::thread::Builder::new().name(format!("stunedge-stream{index}")).spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        tracing::warn!(cpu, "could not pin stream thread {index} to its CPU; running unpinned");
                    }
                }
                let mut worker = match Thread::new(shared, index, listeners) {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::error!("stream thread {index} cannot start: {e}");
                        return;
                    }
                };
                worker.run();
            })?;
            threads.push(thread);
        }
        Ok(Some(Plane { shared, threads, local }))
    }

    /// The listeners' bound addresses (a port 0 resolved) and transports.
    pub fn local_addrs(&self) -> &[(SocketAddr, Transport)] {
        &self.local
    }

    /// A reload: the listeners' new answer settings and the TLS certificate. New connections
    /// take the new certificate; established ones keep their session. A certificate rustls
    /// refuses keeps the running configuration (logged).
    pub fn reload(&self, plan: &StreamPlan) {
        match snapshot(plan) {
            Ok(next) if next.handlers.len() == self.local.len() => {
                *self.shared.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
                self.shared.generation.fetch_add(1, Relaxed);
            }
            Ok(_) => tracing::error!("stream listeners changed: restart to apply; keeping the running ones"),
            Err(e) => tracing::error!("stream TLS configuration refused ({e}): keeping the running certificate"),
        }
    }

    /// A function that reads the counters (for the exporter, which outlives nothing here).
    pub fn viewer(&self) -> impl Fn() -> StreamView + Send + Sync + 'static {
        let (shared, local) = (self.shared.clone(), self.local.clone());
        move || view(&shared, &local)
    }

    /// Whether a thread has ended while the plane was not stopped (an error it logged, or a
    /// panic): its listeners are gone.
    pub fn any_exited(&self) -> bool {
        !self.shared.stop.load(Relaxed) && self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Stops the threads (each closes its connections) and waits for them.
    pub fn stop(self) {
        self.shared.stop.store(true, Relaxed);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn view(shared: &Shared, local: &[(SocketAddr, Transport)]) -> StreamView {
    let sum = |f: &dyn Fn(&Counters) -> u64| shared.counters.iter().map(|c| f(c)).sum::<u64>();
    let mut out = StreamView {
        handshaking: sum(&|c| c.handshaking.load(Relaxed)),
        tls_handshakes: vec![
            ("1.3", sum(&|c| c.tls_handshakes[0].load(Relaxed))),
            ("1.2", sum(&|c| c.tls_handshakes[1].load(Relaxed))),
        ],
        tls_failures: TLS_FAILURES
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, sum(&|c| c.tls_failures[i].load(Relaxed))))
            .collect(),
        stats: shared.slots.iter().enumerate().map(|(i, s)| (format!("stream{i}"), s.read())).collect(),
        ..StreamView::default()
    };
    for (t, transport) in [Transport::Tcp, Transport::Tls].into_iter().enumerate() {
        if !local.iter().any(|(_, x)| *x == transport) {
            continue;
        }
        let get = |f: &dyn Fn(&TransportCounters) -> &AtomicU64| sum(&|c| f(&c.transport[t]).load(Relaxed));
        let accepted = get(&|c| &c.accepted);
        let closed_total = get(&|c| &c.closed_total);
        out.transports.push(TransportCounts {
            transport: transport.label(),
            open: accepted.saturating_sub(closed_total),
            accepted,
            messages: get(&|c| &c.messages),
            answers: get(&|c| &c.answers),
            channel_data: get(&|c| &c.channel_data),
            refused: REFUSED.iter().enumerate().map(|(i, (_, l))| (*l, get(&|c| &c.refused[i]))).collect(),
            closed: CLOSED.iter().enumerate().map(|(i, (_, l))| (*l, get(&|c| &c.closed[i]))).collect(),
        });
    }
    out
}

/// A connection's TLS state.
enum Tls {
    /// Plain TCP.
    None,
    /// Reading the ClientHello.
    Accepting(Box<Acceptor>),
    /// The session (handshaking, then open).
    Session(Box<ServerConnection>),
}

/// One connection.
struct Conn {
    sock: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    listener: usize,
    transport: Transport,
    tls: Tls,
    /// Plaintext read and not yet processed (at most one partial message, or the rest of a
    /// read while the connection is paused).
    input: Vec<u8>,
    /// Answers not yet handed to the socket (TLS: to the session).
    output: Vec<u8>,
    accepted: Instant,
    /// When the connection could first carry a message (TCP: accepted; TLS: handshake done).
    ready: Option<Instant>,
    last_message: Option<Instant>,
    /// Since when unsent answers have made no progress.
    stalled: Option<Instant>,
    tokens: f64,
    refilled: Instant,
    /// Not read: over its message rate.
    paused: bool,
    /// In its thread's list of paused connections, which the sweep resumes.
    listed: bool,
    /// The client shut down its sending side: what it sent is answered, then the connection
    /// closes (RFC 8489 §6.2.2: not before every request read has its response).
    eof: bool,
    /// The events it is registered for.
    interest: u32,
    /// Its source prefix, when counted (not loopback).
    prefix: Option<u128>,
    /// Counted in its thread's handshakes in progress (TLS, until the handshake ends).
    counted: bool,
    generation: u32,
}

impl Conn {
    /// A connection just accepted at `now` from `peer` on `local` (both made canonical), with
    /// `tokens` messages it may send at once; listener 0, no prefix, generation 0 until set.
    fn new(
        sock: TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        transport: Transport,
        now: Instant,
        tokens: f64,
    ) -> Conn {
        let tls = transport == Transport::Tls;
        Conn {
            peer: SocketAddr::new(peer.ip().to_canonical(), peer.port()),
            local: SocketAddr::new(local.ip().to_canonical(), local.port()),
            sock,
            listener: 0,
            transport,
            tls: if tls { Tls::Accepting(Box::default()) } else { Tls::None },
            input: Vec::new(),
            output: Vec::new(),
            accepted: now,
            ready: (!tls).then_some(now),
            last_message: None,
            stalled: None,
            tokens,
            refilled: now,
            paused: false,
            listed: false,
            eof: false,
            interest: READ,
            prefix: None,
            counted: tls,
            generation: 0,
        }
    }

    fn handshaking(&self) -> bool {
        match &self.tls {
            Tls::None => false,
            Tls::Accepting(_) => true,
            Tls::Session(s) => s.is_handshaking(),
        }
    }
}

/// The source prefix a connection counts against: IPv4 /32, IPv6 /64 (IPv4-mapped as IPv4).
fn prefix_of(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) | 1 << 127,
        IpAddr::V6(v6) => u128::from(v6) & !((1u128 << 64) - 1),
    }
}

/// One stream thread.
struct Thread {
    shared: Arc<Shared>,
    index: usize,
    epoll: Epoll,
    listeners: Vec<(TcpListener, SocketAddr, usize, Transport)>,
    /// Listeners not polled until then (out of file descriptors).
    listeners_paused: Option<Instant>,
    /// The connections by slot, boxed: a slot costs 8 bytes once its connection is gone (the
    /// slot arrays keep the size of the busiest moment; the connections' memory is returned).
    conns: Vec<Option<Box<Conn>>>,
    /// Per slot, the milliseconds (since `epoch`) at which its connection's earliest timer is
    /// due ([`timer`]; `u64::MAX`: none or no connection), kept exact after every change: the
    /// timer scan reads this compact array, not every connection.
    due: Vec<u64>,
    epoch: Instant,
    /// Connections open here at the busiest moment since memory was last returned (to the
    /// allocator, which returns whole free pages to the system: after a flood ends).
    busiest: usize,
    /// Paused connections (slot, generation), resumed by the sweep every [`SWEEP`].
    paused: Vec<(usize, u32)>,
    /// When the timers were last looked at.
    timers_at: Instant,
    /// Connections that had sent no whole message yet, oldest first (slot, generation): the
    /// first to go when the global cap is full (entries of connections that have since sent
    /// one, or closed, are skipped when met).
    silent: std::collections::VecDeque<(usize, u32)>,
    free: Vec<usize>,
    generations: Vec<u32>,
    /// TLS handshakes in progress here.
    handshaking: usize,
    current: Arc<Snapshot>,
    seen: u64,
    stats: Stats,
    scratch: Vec<u8>,
    message: Vec<u8>,
}

impl Thread {
    fn new(
        shared: Arc<Shared>,
        index: usize,
        listeners: Vec<(TcpListener, SocketAddr, usize, Transport)>,
    ) -> io::Result<Thread> {
        let epoll = Epoll::new(256)?;
        for (i, (l, ..)) in listeners.iter().enumerate() {
            epoll.add(l, LISTENER | i as u64, READ)?;
        }
        let current = shared.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let seen = shared.generation.load(Relaxed);
        let max = shared.limits.max_message;
        Ok(Thread {
            shared,
            index,
            epoll,
            listeners,
            listeners_paused: None,
            conns: Vec::new(),
            due: Vec::new(),
            epoch: Instant::now(),
            busiest: 0,
            silent: std::collections::VecDeque::new(),
            paused: Vec::new(),
            timers_at: Instant::now(),
            free: Vec::new(),
            generations: Vec::new(),
            handshaking: 0,
            current,
            seen,
            stats: Stats::default(),
            scratch: vec![0; 2 * max],
            message: vec![0; BUFFER_SIZE],
        })
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters[self.index]
    }

    fn run(&mut self) {
        let mut events: Vec<Event> = Vec::with_capacity(256);
        let mut last_sweep = Instant::now();
        while !self.shared.stop.load(Relaxed) {
            if let Err(e) = self.epoll.wait(&mut events, SWEEP.as_millis() as i32) {
                tracing::error!("stream thread {}: epoll_wait: {e}", self.index);
                break;
            }
            for &Event { token, events: ready } in &events {
                if token & LISTENER != 0 {
                    self.accept((token & !LISTENER) as usize);
                } else {
                    self.ready(token, ready);
                }
            }
            if last_sweep.elapsed() >= SWEEP {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_some() {
                self.close(slot, Closed::Stopped);
            }
        }
        self.shared.slots[self.index].publish(&self.stats);
    }

    /// Timers, paused reads, the listeners' pause, the configuration, the published counters.
    fn sweep(&mut self) {
        let now = Instant::now();
        let generation = self.shared.generation.load(Relaxed);
        if generation != self.seen {
            self.seen = generation;
            self.current = self.shared.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        }
        if self.listeners_paused.is_some_and(|until| now >= until) {
            self.listeners_paused = None;
            for (i, (l, ..)) in self.listeners.iter().enumerate() {
                let _ = self.epoll.modify(l, LISTENER | i as u64, READ);
            }
        }
        // Forget the front of the eviction queue as far as its connections have spoken or gone:
        // a silent one is closed by its timeout, so the queue holds at most the connections
        // accepted within the handshake and first-message timeouts.
        while let Some(&(slot, generation)) = self.silent.front() {
            match &self.conns[slot] {
                Some(c) if c.generation == generation && c.last_message.is_none() => break,
                _ => {
                    self.silent.pop_front();
                }
            }
        }
        // Paused connections: their message budget has grown, or will.
        for (slot, generation) in std::mem::take(&mut self.paused) {
            let Some(c) = self.conns[slot].as_mut().filter(|c| c.generation == generation) else { continue };
            c.listed = false;
            if c.paused {
                self.pump(slot, false);
            }
        }
        let limits = self.shared.limits;
        if now - self.timers_at < TIMERS {
            self.counters().handshaking.store(self.handshaking as u64, Relaxed);
            self.shared.slots[self.index].publish(&self.stats);
            return;
        }
        self.timers_at = now;
        let now_ms = self.ms(now);
        for slot in 0..self.due.len() {
            if self.due[slot] > now_ms {
                continue;
            }
            match self.conns[slot].as_deref().and_then(|c| timer(c, &limits)) {
                Some((at, why)) if at <= now => self.close(slot, why),
                next => self.due[slot] = next.map_or(u64::MAX, |(at, _)| self.ms(at)),
            }
        }
        // After a flood: once the connections open here are down to half the busiest moment's,
        // the allocator returns the pages they left (a burst of thousands, not everyday churn).
        let open = self.conns.len() - self.free.len();
        self.busiest = self.busiest.max(open);
        if self.busiest >= RELEASE_AFTER && open <= self.busiest / 2 {
            crate::io::release_free_memory();
            self.busiest = open;
        }
        self.counters().handshaking.store(self.handshaking as u64, Relaxed);
        self.shared.slots[self.index].publish(&self.stats);
    }

    /// `t` in whole milliseconds since the thread's epoch (the scan then compares instants).
    fn ms(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Records a live connection's earliest timer after a change.
    fn rearm(&mut self, slot: usize) {
        let limits = self.shared.limits;
        let due = self.conns[slot].as_deref().and_then(|c| timer(c, &limits)).map_or(u64::MAX, |(at, _)| self.ms(at));
        self.due[slot] = due;
    }

    fn accept(&mut self, l: usize) {
        for _ in 0..ACCEPT_BATCH {
            let Some((listener, bound, index, transport)) = self.listeners.get(l) else { return };
            let (bound, index, transport) = (*bound, *index, *transport);
            match listener.accept() {
                Ok((sock, peer)) => self.admit(sock, peer, bound, index, transport),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Out of descriptors: stop polling the listeners for a moment (the kernel's
                    // backlog holds the rest) instead of spinning on an error.
                    let t = transport.stream_index().unwrap_or(0);
                    bump(&self.counters().transport[t].refused[Refused::FdLimit as usize]);
                    for (l, ..) in &self.listeners {
                        let _ = self.epoll.modify(l, LISTENER, 0);
                    }
                    self.listeners_paused = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
                Err(_) => return,
            }
        }
    }

    /// Takes or refuses a connection from `peer` accepted on the listener bound to `bound`
    /// (index `listener` in the plan).
    fn admit(&mut self, sock: TcpStream, peer: SocketAddr, bound: SocketAddr, listener: usize, transport: Transport) {
        let t = transport.stream_index().unwrap_or(0);
        let limits = self.shared.limits;
        let tls = transport == Transport::Tls;
        // Refused: reset, not closed (no FIN exchange, no TIME_WAIT left here by a flood).
        let refuse = |me: &Self, why: Refused| {
            abort(&sock);
            bump(&me.counters().transport[t].refused[why as usize]);
        };
        // The listener's own address, unless it is a wildcard (then one more system call).
        let local = if bound.ip().is_unspecified() { sock.local_addr().unwrap_or(bound) } else { bound };
        // The refusals that cost nothing first: a connection refused anyway must not evict
        // anyone at the global cap.
        if self.current.deny.denied(peer, local).is_some() {
            return refuse(self, Refused::Denied);
        }
        if tls && self.handshaking >= limits.max_handshakes {
            return refuse(self, Refused::HandshakeCap);
        }
        if tls && self.shared.open_tls.load(Relaxed) >= limits.max_tls_connections {
            return refuse(self, Refused::TlsCap);
        }
        let prefix = (!peer.ip().to_canonical().is_loopback()).then(|| prefix_of(peer.ip()));
        if let Some(p) = prefix {
            let mut prefixes = self.shared.prefixes.lock().unwrap_or_else(PoisonError::into_inner);
            let n = prefixes.entry(p).or_insert(0);
            if *n >= limits.max_per_prefix {
                return refuse(self, Refused::PrefixCap);
            }
            *n += 1;
        }
        if tls {
            self.shared.open_tls.fetch_add(1, Relaxed);
        }
        if self.shared.open.fetch_add(1, Relaxed) >= limits.max_connections {
            // Full: the oldest connection here that has not sent a whole message yet (a flood's,
            // a slowloris', a handshake that never ends) makes room; without one the new
            // connection is refused.
            if !self.evict_silent() {
                self.release(tls, prefix);
                return refuse(self, Refused::GlobalCap);
            }
        }
        let setup = sock.set_nonblocking(true).and_then(|()| sock.set_nodelay(true));
        if setup.is_err() {
            self.release(tls, prefix);
            return refuse(self, Refused::Error);
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.due.push(u64::MAX);
            self.generations.push(0);
            self.conns.len() - 1
        });
        self.generations[slot] = self.generations[slot].wrapping_add(1) & 0x7FFF_FFFF;
        let generation = self.generations[slot];
        if self.epoll.add(&sock, token(slot, generation), READ).is_err() {
            self.free.push(slot);
            self.release(tls, prefix);
            return refuse(self, Refused::Error);
        }
        let now = Instant::now();
        if tls {
            self.handshaking += 1;
        }
        self.remember_silent(slot, generation);
        bump(&self.counters().transport[t].accepted);
        let mut c = Conn::new(sock, peer, local, transport, now, f64::from(limits.message_burst));
        (c.listener, c.prefix, c.generation) = (listener, prefix, generation);
        self.conns[slot] = Some(Box::new(c));
        self.rearm(slot);
    }

    /// Queues a new connection for eviction while it is silent. Entries of connections that
    /// have since spoken or gone are dropped from the front by the sweep; should the queue still
    /// outgrow twice the thread's connections (one long-silent connection holding the front),
    /// it keeps only the silent ones.
    fn remember_silent(&mut self, slot: usize, generation: u32) {
        self.silent.push_back((slot, generation));
        if self.silent.len() > 2 * self.conns.len() + 64 {
            let conns = &self.conns;
            self.silent.retain(|&(s, g)| matches!(&conns[s], Some(c) if c.generation == g && c.last_message.is_none()));
            self.silent.shrink_to_fit();
        }
    }

    /// Closes the oldest connection of this thread that has sent no whole message (reason
    /// `evicted`); whether there was one.
    fn evict_silent(&mut self) -> bool {
        while let Some((slot, generation)) = self.silent.pop_front() {
            let silent = matches!(&self.conns[slot], Some(c) if c.generation == generation && c.last_message.is_none());
            if silent {
                self.close(slot, Closed::Evicted);
                return true;
            }
        }
        false
    }

    /// Undoes an admitted connection's share of the shared counts.
    fn release(&self, tls: bool, prefix: Option<u128>) {
        self.shared.open.fetch_sub(1, Relaxed);
        if tls {
            self.shared.open_tls.fetch_sub(1, Relaxed);
        }
        if let Some(p) = prefix {
            let mut prefixes = self.shared.prefixes.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = prefixes.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    prefixes.remove(&p);
                }
            }
        }
    }

    fn close(&mut self, slot: usize, why: Closed) {
        let Some(c) = self.conns[slot].take() else { return };
        let _ = self.epoll.delete(&c.sock);
        if why.resets(c.last_message.is_some()) {
            abort(&c.sock);
        }
        let tls = c.transport == Transport::Tls;
        if c.counted {
            self.handshaking -= 1;
            let failure = match why {
                Closed::TlsError => Some(0),
                Closed::HandshakeTimeout => Some(1),
                Closed::Client | Closed::IoError => Some(2),
                Closed::Evicted => Some(3),
                _ => None,
            };
            if let Some(i) = failure {
                bump(&self.counters().tls_failures[i]);
            }
        }
        self.release(tls, c.prefix);
        let counters = &self.counters().transport[c.transport.stream_index().unwrap_or(0)];
        bump(&counters.closed_total);
        bump(&counters.closed[why as usize]);
        self.due[slot] = u64::MAX;
        self.free.push(slot);
    }

    fn ready(&mut self, token: u64, events: u32) {
        let slot = (token & 0xFFFF_FFFF) as usize;
        let generation = (token >> 32) as u32;
        match self.conns.get(slot) {
            Some(Some(c)) if c.generation == generation => {}
            _ => return,
        }
        if events & HANGUP != 0 {
            // Both directions closed or the socket failed: nothing can be sent any more.
            self.close(slot, Closed::Client);
        } else if events & (READ | WRITE) != 0 {
            self.pump(slot, events & READ != 0);
        }
    }

    /// Moves a connection on: reads when `readable` and it may, processes whole messages
    /// within its rate, sends what it can, and registers for what it waits on.
    fn pump(&mut self, slot: usize, readable: bool) {
        if let Err(why) = self.pump_inner(slot, readable) {
            // Answers already built for earlier messages go out first (best effort).
            if let Some(c) = self.conns[slot].as_mut() {
                let _ = flush(c, Instant::now());
            }
            self.close(slot, why);
        } else {
            self.rearm(slot);
        }
    }

    fn pump_inner(&mut self, slot: usize, readable: bool) -> Result<(), Closed> {
        let limits = self.shared.limits;
        let now = Instant::now();
        let Some(c) = self.conns[slot].as_mut() else { return Ok(()) };
        // Refill the message budget.
        let elapsed = (now - c.refilled).as_secs_f64();
        c.refilled = now;
        c.tokens = (c.tokens + elapsed * f64::from(limits.messages_per_second)).min(f64::from(limits.message_burst));
        let (unix, clock_ms) = (crate::worker::unix_now(), crate::worker::clock_ms());
        let counters = &self.shared.counters[self.index];
        let transport = &counters.transport[c.transport.stream_index().unwrap_or(0)];
        // Alternate reading (the socket at most once per call, when it is readable; a TLS
        // session's decrypted plaintext whenever there is room) and answering whole messages
        // within the rate, until neither moves.
        let mut socket_readable = readable;
        loop {
            loop {
                let mut moved = false;
                if c.output.len() < MAX_PENDING && c.tokens >= 1.0 {
                    let got =
                        read(c, &mut self.scratch, limits.max_message, self.current.tls.as_ref(), socket_readable);
                    socket_readable = false;
                    if c.counted && !c.handshaking() {
                        // The handshake ended (even if the same read then failed): counted once.
                        c.counted = false;
                        self.handshaking -= 1;
                        c.ready = Some(now);
                        let version = match &c.tls {
                            Tls::Session(s) if s.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_2) => 1,
                            _ => 0,
                        };
                        bump(&counters.tls_handshakes[version]);
                    }
                    moved |= got?;
                }
                let mut at = 0;
                while c.tokens >= 1.0 && c.output.len() < MAX_PENDING {
                    match frame::next(&c.input[at..], limits.max_message).map_err(Closed::from)? {
                        None => break,
                        Some(Frame::ChannelData(len)) => {
                            bump(&transport.channel_data);
                            at += len;
                        }
                        Some(Frame::Stun(len)) => {
                            c.tokens -= 1.0;
                            c.last_message = Some(now);
                            bump(&transport.messages);
                            self.message[..len].copy_from_slice(&c.input[at..at + len]);
                            at += len;
                            let meta = Meta { src: c.peer, local: c.local, now: unix, clock_ms };
                            let Some(config) = self.current.handlers.get(c.listener) else { continue };
                            if let Action::Reply { len, .. } =
                                handle(&mut self.message, len, &meta, config, &mut self.stats)
                            {
                                c.output.extend_from_slice(&self.message[..len]);
                                bump(&transport.answers);
                            }
                        }
                    }
                }
                c.input.drain(..at);
                moved |= at > 0;
                if !moved {
                    break;
                }
            }
            flush(c, now)?;
            // Answers went out and the session still holds requests: go on now (no socket event
            // would come for them); a full socket leaves the answers waiting and WRITE registered.
            let held = match &mut c.tls {
                Tls::Session(s) => plaintext_held(s),
                _ => false,
            };
            if !(held && c.output.len() < MAX_PENDING && c.tokens >= 1.0) {
                break;
            }
        }
        c.paused = c.tokens < 1.0;
        if c.paused && !c.listed {
            c.listed = true;
            self.paused.push((slot, c.generation));
        }
        let held = match &mut c.tls {
            Tls::Session(s) => plaintext_held(s),
            _ => false,
        };
        let wants_write = !c.output.is_empty() || matches!(&c.tls, Tls::Session(s) if s.wants_write());
        if c.eof && !wants_write && !held && !matches!(frame::next(&c.input, limits.max_message), Ok(Some(_))) {
            // Everything it sent before closing is answered (a partial message never will be).
            return Err(Closed::Client);
        }
        // Register for what it waits on: reading unless paused, backed up, at its end or with
        // decrypted plaintext still to take (the sweep and the next answers take it); writing
        // while answers are waiting.
        let reading = !c.paused && !c.eof && !held && c.output.len() < MAX_PENDING;
        let interest = if reading { READ } else { 0 } | if wants_write { WRITE } else { 0 };
        if interest != c.interest {
            c.interest = interest;
            let _ = self.epoll.modify(&c.sock, token(slot, c.generation), interest);
        }
        Ok(())
    }
}

/// A connection's earliest timer and the close it brings: the handshake's, else the idle one
/// after a message or the first message's; a write stall's if that comes sooner.
fn timer(c: &Conn, limits: &StreamLimits) -> Option<(Instant, Closed)> {
    let main = if c.handshaking() {
        Some((c.accepted + limits.handshake_timeout, Closed::HandshakeTimeout))
    } else if let Some(t) = c.last_message {
        Some((t + limits.idle_timeout, Closed::Idle))
    } else {
        c.ready.map(|t| (t + limits.first_message_timeout, Closed::FirstMessageTimeout))
    };
    let stall = c.stalled.map(|t| (t + WRITE_STALL, Closed::WriteStall));
    match (main, stall) {
        (Some(m), Some(s)) => Some(if s.0 < m.0 { s } else { m }),
        (m, s) => m.or(s),
    }
}

fn token(slot: usize, generation: u32) -> u64 {
    u64::from(generation) << 32 | slot as u64
}

/// Moves data into `c.input`: a TLS session's decrypted plaintext first (as room allows), then,
/// when `readable`, the socket (TLS: only while the session holds no plaintext, so the two never
/// pile up; a new session's configuration chosen by `configs`). Whether anything arrived or the
/// connection's state moved.
fn read(
    c: &mut Conn,
    scratch: &mut [u8],
    max_message: usize,
    configs: Option<&TlsConfigs>,
    readable: bool,
) -> Result<bool, Closed> {
    // At most two messages' worth beyond what is waiting: the input stays bounded.
    let room = (2 * max_message).saturating_sub(c.input.len()).min(scratch.len());
    match &mut c.tls {
        Tls::None => {
            if !readable || c.eof || room == 0 {
                return Ok(false);
            }
            match c.sock.read(&mut scratch[..room]) {
                Ok(0) => {
                    c.eof = true;
                    Ok(true)
                }
                Ok(n) => {
                    c.input.extend_from_slice(&scratch[..n]);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) if is_reset(&e) => Err(Closed::Client),
                Err(_) => Err(Closed::IoError),
            }
        }
        Tls::Accepting(acceptor) => {
            if !readable {
                return Ok(false);
            }
            match acceptor.read_tls(&mut c.sock) {
                Ok(0) => return Err(Closed::Client),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if is_reset(&e) => return Err(Closed::Client),
                Err(_) => return Err(Closed::IoError),
            }
            match acceptor.accept() {
                Ok(None) => Ok(true),
                Ok(Some(accepted)) => {
                    // A TLS listener has a configuration (checked when loaded).
                    let Some(configs) = configs else { return Err(Closed::TlsError) };
                    let config = configs.choose(accepted.client_hello().alpn());
                    match accepted.into_connection(config) {
                        Ok(mut session) => {
                            // Unsent answers are bounded here, not by rustls' 64 KiB default.
                            session.set_buffer_limit(Some(MAX_PENDING));
                            c.tls = Tls::Session(Box::new(session));
                            // The ClientHello may have come with more: go on with the session.
                            tls_process(c)?;
                            drain_plaintext(c, scratch, max_message)?;
                            Ok(true)
                        }
                        Err((_, mut alert)) => {
                            let _ = alert.write_all(&mut c.sock);
                            Err(Closed::TlsError)
                        }
                    }
                }
                Err((_, mut alert)) => {
                    let _ = alert.write_all(&mut c.sock);
                    Err(Closed::TlsError)
                }
            }
        }
        Tls::Session(session) => {
            let mut moved = false;
            if readable && !c.eof && !plaintext_held(session) {
                match session.read_tls(&mut c.sock) {
                    Ok(0) => c.eof = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if is_reset(&e) => return Err(Closed::Client),
                    Err(_) => return Err(Closed::IoError),
                }
                tls_process(c)?;
                moved = true;
            }
            Ok(drain_plaintext(c, scratch, max_message)? || moved)
        }
    }
}

/// Whether the session holds decrypted plaintext not yet taken.
fn plaintext_held(session: &mut ServerConnection) -> bool {
    session.process_new_packets().is_ok_and(|state| state.plaintext_bytes_to_read() > 0)
}

/// Processes the TLS records read so far; a TLS error sends the session's alert and closes.
fn tls_process(c: &mut Conn) -> Result<(), Closed> {
    let Tls::Session(session) = &mut c.tls else { return Ok(()) };
    if session.process_new_packets().is_err() {
        // The alert rustls queued goes out before the close.
        let _ = session.write_tls(&mut c.sock);
        return Err(Closed::TlsError);
    }
    Ok(())
}

/// Moves a session's decrypted plaintext into `c.input` while there is room; whether any came.
fn drain_plaintext(c: &mut Conn, scratch: &mut [u8], max_message: usize) -> Result<bool, Closed> {
    let Tls::Session(session) = &mut c.tls else { return Ok(false) };
    let mut got = false;
    loop {
        let room = (2 * max_message).saturating_sub(c.input.len()).min(scratch.len());
        if room == 0 {
            return Ok(got);
        }
        match session.reader().read(&mut scratch[..room]) {
            // close_notify (or the TCP close after everything was read): answer what came
            // before it, then close.
            // (Progress only the first time it is seen.)
            Ok(0) => return Ok(got || !std::mem::replace(&mut c.eof, true)),
            Ok(n) => {
                c.input.extend_from_slice(&scratch[..n]);
                got = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(got || !std::mem::replace(&mut c.eof, true));
            }
            Err(_) => return Err(Closed::TlsError),
        }
    }
}

/// Sends what is waiting: plain answers to the socket, or through the session.
fn flush(c: &mut Conn, now: Instant) -> Result<(), Closed> {
    let before = c.output.len() + usize::from(matches!(&c.tls, Tls::Session(s) if s.wants_write()));
    match &mut c.tls {
        Tls::None => {
            while !c.output.is_empty() {
                match c.sock.write(&c.output) {
                    Ok(0) => break,
                    Ok(n) => {
                        c.output.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if is_reset(&e) => return Err(Closed::Client),
                    Err(_) => return Err(Closed::IoError),
                }
            }
        }
        Tls::Accepting(_) => {}
        Tls::Session(session) => {
            if !c.output.is_empty() && !session.is_handshaking() {
                match session.writer().write(&c.output) {
                    Ok(n) => {
                        c.output.drain(..n);
                    }
                    Err(_) => return Err(Closed::TlsError),
                }
            }
            while session.wants_write() {
                match session.write_tls(&mut c.sock) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if is_reset(&e) => return Err(Closed::Client),
                    Err(_) => return Err(Closed::IoError),
                }
            }
        }
    }
    let after = c.output.len() + usize::from(matches!(&c.tls, Tls::Session(s) if s.wants_write()));
    c.stalled = match (after, before) {
        (0, _) => None,
        (a, b) if a < b => Some(now),
        _ => c.stalled.or(Some(now)),
    };
    Ok(())
}

fn is_reset(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_label_tables_are_in_discriminant_order() {
        for (i, (why, _)) in REFUSED.iter().enumerate() {
            assert_eq!(*why as usize, i, "{why:?}");
        }
        for (i, (why, _)) in CLOSED.iter().enumerate() {
            assert_eq!(*why as usize, i, "{why:?}");
        }
    }

    /// A plain connection over loopback, accepted at `t0`, in the state the plane gives it.
    fn conn(t0: Instant, tls: bool) -> Conn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (sock, peer) = listener.accept().unwrap();
        let local = sock.local_addr().unwrap();
        Conn::new(sock, peer, local, if tls { Transport::Tls } else { Transport::Tcp }, t0, 1.0)
    }

    #[test]
    fn a_connections_earliest_timer_is_the_one_its_state_arms() {
        let s = Duration::from_secs;
        let limits = StreamLimits {
            handshake_timeout: s(3),
            first_message_timeout: s(5),
            idle_timeout: s(60),
            ..StreamLimits::default()
        };
        let t0 = Instant::now();
        // A TLS handshake: its timeout, whatever else is set.
        assert_eq!(timer(&conn(t0, true), &limits), Some((t0 + s(3), Closed::HandshakeTimeout)));
        // TCP, silent: the first message's.
        let mut c = conn(t0, false);
        assert_eq!(timer(&c, &limits), Some((t0 + s(5), Closed::FirstMessageTimeout)));
        // After a message: idle, counted from the last one.
        c.last_message = Some(t0 + s(7));
        assert_eq!(timer(&c, &limits), Some((t0 + s(67), Closed::Idle)));
        // Answers stuck since t0 + 8: the write stall comes first ...
        c.stalled = Some(t0 + s(8));
        assert_eq!(timer(&c, &limits), Some((t0 + WRITE_STALL + s(8), Closed::WriteStall)));
        // ... unless the idle timeout is sooner.
        let short = StreamLimits { idle_timeout: s(2), ..limits };
        assert_eq!(timer(&c, &short), Some((t0 + s(9), Closed::Idle)));
    }
}
