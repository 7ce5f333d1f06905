//! The machine's interface addresses with their prefix lengths (`getifaddrs`): which networks are
//! directly attached, e.g. to answer only requesters on a channel's own network.

use std::{
    ffi::CStr,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// The address.
    pub addr: IpAddr,
    /// Prefix length of its network (leading one bits of the netmask).
    pub prefix: u8,
}

/// Every IPv4 and IPv6 address of every interface, in the kernel's order.
pub fn interface_addresses() -> io::Result<Vec<InterfaceAddress>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below, once.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut node = head;
    while !node.is_null() {
        // SAFETY: `node` is an element of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*node };
        // SAFETY: the list's socket addresses are null or point to a sockaddr of their family.
        let (addr, mask) = unsafe { (ip_of(ifa.ifa_addr), ip_of(ifa.ifa_netmask)) };
        if let (Some(addr), Some(mask)) = (addr, mask) {
            let name = if ifa.ifa_name.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null ifa_name is a NUL-terminated string owned by the list.
                unsafe { CStr::from_ptr(ifa.ifa_name) }
                    .to_string_lossy()
                    .into_owned()
            };
            out.push(InterfaceAddress {
                name,
                addr,
                prefix: prefix_len(mask),
            });
        }
        node = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and nothing borrowed from it survives.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// The IP address of an `AF_INET` or `AF_INET6` socket address; `None` for null or another family.
///
/// # Safety
///
/// `sa` is null or points to a socket address whose size matches its `sa_family`.
unsafe fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null, and every socket address starts with its family (caller's contract).
    match i32::from(unsafe { (*sa).sa_family }) {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in (caller's contract).
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6 (caller's contract).
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// The prefix length of a netmask: its leading one bits.
pub fn prefix_len(mask: IpAddr) -> u8 {
    match mask {
        IpAddr::V4(m) => u32::from(m).leading_ones() as u8,
        IpAddr::V6(m) => u128::from(m).leading_ones() as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_prefix() {
        let all = interface_addresses().unwrap();
        let lo = all
            .iter()
            .find(|a| a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST))
            .expect("127.0.0.1 is configured");
        assert_eq!((lo.name.as_str(), lo.prefix), ("lo", 8));
    }

    #[test]
    fn netmasks() {
        assert_eq!(
            prefix_len(IpAddr::V4(Ipv4Addr::new(255, 255, 255, 252))),
            30
        );
        assert_eq!(prefix_len(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0);
        assert_eq!(prefix_len(IpAddr::V6(Ipv6Addr::from(u128::MAX << 64))), 64);
        assert_eq!(prefix_len(IpAddr::V6(Ipv6Addr::from(u128::MAX))), 128);
    }
}
