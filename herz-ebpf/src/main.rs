//! Herz's kernel programs.
//!
//! - `herz_xdp` (XDP, ingress): counts and polices traffic to Herz's ports. In order: allowlist → pass;
//!   blocklist → drop; TCP SYN → per-source token bucket, half-open and established limits, global SYN
//!   guard; UDP → feed-source allowlist and per-source token bucket. Repeat offenders are auto-blocked.
//!   Traffic to any other port is passed untouched and only counted in the global `other_ports` slot.
//! - `herz_tc_ingress` / `herz_tc_egress` (tc clsact): follow the TCP handshakes on Herz's ports (SYN in,
//!   SYN-ACK out, ACK in, FIN/RST either way) to keep per-source half-open and established counts, which
//!   the XDP program enforces. Kernel request sockets are invisible to sock_ops, hence the wire.
//!
//! Nothing here logs per packet: drops are counters, and only state changes (a threshold first crossed
//! in a window, an auto-block) become events in the ring buffer.
#![no_std]
#![no_main]
// The BPF target has no atomic read-modify-write types (only loads and stores); the intrinsic compiles
// to the XADD instruction the kernel has always had.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod diag;
mod parse;

use aya_ebpf::{
    bindings::{BPF_NOEXIST, TC_ACT_OK, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map, xdp},
    maps::{
        Array, HashMap, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf, lpm_trie::Key,
    },
    programs::{TcContext, XdpContext},
};
use herz_common::{
    BlockEntry, COUNTERS, Counter, DropReason, EVENTS_BYTES, EventKind, FlowState, IPPROTO_TCP,
    IPPROTO_UDP, MAX_BURST, MAX_CIDRS, MAX_ESTABLISHED, MAX_HALF_OPEN, MAX_PORTS, MAX_RATE,
    MAX_SOURCES, MAX_TRUSTED, NS_PER_SEC, Origin, PeerState, PortKey, PortRole, RateState,
    ShieldEvent, ShieldParams, SourceKey, SourceStats, TokenBucket,
};

use self::{
    diag::{LogSite, diag, may_log},
    parse::{Outcome, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};

/// LPM trie key as the kernel reads it (`struct bpf_lpm_trie_key`): same bytes as
/// `herz_common::LpmKey`, but with the address as 4-byte words so that building it on the stack takes
/// four aligned stores (the verifier rejects misaligned stack access, and aya's packed `Key` would make
/// the compiler write it byte by byte).
#[repr(C)]
struct Lpm {
    prefix_len: u32,
    addr: [u32; 4],
}

/// `herz_common::FlowKey` with the addresses as words (same size and byte layout).
#[repr(C)]
struct Flow {
    client: [u64; 2],
    server: [u64; 2],
    client_port: u16,
    server_port: u16,
    _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Lpm>() == core::mem::size_of::<herz_common::LpmKey>());
const _: () = assert!(core::mem::size_of::<Lpm>() == core::mem::size_of::<Key<[u32; 4]>>());
const _: () = assert!(core::mem::size_of::<Flow>() == core::mem::size_of::<herz_common::FlowKey>());

#[map(name = "HERZ_GLOBAL")]
static GLOBAL: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS, 0);

#[map(name = "HERZ_SOURCES")]
static SOURCES: LruPerCpuHashMap<SourceKey, SourceStats> =
    LruPerCpuHashMap::with_max_entries(MAX_SOURCES, 0);

#[map(name = "HERZ_PORTS")]
static PORTS: HashMap<PortKey, u32> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map(name = "HERZ_CONFIG")]
static CONFIG: Array<ShieldParams> = Array::with_max_entries(1, 0);

#[map(name = "HERZ_ALLOW")]
static ALLOW: LpmTrie<[u32; 4], u32> = LpmTrie::with_max_entries(MAX_CIDRS, 0);

#[map(name = "HERZ_BLOCK")]
static BLOCK: LpmTrie<[u32; 4], BlockEntry> = LpmTrie::with_max_entries(MAX_CIDRS, 0);

