//! The portable backend: one recvmmsg fills up to `batch` receive buffers, the handler answers
//! in place, one sendmmsg sends every reply. All kernel-facing memory (buffers, sockaddrs,
//! control buffers, iovecs, mmsghdrs) is allocated once per worker in [`MmsgBatch`] and never
//! moves: the headers point into boxed slices whose heap addresses are stable for the life of
//! the batch, and the batch is not `Send`, so it lives and dies on its worker thread.
//!
//! Non-blocking sockets (MSG_DONTWAIT), so one worker can serve several listen addresses;
//! the worker blocks in poll(2) only when every socket is empty. The recvmmsg timeout argument
//! is never used (recvmmsg(2), BUGS: it is only checked after each datagram).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::ptr::null_mut;

use super::msg::{Control, pktinfo, prepare_send, set_port, socket_addr, storage_bytes, write_sockaddr};
use super::{BUFFER_SIZE, Received, Reply, Tally};

/// `out_via` for an answer that leaves from the socket it arrived on.
const OWN: u16 = u16::MAX;

/// A worker's receive/send batch. Not `Send` (raw pointers), by design.
pub struct MmsgBatch {
    bufs: Box<[[u8; BUFFER_SIZE]]>,
    names: Box<[libc::sockaddr_storage]>,
    controls: Box<[Control]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    out_iovs: Box<[libc::iovec]>,
    out_controls: Box<[Control]>,
    out_hdrs: Box<[libc::mmsghdr]>,
    /// For each queued answer, the socket it leaves from (an index into the worker's sockets),
    /// or [`OWN`].
    out_via: Box<[u16]>,
    /// Answers regrouped by socket when some leave from another one (RFC 5780).
    scratch: Box<[libc::mmsghdr]>,
    queued: usize,
}

impl std::fmt::Debug for MmsgBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmsgBatch").field("size", &self.bufs.len()).field("queued", &self.queued).finish()
    }
}

fn boxed<T: Copy>(value: T, n: usize) -> Box<[T]> {
    vec![value; n].into_boxed_slice()
}

