//! Thread-per-core lifecycle: bind every socket first (so a bad address or a port in use fails
//! before any thread starts), then one worker per configured CPU, pinned with core_affinity,
//! each owning its sockets, its batch buffers and its counters, looping receive → handle →
//! send until told to stop. Workers share nothing mutable on the packet path: the stop flag and
//! the reloadable [`HandlerConfig`] snapshot (checked with one atomic load per loop turn) are
//! the only cross-thread writes. No STUN parsing here.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::config::{BackendChoice, NatPlan, Settings};
use crate::handler::{self, ALT_IP, ALT_PORT, Action, DropReason, HandlerConfig, Meta, NatRole};
use crate::io::mmsg::{MmsgBatch, wait_readable};
use crate::io::socket::{self, Listener, SocketOptions};
use crate::io::uring::{self, Driver, Unavailable};
use crate::io::{Received, Reply};
use crate::metrics::{self, Counter, Stats, WorkerSlot};

/// How long an idle worker sleeps in poll(2) before looking at the stop flag again.
const IDLE_POLL_MS: i32 = 200;

/// Batches taken from one socket before the worker looks at its other sockets.
const BATCHES_PER_TURN: usize = 8;

/// Why the server could not start. Nothing is left running when this is returned.
#[derive(Debug)]
pub struct StartError {
    /// What failed: a listen address, `io.backend`, or a worker thread or its backend.
    pub what: String,
    /// The cause.
    pub error: std::io::Error,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.error)
    }
}

impl std::error::Error for StartError {}

/// Every listener's [`HandlerConfig`], replaced whole by a reload. A worker compares
/// `generation` with the one it last saw (one atomic load per loop turn) and takes the new
/// snapshot under the lock only when it moved: once per worker per reload, never per packet.
#[derive(Debug)]
struct Handlers {
    generation: AtomicU64,
    current: Mutex<Arc<[HandlerConfig]>>,
}

impl Handlers {
    fn load(&self) -> (u64, Arc<[HandlerConfig]>) {
        let generation = self.generation.load(Ordering::Acquire);
        let current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        (generation, current)
    }
}

/// A worker's copy of the snapshot.
struct HandlersView {
    seen: u64,
    current: Arc<[HandlerConfig]>,
}

impl HandlersView {
    fn new(shared: &Handlers) -> HandlersView {
        let (seen, current) = shared.load();
        HandlersView { seen, current }
    }

    #[inline]
    fn refresh(&mut self, shared: &Handlers) {
        if shared.generation.load(Ordering::Acquire) != self.seen {
            *self = HandlersView::new(shared);
        }
    }
}

/// Unix time in seconds: nonces (read once per loop turn; the vDSO answers, no syscall) and
/// the reload timestamps of the metrics.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A running server: its workers, their counters and the stop flag.
#[derive(Debug)]
pub struct Server {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    handlers: Arc<Handlers>,
    slots: Arc<[WorkerSlot]>,
    local_addrs: Vec<SocketAddr>,
    /// Where each socket's answer configuration comes from (config listener, RFC 5780 role).
    origins: Vec<Origin>,
    /// How many listen addresses the configuration names (the rest are RFC 5780's).
    configured: usize,
    cpus: Vec<usize>,
    backend: Backend,
    sockets: Vec<metrics::SocketInfo>,
}

