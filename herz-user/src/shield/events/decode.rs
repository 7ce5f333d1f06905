//! Shield events: decoded from the kernel's ring-buffer records, counted, and written as rate-limited
//! structured log lines.

use super::*;

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
    pub(super) fn count(&self, ev: &Event) {
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

pub(super) fn log_event(ev: &Event, suppressed: u64) {
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
}
