//! The io_uring backend: one ring per worker, created on the worker's pinned thread; a
//! multishot IORING_OP_RECVMSG per socket receiving into a provided-buffer ring; each answer
//! written in place in its receive buffer by the handler (through the worker's callback — no
//! protocol logic here), then sent either by one sendmmsg per socket at the end of the turn
//! (`io.uring_send = "sendmmsg"`, the default) or by one SQE per answer submitted together with
//! the next wait (`"sqe"`: IORING_OP_SEND with the address in the SQE, IORING_OP_SENDMSG from a
//! fixed send slot where PKTINFO is needed); a buffer goes back to the ring only when its send
//! has completed.
//!
//! Kernel floors of what is used: io_uring (5.1), IORING_ENTER_EXT_ARG wait timeouts (5.11),
//! io_uring_register_buf_ring (5.19), multishot IORING_OP_RECVMSG (6.0), SINGLE_ISSUER (6.0),
//! IORING_OP_SEND with a destination address (6.0; older kernels reject it with EINVAL),
//! COOP_TASKRUN (5.19; the default, `io.uring_taskrun = "coop"`) or DEFER_TASKRUN (6.1;
//! "defer"). [`probe`] checks them at start. COOP measured faster than DEFER in most runs (median
//! 1.08×); an apparent stall with it under a burst turned out to be answers dropped for want of
//! a send slot, fixed by giving every receive buffer one (bench/results/2026-11-26-levers.md).

mod buf_ring;
mod send;

use std::io;
use std::mem::{ManuallyDrop, size_of};
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use io_uring::{IoUring, Probe, cqueue, opcode, squeue, types};

use self::buf_ring::{BUFFERS, BufRing, Lease};
use self::send::SendSlots;
use super::msg::{Control, pktinfo, prepare_send, set_port, socket_addr, storage_bytes};
use super::{BUFFER_SIZE, Received, Reply, Tally};

/// Buffer group id of the provided-buffer ring.
const BGID: u16 = 0;
/// Room for the source address in each receive buffer (sockaddr_in6 is 28 bytes).
const NAME_LEN: usize = 32;
/// Room for control messages (PKTINFO) in each receive buffer.
const CONTROL_LEN: usize = size_of::<Control>();
/// `struct io_uring_recvmsg_out`: namelen, controllen, payloadlen, flags.
const RECVMSG_OUT_LEN: usize = 16;
/// Where the datagram starts in a receive buffer.
const PAYLOAD_OFFSET: usize = RECVMSG_OUT_LEN + NAME_LEN + CONTROL_LEN;
/// Sends in flight at once: one per receive buffer, since every answer in flight holds the
/// buffer it was written in. With fewer (512 until 2026-11-26), a turn that harvested more
/// datagrams than slots dropped the excess answers (`send_slots_full`): under a burst with
/// COOP_TASKRUN, whose turns are larger, that dropped the answer to a request sent right
/// after the burst in 6 of 115 runs, which had looked like a stall.
const SEND_SLOTS: usize = BUFFERS as usize;
/// Submission queue entries; the completion queue gets four times as many.
const SQ_ENTRIES: u32 = 1024;

/// user_data tags: the top byte says what completed, the rest which socket or slot.
const TAG_RECV: u64 = 1 << 56;
const TAG_SEND: u64 = 2 << 56;
const TAG_CANCEL: u64 = 3 << 56;
const TAG_HEARTBEAT: u64 = 4 << 56;
const TAG_MASK: u64 = 0xFF << 56;

/// How the io_uring backend sends answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendMode {
    /// One SQE per answer, submitted together with the next wait; the receive buffer returns
    /// to the ring when the send completes. IORING_OP_SEND with the destination address in
    /// the SQE (6.0), so the kernel copies in no msghdr; IORING_OP_SENDMSG where the answer
    /// needs a PKTINFO source address (wildcard listeners).
    Sqe,
    /// One sendmmsg(2) per socket per turn over the turn's answers; buffers return to the ring
    /// right after the call (the kernel has copied the data).
    Sendmmsg,
}

