//! Socket addresses and PKTINFO control messages in their kernel layouts, shared by both
//! backends: converting `sockaddr_storage` to and from `SocketAddr`, reading the destination
//! address of a datagram from IP_PKTINFO / IPV6_PKTINFO, and writing the PKTINFO that makes a
//! reply leave from a chosen local address.

use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ptr::{read_unaligned, write_unaligned};

/// Room for one IP_PKTINFO or IPV6_PKTINFO control message (CMSG_SPACE of the larger, 32 on
/// 64-bit Linux), aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub(crate) struct Control(pub(crate) [u8; 64]);

/// Writes `addr` as a sockaddr_in / sockaddr_in6 into `storage`; returns its length.
pub(crate) fn write_sockaddr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
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

/// Replaces the port of the sockaddr_in / sockaddr_in6 in the first bytes of `name` (both keep
/// it at offset 2, in network order); a name too short to hold one is left alone.
pub(crate) fn set_port(name: &mut [u8], port: u16) {
    if let Some(field) = name.get_mut(2..4) {
        field.copy_from_slice(&port.to_be_bytes());
    }
}

/// Converts a received sockaddr to a `SocketAddr`.
pub(crate) fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
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
pub(crate) fn pktinfo(hdr: &libc::msghdr) -> Option<(IpAddr, u32)> {
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

/// Points a send `msghdr` at a destination name and one iovec, with a PKTINFO control message
/// written into `control` when `from` is given, so the datagram leaves from that local address.
/// Only stores pointers: the caller keeps the name, the iovec, its buffer and `control` alive
/// and in place until the send is done. Shared by every send path (mmsg batches, io_uring send
/// slots, io_uring sendmmsg).
pub(crate) fn prepare_send(
    hdr: &mut libc::msghdr,
    name: *mut libc::c_void,
    name_len: libc::socklen_t,
    iov: *mut libc::iovec,
    control: &mut Control,
    from: Option<(IpAddr, u32)>,
) {
    hdr.msg_name = name;
    hdr.msg_namelen = name_len;
    hdr.msg_iov = iov;
    hdr.msg_iovlen = 1;
    hdr.msg_flags = 0;
    match from {
        Some(from) => {
            hdr.msg_control = control.0.as_mut_ptr().cast();
            hdr.msg_controllen = size_of::<Control>();
            hdr.msg_controllen = write_pktinfo(hdr, from);
        }
        None => {
            hdr.msg_control = std::ptr::null_mut();
            hdr.msg_controllen = 0;
        }
    }
}

/// The bytes of a sockaddr_storage (to copy a name in, or patch its port).
pub(crate) fn storage_bytes(storage: &mut libc::sockaddr_storage) -> &mut [u8] {
    // SAFETY: sockaddr_storage is plain old data of exactly this size, borrowed exclusively.
    unsafe {
        std::slice::from_raw_parts_mut(
            (storage as *mut libc::sockaddr_storage).cast::<u8>(),
            size_of::<libc::sockaddr_storage>(),
        )
    }
}
