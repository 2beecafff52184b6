//! Sockets and the portable data-plane backend. This is the only place with `unsafe`: raw
//! syscalls (recvmmsg, sendmmsg, setsockopt) and the kernel-facing structures they fill. No
//! protocol logic lives here: datagrams go to the handler (through the worker) and come back as
//! replies; counts go into a [`Tally`].
//!
//! Kernel floor: recvmmsg (Linux 2.6.33), sendmmsg (3.0), SO_REUSEPORT (3.9), IP_PKTINFO and
//! IPV6_RECVPKTINFO (both long before). Linux only.
#![allow(unsafe_code)]

pub mod epoll;
pub mod ifaddrs;
pub mod mmsg;
mod msg;
pub mod socket;
pub mod uring;

pub use socket::{Listener, SocketOptions};

use std::net::{IpAddr, SocketAddr};

pub use crate::counters::{SendErrors, Tally};

/// The receive buffer size every backend uses: the largest datagram accepted (a larger one is
/// dropped as truncated) with room to answer it in place.
pub const BUFFER_SIZE: usize = 2048;

/// One received datagram, lent by a backend: its receive buffer, where the answer is written.
#[derive(Debug)]
pub struct Received<'a> {
    /// The whole receive buffer (at least [`BUFFER_SIZE`] bytes): the datagram is `buf[..len]`,
    /// the answer is written over it.
    pub buf: &'a mut [u8],
    /// Datagram length in the buffer (at most [`BUFFER_SIZE`]).
    pub len: usize,
    /// The datagram's size as it arrived: `len`, or more when the kernel cut it to fit the
    /// buffer (both backends receive with MSG_TRUNC, so the kernel reports the real size).
    pub size: usize,
    /// The kernel cut the datagram to fit the buffer (MSG_TRUNC).
    pub truncated: bool,
    /// Sender; `None` for an address family other than IPv4/IPv6 (never seen on UDP sockets).
    pub src: Option<SocketAddr>,
    /// The destination address and interface from PKTINFO (wildcard listeners).
    pub dst: Option<(IpAddr, u32)>,
}

/// An answer to send back to a [`Received`] datagram's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Answer length: the first `len` bytes of the receive buffer.
    pub len: usize,
    /// Send from this local address (and IPv6 interface) with PKTINFO; `None` lets the socket's
    /// own address stand.
    pub from: Option<(IpAddr, u32)>,
    /// Send on this socket (an index into the worker's sockets) instead of the one the
    /// datagram arrived on (RFC 5780 CHANGE-REQUEST).
    pub via: Option<usize>,
    /// Send to this port of the sender's IP address (RFC 5780 RESPONSE-PORT).
    pub port: Option<u16>,
}

/// Has mimalloc return this thread's freed memory to the system now (whole free pages, with
/// MADV_DONTNEED), instead of when it next allocates: the stream plane calls it once a
/// connection flood has gone (rarely; it walks the thread's heap).
pub fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers and only works on the calling thread's mimalloc
    // heap and the allocator's own free lists; it is safe to call at any time, also when
    // mimalloc is not the global allocator (then that heap is empty).
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Raises this process's soft limit on open files (RLIMIT_NOFILE) to `want`, or to the hard
/// limit when that is lower; the soft limit now in force. Never lowers it.
pub fn raise_open_files(want: u64) -> std::io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit structure, which `limit` is.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let target = want.min(limit.rlim_max);
    if target > limit.rlim_cur {
        let raised = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit structure, which `raised` is.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        return Ok(target);
    }
    Ok(limit.rlim_cur)
}
