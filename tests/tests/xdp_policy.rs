//! BPF_PROG_TEST_RUN tests of the shield's policy: every verdict path of the XDP program (allowlist,
//! blocklist and expiry, SYN token bucket, half-open and connection limits, global guard, trust,
//! auto-block and its events, UDP feed sources and rate) and the tc handshake tracking that feeds it,
//! on crafted frames (IPv4, IPv6, VLAN, extension headers, truncated, bogus IHL). No namespace needed.

use std::{path::PathBuf, time::Duration};

use herz_common::{
    Counter, DropReason, EventKind, IPPROTO_UDP, NS_PER_SEC, Origin, PortRole, ShieldParams,
    SourceKey, maps,
};
use herz_tests::{
    bpf::{Programs, xdp},
    frames::{
        self, DST4, ETH_IP, ETH_IPV6, SRC4, SRC6, eth, flags, ipv4, ipv6, tcp, tcp4_from, tcp4_to,
        tcp6_from, udp4_from,
    },
    privileged, unique_id,
};
use herz_user::shield::{
    Cidr, ShieldHandle, apply,
    cidr::ktime_now_ns,
    pinned,
    programs::{TC_EGRESS, TC_INGRESS},
};

const SUB: u16 = 7100;
const FEED: u16 = 7102;
const REREQ: u16 = 7103;
const MS: u64 = 1_000_000;

fn load(test: &str) -> Option<Programs> {
    privileged(test).then(|| Programs::load(&[SUB], &[FEED]))
}

fn k4(a: [u8; 4]) -> SourceKey {
    SourceKey::from_ipv4(a)
}

fn drops(p: &Programs, key: SourceKey, r: DropReason) -> u64 {
    p.source(key).map_or(0, |s| s.drops[r as usize])
}

/// A full handshake from `src:sport` seen by the tc programs (SYN in, SYN-ACK out, ACK in).
fn handshake(p: &Programs, src: [u8; 4], sport: u16) {
    p.tc(TC_INGRESS, &tcp4_from(src, sport, SUB, flags::SYN));
    p.tc(
        TC_EGRESS,
        &tcp4_to(src, sport, SUB, flags::SYN | flags::ACK),
    );
    p.tc(TC_INGRESS, &tcp4_from(src, sport, SUB, flags::ACK));
}

#[test]
fn allowlist_passes_before_the_blocklist() {
    let Some(mut p) = load("allowlist_passes_before_the_blocklist") else {
        return;
    };
    p.block("198.18.0.2", 0, Origin::MANUAL);
    p.block("2001:db8::/32", 0, Origin::MANUAL);
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::DROP);
    assert_eq!(p.xdp(&frames::tcp6(SUB, flags::SYN)), xdp::DROP);
    assert_eq!(drops(&p, k4(SRC4), DropReason::Blocked), 1);
    p.allow("198.18.0.0/24");
    p.allow("2001:db8::2");
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::PASS);
    assert_eq!(p.xdp(&frames::tcp6(SUB, flags::SYN)), xdp::PASS);
    assert_eq!(p.global(Counter::Allowlisted), 2);
    assert_eq!(p.global(Counter::DropBlocked), 2);
    // The allowlist also outranks the flood rules.
    p.set_params(&ShieldParams {
        syn_rate: 1,
        syn_burst: 1,
        ..Default::default()
    });
    for _ in 0..5 {
        assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::PASS);
    }
}

#[test]
fn blocklist_matches_prefixes_and_honours_expiry() {
    let Some(mut p) = load("blocklist_matches_prefixes_and_honours_expiry") else {
        return;
    };
    let now = ktime_now_ns();
    let other = [198, 20, 0, 1];
    // Unexpired, covering prefix: dropped; a source outside it passes.
    p.block("198.18.0.0/16", now + 60 * NS_PER_SEC, Origin::MANUAL);
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::DROP);
    assert_eq!(p.xdp(&frames::udp4(FEED, 10)), xdp::DROP, "UDP too");
    assert_eq!(p.xdp(&tcp4_from(other, 1, SUB, flags::SYN)), xdp::PASS);
    // Expired: ignored (and counted as such).
    p.block("198.18.0.0/16", now - NS_PER_SEC, Origin::MANUAL);
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::PASS);
    assert_eq!(p.global(Counter::BlockExpired), 1);
    // Expiring while we watch.
    p.block("198.18.0.0/16", ktime_now_ns() + 150 * MS, Origin::MANUAL);
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::DROP);
    std::thread::sleep(Duration::from_millis(250));
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::PASS);
    // Permanent; a longer prefix inside it decides for its own addresses (longest match).
    p.block("198.18.0.0/16", 0, Origin::MANUAL);
    p.block("198.18.0.0/30", now - NS_PER_SEC, Origin::MANUAL);
    assert_eq!(
        p.xdp(&frames::tcp4(SUB, flags::SYN)),
        xdp::PASS,
        "the /30 is expired"
    );
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 9, 9], 1, SUB, flags::SYN)),
        xdp::DROP
    );
    p.unblock("198.18.0.0/30");
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::DROP);
    // An entry the XDP program wrote itself is reported as an auto-block.
    p.unblock("198.18.0.0/16");
    p.block("198.18.0.2", 0, Origin::AUTO);
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::DROP);
    assert_eq!(drops(&p, k4(SRC4), DropReason::AutoBlocked), 1);
    assert_eq!(p.global(Counter::DropAutoBlocked), 1);
    // IPv6 prefixes.
    p.block("2001:db8::/64", 0, Origin::MANUAL);
    assert_eq!(p.xdp(&frames::tcp6(SUB, flags::SYN)), xdp::DROP);
    let outside = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    assert_eq!(p.xdp(&tcp6_from(outside, 1, SUB, flags::SYN)), xdp::PASS);
    assert_eq!(drops(&p, SourceKey { addr: SRC6 }, DropReason::Blocked), 1);
}

