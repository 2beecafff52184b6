//! Listening sockets: one SO_REUSEPORT UDP socket per worker per listen address, non-blocking,
//! with the configured buffer sizes, IPV6_V6ONLY on IPv6, and PKTINFO on wildcard addresses so
//! each reply can leave from the address its request was sent to.

use std::io;
use std::mem::size_of;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Socket settings from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOptions {
    /// Set SO_REUSEPORT (server sockets: one per worker on the same address). Give such a
    /// socket a concrete port (see [`claim`]): bound to port 0 with SO_REUSEPORT, the kernel may
    /// hand out a port another reuseport socket of the same user already holds, and the two
    /// would then share its traffic.
    pub reuse_port: bool,
    /// Requested SO_RCVBUF, bytes.
    pub recv_buffer: usize,
    /// Requested SO_SNDBUF, bytes.
    pub send_buffer: usize,
}

/// One bound socket.
#[derive(Debug)]
pub struct Listener {
    /// The socket (non-blocking).
    pub socket: UdpSocket,
    /// The address it is bound to (with the real port when 0 was asked for).
    pub local: SocketAddr,
    /// Bound to `0.0.0.0` or `[::]`: the local address of each datagram comes from PKTINFO, and
    /// replies carry it back in a PKTINFO control message.
    pub wildcard: bool,
    /// SO_RCVBUF as the kernel reports it (twice what it grants the payload).
    pub recv_buffer: usize,
    /// SO_SNDBUF as the kernel reports it.
    pub send_buffer: usize,
}

fn new_socket(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Separate IPv4 and IPv6 sockets: no v4-mapped addresses to report.
        socket.set_only_v6(true)?;
    }
    Ok(socket)
}

/// Makes sure nothing holds `addr` and returns it with a concrete port: binds (and closes) a
/// probe socket without SO_REUSEPORT, which fails with `EADDRINUSE` when another socket holds
/// the address — including one that set SO_REUSEPORT and would otherwise silently share the
/// port. For port 0 the probe's kernel-chosen port, which no one holds, is returned.
pub fn claim(addr: SocketAddr) -> io::Result<SocketAddr> {
    let probe = new_socket(addr)?;
    probe.bind(&addr.into())?;
    probe.local_addr()?.as_socket().ok_or_else(|| io::Error::other("bound to a non-IP address"))
}

/// Binds one worker's socket for `addr`.
pub fn bind(addr: SocketAddr, options: &SocketOptions) -> io::Result<Listener> {
    let socket = new_socket(addr)?;
    if options.reuse_port {
        socket.set_reuse_port(true)?;
    }
    set_buffer(&socket, libc::SO_RCVBUFFORCE, options.recv_buffer, |s, n| s.set_recv_buffer_size(n))?;
    set_buffer(&socket, libc::SO_SNDBUFFORCE, options.send_buffer, |s, n| s.set_send_buffer_size(n))?;
    let wildcard = addr.ip().is_unspecified();
    if wildcard {
        match addr {
            SocketAddr::V4(_) => set_int(&socket, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?,
            SocketAddr::V6(_) => set_int(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?,
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let local = socket.local_addr()?.as_socket().ok_or_else(|| io::Error::other("bound to a non-IP address"))?;
    let recv_buffer = socket.recv_buffer_size()?;
    let send_buffer = socket.send_buffer_size()?;
    Ok(Listener { socket: socket.into(), local, wildcard, recv_buffer, send_buffer })
}

/// Sets a buffer size with the *FORCE option (root may exceed net.core.[rw]mem_max), falling
/// back to the ordinary option when not permitted.
fn set_buffer(
    socket: &Socket,
    force: libc::c_int,
    bytes: usize,
    plain: impl Fn(&Socket, usize) -> io::Result<()>,
) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    match set_int(socket, libc::SOL_SOCKET, force, value) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => plain(socket, bytes),
        Err(e) => Err(e),
    }
}

fn set_int(socket: &Socket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt on an fd we own; optval points at a live c_int on our stack and optlen
    // is its exact size; the kernel copies the value before returning.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The classic BPF program for SO_ATTACH_REUSEPORT_CBPF that picks, for each datagram, the
/// socket of the worker pinned to the CPU that is processing it: socket `k` of the reuseport
/// group belongs to the worker on `cpus[k]` (sockets join the group in worker order). A CPU
/// without a worker falls back to `cpu % workers`.
pub fn steering_program(cpus: &[usize]) -> Vec<libc::sock_filter> {
    let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter { code: code as u16, jt, jf, k };
    // A = the current CPU (an ancillary load, SKF_AD_CPU).
    let mut program =
        vec![op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32)];
    for (index, cpu) in cpus.iter().enumerate() {
        // if A == cpu { return index }
        program.push(op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, 0, 1, *cpu as u32));
        program.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, index as u32));
    }
    program.push(op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, 0, 0, cpus.len().max(1) as u32));
    program.push(op(libc::BPF_RET | libc::BPF_A, 0, 0, 0));
    program
}

/// Attaches [`steering_program`] to the reuseport group `socket` belongs to (Linux 4.5+).
pub fn attach_cpu_steering(socket: &UdpSocket, cpus: &[usize]) -> io::Result<()> {
    let mut program = steering_program(cpus);
    let fprog = libc::sock_fprog { len: program.len() as u16, filter: program.as_mut_ptr() };
    // SAFETY: setsockopt on a socket we own; optval points at a sock_fprog on our stack whose
    // filter points at `program`, both alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast::<libc::c_void>(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: SocketOptions = SocketOptions { reuse_port: true, recv_buffer: 1 << 20, send_buffer: 1 << 20 };

    #[test]
    fn reuseport_sockets_share_a_claimed_port_and_the_probe_detects_them() {
        let addr = claim("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
        let a = bind(addr, &OPTS).unwrap();
        let b = bind(addr, &OPTS).unwrap();
        assert_eq!((a.local, b.local), (addr, addr));
        assert!(!a.wildcard);
        let err = claim(a.local).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(a.recv_buffer >= 1 << 20, "SO_RCVBUF {}", a.recv_buffer);
    }

    #[test]
    fn plain_socket_blocks_reuseport_bind() {
        let plain = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap();
        assert_eq!(claim(addr).unwrap_err().kind(), io::ErrorKind::AddrInUse);
        assert!(bind(addr, &OPTS).is_err());
    }

    #[test]
    fn steering_program_maps_cpus_to_group_indices() {
        let program = steering_program(&[2, 5]);
        assert_eq!(program.len(), 1 + 2 * 2 + 2);
        assert_eq!(program[1].k, 2);
        assert_eq!(program[2].k, 0, "CPU 2 → socket 0");
        assert_eq!(program[3].k, 5);
        assert_eq!(program[4].k, 1, "CPU 5 → socket 1");
        assert_eq!(program[5].k, 2, "otherwise cpu % 2");
        let addr = claim("127.0.0.1:0".parse().unwrap()).unwrap();
        let a = bind(addr, &OPTS).unwrap();
        let _b = bind(addr, &OPTS).unwrap();
        attach_cpu_steering(&a.socket, &[0, 1]).unwrap();
    }

    #[test]
    fn sockets_without_reuseport_get_their_own_ports() {
        let opts = SocketOptions { reuse_port: false, ..OPTS };
        // All 64 stay open while their ports are compared.
        let sockets: Vec<Listener> = (0..64).map(|_| bind("127.0.0.1:0".parse().unwrap(), &opts).unwrap()).collect();
        let ports: std::collections::HashSet<u16> = sockets.iter().map(|l| l.local.port()).collect();
        assert_eq!(ports.len(), 64);
    }
}
