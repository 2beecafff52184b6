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
/// A PKTINFO cut short (the kernel truncates control messages that do not fit, MSG_CTRUNC) is
/// no PKTINFO: `None`, never the stale bytes after it.
///
/// # Safety
/// When `msg_control` is not null, it must point at `msg_controllen` readable bytes (a control
/// buffer as the kernel filled it, or zeros).
pub(crate) unsafe fn pktinfo(hdr: &libc::msghdr) -> Option<(IpAddr, u32)> {
    if hdr.msg_controllen == 0 || hdr.msg_control.is_null() {
        return None;
    }
    // SAFETY: per this function's contract msg_control/msg_controllen describe readable bytes;
    // CMSG_FIRSTHDR/CMSG_NXTHDR return a header that fits within msg_controllen, or null.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(hdr) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and its header lies within the control buffer (see above).
        let c = unsafe { &*cmsg };
        // The macros only promise the header fits: a payload is read only where both cmsg_len
        // and msg_controllen cover it.
        let offset = cmsg.addr() - hdr.msg_control.addr();
        let payload_len =
            c.cmsg_len.min(hdr.msg_controllen.saturating_sub(offset)).saturating_sub(size_of::<libc::cmsghdr>());
        // SAFETY: CMSG_DATA of a valid cmsghdr points just past the header, inside the buffer.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        match (c.cmsg_level, c.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) if payload_len >= size_of::<libc::in_pktinfo>() => {
                // SAFETY: an IP_PKTINFO payload is an in_pktinfo, and `payload_len` says all of it
                // lies within cmsg_len and msg_controllen. It may be unaligned: read_unaligned.
                let info: libc::in_pktinfo = unsafe { read_unaligned(data.cast()) };
                let ip = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                return Some((IpAddr::V4(ip), info.ipi_ifindex as u32));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if payload_len >= size_of::<libc::in6_pktinfo>() => {
                // SAFETY: as above, for an IPV6_PKTINFO payload, an in6_pktinfo.
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

#[cfg(test)]
mod tests {
    //! Kernel-free checks of the layouts above: every sockaddr and control message is built or
    //! read as bytes in memory, never handed to a syscall.

    use super::*;

    /// `CMSG_LEN(0)`: the aligned `cmsghdr` (16 bytes on 64-bit Linux).
    const HDR: usize = size_of::<libc::cmsghdr>();
    /// Offsets of `cmsg_level` and `cmsg_type` (after the `size_t` `cmsg_len`).
    const LEVEL_AT: usize = size_of::<usize>();
    const TYPE_AT: usize = LEVEL_AT + 4;

    /// glibc's CMSG_SPACE, written out independently of the `libc` crate's.
    fn space(payload: usize) -> usize {
        HDR + payload.next_multiple_of(size_of::<usize>())
    }

    fn zeroed_storage() -> libc::sockaddr_storage {
        // SAFETY: sockaddr_storage is plain integers; all-zero is a valid value (AF_UNSPEC).
        unsafe { std::mem::zeroed() }
    }

    fn zeroed_msghdr() -> libc::msghdr {
        // SAFETY: msghdr is integers and raw pointers; all-zero is valid (null pointers, no
        // name, no iovecs, no control).
        unsafe { std::mem::zeroed() }
    }

    /// Encodes `addr` and decodes it again; also returns the raw bytes and the length.
    fn round_trip(addr: SocketAddr) -> (Option<SocketAddr>, [u8; 28], usize) {
        let mut storage = zeroed_storage();
        let len = write_sockaddr(&mut storage, addr) as usize;
        let mut bytes = [0u8; 28];
        bytes.copy_from_slice(&storage_bytes(&mut storage)[..28]);
        (socket_addr(&storage), bytes, len)
    }

    /// A sockaddr_storage whose first bytes are `bytes` (as the io_uring path fills one).
    fn storage_from(bytes: &[u8]) -> libc::sockaddr_storage {
        let mut storage = zeroed_storage();
        storage_bytes(&mut storage)[..bytes.len()].copy_from_slice(bytes);
        storage
    }

    /// Decodes the first `len` bytes of `control` as a received control buffer.
    fn decode(control: &mut Control, len: usize) -> Option<(IpAddr, u32)> {
        let mut hdr = zeroed_msghdr();
        hdr.msg_control = control.0.as_mut_ptr().cast();
        assert!(len <= control.0.len(), "a control length past the buffer");
        hdr.msg_controllen = len;
        // SAFETY: `hdr` points at `control`, which holds at least `len` bytes (asserted).
        unsafe { pktinfo(&hdr) }
    }

    /// Writes a control message header at `at` (as the kernel lays one out) and its payload.
    fn put_cmsg(control: &mut Control, at: usize, cmsg_len: usize, level: i32, kind: i32, payload: &[u8]) {
        let c = &mut control.0[at..];
        c[..LEVEL_AT].copy_from_slice(&cmsg_len.to_ne_bytes());
        c[LEVEL_AT..TYPE_AT].copy_from_slice(&level.to_ne_bytes());
        c[TYPE_AT..TYPE_AT + 4].copy_from_slice(&kind.to_ne_bytes());
        c[HDR..HDR + payload.len()].copy_from_slice(payload);
    }

    /// An `in_pktinfo` as the kernel fills it on receive: ifindex, spec_dst, addr.
    fn in_pktinfo_bytes(ifindex: i32, spec_dst: [u8; 4], addr: [u8; 4]) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[..4].copy_from_slice(&ifindex.to_ne_bytes());
        b[4..8].copy_from_slice(&spec_dst);
        b[8..].copy_from_slice(&addr);
        b
    }

    /// An `in6_pktinfo`: addr, ifindex.
    fn in6_pktinfo_bytes(addr: Ipv6Addr, ifindex: u32) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[..16].copy_from_slice(&addr.octets());
        b[16..].copy_from_slice(&ifindex.to_ne_bytes());
        b
    }

    /// Runs `prepare_send` with `from` over a fresh `Control`; returns it and the msghdr's
    /// control length.
    fn encode(from: Option<(IpAddr, u32)>) -> (Control, libc::msghdr) {
        let mut control = Control([0xA5; 64]);
        let mut hdr = zeroed_msghdr();
        prepare_send(&mut hdr, std::ptr::null_mut(), 0, std::ptr::null_mut(), &mut control, from);
        (control, hdr)
    }

    #[test]
    fn sockaddr_v4_round_trips() {
        for text in ["192.0.2.1:3478", "0.0.0.0:0", "255.255.255.255:65535", "127.0.0.1:4660", "10.1.2.3:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            let (back, _, len) = round_trip(addr);
            assert_eq!(back, Some(addr), "{text}");
            assert_eq!(len, size_of::<libc::sockaddr_in>(), "{text}");
        }
    }

    #[test]
    fn sockaddr_v4_has_the_kernel_layout() {
        let (_, bytes, len) = round_trip("192.0.2.1:4660".parse().unwrap());
        assert_eq!(len, 16);
        let family = (libc::AF_INET as libc::sa_family_t).to_ne_bytes();
        #[rustfmt::skip]
        let expected = [
            family[0], family[1], 0x12, 0x34, // sin_family (host order), sin_port 4660 (network order)
            192, 0, 2, 1,                     // sin_addr
            0, 0, 0, 0, 0, 0, 0, 0,           // sin_zero
        ];
        assert_eq!(bytes[..16], expected);
        // And the other way: those bytes, as the kernel would write them, decode.
        assert_eq!(socket_addr(&storage_from(&expected)), Some("192.0.2.1:4660".parse().unwrap()));
    }

    #[test]
    fn sockaddr_v6_round_trips_with_flowinfo_and_scope() {
        let cases = [
            SocketAddrV6::new("2001:db8::1".parse().unwrap(), 443, 0x000a_bcde, 0),
            SocketAddrV6::new("fe80::1".parse().unwrap(), 5349, 0, 7),
            SocketAddrV6::new("::".parse().unwrap(), 0, 0, 0),
            SocketAddrV6::new("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(), 65535, u32::MAX, u32::MAX),
            // v4-mapped stays an IPv6 address: nothing here unmaps it.
            SocketAddrV6::new("::ffff:192.0.2.1".parse().unwrap(), 3478, 0, 0),
        ];
        for addr in cases {
            let (back, _, len) = round_trip(SocketAddr::V6(addr));
            assert_eq!(back, Some(SocketAddr::V6(addr)), "{addr}");
            assert_eq!(len, size_of::<libc::sockaddr_in6>(), "{addr}");
        }
    }

    #[test]
    fn sockaddr_v6_has_the_kernel_layout() {
        let addr = SocketAddrV6::new("2001:db8::ff01".parse().unwrap(), 4660, 0x0102_0304, 9);
        let (_, bytes, len) = round_trip(SocketAddr::V6(addr));
        assert_eq!(len, 28);
        let family = (libc::AF_INET6 as libc::sa_family_t).to_ne_bytes();
        // sin6_flowinfo carries `flowinfo()` unchanged, as std does; sin6_scope_id is host order.
        let flow = 0x0102_0304u32.to_ne_bytes();
        let scope = 9u32.to_ne_bytes();
        #[rustfmt::skip]
        let expected = [
            family[0], family[1], 0x12, 0x34,                       // sin6_family, sin6_port
            flow[0], flow[1], flow[2], flow[3],                     // sin6_flowinfo
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0x01, // sin6_addr
            scope[0], scope[1], scope[2], scope[3],                 // sin6_scope_id
        ];
        assert_eq!(bytes, expected);
        assert_eq!(socket_addr(&storage_from(&expected)), Some(SocketAddr::V6(addr)));
    }

    #[test]
    fn sockaddr_of_another_family_is_none() {
        assert_eq!(socket_addr(&zeroed_storage()), None, "AF_UNSPEC");
        let mut storage = zeroed_storage();
        storage.ss_family = libc::AF_UNIX as libc::sa_family_t;
        assert_eq!(socket_addr(&storage), None, "AF_UNIX");
        storage.ss_family = libc::AF_PACKET as libc::sa_family_t;
        assert_eq!(socket_addr(&storage), None, "AF_PACKET");
    }

    #[test]
    fn set_port_patches_only_the_port_in_network_order() {
        for addr in [
            "192.0.2.1:3478".parse().unwrap(),
            SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 3478, 0x1234, 7)),
        ] {
            let mut storage = zeroed_storage();
            let len = write_sockaddr(&mut storage, addr) as usize;
            set_port(&mut storage_bytes(&mut storage)[..len], 0xBEEF);
            assert_eq!(storage_bytes(&mut storage)[2..4], [0xBE, 0xEF], "{addr}");
            let mut expected = addr;
            expected.set_port(0xBEEF);
            assert_eq!(socket_addr(&storage), Some(expected), "{addr}");
        }
        // A name too short for a port is left alone; exactly four bytes is enough.
        for len in 0..4 {
            let mut name = [7u8; 3];
            set_port(&mut name[..len.min(3)], 1);
            assert_eq!(name, [7; 3]);
        }
        let mut name = [7u8; 4];
        set_port(&mut name, 0x0102);
        assert_eq!(name, [7, 7, 1, 2]);
    }

    #[test]
    fn pktinfo_v6_round_trips() {
        for (ip, ifindex) in [
            ("2001:db8::1".parse::<Ipv6Addr>().unwrap(), 3),
            ("fe80::1".parse().unwrap(), 42),
            ("::1".parse().unwrap(), 0),
            ("::ffff:192.0.2.1".parse().unwrap(), u32::MAX),
        ] {
            let from = (IpAddr::V6(ip), ifindex);
            let (mut control, hdr) = encode(Some(from));
            assert_eq!(hdr.msg_controllen, space(20), "{ip}");
            assert_eq!(decode(&mut control, hdr.msg_controllen), Some(from), "{ip}");
        }
    }

    #[test]
    fn pktinfo_v6_has_the_kernel_layout() {
        let ip: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let (control, hdr) = encode(Some((IpAddr::V6(ip), 5)));
        let mut expected = Control([0xA5; 64]);
        put_cmsg(&mut expected, 0, HDR + 20, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &in6_pktinfo_bytes(ip, 5));
        assert_eq!(control.0[..HDR + 20], expected.0[..HDR + 20]);
        assert_eq!(hdr.msg_controllen, space(20));
    }

    /// IPv4 sends the local address as ipi_spec_dst with ifindex 0 (routing picks the
    /// interface), while a receive reports the destination in ipi_addr: the decoded destination
    /// of a datagram is what its reply is sent from.
    #[test]
    fn pktinfo_v4_received_destination_becomes_reply_source() {
        let mut received = Control([0; 64]);
        let info = in_pktinfo_bytes(2, [192, 0, 2, 10], [192, 0, 2, 1]);
        put_cmsg(&mut received, 0, HDR + 12, libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        let dst = decode(&mut received, space(12));
        assert_eq!(dst, Some((IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 2)), "ipi_addr and ipi_ifindex");

        let (control, hdr) = encode(dst);
        assert_eq!(hdr.msg_controllen, space(12));
        let mut expected = Control([0xA5; 64]);
        let info = in_pktinfo_bytes(0, [192, 0, 2, 1], [0; 4]);
        put_cmsg(&mut expected, 0, HDR + 12, libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        assert_eq!(control.0[..HDR + 12], expected.0[..HDR + 12]);
    }

    #[test]
    fn pktinfo_v6_decodes_the_kernel_layout() {
        let ip: Ipv6Addr = "fe80::abcd".parse().unwrap();
        let mut control = Control([0; 64]);
        put_cmsg(&mut control, 0, HDR + 20, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &in6_pktinfo_bytes(ip, 11));
        assert_eq!(decode(&mut control, space(20)), Some((IpAddr::V6(ip), 11)));
    }

    #[test]
    fn pktinfo_skips_other_control_messages() {
        // IP_TTL (an int) first, then IP_PKTINFO.
        let mut control = Control([0; 64]);
        put_cmsg(&mut control, 0, HDR + 4, libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        let info = in_pktinfo_bytes(4, [10, 0, 0, 1], [10, 0, 0, 1]);
        put_cmsg(&mut control, space(4), HDR + 12, libc::IPPROTO_IP, libc::IP_PKTINFO, &info);
        let total = space(4) + space(12);
        assert_eq!(decode(&mut control, total), Some((IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 4)));
        // Only the IP_TTL: nothing to report.
        assert_eq!(decode(&mut control, space(4)), None);
        // An IPV6_PKTINFO type under the IPv4 level is not one.
        let mut control = Control([0; 64]);
        let info = in6_pktinfo_bytes(Ipv6Addr::LOCALHOST, 1);
        put_cmsg(&mut control, 0, HDR + 20, libc::IPPROTO_IP, libc::IPV6_PKTINFO, &info);
        assert_eq!(decode(&mut control, space(20)), None);
    }

    #[test]
    fn pktinfo_without_control_is_none() {
        let mut control = Control([0; 64]);
        assert_eq!(decode(&mut control, 0), None, "msg_controllen 0");
        assert_eq!(decode(&mut control, HDR - 1), None, "shorter than a cmsghdr");
        let mut hdr = zeroed_msghdr();
        hdr.msg_controllen = 64;
        // SAFETY: a null msg_control is never read.
        assert_eq!(unsafe { pktinfo(&hdr) }, None, "null msg_control");
        // SAFETY: as above.
        assert_eq!(unsafe { pktinfo(&zeroed_msghdr()) }, None, "all zero");
    }

    /// A control buffer the kernel truncated (MSG_CTRUNC) holds a PKTINFO header whose
    /// cmsg_len, or msg_controllen, is too short for the payload; the bytes after it are stale
    /// (a previous datagram's PKTINFO). Nothing may be read from them.
    #[test]
    fn pktinfo_truncated_is_none() {
        let stale_v4 = in_pktinfo_bytes(9, [203, 0, 113, 9], [203, 0, 113, 9]);
        let stale_v6 = in6_pktinfo_bytes("2001:db8::9".parse().unwrap(), 9);
        for (level, kind, stale, whole) in [
            (libc::IPPROTO_IP, libc::IP_PKTINFO, &stale_v4[..], HDR + 12),
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &stale_v6[..], HDR + 20),
        ] {
            // cmsg_len short of the payload (the kernel's truncated length), controllen to match.
            for cmsg_len in HDR..whole {
                let mut control = Control([0; 64]);
                put_cmsg(&mut control, 0, cmsg_len, level, kind, stale);
                assert_eq!(decode(&mut control, cmsg_len), None, "kind {kind} cmsg_len {cmsg_len}");
                assert_eq!(decode(&mut control, 64), None, "kind {kind} cmsg_len {cmsg_len}, room after");
            }
            // cmsg_len whole but msg_controllen short of it.
            for len in 0..whole {
                let mut control = Control([0; 64]);
                put_cmsg(&mut control, 0, whole, level, kind, stale);
                assert_eq!(decode(&mut control, len), None, "kind {kind} controllen {len}");
            }
            // A second PKTINFO cut short behind a whole IP_TTL.
            let mut control = Control([0; 64]);
            put_cmsg(&mut control, 0, HDR + 4, libc::IPPROTO_IP, libc::IP_TTL, &64i32.to_ne_bytes());
            put_cmsg(&mut control, space(4), whole, level, kind, stale);
            assert_eq!(decode(&mut control, space(4) + HDR), None, "kind {kind} after IP_TTL");
        }
    }

    /// Whatever the bytes, decoding never panics and never depends on bytes past
    /// msg_controllen: changing them cannot change the answer.
    #[test]
    fn pktinfo_reads_nothing_past_controllen() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut decoded = 0;
        for round in 0..2000 {
            let mut control = Control([0; 64]);
            for b in &mut control.0 {
                *b = next() as u8;
            }
            // Mostly plausible headers, so the payload reads are reached.
            let (level, kind, payload) = if round % 2 == 0 {
                (libc::IPPROTO_IP, libc::IP_PKTINFO, 12)
            } else {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, 20)
            };
            let cmsg_len = (next() % 48) as usize;
            let mut header = Control([0; 64]);
            put_cmsg(&mut header, 0, cmsg_len, level, kind, &[]);
            if round % 3 != 0 {
                control.0[..HDR].copy_from_slice(&header.0[..HDR]);
            }
            let len = (next() % 65) as usize;
            let got = decode(&mut control.clone(), len);
            let mut other = control;
            for b in &mut other.0[len..] {
                *b = !*b;
            }
            assert_eq!(decode(&mut other, len), got, "round {round} cmsg_len {cmsg_len} controllen {len}");
            if got.is_some() {
                assert!(len >= HDR + payload && cmsg_len >= HDR + payload, "round {round}");
                decoded += 1;
            }
        }
        // The payload reads were reached, not just the early returns.
        assert!(decoded > 100, "{decoded} decoded");
    }

    #[test]
    fn prepare_send_points_at_name_iovec_and_control() {
        let mut name = zeroed_storage();
        let name_len = write_sockaddr(&mut name, "192.0.2.1:3478".parse().unwrap());
        let mut payload = [0u8; 20];
        let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
        let mut control = Control([0; 64]);
        let mut hdr = zeroed_msghdr();
        hdr.msg_flags = libc::MSG_TRUNC;
        let name_ptr = (&raw mut name).cast::<libc::c_void>();
        prepare_send(&mut hdr, name_ptr, name_len, &raw mut iov, &mut control, None);
        assert_eq!((hdr.msg_name, hdr.msg_namelen), (name_ptr, 16));
        assert_eq!((hdr.msg_iov, hdr.msg_iovlen, hdr.msg_flags), (&raw mut iov, 1, 0));
        assert!(hdr.msg_control.is_null());
        assert_eq!(hdr.msg_controllen, 0);

        // With a source, the control buffer is used; without one again, it is dropped.
        let from = Some((IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), 0));
        prepare_send(&mut hdr, name_ptr, name_len, &raw mut iov, &mut control, from);
        assert_eq!(hdr.msg_control, control.0.as_mut_ptr().cast());
        assert_eq!(hdr.msg_controllen, space(12));
        prepare_send(&mut hdr, name_ptr, name_len, &raw mut iov, &mut control, None);
        assert!(hdr.msg_control.is_null());
        assert_eq!(hdr.msg_controllen, 0);
    }
}
