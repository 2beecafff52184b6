//! Thread-per-core lifecycle: bind every socket first (so a bad address or a port in use fails
//! before any thread starts), then one worker per configured CPU, pinned with core_affinity,
//! each owning its sockets, its batch buffers and its counters, looping receive → handle →
//! send until told to stop. Workers share nothing mutable on the packet path: the stop flag and
//! the reloadable [`HandlerConfig`] snapshot (checked with one atomic load per loop turn) are
//! the only cross-thread writes. No STUN parsing here.

mod rfc5780;
mod snapshot;
mod xdp;

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use self::snapshot::{Handlers, HandlersView};
use crate::config::{BackendChoice, Settings};
use crate::counters::{self, DropReason, Stats, Tally, WorkerSlot};
use crate::handler::{self, Action, HandlerConfig, Meta};
use crate::io::mmsg::{MmsgBatch, wait_readable};
use crate::io::socket::{self, Listener, SocketOptions};
use crate::io::uring::{self, Driver, Unavailable};
use crate::io::{Received, Reply};
use crate::lb::{self, health::HealthChecker};
use crate::limit;
use crate::metrics;

/// How long an idle worker sleeps in poll(2) before looking at the stop flag again.
const IDLE_POLL_MS: i32 = 200;

/// Batches taken from one socket before the worker looks at its other sockets.
const BATCHES_PER_TURN: usize = 8;

/// Why the server could not start. Nothing is left running when this is returned.
#[derive(Debug)]
pub enum StartError {
    /// A listen address could not be claimed or bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// It is one of RFC 5780's alternate addresses (not in `server.listen`).
        rfc5780: bool,
        /// The cause.
        error: std::io::Error,
    },
    /// `rfc5780.alternate_port = 0` found no port free on both IP addresses.
    NoAlternatePort {
        /// The primary listen address.
        primary: SocketAddr,
        /// The alternate IP address.
        alternate: std::net::IpAddr,
        /// The last cause.
        error: std::io::Error,
    },
    /// `io.backend = "io_uring"`, but io_uring is unavailable.
    Backend(Unavailable),
    /// `io.cpu_steering`: the steering program could not be attached.
    CpuSteering {
        /// The listen address of the socket.
        addr: SocketAddr,
        /// The cause.
        error: std::io::Error,
    },
    /// A worker thread could not be spawned.
    Thread {
        /// Its CPU.
        cpu: usize,
        /// The cause.
        error: std::io::Error,
    },
    /// A worker could not set up its backend (its ring, for io_uring).
    WorkerBackend {
        /// The worker's CPU.
        cpu: usize,
        /// The backend.
        backend: Backend,
        /// The cause.
        error: std::io::Error,
    },
    /// The TURN balancer's health-check thread (or its sockets) could not be started.
    Health(std::io::Error),
    /// `[xdp]` with an explicit `mode`: the fast path could not be loaded or attached.
    Xdp(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind { addr, rfc5780: false, error } => write!(f, "cannot listen on {addr}: {error}"),
            StartError::Bind { addr, rfc5780: true, error } => {
                write!(f, "cannot listen on {addr} (RFC 5780 alternate address): {error}")
            }
            StartError::NoAlternatePort { primary, alternate, error } => {
                write!(f, "rfc5780.alternate_port = 0: no port free on {primary} and {alternate}: {error}")
            }
            StartError::Backend(why) => write!(f, "io.backend = \"io_uring\", but io_uring is unavailable: {why}"),
            StartError::CpuSteering { addr, error } => write!(f, "io.cpu_steering on {addr}: {error}"),
            StartError::Thread { cpu, error } => write!(f, "worker thread for CPU {cpu}: {error}"),
            StartError::WorkerBackend { cpu, backend, error } => {
                write!(f, "{} backend on a worker (CPU {cpu}): {error}", backend.name())
            }
            StartError::Health(error) => write!(f, "turn_lb health-check thread: {error}"),
            StartError::Xdp(why) => write!(f, "{why} (xdp.mode is explicit; \"auto\" would fall back to the workers)"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind { error, .. }
            | StartError::NoAlternatePort { error, .. }
            | StartError::CpuSteering { error, .. }
            | StartError::Thread { error, .. }
            | StartError::WorkerBackend { error, .. }
            | StartError::Health(error) => Some(error),
            StartError::Backend(_) | StartError::Xdp(_) => None,
        }
    }
}

