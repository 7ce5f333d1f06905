//! Counters the hot loop keeps and the control plane reads: relaxed atomics, no locks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[doc = $doc:literal])* $name:ident, )*) => {
        /// Distributor counters. Written by the hot loop only; read by anyone.
        #[derive(Debug, Default)]
        pub struct Counters { $( $(#[doc = $doc])* pub $name: AtomicU64, )* }

        impl Counters {
            /// Every counter with its name and its doc comment, which is its metric's HELP text.
            pub fn described(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$( (stringify!($name), concat!($($doc),*).trim_ascii(), self.$name.load(Relaxed)), )*]
            }
        }
    };
}

counters! {
    /// Messages appended to the journal.
    journal_appended,
    /// Message bytes appended to the journal.
    journal_bytes,
    /// Bytes sent on channels (MoldUDP64 payloads).
    channel_bytes,
    /// Messages received from TCP publishers.
    publisher_messages,
    /// Messages received from UDP feeds (delivered in order, after arbitration).
    feed_messages,
    /// Feed packets received (all lines).
    feed_packets,
    /// Messages delivered to TCP subscribers.
    subscriber_messages,
    /// Bytes written to TCP sessions (subscribers' streams, heartbeats, login answers).
    session_bytes_out,
    /// MoldUDP64 packets sent on channels.
    channel_packets,
    /// Messages sent on channels.
    channel_messages,
    /// Channel heartbeats sent.
    channel_heartbeats,
    /// Messages a channel never sent because they fell off the journal before it could (the journal
    /// overran the channel's send rate): multicast receivers see a gap they cannot recover.
    channel_lost_messages,
    /// Re-requests received by the re-request server.
    rerequests_received,
    /// Re-requests answered.
    rerequests_served,
    /// Re-requests refused by the rate limits (the requester's own, or the global budget).
    rerequests_limited,
    /// Re-requests for messages no longer retained (or never sent).
    rerequests_unavailable,
    /// Re-requests dropped unanswered because their source is not allowed (`rerequest.allow`, or by
    /// default loopback and the channels' local networks).
    rerequests_refused,
    /// Subscriber logins accepted.
    logins_accepted,
    /// Logins rejected (bad credentials or session).
    logins_rejected,
    /// Sessions closed for malformed input.
    malformed_closes,
    /// Sessions closed for silence (heartbeat timeout).
    heartbeat_timeouts,
    /// Connections closed because they had not logged in by the login deadline.
    login_timeouts,
    /// Sessions whose socket failed (reset, TCP_USER_TIMEOUT, keepalive).
    socket_errors,
    /// Slow consumers disconnected.
    slow_disconnects,
    /// Messages skipped for slow consumers under drop-oldest.
    slow_dropped_messages,
    /// Drop-oldest events.
    slow_drop_events,
    /// Messages conflated away for slow consumers.
    slow_conflated_messages,
    /// Conflate events.
    slow_conflate_events,
    /// Connections refused because the session limit was reached.
    sessions_refused,
    /// Connections refused because their IP had too many connections (awaiting login, or in
    /// total), or too many IPs were tracked.
    sessions_refused_per_ip,
    /// Connections refused because their IP's logins kept failing.
    logins_throttled,
    /// Messages refused by the journal (empty, too large, or not storable: disk full).
    messages_refused,
    /// Durable journal syncs that failed (the messages stay in the page cache; retried).
    journal_sync_errors,
    /// Re-requests sent upstream.
    feed_rerequests,
    /// Feed messages lost for good (gap unrecoverable).
    feed_lost,
    /// Feed packets that claimed a jump beyond `max_jump`, ignored until confirmed.
    feed_suspicious_jumps,
}

/// Gauges: current values, set by the hot loop.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Subscribers by lag bucket: <= 0, <= 1k, <= 10k, <= 100k, > 100k messages.
    pub lag_buckets: [AtomicU64; 5],
    /// Last event-loop iteration, monotonic ns since start (liveness).
    pub loop_alive_ns: AtomicU64,
    /// Journal head (next sequence).
    pub journal_head: AtomicU64,
    /// Journal tail (oldest retained sequence).
    pub journal_tail: AtomicU64,
    /// Subscribers logged in.
    pub subscribers_active: AtomicI64,
    /// Connections awaiting login.
    pub sessions_pending: AtomicI64,
    /// Publishers logged in.
    pub publishers_active: AtomicI64,
    /// Largest subscriber lag (messages).
    pub max_lag: AtomicU64,
    /// Durable journal: segment files retained.
    pub journal_segments: AtomicU64,
    /// Durable journal: bytes of the retained segment files.
    pub journal_disk_bytes: AtomicU64,
    /// Durable journal: how long opening and recovering it took at start, ns.
    pub journal_recovery_ns: AtomicU64,
}

/// Adds `n` to a counter.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

/// Histogram bucket upper bounds are `2^(i + 10)` ns: 1.0 µs, 2.0 µs, ... up to about 8.6 s.
pub const HISTOGRAM_BUCKETS: usize = 24;

/// A lock-free histogram of nanosecond durations with power-of-two buckets: one relaxed atomic add
/// per observation, read at scrape time.
#[derive(Debug)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; HISTOGRAM_BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records one duration.
    #[inline]
    pub fn record(&self, ns: u64) {
        let bits = 64 - ns.leading_zeros() as usize;
        let i = bits.saturating_sub(10).min(HISTOGRAM_BUCKETS - 1);
        self.buckets[i].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Upper bound of bucket `i`, seconds.
    pub fn bound_secs(i: usize) -> f64 {
        (1u64 << (i + 10)) as f64 / 1e9
    }

    /// (sum in seconds, count, cumulative buckets as (upper bound s, count)).
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut cumulative = 0;
        let mut out = Vec::with_capacity(HISTOGRAM_BUCKETS + 1);
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Relaxed);
            out.push((Self::bound_secs(i), cumulative));
        }
        let count = self.count.load(Relaxed);
        out.push((f64::INFINITY, count));
        (self.sum_ns.load(Relaxed) as f64 / 1e9, count, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_help_text_from_its_doc_comment() {
        let described = Counters::default().described();
        let mut seen = std::collections::HashSet::new();
        for (name, help, _) in described {
            assert!(help.len() > 10 && help.ends_with('.'), "{name}: {help:?}");
            assert!(
                !help.starts_with(' ') && !help.contains("  "),
                "{name}: {help:?}"
            );
            assert!(seen.insert(help), "{name} shares its help text");
        }
        let lost = Counters::default()
            .described()
            .into_iter()
            .find(|(n, ..)| *n == "channel_lost_messages");
        assert!(
            lost.unwrap().1.contains("journal overran"),
            "multi-line docs are joined"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_bounded() {
        let h = AtomicHistogram::default();
        h.record(0);
        h.record(1500); // 1.5 µs: second bucket (<= 2.048 µs)
        h.record(u64::MAX);
        let (_, count, b) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(b[0].1, 1);
        assert_eq!(b[1].1, 2);
        assert_eq!(b[HISTOGRAM_BUCKETS - 1].1, 3);
        assert_eq!(b.last().unwrap().1, 3);
    }
}