#[map(name = "HERZ_FEED_SOURCES")]
static FEED_SOURCES: LpmTrie<[u32; 4], u32> = LpmTrie::with_max_entries(MAX_CIDRS, 0);

#[map(name = "HERZ_TRUSTED")]
static TRUSTED: HashMap<SourceKey, u64> = HashMap::with_max_entries(MAX_TRUSTED, 0);

#[map(name = "HERZ_RATE")]
static RATE: LruHashMap<SourceKey, RateState> = LruHashMap::with_max_entries(MAX_SOURCES, 0);

#[map(name = "HERZ_PEERS")]
static PEERS: LruHashMap<SourceKey, PeerState> = LruHashMap::with_max_entries(MAX_SOURCES, 0);

#[map(name = "HERZ_HALF_OPEN")]
static HALF_OPEN: LruHashMap<Flow, FlowState> = LruHashMap::with_max_entries(MAX_HALF_OPEN, 0);

#[map(name = "HERZ_ESTABLISHED")]
static ESTABLISHED: HashMap<Flow, FlowState> = HashMap::with_max_entries(MAX_ESTABLISHED, 0);

#[map(name = "HERZ_GUARD")]
static GUARD: Array<TokenBucket> = Array::with_max_entries(1, 0);

#[map(name = "HERZ_EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[inline(always)]
fn count(c: Counter, n: u64) {
    if let Some(slot) = GLOBAL.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot; nothing else on this CPU runs concurrently with this program.
        unsafe { *slot += n };
    }
}

#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The port's [`PortRole`] bits if it is one of Herz's.
#[inline(always)]
fn port_role(proto: u8, port: u16) -> Option<u32> {
    // SAFETY: read-only lookup of a plain value.
    unsafe { PORTS.get(PortKey::new(proto, port)) }.copied()
}

#[inline(always)]
fn source_key(addr: &[u64; 2]) -> SourceKey {
    SourceKey {
        // SAFETY: [u64; 2] and [u8; 16] have the same size; every bit pattern is valid.
        addr: unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(*addr) },
    }
}

/// A full-length (/128) trie key for `addr`, which matches every stored prefix covering it.
#[inline(always)]
fn lpm_key(addr: &[u64; 2]) -> Lpm {
    let [a, b] = *addr;
    // Native-endian halves of native-endian words keep the bytes in memory order.
    let (a_lo, a_hi, b_lo, b_hi) = if cfg!(target_endian = "little") {
        (a as u32, (a >> 32) as u32, b as u32, (b >> 32) as u32)
    } else {
        ((a >> 32) as u32, a as u32, (b >> 32) as u32, b as u32)
    };
    Lpm {
        prefix_len: 128,
        addr: [a_lo, a_hi, b_lo, b_hi],
    }
}

#[inline(always)]
fn as_key(k: &Lpm) -> &Key<[u32; 4]> {
    // SAFETY: same size and byte layout (asserted above); the helpers only read the bytes.
    unsafe { &*(k as *const Lpm as *const Key<[u32; 4]>) }
}

/// Atomic add whose result is unused (the BPF XADD instruction): tc ingress and egress update the same
/// per-source counts from any CPU.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value, valid and 8-aligned for the program's run.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            p, v,
        )
    };
}

/// Decrements unless already zero (a lapsed or evicted count must never wrap to 4 billion).
#[inline(always)]
unsafe fn atomic_dec(p: *mut u64) {
    // SAFETY: as for `atomic_add`.
    if unsafe { core::ptr::read_volatile(p) } > 0 {
        // SAFETY: as for `atomic_add`.
        unsafe { atomic_add(p, u64::MAX) };
    }
}

/// The source's counters, created on first sight.
#[inline(always)]
fn source_stats(key: &SourceKey) -> Option<*mut SourceStats> {
    if let Some(s) = SOURCES.get_ptr_mut(key) {
        return Some(s);
    }
    let _ = SOURCES.insert(key, SourceStats::default(), 0);
    SOURCES.get_ptr_mut(key)
}