#[test]
fn syn_token_bucket_passes_the_burst_then_drops() {
    let Some(mut p) = load("syn_token_bucket_passes_the_burst_then_drops") else {
        return;
    };
    p.set_params(&ShieldParams {
        syn_rate: 1,
        syn_burst: 3,
        ..Default::default()
    });
    for i in 0..3 {
        assert_eq!(
            p.xdp(&tcp4_from(SRC4, 1000 + i, SUB, flags::SYN)),
            xdp::PASS,
            "SYN {i}"
        );
    }
    assert_eq!(p.xdp(&tcp4_from(SRC4, 1003, SUB, flags::SYN)), xdp::DROP);
    // Only SYNs are policed: ACKs and data of accepted connections pass.
    assert_eq!(p.xdp(&tcp4_from(SRC4, 1000, SUB, flags::ACK)), xdp::PASS);
    // The bucket is per source.
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 0, 3], 1, SUB, flags::SYN)),
        xdp::PASS
    );
    let s = p.source(k4(SRC4)).unwrap();
    assert_eq!(s.drops[DropReason::SynRate as usize], 1);
    assert_eq!(s.drops_total(), 1);
    assert_eq!(s.tcp_syn, 4, "dropped SYNs are still counted as seen");
    assert_eq!(p.global(Counter::DropSynRate), 1);
    // Refill: 1000/s with a burst of 1 gives a token back within a few milliseconds.
    let fresh = [198, 18, 0, 4];
    p.set_params(&ShieldParams {
        syn_rate: 1000,
        syn_burst: 1,
        ..Default::default()
    });
    assert_eq!(p.xdp(&tcp4_from(fresh, 1, SUB, flags::SYN)), xdp::PASS);
    assert_eq!(p.xdp(&tcp4_from(fresh, 2, SUB, flags::SYN)), xdp::DROP);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(p.xdp(&tcp4_from(fresh, 3, SUB, flags::SYN)), xdp::PASS);
    // Rate 0 turns the bucket off.
    p.set_params(&ShieldParams::default());
    for i in 0..20 {
        assert_eq!(
            p.xdp(&tcp4_from(fresh, 100 + i, SUB, flags::SYN)),
            xdp::PASS
        );
    }
}

#[test]
fn tc_follows_handshakes_per_four_tuple() {
    let Some(p) = load("tc_follows_handshakes_per_four_tuple") else {
        return;
    };
    let key = k4(SRC4);
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 5000, SUB, flags::SYN));
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 5000, SUB, flags::SYN)); // retransmission
    assert_eq!(p.peer(key).unwrap().half_open, 1);
    p.tc(
        TC_EGRESS,
        &tcp4_to(SRC4, 5000, SUB, flags::SYN | flags::ACK),
    );
    let (half, _) = p.flows();
    assert_eq!(half.len(), 1);
    assert_eq!(half[0].1.flags, herz_common::FlowState::FLOW_SYNACK);
    assert_eq!(half[0].0.client_port, 5000);
    assert_eq!(half[0].0.server_port, SUB);
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 5000, SUB, flags::ACK));
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 5000, SUB, flags::ACK)); // data ACK
    let ps = p.peer(key).unwrap();
    assert_eq!((ps.half_open, ps.established), (0, 1));
    assert_eq!(p.global(Counter::ConnEstablished), 1);
    // Herz closes (FIN out); the client's FIN that follows finds nothing left to close.
    p.tc(
        TC_EGRESS,
        &tcp4_to(SRC4, 5000, SUB, flags::FIN | flags::ACK),
    );
    p.tc(
        TC_INGRESS,
        &tcp4_from(SRC4, 5000, SUB, flags::FIN | flags::ACK),
    );
    let ps = p.peer(key).unwrap();
    assert_eq!((ps.half_open, ps.established), (0, 0), "no underflow");
    assert_eq!(p.global(Counter::ConnClosed), 1);
    // Refused (RST out for a SYN) and abandoned (RST in) handshakes leave no half-open count.
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 5001, SUB, flags::SYN));
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 5002, SUB, flags::SYN));
    assert_eq!(p.peer(key).unwrap().half_open, 2);
    p.tc(
        TC_EGRESS,
        &tcp4_to(SRC4, 5001, SUB, flags::RST | flags::ACK),
    );
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 5002, SUB, flags::RST));
    assert_eq!(p.peer(key).unwrap().half_open, 0);
    assert_eq!(p.flows(), (vec![], vec![]));
    // IPv6, and another port of the same source is another connection.
    let v6 = SourceKey { addr: SRC6 };
    for port in [6000, 6001] {
        let mut synack = eth(ETH_IPV6, &[]);
        synack.extend(ipv6(
            frames::DST6,
            SRC6,
            6,
            &[],
            &tcp(SUB, port, flags::SYN | flags::ACK),
        ));
        p.tc(TC_INGRESS, &tcp6_from(SRC6, port, SUB, flags::SYN));
        p.tc(TC_EGRESS, &synack);
        p.tc(TC_INGRESS, &tcp6_from(SRC6, port, SUB, flags::ACK));
    }
    assert_eq!(p.peer(v6).unwrap().established, 2);
    // Other ports are not followed.
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 5003, 22, flags::SYN));
    assert_eq!(p.peer(key).unwrap().half_open, 0);
}

