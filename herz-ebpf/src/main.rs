//! Herz's kernel programs.
//!
//! - `herz_xdp` (XDP, ingress): counts traffic to Herz's ports per source and globally. Traffic to any
//!   other port is passed untouched and only counted in the global `other_ports` slot.
//! - `herz_tc_ingress` / `herz_tc_egress` (tc clsact): observe the TCP handshakes on Herz's ports
//!   (SYN in, SYN-ACK out, ACK in, FIN/RST in).
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map, xdp},
    maps::{HashMap, LruPerCpuHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use herz_common::{
    COUNTERS, Counter, IPPROTO_TCP, IPPROTO_UDP, MAX_PORTS, MAX_SOURCES, PortKey, SourceKey, SourceStats,
};
use parse::{Outcome, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

#[map(name = "HERZ_GLOBAL")]
static GLOBAL: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

#[map(name = "HERZ_SOURCES")]
static SOURCES: LruPerCpuHashMap<SourceKey, SourceStats> = LruPerCpuHashMap::with_max_entries(MAX_SOURCES, 0);

#[map(name = "HERZ_PORTS")]
static PORTS: HashMap<PortKey, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

#[inline(always)]
fn count(c: Counter, n: u64) {
    if let Some(slot) = GLOBAL.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot; nothing else on this CPU runs concurrently with this program.
        unsafe { *slot += n };
    }
}

#[inline(always)]
fn herz_port(proto: u8, port: u16) -> bool {
    // SAFETY: read-only lookup of a plain value.
    unsafe { PORTS.get(&PortKey::new(proto, port)) }.is_some()
}

#[inline(always)]
fn count_source(pkt: &Packet, bytes: u64) {
    // SAFETY: [u64; 2] and [u8; 16] have the same size; every bit pattern is valid.
    let key = SourceKey { addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(pkt.src) } };
    let now = unsafe { bpf_ktime_get_ns() };
    let stats = match SOURCES.get_ptr_mut(&key) {
        Some(s) => s,
        None => {
            let _ = SOURCES.insert(&key, &SourceStats::default(), 0);
            match SOURCES.get_ptr_mut(&key) {
                Some(s) => s,
                None => return,
            }
        }
    };
    // SAFETY: per-CPU value; only this CPU writes it while the program runs.
    let s = unsafe { &mut *stats };
    s.packets += 1;
    s.bytes += bytes;
    s.last_seen_ns = now;
    if pkt.proto == IPPROTO_TCP {
        if pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            s.tcp_syn += 1;
        }
    } else {
        s.udp += 1;
    }
}

#[xdp]
pub fn herz_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    count(Counter::XdpFrames, 1);
    match parse::parse(start, end) {
        Outcome::Parsed(pkt) => {
            if !herz_port(pkt.proto, pkt.dport) {
                count(Counter::OtherPorts, 1);
                return xdp_action::XDP_PASS;
            }
            let bytes = (end - start) as u64;
            count(Counter::HerzPackets, 1);
            count(Counter::HerzBytes, bytes);
            if pkt.proto == IPPROTO_TCP {
                if pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
                    count(Counter::HerzTcpSyn, 1);
                }
            } else if pkt.proto == IPPROTO_UDP {
                count(Counter::HerzUdp, 1);
            }
            count_source(&pkt, bytes);
        }
        Outcome::NotIp => count(Counter::NotIp, 1),
        Outcome::OtherProto => count(Counter::OtherPorts, 1),
        Outcome::Fragment => count(Counter::Fragments, 1),
        Outcome::Malformed => count(Counter::Malformed, 1),
    }
    xdp_action::XDP_PASS
}

#[classifier]
pub fn herz_tc_ingress(ctx: TcContext) -> i32 {
    if let Outcome::Parsed(pkt) = parse::parse(ctx.data(), ctx.data_end()) {
        if pkt.proto == IPPROTO_TCP && herz_port(IPPROTO_TCP, pkt.dport) {
            let f = pkt.tcp_flags;
            if f & TCP_RST != 0 {
                count(Counter::RstIn, 1);
            } else if f & TCP_FIN != 0 {
                count(Counter::FinIn, 1);
            } else if f & (TCP_SYN | TCP_ACK) == TCP_SYN {
                count(Counter::HandshakeSynIn, 1);
            } else if f & (TCP_SYN | TCP_ACK) == TCP_ACK {
                count(Counter::HandshakeAckIn, 1);
            }
        }
    }
    TC_ACT_OK
}

#[classifier]
pub fn herz_tc_egress(ctx: TcContext) -> i32 {
    if let Outcome::Parsed(pkt) = parse::parse(ctx.data(), ctx.data_end()) {
        if pkt.proto == IPPROTO_TCP
            && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK)
            && herz_port(IPPROTO_TCP, pkt.sport)
        {
            count(Counter::HandshakeSynAckOut, 1);
        }
    }
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