/// When the kernel runs a ring's completion work (its "task work": posting receive and send
/// completions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRun {
    /// IORING_SETUP_DEFER_TASKRUN (6.1): only while the worker waits in io_uring_enter; falls
    /// back to [`TaskRun::Coop`] on older kernels.
    Defer,
    /// IORING_SETUP_COOP_TASKRUN (5.19): at the worker's next entry into the kernel, without an
    /// interrupt.
    Coop,
}

/// An answer waiting for the turn's sendmmsg.
#[derive(Debug)]
struct Pending {
    socket: u16,
    lease: Lease,
    len: u16,
    name_len: u8,
    from: Option<(IpAddr, u32)>,
}

/// Why io_uring cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The environment variable that makes [`probe`] report io_uring unavailable (tests, and
/// operators who want to rule it out without editing the config).
pub const DISABLE_ENV: &str = "STUNEDGE_DISABLE_IO_URING";

/// Checks that this kernel and sandbox allow everything the backend uses.
pub fn probe() -> Result<(), Unavailable> {
    if std::env::var_os(DISABLE_ENV).is_some() {
        return Err(Unavailable(format!("disabled by the {DISABLE_ENV} environment variable")));
    }
    let ring = IoUring::new(8).map_err(|e| {
        Unavailable(match e.raw_os_error() {
            Some(libc::ENOSYS) => "io_uring_setup: ENOSYS (kernel without io_uring)".into(),
            Some(libc::EPERM) => {
                "io_uring_setup: EPERM (blocked by seccomp, e.g. Docker's default profile, or by the kernel.io_uring_disabled sysctl)".into()
            }
            _ => format!("io_uring_setup: {e}"),
        })
    })?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|e| Unavailable(format!("IORING_REGISTER_PROBE: {e}")))?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "IORING_OP_RECVMSG"),
        (opcode::SendMsg::CODE, "IORING_OP_SENDMSG"),
        (opcode::Send::CODE, "IORING_OP_SEND"),
    ] {
        if !probe.is_supported(code) {
            return Err(Unavailable(format!("{name} not supported by this kernel")));
        }
    }
    let release = kernel_release();
    if release < (6, 0) {
        return Err(Unavailable(format!(
            "kernel {}.{} lacks multishot IORING_OP_RECVMSG (needs 6.0)",
            release.0, release.1
        )));
    }
    let bufs = BufRing::new(64).map_err(|e| Unavailable(format!("buffer ring: {e}")))?;
    // SAFETY: the ring memory lives in `bufs`, which outlives the registration (unregistered
    // just below, before `bufs` is dropped).
    unsafe { ring.submitter().register_buf_ring_with_flags(bufs.ring_addr(), BUFFERS, BGID, 0) }
        .map_err(|e| Unavailable(format!("io_uring_register_buf_ring: {e} (needs 5.19)")))?;
    let _ = ring.submitter().unregister_buf_ring(BGID);
    Ok(())
}

/// (major, minor) of the running kernel, (0, 0) when unknown.
fn kernel_release() -> (u32, u32) {
    let text = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = text.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// A worker's ring, buffers and send slots. Created and used on one thread.
pub struct Driver {
    // Field order is drop order: the ring goes first, so the kernel is done with the memory
    // below before it is freed (Drop also cancels and drains outstanding operations).
    ring: IoUring,
    /// Freed in Drop, only once the kernel is done with them.
    bufs: ManuallyDrop<BufRing>,
    slots: ManuallyDrop<SendSlots>,
    fds: Vec<RawFd>,
    /// One msghdr per socket for its multishot receive; the kernel reads namelen and
    /// controllen from it at every completion, so it must not move: boxed.
    recv_hdrs: Box<[libc::msghdr]>,
    armed: Vec<bool>,
    /// An IORING_OP_TIMEOUT that completes every heartbeat interval, so a wait never outlasts
    /// it (the worker looks at its stop flag then) without a timer set up on every wait. Boxed:
    /// the kernel reads the timespec when it takes the SQE.
    heartbeat: Box<types::Timespec>,
    heartbeat_armed: bool,
    overflow_seen: u32,
    mode: SendMode,
    /// Sendmmsg mode: this turn's answers, and the kernel-facing arrays to send them from
    /// (allocated once, `BUFFERS` entries: there can be no more answers than buffers).
    pending: Vec<Pending>,
    out_hdrs: Box<[libc::mmsghdr]>,
    out_iovs: Box<[libc::iovec]>,
    out_controls: Box<[Control]>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("sockets", &self.fds.len()).field("bufs", &self.bufs).finish()
    }
}