/// Unix time in seconds: nonces (read once per loop turn; the vDSO answers, no syscall) and
/// the reload timestamps of the metrics.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the first call in this process: the monotonic clock every worker shares
/// (the rate limiter's table is shared, so its times must agree). Starts at 1.
pub fn clock_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// The clocks of one batch, read once per loop turn.
#[derive(Debug, Clone, Copy)]
struct Now {
    unix: u64,
    ms: u64,
}

impl Now {
    fn read() -> Now {
        Now { unix: unix_now(), ms: clock_ms() }
    }
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
    origins: Vec<rfc5780::Origin>,
    /// How many listen addresses the configuration names (the rest are RFC 5780's).
    configured: usize,
    cpus: Vec<usize>,
    backend: Backend,
    sockets: Vec<metrics::SocketInfo>,
    /// The rate limiter's table, allocated once at start and kept across reloads.
    limit: Arc<limit::Shared>,
    /// The next line of the table [`Server::sweep_limit`] looks at.
    sweep_at: std::sync::atomic::AtomicUsize,
    /// The TURN balancer's health-check thread, once a configuration has balanced.
    health: std::sync::Mutex<Option<HealthChecker>>,
    /// The XDP fast path, when `[xdp]` attached it.
    xdp: Arc<std::sync::Mutex<Option<xdp::XdpState>>>,
}

impl Server {
    /// Claims every listen address, picks the backend (probing io_uring), binds every worker's
    /// sockets, then starts one pinned worker per CPU and waits until each has set up its
    /// backend.
    pub fn start(settings: &Settings) -> Result<Server, StartError> {
        // Refuse an address someone holds; turn port 0 into a concrete free port.
        let resolved: Vec<SocketAddr> = settings
            .listen
            .iter()
            .map(|&addr| socket::claim(addr).map_err(|error| StartError::Bind { addr, rfc5780: false, error }))
            .collect::<Result<_, _>>()?;
        let (resolved, origins) = rfc5780::expand(resolved, &settings.rfc5780)?;
        // After the addresses, so a port in use is reported alone, not after a fallback notice.
        let backend = select_backend(settings.backend, uring::probe)?;
        let per_worker = bind_workers(settings, &resolved)?;
        let sockets = socket_inodes(&settings.cpus, &per_worker);
        // The rate limiter's table, allocated once, here (the configuration holds a stand-in).
        let limit = Arc::new(limit::Shared::new(settings.limit.rules.params().table_size));
        let configured: Vec<HandlerConfig> = settings
            .handlers
            .iter()
            .map(|h| HandlerConfig { limit: limit::Limit::new(h.limit.rules.clone(), limit.clone()), ..h.clone() })
            .collect();
        let handlers = Arc::new(Handlers::new(rfc5780::per_socket(&configured, &origins)));
        let mut server = Server {
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            handlers,
            slots: settings.cpus.iter().map(|_| WorkerSlot::default()).collect(),
            local_addrs: resolved,
            origins,
            configured: settings.listen.len(),
            cpus: settings.cpus.clone(),
            backend,
            sockets,
            limit,
            sweep_at: std::sync::atomic::AtomicUsize::new(0),
            health: std::sync::Mutex::new(None),
            xdp: Arc::new(std::sync::Mutex::new(None)),
        };
        server.spawn(settings, per_worker)?;
        // After the workers: every request the fast path passes has a worker to answer it.
        *server.xdp.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            xdp::start(&settings.xdp, settings.limit.rules.params())?;
        if let Some(balancer) = server.handlers.current_turn() {
            let checker = HealthChecker::spawn(balancer.state.clone()).map_err(StartError::Health)?;
            *server.health.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(checker);
        }
        Ok(server)
    }

