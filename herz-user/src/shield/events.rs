//! The shield's events: drained from the kernel's ring buffer and from the blocklist, turned into
//! rate-limited structured log lines and counters, by one small thread the [`super::Shield`] owns.
//!
//! The kernel sends an event only on a state change (a source's first flood drop in its window, an
//! auto-block), never per packet. Blocks and unblocks made by `herz block`/`herz unblock` (other
//! processes writing the pinned map) and expiries are found by the same thread, which compares the
//! blocklist with its previous view once a second and deletes expired entries (the kernel only ignores
//! them: an LPM lookup does not say which prefix matched, so it cannot delete them itself).
//!
//! Once every few seconds the thread also checks the established-connection table against the
//! kernel's socket table: a connection that vanished without a FIN or RST on the wire (a peer that
//! died, TCP_USER_TIMEOUT) would otherwise keep counting against its source's limit forever. It closes
//! such a flow by running the tc ingress program on a synthetic RST (BPF_PROG_TEST_RUN: nothing is sent
//! anywhere), so the count is corrected by the same atomic code that keeps it.
//!
//! The same thread drains the programs' diagnostic log lines ([`super::kernel_log`]).

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    os::fd::{AsRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, RingBuf};
use herz_common::{BlockEntry, DropReason, EventKind, FlowKey, FlowState, Origin, maps};
use serde::Serialize;

use crate::ratelog::RateLimitedLog;

use super::{
    Cidr, ShieldError,
    cidr::{format_duration, ktime_now_ns},
    kernel_log::KernelLog,
    pinned::{Trie, key_to_ip, open_hash, open_trie, origin_label},
};

/// A shield event, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A source's first flood drop in its auto-block window.
    Threshold {
        /// The source.
        source: IpAddr,
        /// Which rule dropped it.
        reason: &'static str,
        /// Drops in the window so far.
        drops: u64,
        /// Kernel time (CLOCK_MONOTONIC ns) of the drop, for matching with packet captures.
        kernel_ns: u64,
    },
    /// The XDP program blocked a repeat offender.
    AutoBlocked {
        /// The source.
        source: IpAddr,
        /// The rule it kept exceeding.
        reason: &'static str,
        /// How long the block lasts.
        ttl_ms: u64,
        /// Kernel time (CLOCK_MONOTONIC ns) of the block.
        kernel_ns: u64,
    },
    /// A blocklist entry appeared (`herz block`, a config reload).
    Blocked {
        /// The network.
        cidr: Cidr,
        /// `config` or `manual`.
        origin: &'static str,
        /// Milliseconds until it expires (`None`: permanent).
        ttl_ms: Option<u64>,
    },
    /// A blocklist entry went away: expired (and deleted by this thread) or removed (`herz unblock`).
    Unblocked {
        /// The network.
        cidr: Cidr,
        /// `config`, `manual` or `auto`.
        origin: &'static str,
        /// It expired (rather than being removed).
        expired: bool,
    },
    /// An established connection vanished without FIN or RST; its flow was closed.
    StaleConnection {
        /// The client.
        source: IpAddr,
        /// Client port.
        port: u16,
    },
}

/// Decodes one ring buffer record; `None` for a record this version does not know.
pub fn decode(bytes: &[u8], now_ns: u64) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<herz_common::ShieldEvent>() {
        return None;
    }
    // SAFETY: length checked; ShieldEvent is plain data, read unaligned.
    let ev: herz_common::ShieldEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let source = key_to_ip(&herz_common::SourceKey { addr: ev.addr });
    let reason = DropReason::from_u32(ev.reason).map_or("unknown", |r| r.label());
    match EventKind::from_u32(ev.kind)? {
        EventKind::Threshold => Some(Event::Threshold {
            source,
            reason,
            drops: ev.value,
            kernel_ns: ev.ts_ns,
        }),
        EventKind::AutoBlocked => Some(Event::AutoBlocked {
            source,
            reason,
            ttl_ms: ev.value.saturating_sub(now_ns.max(ev.ts_ns)) / 1_000_000,
            kernel_ns: ev.ts_ns,
        }),
    }
}

/// Counters of events seen, for logs and metrics.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Threshold events.
    pub thresholds: AtomicU64,
    /// Auto-blocks.
    pub auto_blocks: AtomicU64,
    /// Blocklist entries that appeared.
    pub blocks: AtomicU64,
    /// Blocklist entries removed.
    pub unblocks: AtomicU64,
    /// Blocklist entries that expired (deleted by the sweeper).
    pub expired: AtomicU64,
    /// Established flows closed because their socket was gone.
    pub stale_connections: AtomicU64,
    /// Log lines held back by the rate limit.
    pub lines_suppressed: AtomicU64,
}

