//! Counters the hot loop keeps and the control plane reads: relaxed atomics, no locks.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// Distributor counters. Written by the hot loop only; read by anyone.
        #[derive(Debug, Default)]
        pub struct Counters { $( $(#[$doc])* pub $name: AtomicU64, )* }

        impl Counters {
            /// Every counter with its name, for exposition.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.load(Relaxed)), )*]
            }
        }
    };
}

counters! {
    /// Messages appended to the journal.
    journal_appended,
    /// Bytes appended to the journal.
    journal_bytes,
    /// Messages received from TCP publishers.
    publisher_messages,
    /// Messages received from UDP feeds (delivered in order, after arbitration).
    feed_messages,
    /// Feed packets received (all lines).
    feed_packets,
    /// Messages delivered to TCP subscribers.
    subscriber_messages,
    /// Bytes written to TCP subscribers.
    subscriber_bytes,
    /// MoldUDP64 packets sent on channels.
    channel_packets,
    /// Messages sent on channels.
    channel_messages,
    /// Channel heartbeats sent.
    channel_heartbeats,
    /// Re-requests received by the re-request server.
    rerequests_received,
    /// Re-requests answered.
    rerequests_served,
    /// Re-requests refused by the per-requester limit.
    rerequests_limited,
    /// Re-requests for messages no longer retained (or never sent).
    rerequests_unavailable,
    /// Subscriber logins accepted.
    logins_accepted,
    /// Logins rejected (bad credentials or session).
    logins_rejected,
    /// Sessions closed for malformed input.
    malformed_closes,
    /// Sessions closed for silence (heartbeat timeout).
    heartbeat_timeouts,
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
    /// Messages refused by the journal (empty or too large).
    messages_refused,
    /// Feed gaps detected.
    feed_gaps,
    /// Re-requests sent upstream.
    feed_rerequests,
    /// Feed messages lost for good (gap unrecoverable).
    feed_lost,
    /// Duplicate feed messages dropped (A/B arbitration).
    feed_duplicates,
}

/// Gauges: current values, set by the hot loop.
#[derive(Debug, Default)]
pub struct Gauges {
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
}

/// Adds `n` to a counter.
#[inline]
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}