impl Driver {
    /// Sets up a ring for `fds` (non-blocking UDP sockets) and arms a multishot receive on each;
    /// [`Driver::turn`] returns at least every `heartbeat`.
    pub fn new(fds: &[RawFd], mode: SendMode, taskrun: TaskRun, heartbeat: Duration) -> io::Result<Driver> {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(SQ_ENTRIES * 4).setup_single_issuer();
        match taskrun {
            TaskRun::Defer => builder.setup_defer_taskrun(),
            TaskRun::Coop => builder.setup_coop_taskrun(),
        };
        let ring = match builder.build(SQ_ENTRIES) {
            Ok(ring) => ring,
            // DEFER_TASKRUN needs 6.1, SINGLE_ISSUER 6.0; COOP_TASKRUN (5.19) alone is the rest.
            Err(_) => IoUring::builder().setup_cqsize(SQ_ENTRIES * 4).setup_coop_taskrun().build(SQ_ENTRIES)?,
        };
        let bufs = BufRing::new(PAYLOAD_OFFSET + BUFFER_SIZE)?;
        // SAFETY: the ring entries live in `bufs`, which the Driver owns and drops after the
        // ring (field order, and Drop drains operations first).
        unsafe { ring.submitter().register_buf_ring_with_flags(bufs.ring_addr(), BUFFERS, BGID, 0)? };
        // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
        let mut template: libc::msghdr = unsafe { std::mem::zeroed() };
        template.msg_namelen = NAME_LEN as libc::socklen_t;
        template.msg_controllen = CONTROL_LEN;
        let mut driver = Driver {
            ring,
            bufs: ManuallyDrop::new(bufs),
            slots: ManuallyDrop::new(SendSlots::new(SEND_SLOTS)),
            fds: fds.to_vec(),
            recv_hdrs: vec![template; fds.len()].into_boxed_slice(),
            armed: vec![false; fds.len()],
            heartbeat: Box::new(types::Timespec::from(heartbeat)),
            heartbeat_armed: false,
            overflow_seen: 0,
            mode,
            pending: Vec::with_capacity(usize::from(BUFFERS)),
            // SAFETY: all-zero mmsghdr and iovec are valid (null pointers, zero lengths).
            out_hdrs: vec![unsafe { std::mem::zeroed::<libc::mmsghdr>() }; usize::from(BUFFERS)].into_boxed_slice(),
            // SAFETY: as above.
            out_iovs: vec![unsafe { std::mem::zeroed::<libc::iovec>() }; usize::from(BUFFERS)].into_boxed_slice(),
            out_controls: vec![Control([0; 64]); usize::from(BUFFERS)].into_boxed_slice(),
        };
        driver.bufs.commit();
        for socket in 0..fds.len() {
            driver.arm(socket)?;
        }
        driver.arm_heartbeat()?;
        driver.ring.submit()?;
        Ok(driver)
    }

    /// Queues the heartbeat timeout.
    fn arm_heartbeat(&mut self) -> io::Result<()> {
        let sqe = opcode::Timeout::new(&raw const *self.heartbeat).build().user_data(TAG_HEARTBEAT);
        self.push(&sqe)?;
        self.heartbeat_armed = true;
        Ok(())
    }