impl EventStats {
    fn count(&self, ev: &Event) {
        let c = match ev {
            Event::Threshold { .. } => &self.thresholds,
            Event::AutoBlocked { .. } => &self.auto_blocks,
            Event::Blocked { .. } => &self.blocks,
            Event::Unblocked { expired: true, .. } => &self.expired,
            Event::Unblocked { .. } => &self.unblocks,
            Event::StaleConnection { .. } => &self.stale_connections,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn log_event(ev: &Event, suppressed: u64) {
    match ev {
        Event::Threshold {
            source,
            reason,
            drops,
            kernel_ns,
        } => tracing::warn!(
            event = "threshold", %source, reason, drops, kernel_ns, suppressed,
            "shield: source crossed a flood threshold, dropping"
        ),
        Event::AutoBlocked {
            source,
            reason,
            ttl_ms,
            kernel_ns,
        } => tracing::warn!(
            event = "auto_block", %source, reason, ttl = %format_duration(Duration::from_millis(*ttl_ms)), kernel_ns, suppressed,
            "shield: source auto-blocked"
        ),
        Event::Blocked {
            cidr,
            origin,
            ttl_ms,
        } => tracing::info!(
            event = "block", %cidr, origin,
            ttl = %ttl_ms.map_or("permanent".into(), |t| format_duration(Duration::from_millis(t))), suppressed,
            "shield: blocked"
        ),
        Event::Unblocked {
            cidr,
            origin,
            expired,
        } => tracing::info!(
            event = "unblock", %cidr, origin, expired, suppressed,
            "shield: unblocked"
        ),
        Event::StaleConnection { source, port } => tracing::info!(
            event = "stale_connection", %source, port, suppressed,
            "shield: connection vanished without FIN/RST, no longer counted"
        ),
    }
}

/// How often the blocklist is swept and compared.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often established flows are checked against the socket table.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Event log lines per second at most.
pub const LINES_PER_SEC: u32 = 20;

/// The thread that drains events and sweeps; stopped and joined on drop.
pub(crate) struct EventPump {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<EventStats>,
}

impl EventPump {
    /// Starts the thread on the ring buffer and the maps pinned at `pin_path`. `tc_ingress` (a program
    /// fd) lets it close stale connections; without it they are only logged.
    pub(crate) fn spawn(
        ring: RingBuf<MapData>,
        kernel_log: KernelLog,
        pin_path: PathBuf,
        tc_ingress: Option<OwnedFd>,
    ) -> Result<Self, ShieldError> {
        let block: Trie<BlockEntry> = open_trie(&pin_path, maps::BLOCK)?;
        let established: BpfHashMap<MapData, FlowKey, FlowState> =
            open_hash(&pin_path, maps::ESTABLISHED)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(EventStats::default());
        let mut worker = Worker {
            ring,
            kernel_log,
            block,
            established,
            tc_ingress,
            stats: stats.clone(),
            budget: RateLimitedLog::new(LINES_PER_SEC),
            blocks_seen: BTreeMap::new(),
            suspects: HashSet::new(),
        };
        // Entries present at start (the config's) are the baseline, not news.
        worker.blocks_seen = worker.snapshot_blocks().unwrap_or_default();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("herz-shield".into())
            .spawn(move || worker.run(&stop2))
            .map_err(ShieldError::Thread)?;
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    pub(crate) fn stats(&self) -> Arc<EventStats> {
        self.stats.clone()
    }
}

impl Drop for EventPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    ring: RingBuf<MapData>,
    kernel_log: KernelLog,
    block: Trie<BlockEntry>,
    established: BpfHashMap<MapData, FlowKey, FlowState>,
    tc_ingress: Option<OwnedFd>,
    stats: Arc<EventStats>,
    budget: RateLimitedLog,
    /// The blocklist as last seen: network → (origin, created_ns).
    blocks_seen: BTreeMap<Cidr, (u32, u64)>,
    /// Established flows without a socket at the last check (closed if still so at the next).
    suspects: HashSet<FlowKey>,
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        let mut last_sweep = Instant::now();
        let mut last_reconcile = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let readable = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let mut pfds = [
                readable(self.ring.as_raw_fd()),
                readable(self.kernel_log.fd()),
            ];
            // SAFETY: two pollfds we own; a short timeout keeps stop and the sweeps responsive.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
            self.drain();
            if pfds[1].revents != 0 {
                self.kernel_log.drain();
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                if let Err(e) = self.sweep_blocks() {
                    tracing::debug!(error = %e, "shield: blocklist sweep failed");
                }
            }
            if now.duration_since(last_reconcile) >= RECONCILE_EVERY {
                last_reconcile = now;
                if let Err(e) = self.reconcile_established() {
                    tracing::debug!(error = %e, "shield: established-flow check failed");
                }
            }
            if let Some(n) = self.budget.overdue(ktime_now_ns()) {
                tracing::warn!(
                    suppressed = n,
                    "shield: event log lines suppressed by the rate limit"
                );
            }
        }
        self.drain();
        self.kernel_log.drain();
    }

    fn drain(&mut self) {
        let now = ktime_now_ns();
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(ev) = decode(&item, now) {
                events.push(ev);
            }
        }
        for ev in events {
            self.emit(ev);
        }
    }