#[inline(always)]
fn rate_state(key: &SourceKey) -> Option<*mut RateState> {
    if let Some(s) = RATE.get_ptr_mut(key) {
        return Some(s);
    }
    let _ = RATE.insert(key, RateState::default(), BPF_NOEXIST as u64);
    RATE.get_ptr_mut(key)
}

#[inline(always)]
fn peer_state(key: &SourceKey) -> Option<*mut PeerState> {
    if let Some(s) = PEERS.get_ptr_mut(key) {
        return Some(s);
    }
    let _ = PEERS.insert(key, PeerState::default(), BPF_NOEXIST as u64);
    PEERS.get_ptr_mut(key)
}

/// The configured thresholds; a zeroed slot (never configured) turns every rule off.
#[inline(always)]
fn params() -> Option<&'static ShieldParams> {
    CONFIG.get(0)
}

#[inline(always)]
fn emit(kind: EventKind, reason: DropReason, addr: &[u64; 2], now: u64, value: u64) {
    let ev = ShieldEvent {
        kind: kind as u32,
        reason: reason as u32,
        addr: source_key(addr).addr,
        ts_ns: now,
        value,
    };
    if EVENTS.output::<ShieldEvent>(&ev, 0).is_err() {
        count(Counter::EventsLost, 1);
    }
}

/// Records a flood drop in the source's auto-block window: the first drop of a window sends a threshold
/// event, the `autoblock_after`-th blocks the source for `autoblock_ttl_ns`. Returns `reason` for the
/// caller to drop with.
#[inline(always)]
fn flood_drop(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &SourceKey,
    p: &ShieldParams,
    now: u64,
    reason: DropReason,
) -> DropReason {
    let Some(rs) = rate_state(key) else {
        return reason;
    };
    // SAFETY: map value; concurrent updates from other CPUs only make the window approximate.
    let rs = unsafe { &mut *rs };
    let window = if p.autoblock_window_ns == 0 {
        NS_PER_SEC
    } else {
        p.autoblock_window_ns
    };
    if now.saturating_sub(rs.window_start_ns) > window {
        rs.window_start_ns = now;
        rs.window_drops = 0;
        rs.window_flags = 0;
    }
    rs.window_drops += 1;
    if rs.window_flags & RateState::WINDOW_EVENT_SENT == 0 {
        rs.window_flags |= RateState::WINDOW_EVENT_SENT;
        emit(
            EventKind::Threshold,
            reason,
            &pkt.src,
            now,
            rs.window_drops as u64,
        );
    }
    if p.autoblock_after != 0
        && rs.window_drops as u64 >= p.autoblock_after
        && rs.window_flags & RateState::WINDOW_BLOCKED == 0
    {
        rs.window_flags |= RateState::WINDOW_BLOCKED;
        let expires = now + p.autoblock_ttl_ns;
        let entry = BlockEntry {
            expires_ns: expires,
            created_ns: now,
            origin: Origin::AUTO,
            reason: reason as u32,
        };
        let k = lpm_key(&pkt.src);
        if BLOCK.insert(as_key(&k), entry, 0).is_ok() {
            count(Counter::AutoBlocks, 1);
            emit(EventKind::AutoBlocked, reason, &pkt.src, now, expires);
        } else if may_log(LogSite::BlockTableFull, now) {
            let addr = source_key(&pkt.src).addr;
            diag!(
                warn,
                ctx,
                "blocklist full ({} entries): auto-block of {:i} not stored",
                MAX_CIDRS,
                addr
            );
        }
    }
    reason
}

#[inline(always)]
fn trusted(key: &SourceKey) -> bool {
    TRUSTED.get_ptr(key).is_some()
}

/// A configured rate and burst within the bounds the bucket arithmetic is safe for.
#[inline(always)]
fn capped(rate: u64, burst: u64) -> (u64, u64) {
    (
        if rate > MAX_RATE { MAX_RATE } else { rate },
        if burst > MAX_BURST { MAX_BURST } else { burst },
    )
}

