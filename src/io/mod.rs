//! Sockets and the portable data-plane backend. This is the only place with `unsafe`: raw
//! syscalls (recvmmsg, sendmmsg, setsockopt) and the kernel-facing structures they fill. No
//! protocol logic lives here: datagrams go to [`crate::handler`] and come back as replies.
//!
//! Kernel floor: recvmmsg (Linux 2.6.33), sendmmsg (3.0), SO_REUSEPORT (3.9), IP_PKTINFO and
//! IPV6_RECVPKTINFO (both long before). Linux only.
#![allow(unsafe_code)]

pub mod ifaddrs;
pub mod mmsg;
mod msg;
pub mod socket;
pub mod uring;

pub use socket::{Listener, SocketOptions};

use std::net::{IpAddr, SocketAddr};

/// Answers the kernel refused, by errno (each is a lost answer). EAGAIN and ENOBUFS mean a full
/// send queue; EPERM usually a firewall rule; anything else (EINVAL, unreachable…) is "other".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendErrors {
    /// EAGAIN / EWOULDBLOCK.
    pub again: u64,
    /// ENOBUFS.
    pub nobufs: u64,
    /// EPERM.
    pub perm: u64,
    /// Any other errno.
    pub other: u64,
}

impl SendErrors {
    /// Counts `n` answers lost to `errno`.
    #[inline]
    pub fn count(&mut self, errno: i32, n: u64) {
        match errno {
            libc::EAGAIN => self.again += n,
            libc::ENOBUFS => self.nobufs += n,
            libc::EPERM => self.perm += n,
            _ => self.other += n,
        }
    }

    /// Adds another tally.
    #[inline]
    pub fn add(&mut self, o: SendErrors) {
        self.again += o.again;
        self.nobufs += o.nobufs;
        self.perm += o.perm;
        self.other += o.other;
    }

    /// All of them.
    #[inline]
    pub fn total(&self) -> u64 {
        self.again + self.nobufs + self.perm + self.other
    }
}

/// One received datagram, lent by a backend: its receive buffer, where the answer is written.
#[derive(Debug)]
pub struct Received<'a> {
    /// The whole receive buffer (at least `BUFFER_SIZE` bytes): the datagram is `buf[..len]`,
    /// the answer is written over it.
    pub buf: &'a mut [u8],
    /// Datagram length.
    pub len: usize,
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
