//! The host's interface addresses (getifaddrs(3)), for the client's ICE host candidates.

use std::io;
use std::net::IpAddr;

use super::msg::socket_addr;

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The interface name (`eth0`).
    pub interface: String,
    /// The address.
    pub ip: IpAddr,
    /// The interface is a loopback one.
    pub loopback: bool,
    /// The interface is up.
    pub up: bool,
}

/// Every IPv4 and IPv6 address of every interface, in the kernel's order.
pub fn interface_addresses() -> io::Result<Vec<InterfaceAddress>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a pointer to a list it allocates into `list`; freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: `at` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let entry = unsafe { &*at };
        at = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family field says how
        // long it is; only AF_INET and AF_INET6 are read, by copying that many bytes into a
        // sockaddr_storage (large enough for either).
        let addr = unsafe {
            let family = libc::c_int::from((*entry.ifa_addr).sa_family);
            let len = match family {
                libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
                libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
                _ => continue,
            };
            let mut storage: libc::sockaddr_storage = std::mem::zeroed();
            std::ptr::copy_nonoverlapping(entry.ifa_addr.cast::<u8>(), (&raw mut storage).cast::<u8>(), len);
            socket_addr(&storage)
        };
        let Some(addr) = addr else { continue };
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) }.to_string_lossy().into_owned();
        let flags = entry.ifa_flags;
        out.push(InterfaceAddress {
            interface: name,
            ip: addr.ip(),
            loopback: flags & libc::IFF_LOOPBACK as libc::c_uint != 0,
            up: flags & libc::IFF_UP as libc::c_uint != 0,
        });
    }
    // SAFETY: `list` came from getifaddrs and is freed once; no reference into it remains
    // (names were copied into Strings).
    unsafe { libc::freeifaddrs(list) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed() {
        let all = interface_addresses().unwrap();
        assert!(all.iter().any(|a| a.loopback && a.ip == IpAddr::from([127, 0, 0, 1])), "{all:?}");
    }
}
