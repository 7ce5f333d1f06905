//! Bounds-checked header parsing shared by the XDP and tc programs.
//!
//! Every read is checked against the end of the packet before it happens, as the verifier demands; a frame
//! that is cut short or carries impossible header fields is reported as `Malformed` and never misread.

use herz_common::{IPPROTO_TCP, IPPROTO_UDP};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// VLAN tags followed (QinQ: outer + inner).
const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers followed before giving up.
const MAX_IPV6_EXT: usize = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The fields Herz's programs decide on.
pub struct Packet {
    /// Source address as two native-endian words of its 16 bytes (IPv4 as `::ffff:a.b.c.d`). Words, not
    /// bytes: sixteen single-byte loads spill registers in ways the verifier rejects.
    pub src: [u64; 2],
    /// Destination address, same form.
    pub dst: [u64; 2],
    /// `IPPROTO_TCP` or `IPPROTO_UDP`; other protocols come back as [`Outcome::OtherProto`].
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
}

pub enum Outcome {
    Parsed(Packet),
    /// Not IPv4/IPv6.
    NotIp,
    /// IP, but neither TCP nor UDP (ICMP, ...).
    OtherProto,
    /// A non-first fragment: no transport header to read.
    Fragment,
    /// Cut short or with impossible header fields.
    Malformed,
}

/// Base address of the `N` bytes at `off`, if all of them lie before `end`.
///
/// Each header is checked as one window before any of its fields is read: one check per header gives the
/// verifier a range it can use for every field, where separate per-field checks let the compiler merge
/// them in ways the verifier cannot follow.
#[inline(always)]
fn window<const N: usize>(start: usize, end: usize, off: usize) -> Option<usize> {
    if start + off + N > end {
        None
    } else {
        Some(start + off)
    }
}

// Field reads inside a checked window. SAFETY (all four): callers pass `base` from `window` with `i` plus
// the field size within the window's length.
#[inline(always)]
unsafe fn u8_at(base: usize, i: usize) -> u8 {
    // SAFETY: the caller guarantees `base + i` is inside a checked window.
    unsafe { *((base + i) as *const u8) }
}

#[inline(always)]
unsafe fn be16_at(base: usize, i: usize) -> u16 {
    // SAFETY: the caller guarantees `base + i .. + 2` is inside a checked window.
    unsafe { u16::from_be_bytes(*((base + i) as *const [u8; 2])) }
}

/// 16 address bytes as two native-endian words (the kernel allows unaligned packet loads). Words, not
/// bytes: sixteen single-byte loads spill registers in ways the verifier rejects.
#[inline(always)]
unsafe fn addr6_at(base: usize, i: usize) -> [u64; 2] {
    let p = (base + i) as *const u64;
    // SAFETY: the caller guarantees `base + i .. + 16` is inside a checked window.
    unsafe {
        [
            core::ptr::read_volatile(p),
            core::ptr::read_volatile(p.add(1)),
        ]
    }
}

/// 4 IPv4 address bytes in IPv4-mapped form (`::ffff:a.b.c.d`), as two native-endian words.
#[inline(always)]
unsafe fn addr4_at(base: usize, i: usize) -> [u64; 2] {
    // SAFETY: the caller guarantees `base + i .. + 4` is inside a checked window.
    let raw = unsafe { core::ptr::read_volatile((base + i) as *const u32) } as u64;
    let mapped = u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]);
    [
        0,
        mapped
            | if cfg!(target_endian = "little") {
                raw << 32
            } else {
                raw
            },
    ]
}