impl Server {
    /// Claims every listen address, picks the backend (probing io_uring), binds every worker's
    /// sockets, then starts one pinned worker per CPU and waits until each has set up its
    /// backend.
    pub fn start(settings: &Settings) -> Result<Server, StartError> {
        let options = SocketOptions {
            reuse_port: true,
            recv_buffer: settings.socket_recv_buffer,
            send_buffer: settings.socket_send_buffer,
        };
        // Refuse an address someone holds; turn port 0 into a concrete free port.
        let resolved: Vec<SocketAddr> = settings
            .listen
            .iter()
            .map(|addr| socket::claim(*addr).map_err(|error| bind_error(*addr, error)))
            .collect::<Result<_, _>>()?;
        let (resolved, origins) = expand_nat(resolved, &settings.nat)?;
        // After the addresses, so a port in use is reported alone, not after a fallback notice.
        let backend = select_backend(settings.backend, uring::probe)
            .map_err(|why| StartError { what: "io.backend".into(), error: std::io::Error::other(why) })?;
        let mut per_worker: Vec<Vec<Listener>> = Vec::with_capacity(settings.cpus.len());
        for _ in &settings.cpus {
            let listeners = resolved
                .iter()
                .map(|addr| socket::bind(*addr, &options).map_err(|error| bind_error(*addr, error)))
                .collect::<Result<_, _>>()?;
            per_worker.push(listeners);
        }
        if settings.cpu_steering {
            if let Some(first) = per_worker.first() {
                for l in first {
                    socket::attach_cpu_steering(&l.socket, &settings.cpus)
                        .map_err(|error| StartError { what: format!("io.cpu_steering on {}", l.local), error })?;
                }
            }
        }
        if let Some(first) = per_worker.first() {
            for l in first {
                // The kernel reports twice the payload it grants (socket(7)).
                if l.recv_buffer < options.recv_buffer || l.send_buffer < options.send_buffer {
                    tracing::warn!(
                        listen = %l.local, rcvbuf = l.recv_buffer, sndbuf = l.send_buffer,
                        "socket buffers smaller than configured; raise net.core.rmem_max / wmem_max"
                    );
                }
            }
        }

        // Socket inodes, for the kernel's per-socket drop counters (/proc/net/udp).
        let mut sockets = Vec::new();
        for (cpu, listeners) in settings.cpus.iter().zip(&per_worker) {
            for l in listeners {
                let fd = l.socket.as_raw_fd();
                if let Ok(meta) = std::fs::metadata(format!("/proc/self/fd/{fd}")) {
                    use std::os::unix::fs::MetadataExt;
                    sockets.push(metrics::SocketInfo { worker: *cpu, listener: l.local, inode: meta.ino() });
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let slots: Arc<[WorkerSlot]> = settings.cpus.iter().map(|_| WorkerSlot::default()).collect();
        let handlers = Arc::new(Handlers {
            generation: AtomicU64::new(0),
            current: Mutex::new(per_socket(&settings.handlers, &origins).into()),
        });
        let mut server = Server {
            threads: Vec::new(),
            stop: stop.clone(),
            handlers: handlers.clone(),
            slots: slots.clone(),
            local_addrs: resolved,
            origins,
            configured: settings.listen.len(),
            cpus: settings.cpus.clone(),
            backend,
            sockets,
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        for (index, (cpu, listeners)) in settings.cpus.iter().copied().zip(per_worker).enumerate() {
            let worker = Worker {
                cpu,
                index,
                listeners,
                batch_size: settings.batch_size,
                backend,
                uring_send: settings.uring_send,
                uring_taskrun: settings.uring_taskrun,
                handlers: handlers.clone(),
                stop: stop.clone(),
                slots: slots.clone(),
            };
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new().name(format!("stunedge-w{cpu}")).spawn(move || worker.run(ready));
            match spawned {
                Ok(handle) => server.threads.push(handle),
                Err(error) => {
                    server.stop();
                    server.join();
                    return Err(StartError { what: format!("worker thread for CPU {cpu}"), error });
                }
            }
        }
        // Nothing half-started: every worker reports its backend set-up before we return.
        for cpu in &settings.cpus {
            let outcome =
                ready_rx.recv().unwrap_or_else(|_| Err(std::io::Error::other("worker ended during start-up")));
            if let Err(error) = outcome {
                server.stop();
                server.join();
                return Err(StartError { what: format!("{} backend on a worker (CPU {cpu})", backend.name()), error });
            }
        }
        Ok(server)
    }

    /// The backend the workers run.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The addresses listened on (ports resolved): the configured ones in order, then three
    /// per RFC 5780 group (alternate IP, alternate port, both).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The CPUs with a worker, in worker order.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// A Prometheus exporter over this server's workers and sockets.
    pub fn exporter(&self, reloads: Arc<metrics::ReloadStats>) -> metrics::Exporter {
        metrics::Exporter::new(
            self.slots.clone(),
            self.cpus.clone(),
            self.backend.name(),
            self.sockets.clone(),
            reloads,
        )
    }

    /// The sum of every worker's last published counters.
    pub fn stats(&self) -> Stats {
        metrics::sum(&self.slots)
    }

    /// Each worker's last published counters, in worker order.
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.slots.iter().map(WorkerSlot::read).collect()
    }

    /// Replaces every listener's answer configuration (credentials, auth policy, answer
    /// options) without stopping a worker: each picks it up at its next loop turn (within
    /// 200 ms when idle). `handlers` must have one entry per listen address, in order.
    pub fn reload(&self, handlers: Vec<HandlerConfig>) -> Result<(), String> {
        if handlers.len() != self.configured {
            return Err(format!(
                "{} listener configurations for {} listen addresses; changing server.listen needs a restart",
                handlers.len(),
                self.configured
            ));
        }
        let expanded = per_socket(&handlers, &self.origins);
        *self.handlers.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = expanded.into();
        self.handlers.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Asks every worker to stop; idle workers notice within 200 ms (their poll timeout).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// True when a worker thread has ended (it stopped, or it died).
    pub fn any_worker_exited(&self) -> bool {
        self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Waits for every worker; returns how many ended by panicking.
    pub fn join(&mut self) -> usize {
        self.threads.drain(..).map(JoinHandle::join).filter(Result::is_err).count()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        self.join();
    }
}

fn bind_error(addr: SocketAddr, error: std::io::Error) -> StartError {
    StartError { what: format!("cannot listen on {addr}"), error }
}

/// Where a socket's answer configuration comes from.
#[derive(Debug, Clone, Copy)]
struct Origin {
    /// The configured listener it copies.
    config: usize,
    /// Its RFC 5780 role, if any.
    nat: Option<NatRole>,
}

/// One answer configuration per socket: the configured listener's, with the RFC 5780 role.
fn per_socket(configured: &[HandlerConfig], origins: &[Origin]) -> Vec<HandlerConfig> {
    origins.iter().map(|o| HandlerConfig { nat: o.nat, ..configured[o.config].clone() }).collect()
}

/// Adds the three RFC 5780 sockets of each group (alternate IP, alternate port, both) after
/// the configured addresses, claiming each, and gives every socket its origin.
fn expand_nat(mut addrs: Vec<SocketAddr>, plans: &[NatPlan]) -> Result<(Vec<SocketAddr>, Vec<Origin>), StartError> {
    let mut origins: Vec<Origin> = (0..addrs.len()).map(|config| Origin { config, nat: None }).collect();
    for plan in plans {
        let primary = addrs[plan.primary];
        let port = match plan.alternate_port {
            0 => free_alternate_port(primary, plan.alternate_ip)?,
            port => port,
        };
        let role_addrs = [
            primary,
            SocketAddr::new(plan.alternate_ip, primary.port()),
            SocketAddr::new(primary.ip(), port),
            SocketAddr::new(plan.alternate_ip, port),
        ];
        let mut listeners = [plan.primary as u16, 0, 0, 0];
        for role in [ALT_IP, ALT_PORT, ALT_IP | ALT_PORT] {
            let addr = role_addrs[usize::from(role)];
            socket::claim(addr).map_err(|error| StartError {
                what: format!("cannot listen on {addr} (RFC 5780 alternate address)"),
                error,
            })?;
            listeners[usize::from(role)] = addrs.len() as u16;
            addrs.push(addr);
            origins.push(Origin { config: plan.primary, nat: None });
        }
        for role in 0..4u8 {
            let index = usize::from(listeners[usize::from(role)]);
            origins[index].nat = Some(NatRole { addrs: role_addrs, listeners, role });
        }
    }
    Ok((addrs, origins))
}

/// A port free on both the primary and the alternate IP (`rfc5780.alternate_port = 0`).
fn free_alternate_port(primary: SocketAddr, alternate: std::net::IpAddr) -> Result<u16, StartError> {
    let mut last = std::io::Error::other("no free port");
    for _ in 0..64 {
        let candidate = match socket::claim(SocketAddr::new(primary.ip(), 0)) {
            Ok(a) => a.port(),
            Err(e) => return Err(bind_error(SocketAddr::new(primary.ip(), 0), e)),
        };
        if candidate == primary.port() {
            continue;
        }
        let both = [SocketAddr::new(alternate, primary.port()), SocketAddr::new(alternate, candidate)];
        match both.iter().try_for_each(|a| socket::claim(*a).map(drop)) {
            Ok(()) => return Ok(candidate),
            Err(e) => last = e,
        }
    }
    Err(StartError {
        what: format!("rfc5780.alternate_port = 0: no port free on {primary} and {alternate}"),
        error: last,
    })
}

/// The backend a server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// recvmmsg / sendmmsg batches.
    Mmsg,
    /// io_uring: multishot receive into a provided-buffer ring, batched sendmsg SQEs.
    IoUring,
}

impl Backend {
    /// The config spelling.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Mmsg => "mmsg",
            Backend::IoUring => "io_uring",
        }
    }
}

/// Picks the backend for `choice` given the io_uring probe's verdict. `auto` falls back to
/// mmsg with one log line; an explicit `io_uring` that cannot work is an error.
pub fn select_backend(
    choice: BackendChoice,
    probe: impl FnOnce() -> Result<(), Unavailable>,
) -> Result<Backend, String> {
    match choice {
        BackendChoice::Mmsg => Ok(Backend::Mmsg),
        BackendChoice::IoUring => probe()
            .map(|()| Backend::IoUring)
            .map_err(|why| format!("io.backend = \"io_uring\", but io_uring is unavailable: {why}")),
        BackendChoice::Auto => Ok(match probe() {
            Ok(()) => Backend::IoUring,
            Err(why) => {
                tracing::warn!("io_uring unavailable ({why}); using the mmsg backend");
                Backend::Mmsg
            }
        }),
    }
}

/// Everything one worker owns.
struct Worker {
    cpu: usize,
    index: usize,
    listeners: Vec<Listener>,
    batch_size: usize,
    backend: Backend,
    uring_send: uring::SendMode,
    uring_taskrun: uring::TaskRun,
    handlers: Arc<Handlers>,
    stop: Arc<AtomicBool>,
    slots: Arc<[WorkerSlot]>,
}

impl Worker {
    fn run(self, ready: mpsc::Sender<Result<(), std::io::Error>>) {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: self.cpu }) {
            tracing::warn!(cpu = self.cpu, "could not pin worker to its CPU; running unpinned");
        }
        let mut stats = Stats::default();
        tracing::debug!(
            cpu = self.cpu,
            sockets = self.listeners.len(),
            backend = self.backend.name(),
            "worker starting"
        );
        match self.backend {
            Backend::Mmsg => {
                let _ = ready.send(Ok(()));
                self.run_mmsg(&mut stats);
            }
            Backend::IoUring => {
                let fds: Vec<_> = self.listeners.iter().map(|l| l.socket.as_raw_fd()).collect();
                let heartbeat = std::time::Duration::from_millis(IDLE_POLL_MS as u64);
                match Driver::new(&fds, self.uring_send, self.uring_taskrun, heartbeat) {
                    Ok(driver) => {
                        let _ = ready.send(Ok(()));
                        self.run_uring(driver, &mut stats);
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
            }
        }
        self.slots[self.index].publish(&stats);
        tracing::debug!(cpu = self.cpu, %stats, "worker stopped");
    }

    fn run_mmsg(&self, stats: &mut Stats) {
        let slot = &self.slots[self.index];
        let mut batch = MmsgBatch::new(self.batch_size);
        let mut pollfds: Vec<libc::pollfd> = self
            .listeners
            .iter()
            .map(|l| libc::pollfd { fd: l.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let fds: Vec<RawFd> = self.listeners.iter().map(|l| l.socket.as_raw_fd()).collect();
        let mut view = HandlersView::new(&self.handlers);
        while !self.stop.load(Ordering::Relaxed) {
            let mut busy = false;
            view.refresh(&self.handlers);
            let now = unix_now();
            for (socket, config) in view.current.iter().enumerate().take(self.listeners.len()) {
                for _ in 0..BATCHES_PER_TURN {
                    let n = self.serve_batch(socket, &fds, config, now, &mut batch, stats);
                    busy |= n > 0;
                    if n < self.batch_size {
                        break;
                    }
                }
            }
            slot.publish(stats);
            if !busy {
                if let Err(e) = wait_readable(&mut pollfds, IDLE_POLL_MS) {
                    tracing::error!(cpu = self.cpu, error = %e, "poll failed");
                    std::thread::sleep(std::time::Duration::from_millis(IDLE_POLL_MS as u64));
                }
            }
        }
    }

    fn run_uring(&self, mut driver: Driver, stats: &mut Stats) {
        let slot = &self.slots[self.index];
        let pause = std::time::Duration::from_millis(IDLE_POLL_MS as u64);
        let mut view = HandlersView::new(&self.handlers);
        while !self.stop.load(Ordering::Relaxed) {
            view.refresh(&self.handlers);
            let now = unix_now();
            let configs = &view.current;
            // The batch clock starts at the turn's first datagram, after the wait.
            let mut started: Option<Instant> = None;
            let turn = driver.turn(|socket, packet| {
                started.get_or_insert_with(Instant::now);
                self.answer(&self.listeners[socket], &configs[socket], now, packet, stats)
            });
            match turn {
                Ok(t) => {
                    if t.datagrams_in > 0 {
                        stats.bump(Counter::Batches);
                        let nanos = started.map_or(0, |t0| t0.elapsed().as_nanos() as u64);
                        stats.observe_batch(t.datagrams_in, nanos);
                    }
                    stats.add(Counter::DatagramsIn, t.datagrams_in);
                    stats.add(Counter::BytesIn, t.bytes_in);
                    stats.add(Counter::DatagramsOut, t.datagrams_out);
                    stats.add(Counter::BytesOut, t.bytes_out);
                    stats.send_errors_add(t.send_errors);
                    stats.add(Counter::SendSlotsFull, t.send_slots_full);
                    stats.add(Counter::MultishotRearms, t.rearms);
                    stats.add(Counter::BufferRingExhausted, t.buffer_exhausted);
                    stats.add(Counter::RecvErrors, t.recv_errors);
                    stats.add(Counter::CqOverflow, t.cq_overflow);
                }
                Err(e) => {
                    stats.bump(Counter::RecvErrors);
                    tracing::error!(cpu = self.cpu, error = %e, "io_uring wait failed");
                    std::thread::sleep(pause);
                }
            }
            slot.publish(stats);
        }
    }

    /// Runs the handler on one received datagram; returns the answer to send, or `None` when
    /// the datagram is dropped (counted in `stats`).
    #[inline]
    fn answer(
        &self,
        listener: &Listener,
        config: &HandlerConfig,
        now: u64,
        packet: Received<'_>,
        stats: &mut Stats,
    ) -> Option<Reply> {
        if packet.truncated {
            stats.dropped(DropReason::Truncated);
            return None;
        }
        let Some(src) = packet.src else {
            // A UDP socket only reports IPv4/IPv6 senders; anything else is not ours to answer.
            stats.dropped(DropReason::NotStun);
            return None;
        };
        let local_ip = packet.dst.map_or(listener.local.ip(), |(ip, _)| ip);
        let meta = Meta { src, local: SocketAddr::new(local_ip, listener.local.port()), now };
        match handler::handle(packet.buf, packet.len, &meta, config, stats) {
            Action::Reply { len, route } => {
                let via = route.via().map(usize::from);
                // The socket the answer leaves from: PKTINFO only applies to a wildcard one.
                let sender = via.and_then(|v| self.listeners.get(v)).unwrap_or(listener);
                Some(Reply { len, from: if sender.wildcard { packet.dst } else { None }, via, port: route.port() })
            }
            Action::Drop(_) => None,
        }
    }

    /// Receives one batch from socket `socket` (of `fds`, the worker's sockets), answers it,
    /// sends the replies. Returns the number of datagrams received.
    #[inline]
    fn serve_batch(
        &self,
        socket: usize,
        fds: &[RawFd],
        config: &HandlerConfig,
        now: u64,
        batch: &mut MmsgBatch,
        stats: &mut Stats,
    ) -> usize {
        let listener = &self.listeners[socket];
        let n = match batch.recv(fds[socket]) {
            Ok(n) => n,
            Err(_) => {
                stats.bump(Counter::RecvErrors);
                return 0;
            }
        };
        if n == 0 {
            return 0;
        }
        let started = Instant::now();
        stats.bump(Counter::Batches);
        for i in 0..n {
            let packet = batch.received(i);
            stats.bump(Counter::DatagramsIn);
            stats.add(Counter::BytesIn, packet.len as u64);
            if let Some(reply) = self.answer(listener, config, now, packet, stats) {
                batch.queue(i, &reply);
            }
        }
        let sent = batch.flush_routed(fds, socket);
        stats.add(Counter::DatagramsOut, sent.datagrams);
        stats.add(Counter::BytesOut, sent.bytes);
        stats.send_errors_add(sent.errors);
        stats.observe_batch(n as u64, started.elapsed().as_nanos() as u64);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_selection() {
        let ok = || Ok(());
        let no = || Err(Unavailable("io_uring_setup: EPERM".into()));
        assert_eq!(select_backend(BackendChoice::Auto, ok), Ok(Backend::IoUring));
        assert_eq!(select_backend(BackendChoice::Auto, no), Ok(Backend::Mmsg));
        assert_eq!(select_backend(BackendChoice::Mmsg, ok), Ok(Backend::Mmsg));
        assert_eq!(select_backend(BackendChoice::IoUring, ok), Ok(Backend::IoUring));
        let err = select_backend(BackendChoice::IoUring, no).unwrap_err();
        assert_eq!(err, "io.backend = \"io_uring\", but io_uring is unavailable: io_uring_setup: EPERM");
    }
}