#[inline(always)]
fn take(bucket: &mut TokenBucket, now: u64, rate: u64, burst: u64) -> bool {
    let (rate, burst) = capped(rate, burst);
    bucket.take(now, rate, burst)
}

/// Takes a token from the source's SYN bucket, or drops as a SYN-rate offender.
#[inline(always)]
fn take_syn(
    ctx: &XdpContext,
    rs: *mut RateState,
    pkt: &Packet,
    key: &SourceKey,
    p: &ShieldParams,
    now: u64,
) -> Result<(), DropReason> {
    // SAFETY: map value; races between CPUs at most admit a token more.
    if take(unsafe { &mut (*rs).syn }, now, p.syn_rate, p.syn_burst) {
        Ok(())
    } else {
        Err(flood_drop(ctx, pkt, key, p, now, DropReason::SynRate))
    }
}

/// TCP SYN rules. The order makes the cheap per-source checks first and keeps the global guard last,
/// so that SYNs a source's own limits already refuse do not use up the global budget.
#[inline(always)]
fn police_syn(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &SourceKey,
    p: &ShieldParams,
    now: u64,
) -> Result<(), DropReason> {
    if trusted(key) {
        count(Counter::TrustedPass, 1);
        return Ok(());
    }
    let (half_open, established) = match PEERS.get_ptr(key) {
        // SAFETY: map value, read only.
        Some(ps) => unsafe {
            (
                (*ps).half_open_at(now, p.half_open_timeout_ns),
                (*ps).established,
            )
        },
        None => (0, 0),
    };
    // Lookup only: a source without state gets its bucket once it has passed every rule below. Its
    // bucket would start full, so no per-source rule can refuse its first SYN, and a random-source
    // flood the global guard refuses then costs lookups instead of an LRU insert per frame (inserts
    // into a full LRU map cost microseconds, and would evict the state of real sources).
    let rs = RATE.get_ptr_mut(key);
    if p.syn_rate != 0 {
        if let Some(rs) = rs {
            take_syn(ctx, rs, pkt, key, p, now)?;
        } else if established == 0 && p.global_syn_rate != 0 {
            // Never seen (no bucket) and no connection, while the global guard has no token to
            // give: nothing below could let it through, so skip the handshake-table lookups. This is
            // the path of almost every frame of a random-source flood.
            if let Some(g) = GUARD.get_ptr(0) {
                let (rate, burst) = capped(p.global_syn_rate, p.global_syn_burst);
                // SAFETY: map value, read only.
                if !unsafe { (*g).has_token(now, rate, burst) } {
                    return Err(DropReason::GlobalSyn);
                }
            }
        }
    }
    if p.max_half_open != 0 || p.max_established != 0 {
        // A retransmitted SYN of a handshake already followed is not a new connection: the limits
        // counted it once already.
        let flow = flow_in(pkt);
        let known = HALF_OPEN.get_ptr(&flow).is_some() || ESTABLISHED.get_ptr(&flow).is_some();
        if !known {
            if p.max_half_open != 0 && half_open >= p.max_half_open {
                return Err(flood_drop(ctx, pkt, key, p, now, DropReason::HalfOpen));
            }
            if p.max_established != 0 && established >= p.max_established {
                return Err(flood_drop(ctx, pkt, key, p, now, DropReason::ConnLimit));
            }
        }
    }
    if p.global_syn_rate != 0
        && let Some(g) = GUARD.get_ptr_mut(0)
    {
        // SAFETY: map value shared by all CPUs; races at most admit a SYN more.
        let ok = take(
            unsafe { &mut *g },
            now,
            p.global_syn_rate,
            p.global_syn_burst,
        );
        // Above the guard, only sources with a live connection get through: a random-source flood
        // has none. Not an auto-block offence: the source may be an innocent newcomer.
        if !ok && established == 0 {
            return Err(DropReason::GlobalSyn);
        }
    }
    if p.syn_rate != 0
        && rs.is_none()
        && let Some(rs) = rate_state(key)
    {
        take_syn(ctx, rs, pkt, key, p, now)?;
    }
    Ok(())
}