#[test]
fn half_open_limit_and_timeout() {
    let Some(mut p) = load("half_open_limit_and_timeout") else {
        return;
    };
    p.set_params(&ShieldParams {
        max_half_open: 2,
        half_open_timeout_ns: 300 * MS,
        ..Default::default()
    });
    let key = k4(SRC4);
    for port in [1000, 1001] {
        assert_eq!(p.xdp(&tcp4_from(SRC4, port, SUB, flags::SYN)), xdp::PASS);
        p.tc(TC_INGRESS, &tcp4_from(SRC4, port, SUB, flags::SYN));
    }
    assert_eq!(p.peer(key).unwrap().half_open, 2);
    assert_eq!(p.xdp(&tcp4_from(SRC4, 1002, SUB, flags::SYN)), xdp::DROP);
    assert_eq!(drops(&p, key, DropReason::HalfOpen), 1);
    // A retransmitted SYN of a followed handshake is not a new one.
    assert_eq!(p.xdp(&tcp4_from(SRC4, 1000, SUB, flags::SYN)), xdp::PASS);
    // Another source is not affected.
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 0, 3], 1, SUB, flags::SYN)),
        xdp::PASS
    );
    // Completing a handshake frees a slot.
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 1000, SUB, flags::ACK));
    assert_eq!(p.peer(key).unwrap().half_open, 1);
    assert_eq!(p.xdp(&tcp4_from(SRC4, 1002, SUB, flags::SYN)), xdp::PASS);
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 1002, SUB, flags::SYN));
    assert_eq!(p.xdp(&tcp4_from(SRC4, 1003, SUB, flags::SYN)), xdp::DROP);
    // Nothing completes for longer than the timeout: the count lapses.
    std::thread::sleep(Duration::from_millis(400));
    let ps = p.peer(key).unwrap();
    assert_eq!(ps.half_open, 2, "lazily: the stored count is still there");
    assert_eq!(
        ps.half_open_at(ktime_now_ns(), 300 * MS),
        0,
        "but no longer in effect"
    );
    assert_eq!(p.xdp(&tcp4_from(SRC4, 1003, SUB, flags::SYN)), xdp::PASS);
    // The next SYN resets the count and starts a new epoch ...
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 1003, SUB, flags::SYN));
    let ps = p.peer(key).unwrap();
    assert_eq!((ps.half_open, ps.epoch), (1, 1));
    // ... so the late ACK of a lapsed handshake completes it without taking the new one off the count.
    p.tc(TC_INGRESS, &tcp4_from(SRC4, 1001, SUB, flags::ACK));
    let ps = p.peer(key).unwrap();
    assert_eq!((ps.half_open, ps.established), (1, 2));
}

#[test]
fn connection_limit_refuses_the_next_connection_per_source() {
    let Some(mut p) = load("connection_limit_refuses_the_next_connection_per_source") else {
        return;
    };
    p.set_params(&ShieldParams {
        max_established: 2,
        half_open_timeout_ns: 3 * NS_PER_SEC,
        ..Default::default()
    });
    let key = k4(SRC4);
    handshake(&p, SRC4, 2000);
    handshake(&p, SRC4, 2001);
    assert_eq!(p.peer(key).unwrap().established, 2);
    assert_eq!(p.xdp(&tcp4_from(SRC4, 2002, SUB, flags::SYN)), xdp::DROP);
    assert_eq!(drops(&p, key, DropReason::ConnLimit), 1);
    assert_eq!(p.global(Counter::DropConnLimit), 1);
    // Another source still connects.
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 0, 3], 1, SUB, flags::SYN)),
        xdp::PASS
    );
    // One connection closes (client FIN): the next one is admitted.
    p.tc(
        TC_INGRESS,
        &tcp4_from(SRC4, 2000, SUB, flags::FIN | flags::ACK),
    );
    assert_eq!(p.peer(key).unwrap().established, 1);
    assert_eq!(p.xdp(&tcp4_from(SRC4, 2002, SUB, flags::SYN)), xdp::PASS);
    // Herz aborting one (RST out) counts too.
    handshake(&p, SRC4, 2002);
    assert_eq!(p.xdp(&tcp4_from(SRC4, 2003, SUB, flags::SYN)), xdp::DROP);
    p.tc(TC_EGRESS, &tcp4_to(SRC4, 2001, SUB, flags::RST));
    assert_eq!(p.xdp(&tcp4_from(SRC4, 2003, SUB, flags::SYN)), xdp::PASS);
}