    /// Starts one worker per CPU on its sockets and waits until each has set up its backend:
    /// nothing is left half-started when this returns an error.
    fn spawn(&mut self, settings: &Settings, per_worker: Vec<Vec<Listener>>) -> Result<(), StartError> {
        let (ready_tx, ready_rx) = mpsc::channel();
        for (index, (cpu, listeners)) in settings.cpus.iter().copied().zip(per_worker).enumerate() {
            let worker = Worker {
                cpu,
                index,
                listeners,
                batch_size: settings.batch_size,
                backend: self.backend,
                uring_send: settings.uring_send,
                uring_taskrun: settings.uring_taskrun,
                handlers: self.handlers.clone(),
                stop: self.stop.clone(),
                slots: self.slots.clone(),
            };
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new().name(format!("stunedge-w{cpu}")).spawn(move || worker.run(ready));
            match spawned {
                Ok(handle) => self.threads.push(handle),
                Err(error) => {
                    self.stop();
                    self.join();
                    return Err(StartError::Thread { cpu, error });
                }
            }
        }
        for &cpu in &settings.cpus {
            let outcome =
                ready_rx.recv().unwrap_or_else(|_| Err(std::io::Error::other("worker ended during start-up")));
            if let Err(error) = outcome {
                self.stop();
                self.join();
                return Err(StartError::WorkerBackend { cpu, backend: self.backend, error });
            }
        }
        Ok(())
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
        .with_limit(
            {
                let handlers = self.handlers.clone();
                move || handlers.current_limit()
            },
            clock_ms,
        )
        .with_turn_lb({
            let handlers = self.handlers.clone();
            move || handlers.current_turn()
        })
        .with_xdp({
            let state = self.xdp.clone();
            move || state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(xdp::XdpState::view)
        })
    }

    /// The sum of every worker's last published counters.
    pub fn stats(&self) -> Stats {
        counters::sum(&self.slots)
    }

    /// Each worker's last published counters, in worker order.
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.slots.iter().map(WorkerSlot::read).collect()
    }

    /// Replaces every listener's answer configuration (credentials, auth policy, answer
    /// options) without stopping a worker: each picks it up at its next loop turn (within
    /// 200 ms when idle). `handlers` must have one entry per listen address, in order.
    pub fn reload(&self, mut handlers: Vec<HandlerConfig>) -> Result<(), String> {
        if handlers.len() != self.configured {
            return Err(format!(
                "{} listener configurations for {} listen addresses; changing server.listen needs a restart",
                handlers.len(),
                self.configured
            ));
        }
        // New rules, the running table: a reload neither forgets who is being limited nor
        // resizes the table (limit.table_size waits for a restart).
        for handler in &mut handlers {
            handler.limit.shared = self.limit.clone();
        }
        // The new pool, with the running pool's health and counters for the backends it keeps;
        // the health thread probes the new one from now on (started by the first reload that
        // balances, when the start did not).
        let running = self.handlers.current_turn();
        let balancer = handlers.iter().find_map(|h| h.turn.clone()).map(|new| match &running {
            Some(old) => Arc::new(new.rebased(&old.state)),
            None => new,
        });
        for handler in handlers.iter_mut().filter(|h| h.turn.is_some()) {
            handler.turn = balancer.clone();
        }
        let mut health = self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let probed = balancer
            .as_ref()
            .map_or_else(|| Arc::new(lb::State::new(&[], lb::ProbeSettings::default(), None)), |b| b.state.clone());
        match health.as_ref() {
            Some(checker) => checker.replace(probed),
            None if balancer.is_some() => {
                *health = Some(HealthChecker::spawn(probed).map_err(|e| format!("turn_lb health-check thread: {e}"))?);
            }
            None => {}
        }
        drop(health);
        self.handlers.replace(rfc5780::per_socket(&handlers, &self.origins));
        Ok(())
    }

    /// Sweeps the next `1 / parts` of the rate limiter's table ([`limit::table::Table::sweep`]):
    /// called every 50 ms by the serve loop with `parts` = 1200, the whole table once a minute.
    pub fn sweep_limit(&self, parts: usize) {
        let table = &self.limit.table;
        let lines = table.lines().div_ceil(parts.max(1));
        let current = self.handlers.current_limit();
        let from = self.sweep_at.load(Ordering::Relaxed);
        let next = table.sweep(from, lines, clock_ms() / limit::TICK_MS, current.rules.decay());
        self.sweep_at.store(next, Ordering::Relaxed);
    }

    /// Gives the XDP fast path's limiter the time ([`crate::xdp::Fastpath::set_clock`]): called
    /// every 50 ms by the serve loop.
    pub fn tick_xdp(&self) {
        if let Some(state) = self.xdp.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            state.tick(clock_ms());
        }
    }

    /// The XDP fast path's counters and attachments, `None` when it is not running.
    pub fn xdp_view(&self) -> Option<crate::xdp::XdpView> {
        self.xdp.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(xdp::XdpState::view)
    }

    /// Detaches the XDP fast path (draining, stopping): the workers answer everything.
    pub fn detach_xdp(&self) {
        if let Some(state) = self.xdp.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            state.detach();
        }
    }

    /// A reload's `[xdp]` ports and `[limit]` budgets for the fast path (its interfaces and mode
    /// wait for a restart).
    pub fn reload_xdp(&self, plan: &crate::config::XdpPlan, params: &limit::Params) {
        if let Some(state) = self.xdp.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            state.reload(plan, params);
        }
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
        self.detach_xdp();
        self.stop();
        self.join();
        if let Some(checker) = self.health.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            checker.stop();
        }
    }
}

