//! Crafted Ethernet frames for BPF_PROG_TEST_RUN tests. Checksums are left zero: the programs never
//! look at them.

/// TCP flag bits.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// Ethertypes.
pub const ETH_IP: u16 = 0x0800;
/// IPv6 ethertype.
pub const ETH_IPV6: u16 = 0x86dd;
/// 802.1Q VLAN tag.
pub const ETH_VLAN: u16 = 0x8100;

/// An Ethernet header with optional VLAN tags, then `ethertype`.
pub fn eth(ethertype: u16, vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for vid in vlans {
        f.extend_from_slice(&ETH_VLAN.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// A TCP header (20 bytes, no options).
pub fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut h = vec![0u8; 20];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..8].copy_from_slice(&1u32.to_be_bytes());
    h[12] = 5 << 4;
    h[13] = flags;
    h[14..16].copy_from_slice(&64240u16.to_be_bytes());
    h
}

/// A UDP header plus `payload_len` zero bytes.
pub fn udp(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; 8 + payload_len];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    h
}

/// An IPv4 header with `options` (padded to 4 bytes) carrying `l4`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let ihl = (20 + opts.len()) / 4;
    let mut h = vec![0u8; 20];
    h[0] = 0x40 | ihl as u8;
    h[2..4].copy_from_slice(&((ihl * 4 + l4.len()) as u16).to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    h.extend_from_slice(&opts);
    h.extend_from_slice(l4);
    h
}

/// An IPv6 header, then extension headers given as `(type, bytes)` (bytes include the next-header and
/// length fields, which this fills in), then `l4` with protocol `proto`.
pub fn ipv6(src: [u8; 16], dst: [u8; 16], proto: u8, ext: &[(u8, Vec<u8>)], l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 40];
    h[0] = 0x60;
    let first = ext.first().map_or(proto, |(t, _)| *t);
    h[6] = first;
    h[7] = 64;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&dst);
    let mut body = Vec::new();
    for (i, (_, bytes)) in ext.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = ext.get(i + 1).map_or(proto, |(t, _)| *t);
        body.extend_from_slice(&b);
    }
    body.extend_from_slice(l4);
    h[4..6].copy_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// IPv4 client address used by the crafted frames.
pub const SRC4: [u8; 4] = [198, 18, 0, 2];
/// IPv4 server address.
pub const DST4: [u8; 4] = [198, 18, 0, 1];
/// IPv6 client address (documentation prefix; never on the wire: test frames only).
pub const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
/// IPv6 server address.
pub const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// Ethernet + IPv4 + TCP with `flags` to `dport`.
pub fn tcp4(dport: u16, flags: u8) -> Vec<u8> {
    let mut f = eth(ETH_IP, &[]);
    f.extend(ipv4(SRC4, DST4, 6, &[], &tcp(40000, dport, flags)));
    f
}

/// Ethernet + IPv4 + UDP to `dport` with `payload` bytes.
pub fn udp4(dport: u16, payload: usize) -> Vec<u8> {
    let mut f = eth(ETH_IP, &[]);
    f.extend(ipv4(SRC4, DST4, 17, &[], &udp(40000, dport, payload)));
    f
}

/// Ethernet + IPv6 + TCP with `flags` to `dport`.
pub fn tcp6(dport: u16, flags: u8) -> Vec<u8> {
    let mut f = eth(ETH_IPV6, &[]);
    f.extend(ipv6(SRC6, DST6, 6, &[], &tcp(40000, dport, flags)));
    f
}

/// Ethernet + IPv4 + TCP from `src:sport` to `DST4:dport` with `flags`.
pub fn tcp4_from(src: [u8; 4], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = eth(ETH_IP, &[]);
    f.extend(ipv4(src, DST4, 6, &[], &tcp(sport, dport, flags)));
    f
}

/// Ethernet + IPv4 + TCP from Herz (`DST4:sport`) back to `dst:dport` (SYN-ACK, FIN, RST out).
pub fn tcp4_to(dst: [u8; 4], dport: u16, sport: u16, flags: u8) -> Vec<u8> {
    let mut f = eth(ETH_IP, &[]);
    f.extend(ipv4(DST4, dst, 6, &[], &tcp(sport, dport, flags)));
    f
}

/// Ethernet + IPv4 + UDP from `src` to `DST4:dport`.
pub fn udp4_from(src: [u8; 4], dport: u16, payload: usize) -> Vec<u8> {
    let mut f = eth(ETH_IP, &[]);
    f.extend(ipv4(src, DST4, 17, &[], &udp(40000, dport, payload)));
    f
}

/// Ethernet + IPv6 + TCP from `src:sport` to `DST6:dport` with `flags`.
pub fn tcp6_from(src: [u8; 16], sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = eth(ETH_IPV6, &[]);
    f.extend(ipv6(src, DST6, 6, &[], &tcp(sport, dport, flags)));
    f
}

/// The internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 + TCP SYN packet (no Ethernet header) with valid checksums, for raw sockets (IP_HDRINCL).
pub fn raw_syn4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = tcp(sport, dport, flags::SYN);
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12 + t.len());
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(&t);
    let c = checksum(&pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = ipv4(src, dst, 6, &[], &t);
    ip[4..6].copy_from_slice(&(seq as u16).to_be_bytes());
    let c = checksum(&ip[..20]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}