#[test]
fn global_syn_guard_drops_new_sources_but_not_connected_ones() {
    let Some(mut p) = load("global_syn_guard_drops_new_sources_but_not_connected_ones") else {
        return;
    };
    p.set_params(&ShieldParams {
        global_syn_rate: 1,
        global_syn_burst: 3,
        // Even with auto-blocking on, the guard's drops never block a source: it may be innocent.
        autoblock_after: 1,
        autoblock_window_ns: 10 * NS_PER_SEC,
        autoblock_ttl_ns: 60 * NS_PER_SEC,
        half_open_timeout_ns: 3 * NS_PER_SEC,
        ..Default::default()
    });
    let known = [198, 18, 0, 50];
    handshake(&p, known, 3000);
    let verdicts: Vec<u32> = (1..=8u8)
        .map(|i| p.xdp(&tcp4_from([198, 19, 1, i], 4000, SUB, flags::SYN)))
        .collect();
    assert_eq!(&verdicts[..3], &[xdp::PASS; 3], "the burst");
    assert_eq!(
        &verdicts[3..],
        &[xdp::DROP; 5],
        "then random sources are dropped"
    );
    assert_eq!(p.global(Counter::DropGlobalSyn), 5);
    // Refused before they were ever tracked: counted globally, no per-source entry (a random-source
    // flood must not insert one per frame and evict real sources' counters).
    assert!(p.source(k4([198, 19, 1, 8])).is_none());
    assert!(
        p.source(k4([198, 19, 1, 3])).is_some(),
        "a source that passed"
    );
    // A tracked source refused by the guard is counted per source as well.
    assert_eq!(
        p.xdp(&tcp4_from([198, 19, 1, 3], 4001, SUB, flags::SYN)),
        xdp::DROP
    );
    assert_eq!(drops(&p, k4([198, 19, 1, 3]), DropReason::GlobalSyn), 1);
    // A source with a live connection still gets through the exhausted guard.
    assert_eq!(p.xdp(&tcp4_from(known, 3001, SUB, flags::SYN)), xdp::PASS);
    assert!(p.blocked().is_empty(), "{:?}", p.blocked());
    assert_eq!(p.global(Counter::AutoBlocks), 0);
}

#[test]
fn with_per_source_limits_on_the_exhausted_guard_still_refuses_only_new_unconnected_sources() {
    let Some(mut p) = load(
        "with_per_source_limits_on_the_exhausted_guard_still_refuses_only_new_unconnected_sources",
    ) else {
        return;
    };
    // Per-source limits on: a never-seen source is refused by the exhausted guard before the
    // handshake tables are consulted (the random-source flood path); the verdicts must not change.
    p.set_params(&ShieldParams {
        syn_rate: 100,
        syn_burst: 10,
        max_half_open: 64,
        max_established: 64,
        half_open_timeout_ns: 3 * NS_PER_SEC,
        global_syn_rate: 1,
        global_syn_burst: 3,
        ..Default::default()
    });
    let known = [198, 18, 0, 51];
    handshake(&p, known, 3100);
    let verdicts: Vec<u32> = (1..=8u8)
        .map(|i| p.xdp(&tcp4_from([198, 19, 2, i], 4100, SUB, flags::SYN)))
        .collect();
    assert_eq!(&verdicts[..3], &[xdp::PASS; 3], "the guard's burst");
    assert_eq!(
        &verdicts[3..],
        &[xdp::DROP; 5],
        "then new sources are refused"
    );
    assert_eq!(p.global(Counter::DropGlobalSyn), 5);
    assert!(
        p.source(k4([198, 19, 2, 8])).is_none(),
        "no state for refused newcomers"
    );
    // A source that passed has a bucket: its next SYN takes the full path and is refused by the guard
    // too (no connection), counted per source.
    assert_eq!(
        p.xdp(&tcp4_from([198, 19, 2, 1], 4101, SUB, flags::SYN)),
        xdp::DROP
    );
    assert_eq!(drops(&p, k4([198, 19, 2, 1]), DropReason::GlobalSyn), 1);
    // A connected source still gets through.
    assert_eq!(p.xdp(&tcp4_from(known, 3101, SUB, flags::SYN)), xdp::PASS);
}

