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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr::{null_mut, read_unaligned, write_unaligned};

use crate::handler::BUFFER_SIZE;

/// Room for one IP_PKTINFO or IPV6_PKTINFO control message (CMSG_SPACE of the larger, 32 on
/// 64-bit Linux), aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; 64]);

/// One received datagram, borrowed from the batch.
#[derive(Debug)]
pub struct Received<'a> {
    /// The whole receive buffer: the datagram is `buf[..len]`, the reply is written over it.
    pub buf: &'a mut [u8],
    /// Datagram length.
    pub len: usize,
    /// The kernel cut the datagram to fit the buffer (MSG_TRUNC).
    pub truncated: bool,
    /// Sender; `None` for an address family other than IPv4/IPv6 (never seen on UDP sockets).
    pub src: Option<SocketAddr>,
    /// The destination address from PKTINFO, with the interface it arrived on.
    pub dst: Option<(IpAddr, u32)>,
}

/// What one flush sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    /// Replies the kernel accepted.
    pub datagrams: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Replies lost to send errors.
    pub errors: u64,
}

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
            // timeout is null (unused). The kernel writes only within those capacities.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    self.hdrs.as_mut_ptr(),
                    self.hdrs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
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
        let len = hdr.msg_len as usize;
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let src = socket_addr(&self.names[i]);
        let dst = pktinfo(&hdr.msg_hdr);
        Received { buf: &mut self.bufs[i][..], len: len.min(BUFFER_SIZE), truncated, src, dst }
    }

    /// Queues the first `len` bytes of buffer `i` as a reply to its sender. With `from`, a
    /// PKTINFO control message makes the reply leave from that local address (and, for IPv6,
    /// interface).
    pub fn queue_reply(&mut self, i: usize, len: usize, from: Option<(IpAddr, u32)>) {
        let k = self.queued;
        self.queued += 1;
        self.out_iovs[k] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: len.min(BUFFER_SIZE) };
        let name_len = self.hdrs[i].msg_hdr.msg_namelen;
        let out = &mut self.out_hdrs[k];
        out.msg_len = 0;
        out.msg_hdr.msg_name = (&raw mut self.names[i]).cast();
        out.msg_hdr.msg_namelen = name_len;
        out.msg_hdr.msg_iov = &raw mut self.out_iovs[k];
        out.msg_hdr.msg_iovlen = 1;
        out.msg_hdr.msg_flags = 0;
        match from {
            Some(from) => {
                out.msg_hdr.msg_control = self.out_controls[k].0.as_mut_ptr().cast();
                out.msg_hdr.msg_controllen = size_of::<Control>();
                out.msg_hdr.msg_controllen = write_pktinfo(&mut out.msg_hdr, from);
            }
            None => {
                out.msg_hdr.msg_control = null_mut();
                out.msg_hdr.msg_controllen = 0;
            }
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

    /// Sends every queued reply with as few sendmmsg calls as the kernel allows.
    pub fn flush(&mut self, fd: RawFd) -> Sent {
        let mut sent = Sent::default();
        let mut at = 0;
        while at < self.queued {
            let rest = &mut self.out_hdrs[at..self.queued];
            // SAFETY: `rest` holds initialised mmsghdrs built by `queue_reply`: each name points
            // at a sockaddr_storage in `names` with its received length, each iov at a buffer in
            // `bufs` with a length ≤ BUFFER_SIZE, each control (if any) at a filled `Control`.
            // All are owned by `self` and outlive the call.
            let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, libc::MSG_DONTWAIT) };
            if n > 0 {
                for h in &rest[..n as usize] {
                    sent.datagrams += 1;
                    sent.bytes += u64::from(h.msg_len);
                }
                at += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => {}
                // The socket's send queue is full: the rest of the batch would fail the same way.
                Some(libc::EAGAIN | libc::ENOBUFS) => {
                    sent.errors += (self.queued - at) as u64;
                    break;
                }
                // This one reply is refused (EPERM from a firewall, EINVAL, unreachable…):
                // count it and carry on with the next.
                _ => {
                    sent.errors += 1;
                    at += 1;
                }
            }
        }
        self.queued = 0;
        sent
    }
}

