//! Prometheus exposition: a collector that reads the hot loop's atomics, the shield's pinned maps and
//! the process's own resource use at scrape time. Every label value is bounded: fixed names, or names
//! from the configuration (feeds, channels).

use std::{path::PathBuf, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use crate::net::{Shared, counters::AtomicHistogram};

/// Reads everything at scrape time.
#[derive(Debug)]
pub struct HerzCollector {
    /// The hot loop's shared state.
    pub shared: Arc<Shared>,
    /// Where the shield's maps are pinned, when it is active.
    pub pin_path: Option<PathBuf>,
    /// The shield's event counters, when it is active.
    pub events: Option<Arc<crate::shield::EventStats>>,
}

/// The lag ranges of `herz_subscribers_by_lag`, in the order of the loop's lag gauges.
const LAG_RANGES: [&str; 5] = ["0", "1-1000", "1001-10000", "10001-100000", "100001+"];

/// One metric family of the shield's kernel counters: the counters it takes (by their map name) and the
/// label value each gets.
struct ShieldFamily {
    metric: &'static str,
    help: &'static str,
    label: &'static str,
    members: &'static [(&'static str, &'static str)],
}

impl ShieldFamily {
    fn label_of(&self, counter: &str) -> Option<&'static str> {
        self.members
            .iter()
            .find(|(c, _)| *c == counter)
            .map(|(_, l)| *l)
    }
}

/// Every kernel counter but `herz_bytes` (its own metric) belongs to exactly one family.
const SHIELD_FAMILIES: [ShieldFamily; 5] = [
    ShieldFamily {
        metric: "herz_shield_drops",
        help: "Frames the shield dropped, by reason.",
        label: "reason",
        members: &[
            ("drop_blocked", "blocked"),
            ("drop_auto_blocked", "auto_blocked"),
            ("drop_syn_rate", "syn_rate"),
            ("drop_half_open", "half_open"),
            ("drop_conn_limit", "conn_limit"),
            ("drop_global_syn", "global_syn"),
            ("drop_feed_source", "feed_source"),
            ("drop_udp_rate", "udp_rate"),
        ],
    },
    ShieldFamily {
        metric: "herz_shield_frames",
        help: "Frames the XDP program saw, by kind: all; to_herz (to a Herz port), and of those syn and udp; other_port, not_ip, fragment, malformed (passed untouched).",
        label: "kind",
        members: &[
            ("xdp_frames", "all"),
            ("herz_packets", "to_herz"),
            ("herz_tcp_syn", "syn"),
            ("herz_udp", "udp"),
            ("other_ports", "other_port"),
            ("not_ip", "not_ip"),
            ("fragments", "fragment"),
            ("malformed", "malformed"),
        ],
    },
    ShieldFamily {
        metric: "herz_shield_passes",
        help: "Frames to Herz's ports passed without the flood rules, by why.",
        label: "why",
        members: &[("allowlisted", "allowlisted"), ("trusted_pass", "trusted")],
    },
    ShieldFamily {
        metric: "herz_shield_handshake_packets",
        help: "TCP handshake and teardown packets the tc programs followed, by packet.",
        label: "packet",
        members: &[
            ("handshake_syn_in", "syn_in"),
            ("handshake_synack_out", "synack_out"),
            ("handshake_ack_in", "ack_in"),
            ("fin_in", "fin_in"),
            ("rst_in", "rst_in"),
        ],
    },
    ShieldFamily {
        metric: "herz_shield_kernel_events",
        help: "Kernel-side shield events: auto-blocks, expired blocks seen, events lost, connections opened, closed and not recorded (table full).",
        label: "event",
        members: &[
            ("auto_blocks", "auto_block"),
            ("block_expired", "block_expired"),
            ("events_lost", "event_lost"),
            ("conn_established", "conn_established"),
            ("conn_closed", "conn_closed"),
            ("conn_table_full", "conn_table_full"),
        ],
    },
];

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = ConstCounter::new(v);
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let m = ConstGauge::new(v);
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &AtomicHistogram,
) -> Result<(), std::fmt::Error> {
    let (sum, count, buckets) = h.snapshot();
    // The +Inf bucket is added by the encoder.
    let finite: Vec<(f64, u64)> = buckets.into_iter().filter(|(b, _)| b.is_finite()).collect();
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &finite, None)
}

