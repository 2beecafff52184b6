//! Sockets and the portable data-plane backend. This is the only place with `unsafe`: raw
//! syscalls (recvmmsg, sendmmsg, setsockopt) and the kernel-facing structures they fill. No
//! protocol logic lives here: datagrams go to [`crate::handler`] and come back as replies.
//!
//! Kernel floor: recvmmsg (Linux 2.6.33), sendmmsg (3.0), SO_REUSEPORT (3.9), IP_PKTINFO and
//! IPV6_RECVPKTINFO (both long before). Linux only.
#![allow(unsafe_code)]

pub mod mmsg;
mod msg;
pub mod socket;
pub mod uring;

pub use socket::{Listener, SocketOptions};
