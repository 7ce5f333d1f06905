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
}

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
            "herz_subscriber_max_lag",
            "Largest subscriber lag, messages behind the journal head.",
            g.max_lag.load(Relaxed) as i64,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "herz_subscribers_by_lag",
                "Active subscribers by lag bucket (messages behind the head).",
                None,
                MetricType::Gauge,
            )?;
            for (le, v) in ["0", "1000", "10000", "100000", "+Inf"]
                .iter()
                .zip(&g.lag_buckets)
            {
                let labels = [("lag_le", *le)];
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
            "herz_event_loop_iteration_seconds",
            "Hot loop iteration time (event-loop lag).",
            &self.shared.loop_time,
        )?;
        type Pick = fn(&crate::net::NamedStats) -> u64;
        let pickers: [(&str, &str, &str, Pick); 4] = [
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
        // Process resources.
        gauge(
            &mut enc,
            "herz_open_fds",
            "Open file descriptors.",
            open_fds(),
        )?;
        gauge(&mut enc, "herz_rss_bytes", "Resident memory.", rss_bytes())?;
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
            let mut m = enc.encode_descriptor(
                "herz_shield",
                "Shield kernel counters by name (drops by reason among them).",
                None,
                MetricType::Counter,
            )?;
            for (name, value) in &globals.0 {
                let labels = [("counter", *name)];
                ConstCounter::new(*value).encode(m.encode_family(&labels)?)?;
            }
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
