//! Thread-per-core lifecycle: bind every socket first (so a bad address or a port in use fails
//! before any thread starts), then one worker per configured CPU, pinned with core_affinity,
//! each owning its sockets, its batch buffers and its counters, looping receive → handle →
//! send until told to stop. Workers share nothing mutable; the stop flag is the only
//! cross-thread write. No STUN parsing here.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::config::Settings;
use crate::handler::{self, Action, DropReason, HandlerConfig, Meta};
use crate::io::mmsg::{MmsgBatch, wait_readable};
use crate::io::socket::{self, Listener, SocketOptions};
use crate::metrics::{self, Counter, Stats, WorkerSlot};

/// How long an idle worker sleeps in poll(2) before looking at the stop flag again.
const IDLE_POLL_MS: i32 = 200;

/// Batches taken from one socket before the worker looks at its other sockets.
const BATCHES_PER_TURN: usize = 8;

/// Why the server could not start. Nothing is left running when this is returned.
#[derive(Debug)]
pub struct StartError {
    /// The listen address (or, for thread errors, the worker's CPU as 0.0.0.0:cpu).
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

/// A running server: its workers, their counters and the stop flag.
#[derive(Debug)]
pub struct Server {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    slots: Arc<[WorkerSlot]>,
    local_addrs: Vec<SocketAddr>,
    cpus: Vec<usize>,
}

impl Server {
    /// Binds every socket, then starts one pinned worker per CPU.
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
        let mut per_worker: Vec<Vec<Listener>> = Vec::with_capacity(settings.cpus.len());
        for _ in &settings.cpus {
            let listeners = resolved
                .iter()
                .map(|addr| socket::bind(*addr, &options).map_err(|error| bind_error(*addr, error)))
                .collect::<Result<_, _>>()?;
            per_worker.push(listeners);
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

        let stop = Arc::new(AtomicBool::new(false));
        let slots: Arc<[WorkerSlot]> = settings.cpus.iter().map(|_| WorkerSlot::default()).collect();
        let handler_config = Arc::new(settings.handler.clone());
        let mut server = Server {
            threads: Vec::new(),
            stop: stop.clone(),
            slots: slots.clone(),
            local_addrs: resolved,
            cpus: settings.cpus.clone(),
        };
        for (index, (cpu, listeners)) in settings.cpus.iter().copied().zip(per_worker).enumerate() {
            let worker = Worker {
                cpu,
                index,
                listeners,
                batch_size: settings.batch_size,
                handler: handler_config.clone(),
                stop: stop.clone(),
                slots: slots.clone(),
            };
            let spawned = std::thread::Builder::new().name(format!("stunedge-w{cpu}")).spawn(move || worker.run());
            match spawned {
                Ok(handle) => server.threads.push(handle),
                Err(error) => {
                    server.stop();
                    server.join();
                    return Err(StartError { what: format!("worker thread for CPU {cpu}"), error });
                }
            }
        }
        Ok(server)
    }

    /// The addresses listened on (ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The CPUs with a worker, in worker order.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The sum of every worker's last published counters.
    pub fn stats(&self) -> Stats {
        metrics::sum(&self.slots)
    }

    /// Each worker's last published counters, in worker order.
    pub fn worker_stats(&self) -> Vec<Stats> {
        self.slots.iter().map(WorkerSlot::read).collect()
    }

    /// The flag that stops every worker when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
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

/// Everything one worker owns.
struct Worker {
    cpu: usize,
    index: usize,
    listeners: Vec<Listener>,
    batch_size: usize,
    handler: Arc<HandlerConfig>,
    stop: Arc<AtomicBool>,
    slots: Arc<[WorkerSlot]>,
}

impl Worker {
    fn run(self) {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: self.cpu }) {
            tracing::warn!(cpu = self.cpu, "could not pin worker to its CPU; running unpinned");
        }
        let slot = &self.slots[self.index];
        let mut batch = MmsgBatch::new(self.batch_size);
        let mut stats = Stats::default();
        let mut pollfds: Vec<libc::pollfd> = self
            .listeners
            .iter()
            .map(|l| libc::pollfd { fd: l.socket.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        tracing::debug!(cpu = self.cpu, sockets = self.listeners.len(), "worker started");
        while !self.stop.load(Ordering::Relaxed) {
            let mut busy = false;
            for listener in &self.listeners {
                for _ in 0..BATCHES_PER_TURN {
                    let n = self.serve_batch(listener, &mut batch, &mut stats);
                    busy |= n > 0;
                    if n < self.batch_size {
                        break;
                    }
                }
            }
            slot.publish(&stats);
            if !busy {
                if let Err(e) = wait_readable(&mut pollfds, IDLE_POLL_MS) {
                    tracing::error!(cpu = self.cpu, error = %e, "poll failed");
                    std::thread::sleep(std::time::Duration::from_millis(IDLE_POLL_MS as u64));
                }
            }
        }
        slot.publish(&stats);
        tracing::debug!(cpu = self.cpu, %stats, "worker stopped");
    }

    /// Receives one batch from `listener`, answers it, sends the replies. Returns the number
    /// of datagrams received.
    #[inline]
    fn serve_batch(&self, listener: &Listener, batch: &mut MmsgBatch, stats: &mut Stats) -> usize {
        let fd = listener.socket.as_raw_fd();
        let n = match batch.recv(fd) {
            Ok(n) => n,
            Err(_) => {
                stats.bump(Counter::RecvErrors);
                return 0;
            }
        };
        if n == 0 {
            return 0;
        }
        stats.bump(Counter::Batches);
        for i in 0..n {
            let packet = batch.received(i);
            stats.bump(Counter::DatagramsIn);
            stats.add(Counter::BytesIn, packet.len as u64);
            if packet.truncated {
                stats.dropped(DropReason::Truncated);
                continue;
            }
            let Some(src) = packet.src else {
                // A UDP socket only reports IPv4/IPv6 senders; anything else is not ours to answer.
                stats.dropped(DropReason::NotStun);
                continue;
            };
            let local_ip = packet.dst.map_or(listener.local.ip(), |(ip, _)| ip);
            let meta = Meta { src, local: SocketAddr::new(local_ip, listener.local.port()) };
            if let Action::Reply { len } = handler::handle(packet.buf, packet.len, &meta, &self.handler, stats) {
                let from = if listener.wildcard { packet.dst } else { None };
                batch.queue_reply(i, len, from);
            }
        }
        let sent = batch.flush(fd);
        stats.add(Counter::DatagramsOut, sent.datagrams);
        stats.add(Counter::BytesOut, sent.bytes);
        stats.add(Counter::SendErrors, sent.errors);
        n
    }
}