    /// Queues a multishot receive on `socket`.
    fn arm(&mut self, socket: usize) -> io::Result<()> {
        // MSG_TRUNC: the completion's payloadlen is the datagram's real size, even when only
        // the buffer's worth was copied (received_bytes counts what arrived).
        let sqe = opcode::RecvMsgMulti::new(types::Fd(self.fds[socket]), &raw const self.recv_hdrs[socket], BGID)
            .flags(libc::MSG_TRUNC as u32)
            .build()
            .user_data(TAG_RECV | socket as u64);
        self.push(&sqe)?;
        self.armed[socket] = true;
        Ok(())
    }

    /// Pushes an SQE, submitting first when the queue is full.
    fn push(&mut self, sqe: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every SQE we build points only at memory the Driver owns and keeps in
            // place until its completion: boxed msghdrs, send slots, ring buffers.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Submits what is queued, waits for at least one completion (the heartbeat bounds the
    /// wait), and handles them: datagrams go to `on_datagram` with the index of their socket
    /// (in the order given to [`Driver::new`]), whose answers are sent (sendmmsg
    /// mode) or queued as SQEs submitted with the next wait, other buffers return to the ring.
    pub fn turn(&mut self, mut on_datagram: impl FnMut(usize, Received<'_>) -> Option<Reply>) -> io::Result<Tally> {
        let mut t = Tally::default();
        match self.ring.submitter().submit_and_wait(1) {
            Ok(_) => {}
            // EBUSY: the completion queue is backed up; draining it below is the remedy.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        // Take the completions in chunks into a stack array so new SQEs can be pushed while
        // handling them (no allocation).
        let mut chunk = [const { None::<cqueue::Entry> }; 64];
        loop {
            let mut n = 0;
            {
                let mut cq = self.ring.completion();
                for (slot, cqe) in chunk.iter_mut().zip(&mut cq) {
                    *slot = Some(cqe);
                    n += 1;
                }
                let overflow = cq.overflow();
                t.cq_overflow += u64::from(overflow.wrapping_sub(self.overflow_seen));
                self.overflow_seen = overflow;
            }
            if n == 0 {
                break;
            }
            for cqe in chunk[..n].iter_mut().filter_map(Option::take) {
                self.complete(&cqe, &mut t, &mut on_datagram)?;
            }
        }
        if !self.pending.is_empty() {
            self.send_pending(&mut t);
        }
        for socket in 0..self.fds.len() {
            if !self.armed[socket] {
                self.arm(socket)?;
                t.rearms += 1;
            }
        }
        if !self.heartbeat_armed {
            self.arm_heartbeat()?;
        }
        self.bufs.commit();
        Ok(t)
    }

    /// Sendmmsg mode: sends this turn's answers, one sendmmsg per socket, then returns their
    /// buffers to the ring.
    fn send_pending(&mut self, t: &mut Tally) {
        for socket in 0..self.fds.len() {
            let mut n = 0;
            for p in self.pending.iter().filter(|p| usize::from(p.socket) == socket) {
                let base = self.bufs.buffer_ptr(&p.lease);
                // SAFETY: the name field and the payload lie inside the leased buffer, which
                // stays out of the ring (pending) until after the sendmmsg below.
                let (name, payload) = unsafe { (base.add(RECVMSG_OUT_LEN), base.add(PAYLOAD_OFFSET)) };
                self.out_iovs[n] = libc::iovec { iov_base: payload.cast(), iov_len: usize::from(p.len) };
                let h = &mut self.out_hdrs[n];
                h.msg_len = 0;
                prepare_send(
                    &mut h.msg_hdr,
                    name.cast(),
                    libc::socklen_t::from(p.name_len),
                    &raw mut self.out_iovs[n],
                    &mut self.out_controls[n],
                    p.from,
                );
                n += 1;
            }
            if n == 0 {
                continue;
            }
            // SAFETY: out_hdrs[..n] were just filled: names and payloads point into receive
            // buffers held out of the ring until after this call, iovs and controls into our
            // boxed arrays.
            let sent = unsafe { super::mmsg::send_all(self.fds[socket], &mut self.out_hdrs[..n]) };
            t.add(sent);
        }
        for p in self.pending.drain(..) {
            self.bufs.recycle(p.lease);
        }
    }

    fn complete(
        &mut self,
        cqe: &cqueue::Entry,
        t: &mut Tally,
        on_datagram: &mut impl FnMut(usize, Received<'_>) -> Option<Reply>,
    ) -> io::Result<()> {
        let data = cqe.user_data();
        let index = (data & !TAG_MASK) as usize;
        match data & TAG_MASK {
            TAG_RECV => {
                if !cqueue::more(cqe.flags()) {
                    // Multishot ended (ENOBUFS, an error, or the kernel's choice): re-arm at the
                    // end of the turn, after buffers have gone back to the ring.
                    self.armed[index] = false;
                }
                let result = cqe.result();
                if result < 0 {
                    if result == -libc::ENOBUFS {
                        t.buffer_exhausted += 1;
                    } else {
                        t.receive_errors += 1;
                    }
                    return Ok(());
                }
                let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                    t.receive_errors += 1;
                    return Ok(());
                };
                // SAFETY: this completion selected `bid`: the kernel is done with it.
                let lease = unsafe { self.bufs.lend(bid) };
                self.datagram(index, lease, result as usize, t, on_datagram)?;
            }
            TAG_HEARTBEAT => self.heartbeat_armed = false,
            TAG_SEND => {
                let (lease, len) = self.slots.release(index);
                if let Some(lease) = lease {
                    self.bufs.recycle(lease);
                }
                if cqe.result() >= 0 {
                    t.sent_datagrams += 1;
                    t.sent_bytes += len as u64;
                } else {
                    t.send_errors.count(-cqe.result(), 1);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn datagram(
        &mut self,
        socket: usize,
        lease: Lease,
        filled: usize,
        t: &mut Tally,
        on_datagram: &mut impl FnMut(usize, Received<'_>) -> Option<Reply>,
    ) -> io::Result<()> {
        let buf = self.bufs.buffer_mut(&lease);
        if filled < PAYLOAD_OFFSET {
            t.receive_errors += 1;
            self.bufs.recycle(lease);
            return Ok(());
        }
        let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let (name_len, control_len, payload_len, flags) = (word(0), word(4), word(8), word(12));
        let len = payload_len.min(filled - PAYLOAD_OFFSET);
        let truncated = flags & (libc::MSG_TRUNC as usize) != 0 || len < payload_len;
        let src = (name_len <= NAME_LEN).then(|| {
            // Copy the name bytes into an aligned sockaddr_storage to read them.
            let mut storage = sockaddr_storage_zeroed();
            let bytes = &buf[RECVMSG_OUT_LEN..RECVMSG_OUT_LEN + name_len];
            storage_bytes(&mut storage)[..name_len].copy_from_slice(bytes);
            socket_addr(&storage)
        });
        let dst = {
            let control = &mut buf[RECVMSG_OUT_LEN + NAME_LEN..PAYLOAD_OFFSET];
            // SAFETY: an all-zero msghdr is valid; we point it at the control bytes the kernel
            // wrote (control_len ≤ CONTROL_LEN) only for parsing.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_control = control.as_mut_ptr().cast();
            hdr.msg_controllen = control_len.min(CONTROL_LEN);
            // SAFETY: msg_control points at `control`, CONTROL_LEN bytes of the lent buffer, and
            // msg_controllen is at most that.
            unsafe { pktinfo(&hdr) }
        };
        let size = payload_len.max(len);
        t.received_datagrams += 1;
        t.received_bytes += size as u64;
        let name_len = name_len.min(NAME_LEN);
        let reply = on_datagram(
            socket,
            Received { buf: &mut buf[PAYLOAD_OFFSET..], len, size, truncated, src: src.flatten(), dst },
        );
        let Some(reply) = reply else {
            self.bufs.recycle(lease);
            return Ok(());
        };
        // RFC 5780: another socket of this worker (CHANGE-REQUEST), another port (RESPONSE-PORT).
        let socket = reply.via.unwrap_or(socket);
        if socket >= self.fds.len() {
            t.send_errors.count(libc::EBADF, 1);
            self.bufs.recycle(lease);
            return Ok(());
        }
        if let Some(port) = reply.port {
            let buf = self.bufs.buffer_mut(&lease);
            set_port(&mut buf[RECVMSG_OUT_LEN..RECVMSG_OUT_LEN + name_len], port);
        }
        if self.mode == SendMode::Sendmmsg {
            self.pending.push(Pending {
                socket: socket as u16,
                lease,
                len: reply.len.min(BUFFER_SIZE) as u16,
                name_len: name_len as u8,
                from: reply.from,
            });
            return Ok(());
        }
        let Some(slot) = self.slots.acquire() else {
            t.send_slots_full += 1;
            self.bufs.recycle(lease);
            return Ok(());
        };
        let base = self.bufs.buffer_ptr(&lease);
        // SAFETY: base points at the leased buffer, which the slot owns until the send
        // completes; the name field starts RECVMSG_OUT_LEN bytes in and the payload
        // PAYLOAD_OFFSET bytes in, both within the buffer.
        let (name, payload) = unsafe { (base.add(RECVMSG_OUT_LEN), base.add(PAYLOAD_OFFSET)) };
        let len = reply.len.min(BUFFER_SIZE);
        let fd = types::Fd(self.fds[socket]);
        let sqe = if reply.from.is_none() {
            // The kernel reads the payload and the address from the leased buffer, which the
            // slot holds until this send completes.
            self.slots.hold(slot, lease, len);
            opcode::Send::new(fd, payload, len as u32)
                .dest_addr(name.cast())
                .dest_addr_len(name_len as libc::socklen_t)
                .build()
        } else {
            opcode::SendMsg::new(fd, self.slots.prepare(slot, lease, name, name_len, payload, len, reply.from)).build()
        };
        self.push(&sqe.user_data(TAG_SEND | slot as u64))
    }
}

fn sockaddr_storage_zeroed() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain integers; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Answers a failed turn left unsent still hold their buffers.
        for p in std::mem::take(&mut self.pending) {
            self.bufs.recycle(p.lease);
        }
        // Cancel the multishot receives and wait (bounded) until the kernel has completed every
        // operation that may touch our memory; if it does not in time, leak the memory rather
        // than free what the kernel might still write.
        for socket in 0..self.fds.len() {
            let cancel = opcode::AsyncCancel::new(TAG_RECV | socket as u64).build().user_data(TAG_CANCEL);
            let _ = self.push(&cancel);
        }
        let _ = self.push(&opcode::TimeoutRemove::new(TAG_HEARTBEAT).build().user_data(TAG_CANCEL));
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        let mut recv_live = self.armed.iter().filter(|a| **a).count();
        while (recv_live > 0 || self.slots.in_flight() > 0) && std::time::Instant::now() < deadline {
            let ts = types::Timespec::from(Duration::from_millis(50));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            let completed: Vec<(u64, u32)> = self.ring.completion().map(|c| (c.user_data(), c.flags())).collect();
            for (data, flags) in completed {
                match data & TAG_MASK {
                    TAG_RECV if !cqueue::more(flags) => recv_live = recv_live.saturating_sub(1),
                    TAG_SEND => {
                        if let (Some(lease), _) = self.slots.release((data & !TAG_MASK) as usize) {
                            self.bufs.recycle(lease);
                        }
                    }
                    _ => {}
                }
            }
        }
        if recv_live > 0 || self.slots.in_flight() > 0 {
            // Memory the kernel might still write is never freed.
            tracing::error!("io_uring operations still pending at shutdown; leaking their buffers");
            return;
        }
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
        // SAFETY: every operation has completed and the buffer ring is unregistered, so the
        // kernel holds no reference to this memory; each field is dropped exactly once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.bufs);
            ManuallyDrop::drop(&mut self.slots);
        }
    }
}