#[test]
fn trusted_sources_skip_the_flood_rules_but_not_the_blocklist() {
    let Some(mut p) = load("trusted_sources_skip_the_flood_rules_but_not_the_blocklist") else {
        return;
    };
    p.set_params(&ShieldParams {
        syn_rate: 1,
        syn_burst: 1,
        max_half_open: 1,
        max_established: 1,
        half_open_timeout_ns: 3 * NS_PER_SEC,
        global_syn_rate: 1,
        global_syn_burst: 1,
        autoblock_after: 2,
        autoblock_window_ns: 10 * NS_PER_SEC,
        autoblock_ttl_ns: 60 * NS_PER_SEC,
        udp_rate: 1,
        udp_burst: 1,
        ..Default::default()
    });
    let key = k4(SRC4);
    p.set_trusted(key, true);
    handshake(&p, SRC4, 1);
    for i in 0..20 {
        p.tc(TC_INGRESS, &tcp4_from(SRC4, 100 + i, SUB, flags::SYN));
        assert_eq!(p.xdp(&tcp4_from(SRC4, 200 + i, SUB, flags::SYN)), xdp::PASS);
        assert_eq!(p.xdp(&udp4_from(SRC4, FEED, 8)), xdp::PASS);
    }
    assert_eq!(p.source(key).unwrap().drops_total(), 0);
    assert!(p.blocked().is_empty());
    assert_eq!(p.global(Counter::TrustedPass), 40);
    // Trust ends: the rules apply again.
    p.set_trusted(key, false);
    assert_eq!(p.xdp(&tcp4_from(SRC4, 300, SUB, flags::SYN)), xdp::DROP);
    // The blocklist outranks trust.
    p.set_trusted(key, true);
    p.block("198.18.0.2", 0, Origin::MANUAL);
    assert_eq!(p.xdp(&tcp4_from(SRC4, 301, SUB, flags::SYN)), xdp::DROP);
    assert_eq!(drops(&p, key, DropReason::Blocked), 1);
}

#[test]
fn repeat_offenders_are_auto_blocked_with_one_event_per_state_change() {
    let Some(mut p) = load("repeat_offenders_are_auto_blocked_with_one_event_per_state_change")
    else {
        return;
    };
    p.set_params(&ShieldParams {
        syn_rate: 1,
        syn_burst: 1,
        autoblock_after: 3,
        autoblock_window_ns: 10 * NS_PER_SEC,
        autoblock_ttl_ns: 60 * NS_PER_SEC,
        ..Default::default()
    });
    let before = ktime_now_ns();
    let verdicts: Vec<u32> = (0..50)
        .map(|i| p.xdp(&tcp4_from(SRC4, 1000 + i, SUB, flags::SYN)))
        .collect();
    assert_eq!(verdicts[0], xdp::PASS);
    assert!(verdicts[1..].iter().all(|v| *v == xdp::DROP));
    let key = k4(SRC4);
    assert_eq!(drops(&p, key, DropReason::SynRate), 3, "until the block");
    assert_eq!(
        drops(&p, key, DropReason::AutoBlocked),
        46,
        "then by the block"
    );
    assert_eq!(p.global(Counter::AutoBlocks), 1);
    let blocked = p.blocked();
    assert_eq!(blocked.len(), 1);
    let (cidr, entry) = blocked[0];
    assert_eq!(cidr, "198.18.0.2/32".parse::<Cidr>().unwrap());
    assert_eq!(entry.origin, Origin::AUTO);
    assert_eq!(entry.reason, DropReason::SynRate as u32);
    let ttl = entry.expires_ns - entry.created_ns;
    assert_eq!(ttl, 60 * NS_PER_SEC);
    assert!(entry.created_ns >= before);
    // Events only on state changes: the first drop of the window, and the block. Not per packet.
    let events = p.events();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].kind, EventKind::Threshold as u32);
    assert_eq!(events[0].reason, DropReason::SynRate as u32);
    assert_eq!(events[0].addr, key.addr);
    assert_eq!(events[0].value, 1);
    assert_eq!(events[1].kind, EventKind::AutoBlocked as u32);
    assert_eq!(events[1].value, entry.expires_ns);
    // Other sources are unaffected.
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 0, 3], 1, SUB, flags::SYN)),
        xdp::PASS
    );
    // When the block expires, the source is back to the ordinary rules.
    p.block("198.18.0.2", ktime_now_ns() - 1, Origin::AUTO);
    p.set_params(&ShieldParams::default());
    assert_eq!(p.xdp(&tcp4_from(SRC4, 2000, SUB, flags::SYN)), xdp::PASS);
    assert!(p.events().is_empty());
}

