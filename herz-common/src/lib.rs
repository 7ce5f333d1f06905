//! Types shared by Herz's kernel programs (herz-ebpf) and user space (herz-user).
//!
//! Everything here is `#[repr(C)]` with explicit padding so that the kernel and user space agree on every
//! byte. Addresses are stored as 16-byte IPv6 addresses; IPv4 sources use the IPv4-mapped form
//! (`::ffff:a.b.c.d`) so one map serves both families.
#![no_std]
#![deny(missing_docs)]

/// Names of the maps the kernel programs declare; user space pins each under the pin directory by this name.
pub mod maps {
    /// Global counters, `PerCpuArray<u64>` indexed by [`crate::Counter`].
    pub const GLOBAL: &str = "HERZ_GLOBAL";
    /// Per-source counters, `LruPerCpuHashMap<SourceKey, SourceStats>`.
    pub const SOURCES: &str = "HERZ_SOURCES";
    /// Herz's policed ports, `HashMap<PortKey, u32>` (value: [`crate::PortRole`] bits).
    pub const PORTS: &str = "HERZ_PORTS";
    /// Every map name, in a stable order (for pinning and unpinning).
    pub const ALL: &[&str] = &[GLOBAL, SOURCES, PORTS];
}

/// Maximum number of sources tracked at once; least recently seen sources are evicted first.
pub const MAX_SOURCES: u32 = 65_536;
/// Maximum number of entries in the port map.
pub const MAX_PORTS: u32 = 64;

/// IP protocol numbers used in [`PortKey`].
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number for UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Key of the port map: a destination port of Herz's, with its transport protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// Destination port, host byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Explicit padding; always zero.
    pub _pad: u8,
}

impl PortKey {
    /// A key for `proto`/`port`.
    pub const fn new(proto: u8, port: u16) -> Self {
        Self {
            port,
            proto,
            _pad: 0,
        }
    }
}

/// What a policed port is used for (bit flags in the port map's value).
pub struct PortRole;
impl PortRole {
    /// TCP port where subscribers connect (SoupBinTCP egress).
    pub const SUBSCRIBER: u32 = 1;
    /// TCP port where publishers connect (SoupBinTCP ingest).
    pub const PUBLISHER: u32 = 2;
    /// UDP port of an ingested feed (MoldUDP64) or of the re-request server.
    pub const FEED: u32 = 4;
}

/// Key of the per-source map: the source address as 16 bytes (IPv4 as `::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// IPv6 address bytes, network order.
    pub addr: [u8; 16],
}

impl SourceKey {
    /// The IPv4-mapped key for an IPv4 address given in network byte order bytes.
    pub const fn from_ipv4(octets: [u8; 4]) -> Self {
        let [a, b, c, d] = octets;
        Self {
            addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d],
        }
    }

    /// The IPv4 octets if this is an IPv4-mapped address.
    pub fn as_ipv4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
            Some([a[12], a[13], a[14], a[15]])
        } else {
            None
        }
    }
}

/// Per-source counters of traffic sent to Herz's ports (one copy per CPU; user space sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Packets sent to a Herz port.
    pub packets: u64,
    /// Bytes of those packets, from the start of the Ethernet header.
    pub bytes: u64,
    /// TCP SYNs (without ACK) sent to a Herz TCP port.
    pub tcp_syn: u64,
    /// UDP datagrams sent to a Herz UDP port.
    pub udp: u64,
    /// Kernel time (ns, `bpf_ktime_get_ns`) of the last packet seen from this source.
    pub last_seen_ns: u64,
}

impl SourceStats {
    /// Adds another CPU's copy into this one (`last_seen_ns` takes the latest).
    pub fn accumulate(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.tcp_syn += other.tcp_syn;
        self.udp += other.udp;
        if other.last_seen_ns > self.last_seen_ns {
            self.last_seen_ns = other.last_seen_ns;
        }
    }
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident = $label:literal, )*) => {
        /// Global counters kept by the kernel programs in a per-CPU array, one slot each.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $( $(#[$doc])* $name, )* }

        impl Counter {
            /// Every counter, in slot order.
            pub const ALL: &'static [Counter] = &[$(Counter::$name,)*];
            /// The stable snake_case name used by `herz stats --json` and metrics.
            pub const fn label(self) -> &'static str {
                match self { $(Counter::$name => $label,)* }
            }
        }
    };
}

counters! {
    /// Every frame the XDP program saw.
    XdpFrames = "xdp_frames",
    /// Frames to a Herz port (TCP or UDP).
    HerzPackets = "herz_packets",
    /// Bytes of frames to a Herz port.
    HerzBytes = "herz_bytes",
    /// TCP SYNs (without ACK) to a Herz TCP port.
    HerzTcpSyn = "herz_tcp_syn",
    /// UDP datagrams to a Herz UDP port.
    HerzUdp = "herz_udp",
    /// IP traffic not addressed to a Herz port (passed untouched).
    OtherPorts = "other_ports",
    /// Frames that are not IPv4 or IPv6 (ARP, LLDP, ...), passed untouched.
    NotIp = "not_ip",
    /// Non-first IP fragments: no transport header to inspect, passed.
    Fragments = "fragments",
    /// Frames cut short or with impossible header fields, passed to the kernel (which drops what is bad).
    Malformed = "malformed",
    /// tc ingress: SYN to a Herz TCP port (handshake start).
    HandshakeSynIn = "handshake_syn_in",
    /// tc egress: SYN-ACK from a Herz TCP port.
    HandshakeSynAckOut = "handshake_synack_out",
    /// tc ingress: pure ACK to a Herz TCP port (completes a handshake, or acknowledges data).
    HandshakeAckIn = "handshake_ack_in",
    /// tc ingress: FIN to a Herz TCP port.
    FinIn = "fin_in",
    /// tc ingress: RST to a Herz TCP port.
    RstIn = "rst_in",
}

/// Number of global counter slots.
pub const COUNTERS: u32 = Counter::ALL.len() as u32;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are `#[repr(C)]`, plain integers and byte arrays, with explicit padding; every bit pattern is valid.
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::SourceKey {}
    unsafe impl aya::Pod for super::SourceStats {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<PortKey>(), 4);
        assert_eq!(size_of::<SourceKey>(), 16);
        assert_eq!(size_of::<SourceStats>(), 5 * 8);
    }

    #[test]
    fn ipv4_mapping_round_trips() {
        let k = SourceKey::from_ipv4([198, 18, 0, 2]);
        assert_eq!(k.as_ipv4(), Some([198, 18, 0, 2]));
        let v6 = SourceKey {
            addr: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        };
        assert_eq!(v6.as_ipv4(), None);
    }

    #[test]
    fn counter_labels_are_unique() {
        for (i, a) in Counter::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            for b in &Counter::ALL[i + 1..] {
                assert_ne!(a.label(), b.label());
            }
        }
    }
}