/// Parses Ethernet (with up to two VLAN tags), IPv4 (with options) or IPv6 (with extension headers), and
/// the TCP or UDP header, of the frame between `start` and `end`.
#[inline(always)]
pub fn parse(start: usize, end: usize) -> Outcome {
    let Some(eth) = window::<ETH_HLEN>(start, end, 0) else {
        return Outcome::Malformed;
    };
    // SAFETY: bytes 12..14 of the 14-byte Ethernet window.
    let mut ethertype = unsafe { be16_at(eth, 12) };
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(tag) = window::<4>(start, end, off) else {
            return Outcome::Malformed;
        };
        // SAFETY: bytes 2..4 of the 4-byte VLAN tag window.
        ethertype = unsafe { be16_at(tag, 2) };
        off += 4;
    }

    let (src, dst, proto, l4) = match ethertype {
        ETH_P_IP => {
            let Some(ip) = window::<20>(start, end, off) else {
                return Outcome::Malformed;
            };
            // SAFETY: byte 0 of the 20-byte IPv4 window.
            let vihl = unsafe { u8_at(ip, 0) };
            let ihl = ((vihl & 0x0f) as usize) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Outcome::Malformed;
            }
            // SAFETY: bytes 6..8 of the 20-byte IPv4 window.
            if unsafe { be16_at(ip, 6) } & 0x1fff != 0 {
                return Outcome::Fragment;
            }
            // SAFETY: byte 9 of the 20-byte IPv4 window.
            let proto = unsafe { u8_at(ip, 9) };
            (
                // SAFETY: bytes 12..16 of the 20-byte IPv4 window.
                unsafe { addr4_at(ip, 12) },
                // SAFETY: bytes 16..20 of the 20-byte IPv4 window.
                unsafe { addr4_at(ip, 16) },
                proto,
                off + ihl,
            )
        }
        ETH_P_IPV6 => {
            let Some(ip) = window::<40>(start, end, off) else {
                return Outcome::Malformed;
            };
            // SAFETY: byte 0 of the 40-byte IPv6 window.
            if unsafe { u8_at(ip, 0) } >> 4 != 6 {
                return Outcome::Malformed;
            }
            // SAFETY: byte 6 of the 40-byte IPv6 window.
            let mut next = unsafe { u8_at(ip, 6) };
            // SAFETY: bytes 8..40 of the 40-byte IPv6 window (both addresses).
            let (s, d) = (unsafe { addr6_at(ip, 8) }, unsafe { addr6_at(ip, 24) });
            let mut l4 = off + 40;
            let mut done = false;
            for _ in 0..MAX_IPV6_EXT {
                if !matches!(next, 0 | 43 | 44 | 51 | 60) {
                    done = true;
                    break;
                }
                // Every extension header Herz follows is at least 8 bytes long.
                let Some(ext) = window::<8>(start, end, l4) else {
                    return Outcome::Malformed;
                };
                // SAFETY: bytes 0..2 of the 8-byte extension header window.
                let (nh, len) = unsafe { (u8_at(ext, 0), u8_at(ext, 1) as usize) };
                l4 += match next {
                    // Fragment header: a non-zero offset means no transport header in this packet.
                    44 => {
                        // SAFETY: bytes 2..4 of the 8-byte extension header window.
                        if unsafe { be16_at(ext, 2) } >> 3 != 0 {
                            return Outcome::Fragment;
                        }
                        8
                    }
                    // Authentication header: (len + 2) * 4 bytes.
                    51 => (len + 2) * 4,
                    // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
                    _ => (len + 1) * 8,
                };
                next = nh;
            }
            if !done {
                // More extension headers than Herz follows: treat as malformed rather than guess.
                return Outcome::Malformed;
            }
            (s, d, next, l4)
        }
        _ => return Outcome::NotIp,
    };

    match proto {
        IPPROTO_TCP => {
            let Some(tcp) = window::<20>(start, end, l4) else {
                return Outcome::Malformed;
            };
            // SAFETY: bytes 0..14 of the 20-byte TCP window.
            let (sport, dport, doff, flags) = unsafe {
                (
                    be16_at(tcp, 0),
                    be16_at(tcp, 2),
                    u8_at(tcp, 12),
                    u8_at(tcp, 13),
                )
            };
            if (doff >> 4) < 5 {
                return Outcome::Malformed;
            }
            Outcome::Parsed(Packet {
                src,
                dst,
                proto,
                sport,
                dport,
                tcp_flags: flags,
            })
        }
        IPPROTO_UDP => {
            let Some(udp) = window::<8>(start, end, l4) else {
                return Outcome::Malformed;
            };
            // SAFETY: bytes 0..4 of the 8-byte UDP window.
            let (sport, dport) = unsafe { (be16_at(udp, 0), be16_at(udp, 2)) };
            Outcome::Parsed(Packet {
                src,
                dst,
                proto,
                sport,
                dport,
                tcp_flags: 0,
            })
        }
        _ => Outcome::OtherProto,
    }
}