/// Binds every listen address once per worker (SO_REUSEPORT), attaches CPU steering when
/// configured, and warns when the kernel granted smaller socket buffers than configured.
fn bind_workers(settings: &Settings, addrs: &[SocketAddr]) -> Result<Vec<Vec<Listener>>, StartError> {
    let options = SocketOptions {
        reuse_port: true,
        recv_buffer: settings.socket_recv_buffer,
        send_buffer: settings.socket_send_buffer,
    };
    let mut per_worker: Vec<Vec<Listener>> = Vec::with_capacity(settings.cpus.len());
    for _ in &settings.cpus {
        let listeners = addrs
            .iter()
            .map(|&addr| socket::bind(addr, &options).map_err(|error| StartError::Bind { addr, rfc5780: false, error }))
            .collect::<Result<_, _>>()?;
        per_worker.push(listeners);
    }
    // The steering program and the buffer sizes are per port group: the first worker's
    // sockets stand for all.
    let first = per_worker.first().map_or(&[][..], Vec::as_slice);
    if settings.cpu_steering {
        for l in first {
            socket::attach_cpu_steering(&l.socket, &settings.cpus)
                .map_err(|error| StartError::CpuSteering { addr: l.local, error })?;
        }
    }
    for l in first {
        // The kernel reports twice the payload it grants (socket(7)).
        if l.recv_buffer < options.recv_buffer || l.send_buffer < options.send_buffer {
            tracing::warn!(
                listen = %l.local, rcvbuf = l.recv_buffer, sndbuf = l.send_buffer,
                "socket buffers smaller than configured; raise net.core.rmem_max / wmem_max"
            );
        }
    }
    Ok(per_worker)
}