#[test]
fn udp_feed_sources_and_rate() {
    let Some(mut p) = load("udp_feed_sources_and_rate") else {
        return;
    };
    p.add_port(IPPROTO_UDP, REREQ, PortRole::REREQUEST);
    let stranger = [198, 18, 5, 5];
    p.feed_source("198.18.0.0/30");
    // The list is only enforced with the flag (an empty config list means any source).
    assert_eq!(p.xdp(&udp4_from(stranger, FEED, 8)), xdp::PASS);
    p.set_params(&ShieldParams {
        flags: ShieldParams::FLAG_FEED_SOURCES,
        ..Default::default()
    });
    assert_eq!(p.xdp(&udp4_from(SRC4, FEED, 8)), xdp::PASS);
    assert_eq!(p.xdp(&udp4_from(stranger, FEED, 8)), xdp::DROP);
    assert_eq!(drops(&p, k4(stranger), DropReason::FeedSource), 1);
    assert_eq!(p.global(Counter::DropFeedSource), 1);
    // The re-request port is open to anyone (subscribers ask there), and so are non-Herz ports.
    assert_eq!(p.xdp(&udp4_from(stranger, REREQ, 8)), xdp::PASS);
    assert_eq!(p.xdp(&udp4_from(stranger, 5353, 8)), xdp::PASS);
    // Per-source UDP rate, on every policed UDP port.
    p.set_params(&ShieldParams {
        flags: ShieldParams::FLAG_FEED_SOURCES,
        udp_rate: 1,
        udp_burst: 2,
        ..Default::default()
    });
    let v: Vec<u32> = (0..4).map(|_| p.xdp(&udp4_from(SRC4, FEED, 8))).collect();
    assert_eq!(v, [xdp::PASS, xdp::PASS, xdp::DROP, xdp::DROP]);
    assert_eq!(drops(&p, k4(SRC4), DropReason::UdpRate), 2);
    assert_eq!(
        p.xdp(&udp4_from([198, 18, 0, 1], FEED, 8)),
        xdp::PASS,
        "per source"
    );
}

#[test]
fn other_ports_are_never_policed() {
    let Some(mut p) = load("other_ports_are_never_policed") else {
        return;
    };
    p.block("0.0.0.0/0", 0, Origin::MANUAL);
    p.block("::/0", 0, Origin::MANUAL);
    p.set_params(&ShieldParams {
        syn_rate: 1,
        syn_burst: 1,
        udp_rate: 1,
        udp_burst: 1,
        flags: ShieldParams::FLAG_FEED_SOURCES,
        ..Default::default()
    });
    for i in 0..5 {
        assert_eq!(
            p.xdp(&tcp4_from(SRC4, 100 + i, 22, flags::SYN)),
            xdp::PASS,
            "SSH"
        );
        assert_eq!(p.xdp(&udp4_from(SRC4, 53, 8)), xdp::PASS);
        assert_eq!(
            p.xdp(&frames::udp4(SUB, 8)),
            xdp::PASS,
            "UDP to a TCP-only Herz port"
        );
        assert_eq!(
            p.xdp(&tcp4_from(SRC4, 1, FEED, flags::SYN)),
            xdp::PASS,
            "TCP to a UDP-only port"
        );
        assert_eq!(p.xdp(&tcp6_from(SRC6, 1, 22, flags::SYN)), xdp::PASS);
    }
    let mut icmp = eth(ETH_IP, &[]);
    icmp.extend(ipv4(SRC4, DST4, 1, &[], &[8, 0, 0, 0, 0, 0, 0, 0]));
    assert_eq!(p.xdp(&icmp), xdp::PASS);
    let mut arp = eth(0x0806, &[]);
    arp.extend([0u8; 28]);
    assert_eq!(p.xdp(&arp), xdp::PASS);
    assert_eq!(p.source_count(), 0);
    // But Herz's ports are.
    assert_eq!(p.xdp(&frames::tcp4(SUB, flags::SYN)), xdp::DROP);
    assert_eq!(p.xdp(&frames::tcp6(SUB, flags::SYN)), xdp::DROP);
}