    fn emit(&mut self, ev: Event) {
        self.stats.count(&ev);
        match self.budget.allow(ktime_now_ns()) {
            Some(suppressed) => log_event(&ev, suppressed),
            None => {
                self.stats.lines_suppressed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn snapshot_blocks(&self) -> Result<BTreeMap<Cidr, (u32, u64)>, MapError> {
        let mut out = BTreeMap::new();
        for item in self.block.iter() {
            let (k, e) = item?;
            out.insert(
                Cidr::from_key(k.prefix_len(), k.data()),
                (e.origin, e.created_ns),
            );
        }
        Ok(out)
    }

    /// Deletes expired entries and reports what changed since the last sweep.
    fn sweep_blocks(&mut self) -> Result<(), MapError> {
        let now = ktime_now_ns();
        let mut current = BTreeMap::new();
        let mut expired = Vec::new();
        for item in self.block.iter() {
            let (k, e) = item?;
            let cidr = Cidr::from_key(k.prefix_len(), k.data());
            if e.active(now) {
                current.insert(cidr, (e.origin, e.created_ns, e.expires_ns));
            } else {
                expired.push((cidr, e.origin));
            }
        }
        for (cidr, origin) in expired {
            match self.block.remove(&cidr.aya_key()) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e),
            }
            self.blocks_seen.remove(&cidr);
            self.emit(Event::Unblocked {
                cidr,
                origin: origin_label(origin),
                expired: true,
            });
        }
        let mut news = Vec::new();
        for (cidr, (origin, created, expires)) in &current {
            let changed = self.blocks_seen.get(cidr) != Some(&(*origin, *created));
            // Auto-blocks were reported by the kernel's own event.
            if changed && *origin != Origin::AUTO {
                news.push(Event::Blocked {
                    cidr: *cidr,
                    origin: origin_label(*origin),
                    ttl_ms: (*expires != 0).then(|| expires.saturating_sub(now) / 1_000_000),
                });
            }
        }
        let gone: Vec<(Cidr, u32)> = self
            .blocks_seen
            .iter()
            .filter(|(c, _)| !current.contains_key(c))
            .map(|(c, (o, _))| (*c, *o))
            .collect();
        for (cidr, origin) in gone {
            news.push(Event::Unblocked {
                cidr,
                origin: origin_label(origin),
                expired: false,
            });
        }
        self.blocks_seen = current
            .into_iter()
            .map(|(c, (o, created, _))| (c, (o, created)))
            .collect();
        for ev in news {
            self.emit(ev);
        }
        Ok(())
    }

    /// Closes established flows whose socket is gone (two checks in a row, so that a connection whose
    /// final ACK the tc program saw a moment before the kernel created the socket is never touched).
    fn reconcile_established(&mut self) -> Result<(), MapError> {
        let flows: Vec<FlowKey> = self.established.keys().filter_map(Result::ok).collect();
        if flows.is_empty() {
            self.suspects.clear();
            return Ok(());
        }
        let sockets = socket_table();
        let mut suspects = HashSet::new();
        for f in flows {
            let tuple = (f.server, f.server_port, f.client, f.client_port);
            if sockets.contains(&tuple) {
                continue;
            }
            if !self.suspects.contains(&f) {
                suspects.insert(f);
                continue;
            }
            let closed = match &self.tc_ingress {
                Some(fd) => inject_rst(fd, &f).is_ok(),
                None => false,
            };
            if closed {
                self.emit(Event::StaleConnection {
                    source: key_to_ip(&herz_common::SourceKey { addr: f.client }),
                    port: f.client_port,
                });
            }
        }
        self.suspects = suspects;
        Ok(())
    }
}

/// (local address, local port, remote address, remote port) of every TCP socket in this network
/// namespace, addresses as 16 bytes (IPv4 mapped).
fn socket_table() -> HashSet<([u8; 16], u16, [u8; 16], u16)> {
    let mut out = HashSet::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let mut cols = line.split_whitespace().skip(1);
            let (Some(local), Some(remote)) = (cols.next(), cols.next()) else {
                continue;
            };
            if let (Some(l), Some(r)) = (parse_proc_addr(local, v6), parse_proc_addr(remote, v6)) {
                out.insert((l.0, l.1, r.0, r.1));
            }
        }
    }
    out
}

