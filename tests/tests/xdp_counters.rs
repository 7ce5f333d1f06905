//! BPF_PROG_TEST_RUN tests of the counting programs on crafted frames: no namespace, no attachment.

use herz_common::{Counter, SourceKey};
use herz_tests::{
    bpf::{Programs, TC_ACT_OK, xdp},
    frames::{self, ETH_IP, ETH_IPV6, SRC4, SRC6, eth, flags, ipv4, ipv6, tcp, udp},
    privileged,
};
use herz_user::shield::programs;

const SUB: u16 = 7100;
const FEED: u16 = 7102;

fn load(test: &str) -> Option<Programs> {
    privileged(test).then(|| Programs::load(&[SUB], &[FEED]))
}

#[test]
fn ipv4_syn_to_herz_port_is_counted_per_source() {
    let Some(p) = load("ipv4_syn_to_herz_port_is_counted_per_source") else {
        return;
    };
    let frame = frames::tcp4(SUB, flags::SYN);
    for _ in 0..3 {
        assert_eq!(p.xdp(&frame), xdp::PASS);
    }
    let s = p
        .source(SourceKey::from_ipv4(SRC4))
        .expect("source tracked");
    assert_eq!((s.packets, s.tcp_syn, s.udp), (3, 3, 0));
    assert_eq!(s.bytes, 3 * frame.len() as u64);
    assert!(s.last_seen_ns > 0);
    assert_eq!(p.global(Counter::HerzTcpSyn), 3);
    assert_eq!(p.global(Counter::HerzPackets), 3);
    assert_eq!(p.global(Counter::HerzBytes), 3 * frame.len() as u64);
    assert_eq!(p.global(Counter::XdpFrames), 3);
}

#[test]
fn ipv6_syn_to_herz_port_is_counted() {
    let Some(p) = load("ipv6_syn_to_herz_port_is_counted") else {
        return;
    };
    assert_eq!(p.xdp(&frames::tcp6(SUB, flags::SYN)), xdp::PASS);
    let s = p
        .source(SourceKey { addr: SRC6 })
        .expect("IPv6 source tracked");
    assert_eq!((s.packets, s.tcp_syn), (1, 1));
    assert_eq!(p.global(Counter::HerzTcpSyn), 1);
}

#[test]
fn syn_ack_and_data_are_packets_not_syns() {
    let Some(p) = load("syn_ack_and_data_are_packets_not_syns") else {
        return;
    };
    p.xdp(&frames::tcp4(SUB, flags::SYN | flags::ACK));
    p.xdp(&frames::tcp4(SUB, flags::ACK));
    let s = p.source(SourceKey::from_ipv4(SRC4)).unwrap();
    assert_eq!((s.packets, s.tcp_syn), (2, 0));
    assert_eq!(p.global(Counter::HerzTcpSyn), 0);
}

#[test]
fn udp_to_feed_port_is_counted() {
    let Some(p) = load("udp_to_feed_port_is_counted") else {
        return;
    };
    for _ in 0..5 {
        assert_eq!(p.xdp(&frames::udp4(FEED, 100)), xdp::PASS);
    }
    let s = p.source(SourceKey::from_ipv4(SRC4)).unwrap();
    assert_eq!((s.packets, s.udp, s.tcp_syn), (5, 5, 0));
    assert_eq!(p.global(Counter::HerzUdp), 5);
}