/// Writes `addr` as a sockaddr_in / sockaddr_in6 into `storage`; returns its length.
fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    let base = (storage as *mut libc::sockaddr_storage).cast::<u8>();
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and at least as aligned as sockaddr_in,
            // and `storage` is exclusively borrowed.
            unsafe { base.cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { base.cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Converts a received sockaddr to a `SocketAddr`.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in; sockaddr_storage is larger
            // and at least as aligned as any sockaddr type.
            let sin = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The destination address and interface from an IP_PKTINFO / IPV6_PKTINFO control message.
fn pktinfo(hdr: &libc::msghdr) -> Option<(IpAddr, u32)> {
    if hdr.msg_controllen == 0 || hdr.msg_control.is_null() {
        return None;
    }
    // SAFETY: msg_control/msg_controllen describe our `Control` buffer as the kernel filled it;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within msg_controllen and return null at the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and within the control buffer (see above).
        let c = unsafe { &*cmsg };
        // SAFETY: CMSG_DATA of a valid cmsghdr points at its payload inside the buffer; the
        // level/type checks below say which struct it is and the kernel wrote all of it. The
        // payload may be unaligned, hence read_unaligned.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        match (c.cmsg_level, c.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // SAFETY: see `data` above; an IP_PKTINFO payload is an in_pktinfo.
                let info: libc::in_pktinfo = unsafe { read_unaligned(data.cast()) };
                let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                return Some((IpAddr::V4(ip), info.ipi_ifindex as u32));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // SAFETY: see `data` above; an IPV6_PKTINFO payload is an in6_pktinfo.
                let info: libc::in6_pktinfo = unsafe { read_unaligned(data.cast()) };
                return Some((IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)), info.ipi6_ifindex));
            }
            _ => {}
        }
        // SAFETY: `hdr` and `cmsg` are valid as above.
        cmsg = unsafe { libc::CMSG_NXTHDR(hdr, cmsg) };
    }
    None
}

/// Writes a PKTINFO control message into `hdr`'s control buffer (a `Control`) and returns the
/// control length to send.
fn write_pktinfo(hdr: &mut libc::msghdr, (ip, ifindex): (IpAddr, u32)) -> usize {
    match ip {
        // ipi_spec_dst picks the source address; ifindex 0 lets routing pick the interface.
        IpAddr::V4(ip) => write_cmsg(
            hdr,
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr { s_addr: u32::from(ip).to_be() },
                ipi_addr: libc::in_addr { s_addr: 0 },
            },
        ),
        // The interface matters for link-local destinations: send back where it came in.
        IpAddr::V6(ip) => write_cmsg(
            hdr,
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: ifindex },
        ),
    }
}

/// Writes one control message with `payload` at the start of `hdr`'s control buffer, which must
/// be a whole `Control` (msg_controllen = its size). Returns CMSG_SPACE of the payload.
fn write_cmsg<T: Copy>(hdr: &mut libc::msghdr, level: libc::c_int, kind: libc::c_int, payload: T) -> usize {
    const { assert!(size_of::<T>() <= 32, "CMSG_SPACE must fit the 64-byte Control") };
    debug_assert_eq!(hdr.msg_controllen, size_of::<Control>());
    // SAFETY: msg_control points at a 64-byte, 8-aligned `Control` and msg_controllen says so,
    // so CMSG_FIRSTHDR returns its start (non-null). CMSG_SPACE of a payload of at most 32 bytes
    // is at most 48 ≤ 64, so the header and payload writes stay inside the buffer; the payload
    // may be unaligned, hence write_unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(hdr);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<T>() as u32) as usize;
        write_unaligned(libc::CMSG_DATA(cmsg).cast::<T>(), payload);
        libc::CMSG_SPACE(size_of::<T>() as u32) as usize
    }
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