/// Every socket's inode, for the kernel's per-socket drop counters (/proc/net/udp).
fn socket_inodes(cpus: &[usize], per_worker: &[Vec<Listener>]) -> Vec<metrics::SocketInfo> {
    use std::os::unix::fs::MetadataExt;
    let mut sockets = Vec::new();
    for (cpu, listeners) in cpus.iter().zip(per_worker) {
        for l in listeners {
            let fd = l.socket.as_raw_fd();
            if let Ok(meta) = std::fs::metadata(format!("/proc/self/fd/{fd}")) {
                sockets.push(metrics::SocketInfo { worker: *cpu, listener: l.local, inode: meta.ino() });
            }
        }
    }
    sockets
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
) -> Result<Backend, StartError> {
    match choice {
        BackendChoice::Mmsg => Ok(Backend::Mmsg),
        BackendChoice::IoUring => probe().map(|()| Backend::IoUring).map_err(StartError::Backend),
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
            let now = Now::read();
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
            log_limited(stats);
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
            let now = Now::read();
            let configs = &view.current;
            // The batch clock starts at the turn's first datagram, after the wait.
            let mut started: Option<Instant> = None;
            let turn = driver.turn(|socket, packet| {
                started.get_or_insert_with(Instant::now);
                self.answer(&self.listeners[socket], &configs[socket], now, packet, stats)
            });
            match turn {
                Ok(t) => stats.record(&t, started.map_or(0, |t0| t0.elapsed().as_nanos() as u64)),
                Err(e) => {
                    stats.record(&Tally { receive_errors: 1, ..Tally::default() }, 0);
                    tracing::error!(cpu = self.cpu, error = %e, "io_uring wait failed");
                    std::thread::sleep(pause);
                }
            }
            slot.publish(stats);
            log_limited(stats);
        }
    }

    /// Runs the handler on one received datagram; returns the answer to send, or `None` when
    /// the datagram is dropped (counted in `stats`).
    #[inline]
    fn answer(
        &self,
        listener: &Listener,
        config: &HandlerConfig,
        now: Now,
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
        let meta =
            Meta { src, local: SocketAddr::new(local_ip, listener.local.port()), now: now.unix, clock_ms: now.ms };
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
        now: Now,
        batch: &mut MmsgBatch,
        stats: &mut Stats,
    ) -> usize {
        let listener = &self.listeners[socket];
        let n = match batch.recv(fds[socket]) {
            Ok(n) => n,
            Err(_) => {
                stats.record(&Tally { receive_errors: 1, ..Tally::default() }, 0);
                return 0;
            }
        };
        if n == 0 {
            return 0;
        }
        let started = Instant::now();
        let mut tally = Tally { received_datagrams: n as u64, ..Tally::default() };
        for i in 0..n {
            let packet = batch.received(i);
            tally.received_bytes += packet.size as u64;
            if let Some(reply) = self.answer(listener, config, now, packet, stats) {
                batch.queue(i, &reply);
            }
        }
        tally.add(batch.flush_routed(fds, socket));
        stats.record(&tally, started.elapsed().as_nanos() as u64);
        n
    }
}

/// Logs the limited answer the handler picked for logging, if any: at most one line per
/// [`limit::LOG_PERIOD_MS`] for the whole table (the handler's CAS on the table's log clock),
/// naming the prefix and level that were over; never a line per packet.
#[inline]
fn log_limited(stats: &mut Stats) {
    if let Some((dst, level, class)) = stats.take_limited_sample() {
        let family = limit::family(dst);
        tracing::warn!(
            prefix = %limit::Limit::level_prefix(dst, level),
            level = counters::LIMIT_LEVELS[family][level.min(limit::ALLOW_LEVEL)],
            class = class.name(),
            "response rate limit: answers to this prefix are over budget (leaked or dropped; in \
             dry-run only counted); at most one such line per 30 s, stunedge_limit_decisions_total \
             counts every decision"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_selection() {
        let ok = || Ok(());
        let no = || Err(Unavailable("io_uring_setup: EPERM".into()));
        assert_eq!(select_backend(BackendChoice::Auto, ok).ok(), Some(Backend::IoUring));
        assert_eq!(select_backend(BackendChoice::Auto, no).ok(), Some(Backend::Mmsg));
        assert_eq!(select_backend(BackendChoice::Mmsg, ok).ok(), Some(Backend::Mmsg));
        assert_eq!(select_backend(BackendChoice::IoUring, ok).ok(), Some(Backend::IoUring));
        let err = select_backend(BackendChoice::IoUring, no).unwrap_err().to_string();
        assert_eq!(err, "io.backend = \"io_uring\", but io_uring is unavailable: io_uring_setup: EPERM");
    }
}