impl Collector for HerzCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.shared.counters;
        for (name, help, value) in c.described() {
            counter(&mut enc, &format!("herz_{name}"), help, value)?;
        }
        let g = &self.shared.gauges;
        use std::sync::atomic::Ordering::Relaxed;
        gauge(
            &mut enc,
            "herz_journal_head",
            "Next journal sequence number.",
            g.journal_head.load(Relaxed) as i64,
        )?;
        gauge(
            &mut enc,
            "herz_journal_tail",
            "Oldest retained journal sequence number.",
            g.journal_tail.load(Relaxed) as i64,
        )?;
        gauge(
            &mut enc,
            "herz_journal_segments",
            "Durable journal segment files retained (0 for a memory journal).",
            g.journal_segments.load(Relaxed) as i64,
        )?;
        gauge(
            &mut enc,
            "herz_journal_disk_bytes",
            "Bytes of the durable journal's retained segment files.",
            g.journal_disk_bytes.load(Relaxed) as i64,
        )?;
        {
            let secs = g.journal_recovery_ns.load(Relaxed) as f64 / 1e9;
            let m = ConstGauge::new(secs);
            m.encode(enc.encode_descriptor(
                "herz_journal_recovery_seconds",
                "How long opening and recovering the durable journal took at start.",
                None,
                m.metric_type(),
            )?)?;
        }
        {
            let mut m = enc.encode_descriptor(
                "herz_sessions",
                "Sessions by role and state.",
                None,
                MetricType::Gauge,
            )?;
            for (role, state, v) in [
                ("subscriber", "active", g.subscribers_active.load(Relaxed)),
                ("publisher", "active", g.publishers_active.load(Relaxed)),
                ("any", "awaiting_login", g.sessions_pending.load(Relaxed)),
            ] {
                let labels = [("role", role), ("state", state)];
                ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut enc,
            "herz_subscriber_max_lag_messages",
            "Largest subscriber lag, messages behind the journal head.",
            g.max_lag.load(Relaxed) as i64,
        )?;
        {
            // Ranges, not cumulative buckets: each subscriber is counted in exactly one.
            let mut m = enc.encode_descriptor(
                "herz_subscribers_by_lag",
                "Active subscribers by lag range (messages behind the journal head); each in one range.",
                None,
                MetricType::Gauge,
            )?;
            for (range, v) in LAG_RANGES.iter().zip(&g.lag_buckets) {
                let labels = [("lag", *range)];
                ConstGauge::new(v.load(Relaxed) as i64).encode(m.encode_family(&labels)?)?;
            }
        }
        histogram(
            &mut enc,
            "herz_latency_seconds",
            "Journal ingest to socket write, per subscriber write.",
            &self.shared.latency,
        )?;
        histogram(
            &mut enc,
            "herz_journal_sync_seconds",
            "Durable journal sync (msync) time, per sync that wrote something.",
            &self.shared.journal_sync,
        )?;
        histogram(
            &mut enc,
            "herz_event_loop_iteration_seconds",
            "Hot loop iteration time (event-loop lag).",
            &self.shared.loop_time,
        )?;
        type Pick = fn(&crate::net::NamedStats) -> u64;
        let pickers: [(&str, &str, &str, Pick); 6] = [
            (
                "herz_feed_in_messages",
                "Messages delivered to the journal, per feed.",
                "feed",
                |s| s.messages.load(Relaxed),
            ),
            (
                "herz_feed_in_bytes",
                "Message bytes delivered to the journal, per feed.",
                "feed",
                |s| s.bytes.load(Relaxed),
            ),
            (
                "herz_feed_gaps",
                "Gaps detected in a feed's sequence (a gap-free stream turning gapped), per feed.",
                "feed",
                |s| s.gaps.load(Relaxed),
            ),
            (
                "herz_feed_duplicates",
                "Duplicate copies dropped by A/B arbitration (or replays), per feed.",
                "feed",
                |s| s.duplicates.load(Relaxed),
            ),
            (
                "herz_channel_out_messages",
                "Messages sent, per multicast channel.",
                "channel",
                |s| s.messages.load(Relaxed),
            ),
            (
                "herz_channel_out_bytes",
                "Payload bytes sent, per multicast channel.",
                "channel",
                |s| s.bytes.load(Relaxed),
            ),
        ];
        for (metric, help, label, pick) in pickers {
            let list = if label == "feed" {
                &self.shared.feeds
            } else {
                &self.shared.channels
            };
            if list.is_empty() {
                continue;
            }
            let mut m = enc.encode_descriptor(metric, help, None, MetricType::Counter)?;
            for s in list {
                let labels = [(label, s.name.as_str())];
                ConstCounter::new(pick(s)).encode(m.encode_family(&labels)?)?;
            }
        }
        // Process resources, by the names Prometheus' client libraries use.
        gauge(
            &mut enc,
            "process_open_fds",
            "Number of open file descriptors.",
            open_fds(),
        )?;
        gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss_bytes(),
        )?;
        // The shield.
        let globals = self
            .pin_path
            .as_deref()
            .and_then(|p| crate::shield::pinned::read_globals(p).ok());
        gauge(
            &mut enc,
            "herz_shield_active",
            "1 when the kernel shield is loaded and readable.",
            i64::from(globals.is_some()),
        )?;
        if let Some(globals) = globals {
            for family in SHIELD_FAMILIES {
                let members: Vec<(&str, u64)> = globals
                    .0
                    .iter()
                    .filter_map(|(name, v)| family.label_of(name).map(|l| (l, *v)))
                    .collect();
                let mut m =
                    enc.encode_descriptor(family.metric, family.help, None, MetricType::Counter)?;
                for (value_label, v) in members {
                    let labels = [(family.label, value_label)];
                    ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
                }
            }
            if let Some((_, bytes)) = globals.0.iter().find(|(n, _)| *n == "herz_bytes") {
                counter(
                    &mut enc,
                    "herz_shield_herz_port_bytes",
                    "Bytes of the frames to Herz's ports that the XDP program saw.",
                    *bytes,
                )?;
            }
        }
        if let Some(ev) = &self.events {
            {
                let mut m = enc.encode_descriptor(
                "herz_shield_events",
                "Shield events handled by the daemon (threshold crossings, blocks, expiries, stale connections closed).",
                None,
                MetricType::Counter,
            )?;
                for (event, v) in [
                    ("threshold", &ev.thresholds),
                    ("auto_block", &ev.auto_blocks),
                    ("block", &ev.blocks),
                    ("unblock", &ev.unblocks),
                    ("expired", &ev.expired),
                    ("stale_connection", &ev.stale_connections),
                ] {
                    ConstCounter::new(v.load(Relaxed))
                        .encode(m.encode_family(&[("event", event)])?)?;
                }
            }
            counter(
                &mut enc,
                "herz_shield_log_lines_suppressed",
                "Shield event log lines held back by the rate limit.",
                ev.lines_suppressed.load(Relaxed),
            )?;
        }
        if let Some(p) = &self.pin_path {
            if let Ok(rows) = crate::shield::pinned::read_sources(p) {
                gauge(
                    &mut enc,
                    "herz_shield_sources_tracked",
                    "Sources tracked by the shield.",
                    rows.len() as i64,
                )?;
                let sum = |f: fn(&crate::shield::pinned::SourceRow) -> u64| {
                    rows.iter().map(f).sum::<u64>() as i64
                };
                gauge(
                    &mut enc,
                    "herz_shield_half_open",
                    "Handshakes in progress, all sources.",
                    sum(|r| r.half_open),
                )?;
                gauge(
                    &mut enc,
                    "herz_shield_established",
                    "Established connections, all sources.",
                    sum(|r| r.established),
                )?;
                gauge(
                    &mut enc,
                    "herz_shield_trusted_sources",
                    "Sources trusted (logged-in peers).",
                    sum(|r| u64::from(r.trusted)),
                )?;
            }
            if let Ok(blocked) = crate::shield::pinned::read_blocked(p) {
                gauge(
                    &mut enc,
                    "herz_shield_blocked_sources",
                    "Blocklist entries in force (CLI, config and auto-blocks).",
                    blocked.len() as i64,
                )?;
            }
        }
        Ok(())
    }
}

fn open_fds() -> i64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as i64)
        .unwrap_or(-1)
}

fn rss_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_counter_is_exported_in_exactly_one_place() {
        for c in herz_common::Counter::ALL {
            let name = c.label();
            let homes = SHIELD_FAMILIES
                .iter()
                .filter(|f| f.label_of(name).is_some())
                .count()
                + usize::from(name == "herz_bytes");
            assert_eq!(homes, 1, "{name}");
        }
    }
}