#[inline(always)]
fn police_udp(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &SourceKey,
    role: u32,
    p: &ShieldParams,
    now: u64,
) -> Result<(), DropReason> {
    if role & PortRole::FEED != 0 && p.flags & ShieldParams::FLAG_FEED_SOURCES != 0 {
        let k = lpm_key(&pkt.src);
        if FEED_SOURCES.get(as_key(&k)).is_none() {
            return Err(DropReason::FeedSource);
        }
    }
    if p.udp_rate != 0 {
        if trusted(key) {
            count(Counter::TrustedPass, 1);
            return Ok(());
        }
        if let Some(rs) = rate_state(key) {
            // SAFETY: map value; races between CPUs at most admit a datagram more.
            if !take(unsafe { &mut (*rs).udp }, now, p.udp_rate, p.udp_burst) {
                return Err(flood_drop(ctx, pkt, key, p, now, DropReason::UdpRate));
            }
        }
    }
    Ok(())
}

/// The verdict on a packet to one of Herz's ports.
#[inline(always)]
fn police(
    ctx: &XdpContext,
    pkt: &Packet,
    key: &SourceKey,
    role: u32,
    now: u64,
) -> Result<(), DropReason> {
    let k = lpm_key(&pkt.src);
    if ALLOW.get(as_key(&k)).is_some() {
        count(Counter::Allowlisted, 1);
        return Ok(());
    }
    if let Some(b) = BLOCK.get(as_key(&k)) {
        if b.active(now) {
            return Err(if b.origin == Origin::AUTO {
                DropReason::AutoBlocked
            } else {
                DropReason::Blocked
            });
        }
        // Expired: ignored here; the daemon deletes it (the trie cannot tell us which prefix matched).
        count(Counter::BlockExpired, 1);
    }
    let Some(p) = params() else {
        // A one-slot array always has slot 0; the verifier only makes us handle its absence.
        if may_log(LogSite::NoConfig, now) {
            diag!(error, ctx, "HERZ_CONFIG has no slot 0: policing is off");
        }
        return Ok(());
    };
    if pkt.proto == IPPROTO_TCP {
        // Only connection attempts are policed; data and ACKs of accepted connections always pass.
        if pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            return police_syn(ctx, pkt, key, p, now);
        }
        Ok(())
    } else {
        police_udp(ctx, pkt, key, role, p, now)
    }
}

#[xdp]
pub fn herz_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    count(Counter::XdpFrames, 1);
    let pkt = match parse::parse(start, end) {
        Outcome::Parsed(pkt) => pkt,
        Outcome::NotIp => {
            count(Counter::NotIp, 1);
            return xdp_action::XDP_PASS;
        }
        Outcome::OtherProto => {
            count(Counter::OtherPorts, 1);
            return xdp_action::XDP_PASS;
        }
        Outcome::Fragment => {
            count(Counter::Fragments, 1);
            return xdp_action::XDP_PASS;
        }
        Outcome::Malformed => {
            count(Counter::Malformed, 1);
            return xdp_action::XDP_PASS;
        }
    };
    let Some(role) = port_role(pkt.proto, pkt.dport) else {
        count(Counter::OtherPorts, 1);
        return xdp_action::XDP_PASS;
    };
    let bytes = (end - start) as u64;
    let now = now_ns();
    count(Counter::HerzPackets, 1);
    count(Counter::HerzBytes, bytes);
    let syn = pkt.proto == IPPROTO_TCP && pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if syn {
        count(Counter::HerzTcpSyn, 1);
    } else if pkt.proto == IPPROTO_UDP {
        count(Counter::HerzUdp, 1);
    }
    let key = source_key(&pkt.src);
    let verdict = police(&ctx, &pkt, &key, role, now);
    // A source the global guard refuses before it was ever tracked gets no entry of its own (it is
    // counted globally): a random-source flood would otherwise insert one per frame, at microseconds
    // each, and evict the counters of real sources.
    let stats = match verdict {
        Err(DropReason::GlobalSyn) => SOURCES.get_ptr_mut(key),
        _ => source_stats(&key),
    };
    if let Some(s) = stats {
        // SAFETY: per-CPU value; only this CPU writes it while the program runs.
        let s = unsafe { &mut *s };
        s.packets += 1;
        s.bytes += bytes;
        s.last_seen_ns = now;
        if syn {
            s.tcp_syn += 1;
        } else if pkt.proto == IPPROTO_UDP {
            s.udp += 1;
        }
    }
    match verdict {
        Ok(()) => xdp_action::XDP_PASS,
        Err(reason) => {
            count(Counter::drop(reason), 1);
            if let Some(s) = stats {
                // SAFETY: as above.
                if let Some(d) = unsafe { (*s).drops.get_mut(reason as usize) } {
                    *d += 1;
                }
            }
            xdp_action::XDP_DROP
        }
    }
}