/// `0100007F:1BBC` (IPv4) or 32 hex digits (IPv6): each 32-bit word printed as the host-order value of
/// its network-order bytes.
fn parse_proc_addr(s: &str, v6: bool) -> Option<([u8; 16], u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = if v6 { 4 } else { 1 };
    if addr.len() != words * 8 {
        return None;
    }
    let mut bytes = [0u8; 16];
    let mut raw = Vec::with_capacity(16);
    for i in 0..words {
        let w = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
        raw.extend_from_slice(&w.to_ne_bytes());
    }
    if v6 {
        bytes.copy_from_slice(&raw);
    } else {
        bytes = std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&raw[..]).ok()?)
            .to_ipv6_mapped()
            .octets();
    }
    Some((bytes, port))
}

/// A client→server RST for `flow`, as an Ethernet frame.
pub fn rst_frame(flow: &FlowKey) -> Vec<u8> {
    let client = std::net::Ipv6Addr::from(flow.client);
    let server = std::net::Ipv6Addr::from(flow.server);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&flow.client_port.to_be_bytes());
    tcp[2..4].copy_from_slice(&flow.server_port.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x04; // RST
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    match (client.to_ipv4_mapped(), server.to_ipv4_mapped()) {
        (Some(c), Some(s)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&c.octets());
            ip[16..20].copy_from_slice(&s.octets());
            f.extend_from_slice(&ip);
        }
        _ => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = vec![0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&flow.client);
            ip[24..40].copy_from_slice(&flow.server);
            f.extend_from_slice(&ip);
        }
    }
    f.extend_from_slice(&tcp);
    f
}

/// Runs the tc ingress program on a synthetic RST for `flow` (BPF_PROG_TEST_RUN).
fn inject_rst(prog: &OwnedFd, flow: &FlowKey) -> std::io::Result<()> {
    herz_sys::bpf::run_once(prog.as_raw_fd(), &rst_frame(flow)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_decode() {
        let ev = herz_common::ShieldEvent {
            kind: EventKind::AutoBlocked as u32,
            reason: DropReason::SynRate as u32,
            addr: herz_common::SourceKey::from_ipv4([198, 18, 0, 9]).addr,
            ts_ns: 1_000_000_000,
            value: 61_000_000_000,
        };
        // SAFETY: plain data viewed as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (&ev as *const herz_common::ShieldEvent).cast::<u8>(),
                std::mem::size_of_val(&ev),
            )
        };
        assert_eq!(
            decode(bytes, 1_000_000_000),
            Some(Event::AutoBlocked {
                source: "198.18.0.9".parse().unwrap(),
                reason: "syn_rate",
                ttl_ms: 60_000,
                kernel_ns: 1_000_000_000,
            })
        );
        assert_eq!(decode(&bytes[..10], 0), None);
        let json = serde_json::to_value(decode(bytes, 1_000_000_000).unwrap()).unwrap();
        assert_eq!(json["event"], "auto_blocked");
    }

    #[test]
    fn proc_net_tcp_addresses() {
        let (a, p) = parse_proc_addr("0100007F:1BBC", false).unwrap();
        assert_eq!(p, 7100);
        assert_eq!(
            std::net::Ipv6Addr::from(a)
                .to_ipv4_mapped()
                .unwrap()
                .octets(),
            [127, 0, 0, 1]
        );
        let (a, _) = parse_proc_addr("B80D0120000000000000000002000000:0050", true).unwrap();
        assert_eq!(
            std::net::Ipv6Addr::from(a),
            "2001:db8::2".parse::<std::net::Ipv6Addr>().unwrap()
        );
        assert!(parse_proc_addr("zz:1", false).is_none());
    }

    #[test]
    fn rst_frames_carry_the_flow() {
        let f = FlowKey {
            client: herz_common::SourceKey::from_ipv4([198, 18, 0, 2]).addr,
            server: herz_common::SourceKey::from_ipv4([198, 18, 0, 1]).addr,
            client_port: 40000,
            server_port: 7100,
            _pad: 0,
        };
        let frame = rst_frame(&f);
        assert_eq!(frame.len(), 14 + 20 + 20);
        assert_eq!(&frame[26..30], &[198, 18, 0, 2]);
        assert_eq!(frame[14 + 20 + 13], 0x04);
    }
}