#[test]
fn policy_applies_through_vlan_tags_options_and_extension_headers() {
    let Some(mut p) = load("policy_applies_through_vlan_tags_options_and_extension_headers") else {
        return;
    };
    p.block("198.18.0.2", 0, Origin::MANUAL);
    p.block("2001:db8::2", 0, Origin::MANUAL);
    let syn = tcp(40000, SUB, flags::SYN);
    let mut frames_dropped = Vec::new();
    for (vlans, opts) in [(&[100u16][..], &[][..]), (&[100, 200][..], &[1u8; 40][..])] {
        let mut f = eth(ETH_IP, vlans);
        f.extend(ipv4(SRC4, DST4, 6, opts, &syn));
        frames_dropped.push(f);
    }
    let hop_by_hop = (0u8, vec![0, 0, 1, 4, 0, 0, 0, 0]);
    let dest_opts = (60u8, vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let first_fragment = (44u8, vec![0, 0, 0, 1, 0, 0, 0, 7]);
    let mut f = eth(ETH_IPV6, &[200]);
    f.extend(ipv6(
        SRC6,
        frames::DST6,
        6,
        &[hop_by_hop, dest_opts, first_fragment],
        &syn,
    ));
    frames_dropped.push(f);
    for f in &frames_dropped {
        assert_eq!(p.xdp(f), xdp::DROP, "{f:02x?}");
    }
    assert_eq!(p.global(Counter::DropBlocked), 3);
    // A later fragment carries no transport header: it cannot be matched to a port, so it passes
    // (the kernel drops it when the first fragment is missing).
    let later_fragment = (44u8, vec![0, 0, 0x05, 0x01, 0, 0, 0, 7]);
    let mut f = eth(ETH_IPV6, &[]);
    f.extend(ipv6(SRC6, frames::DST6, 6, &[later_fragment], &syn));
    assert_eq!(p.xdp(&f), xdp::PASS);
    assert_eq!(p.global(Counter::Fragments), 1);
}

#[test]
fn malformed_frames_pass_even_from_blocked_sources() {
    let Some(mut p) = load("malformed_frames_pass_even_from_blocked_sources") else {
        return;
    };
    p.block("0.0.0.0/0", 0, Origin::MANUAL);
    p.block("::/0", 0, Origin::MANUAL);
    let good = frames::tcp4(SUB, flags::SYN);
    let mut bad: Vec<Vec<u8>> = (14..14 + 20 + 20).map(|len| good[..len].to_vec()).collect();
    for first in [0x44u8, 0x45 | 0x10, 0x65] {
        let mut f = good.clone();
        f[14] = first; // bogus IHL, wrong version
        bad.push(f);
    }
    let mut f = good.clone();
    f[14] = 0x4f; // IHL past the end of the frame
    bad.push(f);
    let v6 = frames::tcp6(SUB, flags::SYN);
    bad.push(v6[..14 + 40 + 10].to_vec());
    let mut f = eth(ETH_IPV6, &[]);
    f.extend(ipv6(
        SRC6,
        frames::DST6,
        6,
        &[(0u8, vec![0, 4, 0, 0, 0, 0, 0, 0])],
        &tcp(40000, SUB, flags::SYN),
    ));
    bad.push(f); // extension header longer than the frame
    for f in &bad {
        assert_eq!(p.xdp(f), xdp::PASS, "{f:02x?}");
    }
    assert_eq!(p.global(Counter::Malformed), bad.len() as u64);
    assert_eq!(p.global(Counter::DropBlocked), 0);
    assert_eq!(p.xdp(&good), xdp::DROP);
}

/// A pin directory on bpffs, removed with its pins on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> PinDir {
        let dir = PathBuf::from(format!("/sys/fs/bpf/herz-test-pol-{}", unique_id()));
        herz_user::shield::ensure_mounted(&dir).expect("bpffs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        PinDir(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn shield_handle_trusts_and_untrusts_through_the_pinned_map() {
    let Some(mut p) = load("shield_handle_trusts_and_untrusts_through_the_pinned_map") else {
        return;
    };
    let dir = PinDir::new();
    p.pin(maps::TRUSTED, &dir.0);
    p.set_params(&ShieldParams {
        syn_rate: 1,
        syn_burst: 1,
        ..Default::default()
    });
    let mut h = ShieldHandle::open(&dir.0).unwrap();
    let ip: std::net::IpAddr = "198.18.0.2".parse().unwrap();
    let syn = |p: &Programs, port| p.xdp(&tcp4_from(SRC4, port, SUB, flags::SYN));
    assert_eq!(syn(&p, 1), xdp::PASS);
    assert_eq!(syn(&p, 2), xdp::DROP);
    // Two sessions from the address (one of them seen as IPv4-mapped by a dual-stack listener).
    h.trust(ip).unwrap();
    h.trust("::ffff:198.18.0.2".parse().unwrap()).unwrap();
    assert_eq!(h.sessions(ip), 2);
    assert_eq!(pinned::read_trusted(&dir.0).unwrap(), vec![ip]);
    for port in 3..20 {
        assert_eq!(syn(&p, port), xdp::PASS);
    }
    // One logs out: still trusted. The other: no longer.
    h.untrust(ip).unwrap();
    assert_eq!(syn(&p, 20), xdp::PASS);
    h.untrust(ip).unwrap();
    assert_eq!(syn(&p, 21), xdp::DROP);
    assert!(pinned::read_trusted(&dir.0).unwrap().is_empty());
    // Logging out an address never trusted is harmless.
    h.untrust("198.18.0.77".parse().unwrap()).unwrap();
}

#[test]
fn pinned_lists_and_live_config_take_effect_on_the_next_packet() {
    let Some(p) = load("pinned_lists_and_live_config_take_effect_on_the_next_packet") else {
        return;
    };
    let dir = PinDir::new();
    for name in [
        maps::CONFIG,
        maps::PORTS,
        maps::ALLOW,
        maps::BLOCK,
        maps::FEED_SOURCES,
    ] {
        p.pin(name, &dir.0);
    }
    let syn = |port| p.xdp(&tcp4_from(SRC4, port, SUB, flags::SYN));
    // `herz block` with a TTL, `herz unblock`.
    let row = pinned::block(
        &dir.0,
        "198.18.0.0/24".parse().unwrap(),
        Some(Duration::from_millis(300)),
    )
    .unwrap();
    assert_eq!(row.origin, "manual");
    assert_eq!(syn(1), xdp::DROP);
    let listed = pinned::read_blocked(&dir.0).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].expires_in_ms.unwrap() <= 300 && !listed[0].expired);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(syn(2), xdp::PASS, "the TTL expired");
    assert!(pinned::read_blocked(&dir.0).unwrap()[0].expired);
    assert!(pinned::unblock(&dir.0, "198.18.0.0/24".parse().unwrap()).unwrap());
    assert!(!pinned::unblock(&dir.0, "198.18.0.0/24".parse().unwrap()).unwrap());
    pinned::block(&dir.0, "198.18.0.2".parse().unwrap(), None).unwrap();
    assert_eq!(syn(3), xdp::DROP);
    assert!(
        !pinned::unblock(&dir.0, "198.18.0.0/16".parse().unwrap()).unwrap(),
        "exact match only"
    );
    assert!(pinned::unblock(&dir.0, "198.18.0.2".parse().unwrap()).unwrap());
    assert_eq!(syn(4), xdp::PASS);
    // The config's [shield] section, applied live: thresholds, lists and ports.
    let config = herz_user::config::Config::from_toml(
        &format!(
            "[shield]\nsyn_rate = 1\nsyn_burst = 2\nblock = [\"198.18.7.0/24\"]\nallow = [\"198.18.9.9\"]\n\
             feed_sources = [\"198.18.0.0/30\"]\nextra_udp_ports = [{FEED}]\n\
             [subscribers]\nlisten = \"127.0.0.1:{SUB}\"\n"
        ),
        "test",
    )
    .unwrap();
    apply::apply_config(&dir.0, &config).unwrap();
    let params = pinned::read_params(&dir.0).unwrap();
    assert_eq!((params.syn_rate, params.syn_burst), (1, 2));
    assert_eq!(params.flags, ShieldParams::FLAG_FEED_SOURCES);
    let fresh = [198, 18, 0, 3];
    let v: Vec<u32> = (0..3)
        .map(|i| p.xdp(&tcp4_from(fresh, i, SUB, flags::SYN)))
        .collect();
    assert_eq!(v, [xdp::PASS, xdp::PASS, xdp::DROP]);
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 7, 1], 1, SUB, flags::SYN)),
        xdp::DROP
    );
    for _ in 0..5 {
        assert_eq!(
            p.xdp(&tcp4_from([198, 18, 9, 9], 1, SUB, flags::SYN)),
            xdp::PASS
        );
    }
    assert_eq!(p.xdp(&udp4_from([198, 18, 5, 5], FEED, 8)), xdp::DROP);
    // A manual block survives a reload; a config entry the new config drops is removed.
    pinned::block(&dir.0, "198.18.8.0/24".parse().unwrap(), None).unwrap();
    let mut config2 = config.clone();
    config2.shield.block.clear();
    config2.shield.feed_sources.clear();
    let applied = apply::apply_config(&dir.0, &config2).unwrap();
    assert_eq!(applied.removed, 2, "{applied:?}");
    let listed: Vec<String> = pinned::read_blocked(&dir.0)
        .unwrap()
        .iter()
        .map(|r| r.cidr.to_string())
        .collect();
    assert_eq!(listed, ["198.18.8.0/24"]);
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 7, 1], 2, SUB, flags::SYN)),
        xdp::PASS
    );
    assert_eq!(p.xdp(&udp4_from([198, 18, 5, 5], FEED, 8)), xdp::PASS);
    // `herz allow` / `herz disallow`.
    pinned::allow(&dir.0, "198.18.8.7".parse().unwrap()).unwrap();
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 8, 7], 1, SUB, flags::SYN)),
        xdp::PASS
    );
    assert!(pinned::disallow(&dir.0, "198.18.8.7".parse().unwrap()).unwrap());
    assert_eq!(
        p.xdp(&tcp4_from([198, 18, 8, 7], 2, SUB, flags::SYN)),
        xdp::DROP
    );
}