#[test]
fn other_ports_pass_uncounted() {
    let Some(p) = load("other_ports_pass_uncounted") else {
        return;
    };
    // SSH, a UDP port that is Herz's only over TCP, and a TCP port that is Herz's only over UDP.
    for frame in [
        frames::tcp4(22, flags::SYN),
        frames::udp4(SUB, 10),
        frames::tcp4(FEED, flags::SYN),
    ] {
        assert_eq!(p.xdp(&frame), xdp::PASS);
    }
    // ICMP.
    let mut icmp = eth(ETH_IP, &[]);
    icmp.extend(ipv4(SRC4, frames::DST4, 1, &[], &[8, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(p.xdp(&icmp), xdp::PASS);
    assert_eq!(p.source_count(), 0);
    assert_eq!(p.global(Counter::HerzPackets), 0);
    assert_eq!(p.global(Counter::OtherPorts), 4);
    // ARP is not IP at all.
    let mut arp = eth(0x0806, &[]);
    arp.extend([0u8; 28]);
    assert_eq!(p.xdp(&arp), xdp::PASS);
    assert_eq!(p.global(Counter::NotIp), 1);
}

#[test]
fn vlan_and_ipv4_options_are_parsed() {
    let Some(p) = load("vlan_and_ipv4_options_are_parsed") else {
        return;
    };
    // Single tag, QinQ, and a 40-byte option area (the IHL maximum).
    for (vlans, opts) in [
        (&[100u16][..], &[][..]),
        (&[100, 200][..], &[1u8; 40][..]),
        (&[][..], &[1u8, 1, 1, 0][..]),
    ] {
        let mut f = eth(ETH_IP, vlans);
        f.extend(ipv4(
            SRC4,
            frames::DST4,
            6,
            opts,
            &tcp(40000, SUB, flags::SYN),
        ));
        assert_eq!(p.xdp(&f), xdp::PASS);
    }
    assert_eq!(p.source(SourceKey::from_ipv4(SRC4)).unwrap().tcp_syn, 3);
    assert_eq!(p.global(Counter::Malformed), 0);
}

#[test]
fn ipv6_extension_headers_are_followed() {
    let Some(p) = load("ipv6_extension_headers_are_followed") else {
        return;
    };
    let hop_by_hop = (0u8, vec![0, 0, 1, 4, 0, 0, 0, 0]);
    let dest_opts = (60u8, vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let first_fragment = (44u8, vec![0, 0, 0, 1, 0, 0, 0, 7]);
    let mut f = eth(ETH_IPV6, &[]);
    f.extend(ipv6(
        SRC6,
        frames::DST6,
        6,
        &[hop_by_hop, dest_opts, first_fragment],
        &tcp(40000, SUB, flags::SYN),
    ));
    assert_eq!(p.xdp(&f), xdp::PASS);
    assert_eq!(p.source(SourceKey { addr: SRC6 }).unwrap().tcp_syn, 1);
    // A later fragment has no TCP header: counted as a fragment, never as a SYN.
    let later_fragment = (44u8, vec![0, 0, 0x05, 0x01, 0, 0, 0, 7]);
    let mut f = eth(ETH_IPV6, &[]);
    f.extend(ipv6(
        SRC6,
        frames::DST6,
        6,
        &[later_fragment],
        &tcp(40000, SUB, flags::SYN),
    ));
    assert_eq!(p.xdp(&f), xdp::PASS);
    assert_eq!(p.global(Counter::Fragments), 1);
    assert_eq!(p.global(Counter::HerzTcpSyn), 1);
}

#[test]
fn ipv4_fragments_are_not_parsed_as_tcp() {
    let Some(p) = load("ipv4_fragments_are_not_parsed_as_tcp") else {
        return;
    };
    let mut f = eth(ETH_IP, &[]);
    let mut ip = ipv4(SRC4, frames::DST4, 6, &[], &tcp(40000, SUB, flags::SYN));
    ip[6..8].copy_from_slice(&100u16.to_be_bytes()); // fragment offset 800 bytes
    f.extend(ip);
    assert_eq!(p.xdp(&f), xdp::PASS);
    assert_eq!(p.global(Counter::Fragments), 1);
    assert_eq!(p.source_count(), 0);
}

#[test]
fn truncated_and_malformed_frames_pass_uncounted() {
    let Some(p) = load("truncated_and_malformed_frames_pass_uncounted") else {
        return;
    };
    let good = frames::tcp4(SUB, flags::SYN);
    let mut bad: Vec<Vec<u8>> = Vec::new();
    // Every truncation of a good SYN frame from the end of Ethernet to one byte short of the TCP flags.
    for len in 14..14 + 20 + 20 {
        bad.push(good[..len].to_vec());
    }
    // VLAN tag cut short.
    let mut f = eth(frames::ETH_VLAN, &[]);
    f.extend([0, 100]);
    bad.push(f);
    // Bogus IHL (< 5) and wrong IP version.
    for first in [0x44u8, 0x45 | 0x10, 0x65] {
        let mut f = good.clone();
        f[14] = first;
        bad.push(f);
    }
    // IHL that points past the end of the frame.
    let mut f = good.clone();
    f[14] = 0x4f;
    bad.push(f[..14 + 20 + 20].to_vec());
    // TCP data offset < 5.
    let mut f = good.clone();
    f[14 + 20 + 12] = 0x40;
    bad.push(f);
    // IPv6 truncated in the fixed header and in an extension header.
    let v6 = frames::tcp6(SUB, flags::SYN);
    bad.push(v6[..14 + 30].to_vec());
    let mut f = eth(ETH_IPV6, &[]);
    f.extend(ipv6(
        SRC6,
        frames::DST6,
        6,
        &[(0u8, vec![0, 4, 0, 0, 0, 0, 0, 0])],
        &tcp(40000, SUB, flags::SYN),
    ));
    bad.push(f); // hop-by-hop claims 40 bytes, frame has 28 after it
    // UDP header cut short.
    let u = frames::udp4(FEED, 0);
    bad.push(u[..u.len() - 3].to_vec());
    for f in &bad {
        assert_eq!(p.xdp(f), xdp::PASS, "frame {f:02x?}");
    }
    assert_eq!(p.global(Counter::XdpFrames), bad.len() as u64);
    assert_eq!(p.global(Counter::Malformed), bad.len() as u64);
    assert_eq!(p.global(Counter::HerzPackets), 0);
    assert_eq!(p.source_count(), 0);
    // And the program still counts a good frame afterwards.
    assert_eq!(p.xdp(&good), xdp::PASS);
    assert_eq!(p.global(Counter::HerzTcpSyn), 1);
}

#[test]
fn tc_programs_count_the_handshake() {
    let Some(p) = load("tc_programs_count_the_handshake") else {
        return;
    };
    // SYN in, SYN-ACK out (from Herz's port), ACK in, FIN in, RST in.
    assert_eq!(
        p.tc(programs::TC_INGRESS, &frames::tcp4(SUB, flags::SYN)),
        TC_ACT_OK
    );
    let mut synack = eth(ETH_IP, &[]);
    synack.extend(ipv4(
        frames::DST4,
        SRC4,
        6,
        &[],
        &tcp(SUB, 40000, flags::SYN | flags::ACK),
    ));
    assert_eq!(p.tc(programs::TC_EGRESS, &synack), TC_ACT_OK);
    assert_eq!(
        p.tc(programs::TC_INGRESS, &frames::tcp4(SUB, flags::ACK)),
        TC_ACT_OK
    );
    assert_eq!(
        p.tc(
            programs::TC_INGRESS,
            &frames::tcp4(SUB, flags::FIN | flags::ACK)
        ),
        TC_ACT_OK
    );
    assert_eq!(
        p.tc(programs::TC_INGRESS, &frames::tcp4(SUB, flags::RST)),
        TC_ACT_OK
    );
    // Not Herz's port: ignored.
    assert_eq!(
        p.tc(programs::TC_INGRESS, &frames::tcp4(22, flags::SYN)),
        TC_ACT_OK
    );
    assert_eq!(p.global(Counter::HandshakeSynIn), 1);
    assert_eq!(p.global(Counter::HandshakeSynAckOut), 1);
    assert_eq!(p.global(Counter::HandshakeAckIn), 1);
    assert_eq!(p.global(Counter::FinIn), 1);
    assert_eq!(p.global(Counter::RstIn), 1);
    // UDP is not a handshake.
    p.tc(programs::TC_INGRESS, &udp_frame());
    assert_eq!(p.global(Counter::HandshakeSynIn), 1);
}

fn udp_frame() -> Vec<u8> {
    let mut f = eth(ETH_IP, &[]);
    f.extend(ipv4(SRC4, frames::DST4, 17, &[], &udp(40000, FEED, 4)));
    f
}