impl MmsgBatch {
    /// Allocates a batch of `size` (≥ 1) buffers and wires the receive headers to them.
    pub fn new(size: usize) -> MmsgBatch {
        let size = size.max(1);
        // SAFETY: these are plain C structs (integers, pointers, byte arrays) for which the
        // all-zero bit pattern is a valid value (null pointers, zero lengths).
        let (storage, iov, hdr): (libc::sockaddr_storage, libc::iovec, libc::mmsghdr) =
            unsafe { (zeroed(), zeroed(), zeroed()) };
        let mut batch = MmsgBatch {
            bufs: boxed([0u8; BUFFER_SIZE], size),
            names: boxed(storage, size),
            controls: boxed(Control([0; 64]), size),
            iovs: boxed(iov, size),
            hdrs: boxed(hdr, size),
            out_iovs: boxed(iov, size),
            out_controls: boxed(Control([0; 64]), size),
            out_hdrs: boxed(hdr, size),
            out_via: boxed(OWN, size),
            scratch: boxed(hdr, size),
            queued: 0,
        };
        for i in 0..size {
            batch.iovs[i] = libc::iovec { iov_base: batch.bufs[i].as_mut_ptr().cast(), iov_len: BUFFER_SIZE };
            let h = &mut batch.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut batch.names[i]).cast();
            h.msg_iov = &raw mut batch.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = batch.controls[i].0.as_mut_ptr().cast();
        }
        batch
    }

    /// Receives up to a batch of datagrams without blocking. `Ok(0)` when none is waiting.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.queued = 0;
        for h in self.hdrs.iter_mut() {
            // The kernel overwrites these with the actual sizes; reset them to the capacities.
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = size_of::<Control>();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        loop {
            // SAFETY: `hdrs` holds `hdrs.len()` initialised mmsghdrs whose name, iov and control
            // pointers address live, correctly sized buffers owned by `self` (see `new`); the
            // timeout is null (unused). The kernel writes only within those capacities. With
            // MSG_TRUNC a UDP socket reports each datagram's real size in msg_len, even when
            // only the buffer's worth was copied.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    null_mut(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(0),
                _ => return Err(err),
            }
        }
    }

    /// Datagram `i` of the last [`MmsgBatch::recv`].
    pub fn received(&mut self, i: usize) -> Received<'_> {
        let hdr = &self.hdrs[i];
        // The real size (recvmmsg with MSG_TRUNC), of which at most BUFFER_SIZE bytes were copied.
        let size = hdr.msg_len as usize;
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || size > BUFFER_SIZE;
        let src = socket_addr(&self.names[i]);
        // SAFETY: msg_control points at this slot's `Control` buffer, which the kernel filled up
        // to msg_controllen (set by `recv`, at most the buffer's size).
        let dst = unsafe { pktinfo(&hdr.msg_hdr) };
        Received { buf: &mut self.bufs[i][..], len: size.min(BUFFER_SIZE), size, truncated, src, dst }
    }

    /// Queues the first `len` bytes of buffer `i` as a reply to its sender. With `from`, a
    /// PKTINFO control message makes the reply leave from that local address (and, for IPv6,
    /// interface).
    pub fn queue_reply(&mut self, i: usize, len: usize, from: Option<(IpAddr, u32)>) {
        let k = self.queued;
        self.queued += 1;
        self.out_iovs[k] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: len.min(BUFFER_SIZE) };
        let name_len = self.hdrs[i].msg_hdr.msg_namelen;
        self.out_via[k] = OWN;
        let out = &mut self.out_hdrs[k];
        out.msg_len = 0;
        prepare_send(
            &mut out.msg_hdr,
            (&raw mut self.names[i]).cast(),
            name_len,
            &raw mut self.out_iovs[k],
            &mut self.out_controls[k],
            from,
        );
    }

    /// Queues buffer `i`'s answer as `reply` says: back to the sender, or (RFC 5780) to another
    /// port of its address and from another of the worker's sockets; send with
    /// [`MmsgBatch::flush_routed`].
    pub fn queue(&mut self, i: usize, reply: &Reply) {
        if let Some(port) = reply.port {
            set_port(storage_bytes(&mut self.names[i]), port);
        }
        let k = self.queued;
        self.queue_reply(i, reply.len, reply.from);
        if let Some(via) = reply.via {
            self.out_via[k] = u16::try_from(via).unwrap_or(OWN - 1);
        }
    }

    /// The number of buffers.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Buffer `i`, to build a datagram in (client side: the load generator).
    pub fn buffer_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i][..]
    }

    /// Queues the first `len` bytes of buffer `i` to `to` (client side). The next
    /// [`MmsgBatch::recv`] resets the address buffers, so queue and flush before receiving.
    pub fn queue_to(&mut self, i: usize, len: usize, to: SocketAddr) {
        self.hdrs[i].msg_hdr.msg_namelen = write_sockaddr(&mut self.names[i], to);
        self.queue_reply(i, len, None);
    }

    /// Sends every queued reply on `fd` with as few sendmmsg calls as the kernel allows.
    pub fn flush(&mut self, fd: RawFd) -> Tally {
        self.flush_routed(&[fd], 0)
    }

    /// Sends every queued reply: those queued with a `via` on `fds[via]`, the rest on
    /// `fds[own]`, one sendmmsg series per socket. A `via` with no socket is counted as lost.
    pub fn flush_routed(&mut self, fds: &[RawFd], own: usize) -> Tally {
        let queued = std::mem::take(&mut self.queued);
        if self.out_via[..queued].iter().all(|&v| v == OWN) {
            let Some(&fd) = fds.get(own) else { return lost(queued) };
            // SAFETY: out_hdrs[..queued] were built by `queue_reply`: each name points at a
            // sockaddr_storage in `names` with its length, each iov at a buffer in `bufs` with
            // a length ≤ BUFFER_SIZE, each control (if any) at a filled `Control`; all are
            // owned by `self` and outlive the call.
            return unsafe { send_all(fd, &mut self.out_hdrs[..queued]) };
        }
        // Some answers leave from other sockets (RFC 5780): regroup the headers by socket.
        // Copies of a header point at the same names, iovecs and controls.
        let mut sent = Tally::default();
        let mut grouped = 0;
        for (socket, &fd) in fds.iter().enumerate() {
            let mut n = 0;
            for k in 0..queued {
                let via = if self.out_via[k] == OWN { own } else { usize::from(self.out_via[k]) };
                if via == socket {
                    self.scratch[n] = self.out_hdrs[k];
                    n += 1;
                }
            }
            if n > 0 {
                // SAFETY: scratch[..n] are copies of headers built by `queue_reply` (see above).
                sent.add(unsafe { send_all(fd, &mut self.scratch[..n]) });
                grouped += n;
            }
        }
        sent.add(lost(queued - grouped));
        sent
    }
}

/// `n` answers that had no socket to leave from.
fn lost(n: usize) -> Tally {
    let mut sent = Tally::default();
    sent.send_errors.count(libc::EBADF, n as u64);
    sent
}

/// Sends `hdrs` on `fd` with as few sendmmsg calls as the kernel allows. A reply the kernel
/// refuses (EPERM from a firewall, EINVAL, unreachable…) is counted and skipped; a full send
/// queue (EAGAIN, ENOBUFS) ends the batch, counting the rest as errors.
///
/// # Safety
/// Every header's name, iov and control pointers must address live memory of the lengths they
/// state for the duration of the call.
pub unsafe fn send_all(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> Tally {
    let mut sent = Tally::default();
    let mut at = 0;
    while at < hdrs.len() {
        let rest = &mut hdrs[at..];
        // SAFETY: per this function's contract the headers are valid; `rest` is a live slice
        // and its length is passed as vlen.
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, libc::MSG_DONTWAIT) };
        if n > 0 {
            for h in &rest[..n as usize] {
                sent.sent_datagrams += 1;
                sent.sent_bytes += u64::from(h.msg_len);
            }
            at += n as usize;
            continue;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => {}
            Some(errno @ (libc::EAGAIN | libc::ENOBUFS)) => {
                sent.send_errors.count(errno, (hdrs.len() - at) as u64);
                break;
            }
            errno => {
                sent.send_errors.count(errno.unwrap_or(0), 1);
                at += 1;
            }
        }
    }
    sent
}

/// Waits until one of `fds` is readable or `timeout_ms` passes.
pub fn wait_readable(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<()> {
    for p in fds.iter_mut() {
        p.revents = 0;
    }
    // SAFETY: `fds` is a live, exclusively borrowed slice of pollfd; nfds is its length.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    Ok(())
}