/// The flow of a packet to Herz (client = source).
#[inline(always)]
fn flow_in(pkt: &Packet) -> Flow {
    Flow {
        client: pkt.src,
        server: pkt.dst,
        client_port: pkt.sport,
        server_port: pkt.dport,
        _pad: 0,
    }
}

/// The flow of a packet from Herz (client = destination).
#[inline(always)]
fn flow_out(pkt: &Packet) -> Flow {
    Flow {
        client: pkt.dst,
        server: pkt.src,
        client_port: pkt.dport,
        server_port: pkt.sport,
        _pad: 0,
    }
}

#[inline(always)]
fn half_open_timeout() -> u64 {
    params().map_or(0, |p| p.half_open_timeout_ns)
}

/// SYN in: a new handshake for the source, unless this one is already followed (retransmission).
#[inline(always)]
fn open_flow(flow: &Flow, now: u64) {
    if HALF_OPEN.get_ptr(flow).is_some() || ESTABLISHED.get_ptr(flow).is_some() {
        return;
    }
    let key = source_key(&flow.client);
    let Some(ps) = peer_state(&key) else {
        return;
    };
    let timeout = half_open_timeout();
    // SAFETY: map value shared by all CPUs; counts change only through atomic adds, the lapse below is a
    // plain store (a concurrent SYN may be lost from the count: it errs towards admitting).
    unsafe {
        if (*ps).half_open != 0 && (*ps).half_open_at(now, timeout) == 0 {
            // Every handshake of this source is older than the timeout: drop them from the count in one
            // go, and bump the epoch so that their late ACKs or RSTs do not decrement it again.
            (*ps).half_open = 0;
            (*ps).epoch = (*ps).epoch.wrapping_add(1);
        }
        let st = FlowState {
            since_ns: now,
            epoch: (*ps).epoch,
            flags: 0,
        };
        if HALF_OPEN.insert(flow, st, BPF_NOEXIST as u64).is_ok() {
            atomic_add(&raw mut (*ps).half_open, 1);
            (*ps).last_syn_ns = now;
        }
    }
}

/// Final ACK in: the handshake became a connection.
#[inline(always)]
fn establish_flow(ctx: &TcContext, flow: &Flow, now: u64) {
    let Some(h) = HALF_OPEN.get_ptr(flow) else {
        return;
    };
    // SAFETY: map value, read before the removal below.
    let (epoch, flags) = unsafe { ((*h).epoch, (*h).flags) };
    // Only the CPU whose removal succeeds moves the flow, so duplicate ACKs count once.
    if HALF_OPEN.remove(flow).is_err() {
        return;
    }
    let key = source_key(&flow.client);
    let Some(ps) = peer_state(&key) else {
        return;
    };
    // SAFETY: map value shared by all CPUs, updated atomically.
    unsafe {
        if (*ps).epoch == epoch {
            atomic_dec(&raw mut (*ps).half_open);
        }
        let st = FlowState {
            since_ns: now,
            epoch,
            flags,
        };
        if ESTABLISHED.insert(flow, st, BPF_NOEXIST as u64).is_ok() {
            atomic_add(&raw mut (*ps).established, 1);
            count(Counter::ConnEstablished, 1);
        } else {
            count(Counter::ConnTableFull, 1);
            if may_log(LogSite::ConnTableFull, now) {
                let addr = key.addr;
                let port = flow.client_port;
                diag!(
                    warn,
                    ctx,
                    "established-connection table full ({} entries): connection from [{:i}]:{} not counted",
                    MAX_ESTABLISHED,
                    addr,
                    port
                );
            }
        }
    }
}