#[test]
fn a_synthetic_rst_closes_a_flow_in_either_family() {
    let Some(p) = load("a_synthetic_rst_closes_a_flow_in_either_family") else {
        return;
    };
    // What the daemon runs through the tc program for a connection that vanished without FIN or RST.
    handshake(&p, SRC4, 7000);
    let mut synack = eth(ETH_IPV6, &[]);
    synack.extend(ipv6(
        frames::DST6,
        SRC6,
        6,
        &[],
        &tcp(SUB, 7001, flags::SYN | flags::ACK),
    ));
    p.tc(TC_INGRESS, &tcp6_from(SRC6, 7001, SUB, flags::SYN));
    p.tc(TC_EGRESS, &synack);
    p.tc(TC_INGRESS, &tcp6_from(SRC6, 7001, SUB, flags::ACK));
    let (_, est) = p.flows();
    assert_eq!(est.len(), 2);
    for (flow, _) in est {
        p.tc(TC_INGRESS, &herz_user::shield::events::rst_frame(&flow));
    }
    assert_eq!(p.flows(), (vec![], vec![]));
    assert_eq!(p.peer(k4(SRC4)).unwrap().established, 0);
    assert_eq!(p.peer(SourceKey { addr: SRC6 }).unwrap().established, 0);
}
