//! A minimal epoll(7) instance for the stream plane (src/stream/): one per stream thread,
//! level-triggered, each registered file descriptor carrying a caller-chosen 64-bit token.
//! Everything else about the sockets (accept, read, write) goes through `std::net`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Readable, or the peer shut down its sending side (EPOLLIN | EPOLLRDHUP): a read says which.
pub const READ: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// Writable (EPOLLOUT).
pub const WRITE: u32 = libc::EPOLLOUT as u32;
/// Both directions closed, or the socket failed (EPOLLHUP | EPOLLERR): always reported, whatever
/// the interest.
pub const HANGUP: u32 = (libc::EPOLLHUP | libc::EPOLLERR) as u32;

/// One readiness report: the token registered with the descriptor and its ready events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The registration's token.
    pub token: u64,
    /// [`READ`], [`WRITE`], [`HANGUP`] bits.
    pub events: u32,
}

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
    /// The kernel fills these; reused by every [`Epoll::wait`].
    buf: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new instance whose [`Epoll::wait`] reports at most `capacity` events at a time.
    pub fn new(capacity: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes a flags integer and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor epoll_create1 just returned, owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd, buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)] })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: `self.fd` is a live epoll descriptor; `event` is a valid epoll_event that
        // outlives the call (the kernel copies it); `fd` is the caller's descriptor, and a
        // wrong one only makes the call fail.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    /// Watches `fd` for `events` ([`READ`], [`WRITE`]; the kernel reports [`HANGUP`] always),
    /// reported with `token`.
    pub fn add(&self, fd: &impl AsRawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd.as_raw_fd(), token, events)
    }

    /// Changes what `fd` is watched for (0: only [`HANGUP`]).
    pub fn modify(&self, fd: &impl AsRawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd.as_raw_fd(), token, events)
    }

    /// Stops watching `fd` (closing it also does).
    pub fn delete(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd.as_raw_fd(), 0, 0)
    }

    /// Waits up to `timeout_ms` (0: do not wait) and appends the ready events to `out`
    /// (cleared first). An interrupted wait reports nothing.
    pub fn wait(&mut self, out: &mut Vec<Event>, timeout_ms: i32) -> io::Result<()> {
        out.clear();
        let max = libc::c_int::try_from(self.buf.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `self.buf` has room for `max` epoll_event structures, which the kernel writes
        // (at most `max`); `self.fd` is a live epoll descriptor.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), self.buf.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        out.extend(self.buf[..n as usize].iter().map(|e| Event { token: e.u64, events: e.events }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reports_a_readable_socket_with_its_token_until_it_is_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut epoll = Epoll::new(8).unwrap();
        epoll.add(&server, 42, READ).unwrap();
        let mut events = Vec::new();
        epoll.wait(&mut events, 0).unwrap();
        assert!(events.is_empty(), "{events:?}");
        client.write_all(b"x").unwrap();
        epoll.wait(&mut events, 1000).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].token, 42);
        assert_ne!(events[0].events & READ, 0);
        // Not watched for reading any more: nothing, though the byte is still there.
        epoll.modify(&server, 42, 0).unwrap();
        epoll.wait(&mut events, 0).unwrap();
        assert!(events.is_empty(), "{events:?}");
        // The peer's close is a read event (EPOLLRDHUP) for a reader; both sides shut is HANGUP
        // whatever the interest.
        epoll.modify(&server, 42, READ).unwrap();
        drop(client);
        epoll.wait(&mut events, 1000).unwrap();
        assert_ne!(events[0].events & libc::EPOLLRDHUP as u32, 0, "{events:?}");
        epoll.modify(&server, 42, 0).unwrap();
        server.shutdown(std::net::Shutdown::Write).unwrap();
        epoll.wait(&mut events, 1000).unwrap();
        assert_ne!(events[0].events & HANGUP, 0, "{events:?}");
        epoll.delete(&server).unwrap();
    }
}