/// FIN or RST, either way: the connection (or handshake) is over.
#[inline(always)]
fn close_flow(flow: &Flow) {
    let key = source_key(&flow.client);
    if ESTABLISHED.remove(flow).is_ok() {
        count(Counter::ConnClosed, 1);
        if let Some(ps) = PEERS.get_ptr_mut(key) {
            // SAFETY: map value, updated atomically.
            unsafe { atomic_dec(&raw mut (*ps).established) };
        }
        return;
    }
    let Some(h) = HALF_OPEN.get_ptr(flow) else {
        return;
    };
    // SAFETY: map value, read before the removal below.
    let epoch = unsafe { (*h).epoch };
    if HALF_OPEN.remove(flow).is_err() {
        return;
    }
    if let Some(ps) = PEERS.get_ptr_mut(key) {
        // SAFETY: map value, updated atomically.
        unsafe {
            if (*ps).epoch == epoch {
                atomic_dec(&raw mut (*ps).half_open);
            }
        }
    }
}

#[classifier]
pub fn herz_tc_ingress(ctx: TcContext) -> i32 {
    if let Outcome::Parsed(pkt) = parse::parse(ctx.data(), ctx.data_end())
        && pkt.proto == IPPROTO_TCP
        && port_role(IPPROTO_TCP, pkt.dport).is_some()
    {
        let f = pkt.tcp_flags;
        if f & TCP_RST != 0 {
            count(Counter::RstIn, 1);
            close_flow(&flow_in(&pkt));
        } else if f & TCP_FIN != 0 {
            count(Counter::FinIn, 1);
            close_flow(&flow_in(&pkt));
        } else if f & (TCP_SYN | TCP_ACK) == TCP_SYN {
            count(Counter::HandshakeSynIn, 1);
            open_flow(&flow_in(&pkt), now_ns());
        } else if f & (TCP_SYN | TCP_ACK) == TCP_ACK {
            count(Counter::HandshakeAckIn, 1);
            establish_flow(&ctx, &flow_in(&pkt), now_ns());
        }
    }
    TC_ACT_OK
}

#[classifier]
pub fn herz_tc_egress(ctx: TcContext) -> i32 {
    if let Outcome::Parsed(pkt) = parse::parse(ctx.data(), ctx.data_end())
        && pkt.proto == IPPROTO_TCP
        && port_role(IPPROTO_TCP, pkt.sport).is_some()
    {
        let f = pkt.tcp_flags;
        if f & (TCP_RST | TCP_FIN) != 0 {
            // Herz (or its kernel: nothing listening, connection aborted) ends the connection.
            close_flow(&flow_out(&pkt));
        } else if f & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK) {
            count(Counter::HandshakeSynAckOut, 1);
            if let Some(h) = HALF_OPEN.get_ptr_mut(flow_out(&pkt)) {
                // SAFETY: map value; a flag only this event sets.
                unsafe { (*h).flags |= FlowState::FLOW_SYNACK };
            }
        }
    }
    TC_ACT_OK
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The license the kernel checks before it lets a program call GPL-only helpers and kfuncs (aya-log's
/// and the shield's helpers among them): it must be a GPL-compatible string. Herz is licensed
/// `GPL-2.0-only OR Apache-2.0` (README, "License"); the kernel knows no Apache/GPL pair, and "GPL" states the
/// GPL-2.0 option it needs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
