//! The loop's statistics, shared with the control plane: counters and gauges (relaxed atomics the loop
//! writes and anyone reads), latency histograms, and the operator's snapshot. Gauges that describe the
//! sessions are counted from the sessions themselves, never adjusted by hand.

use std::sync::atomic::Ordering::Relaxed;

use herz_core::{
    engine::journal::Journal,
    protocol::moldudp64::Session as SessionName,
    session::{Role, State},
};
use slab::Slab;

use super::{
    channel::Channel,
    counters::{AtomicHistogram, Counters, Gauges},
    session::Conn,
};
use crate::control::state::{ChannelView, FeedView, SessionView, StateSnapshot};

/// Shared view of the hot loop for the control plane: atomics written by the loop, read at scrape
/// time; a state snapshot refreshed twice a second.
#[derive(Debug, Default)]
pub struct Shared {
    /// Monotonic counters of what the loop did (messages, bytes, logins, closes by reason...).
    pub counters: Counters,
    /// Current values: sessions by role and state, journal head and tail, lag, loop liveness.
    pub gauges: Gauges,
    /// End-to-end latency, journal ingest to socket write (one observation per write, for the newest
    /// message it carried).
    pub latency: AtomicHistogram,
    /// Event-loop iteration time (from waking up to waiting again).
    pub loop_time: AtomicHistogram,
    /// Durable journal sync time (one observation per sync that wrote something).
    pub journal_sync: AtomicHistogram,
    /// Per feed, in configuration order.
    pub feeds: Vec<NamedStats>,
    /// Per channel, in configuration order.
    pub channels: Vec<NamedStats>,
    /// Operator's view, refreshed by the loop.
    pub state: std::sync::Mutex<StateSnapshot>,
}

/// Counters of one feed or channel (label values come from the configuration, so they are bounded).
#[derive(Debug, Default)]
pub struct NamedStats {
    /// Feed or channel name.
    pub name: String,
    /// Messages in (feed) or out (channel).
    pub messages: std::sync::atomic::AtomicU64,
    /// Packets in or out.
    pub packets: std::sync::atomic::AtomicU64,
    /// Message bytes in (feed) or payload bytes out (channel).
    pub bytes: std::sync::atomic::AtomicU64,
    /// Monotonic ns of the last packet (feeds).
    pub last_packet_ns: std::sync::atomic::AtomicU64,
    /// Gaps detected (feeds).
    pub gaps: std::sync::atomic::AtomicU64,
    /// Duplicate copies dropped by A/B arbitration (feeds).
    pub duplicates: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The session gauges, counted from `sessions` (after every accept, login and close).
    pub(super) fn update_session_gauges(&self, sessions: &Slab<Conn>) {
        let (mut pending, mut subscribers, mut publishers) = (0, 0, 0);
        for (_, c) in sessions {
            match (c.session.logged_in(), c.session.role()) {
                (false, _) => pending += 1,
                (true, Role::Subscriber) => subscribers += 1,
                (true, Role::Publisher) => publishers += 1,
            }
        }
        self.gauges.sessions_pending.store(pending, Relaxed);
        self.gauges.subscribers_active.store(subscribers, Relaxed);
        self.gauges.publishers_active.store(publishers, Relaxed);
    }

    /// Refreshes the operator's view (`/state`) and the lag gauges from the loop's state.
    pub(super) fn publish_snapshot(
        &self,
        session: SessionName,
        journal: &Journal,
        sessions: &Slab<Conn>,
        channels: &[Channel],
        now: u64,
    ) {
        let mut lag_ranges = [0u64; 5];
        let sessions = sessions
            .iter()
            .map(|(_, c)| {
                let s = &c.session;
                let subscribed = s.role() == Role::Subscriber && s.state() == State::Active;
                let lag = if subscribed { s.lag(journal) } else { 0 };
                if subscribed {
                    let range = match lag {
                        0 => 0,
                        1..=1_000 => 1,
                        1_001..=10_000 => 2,
                        10_001..=100_000 => 3,
                        _ => 4,
                    };
                    lag_ranges[range] += 1;
                }
                SessionView {
                    peer: c.peer.to_string(),
                    user: s.user().to_string(),
                    role: s.role(),
                    state: s.state(),
                    lag,
                    policy: s.policy(),
                    sent: s.sent(),
                    queued: s.queued(),
                }
            })
            .collect();
        for (g, v) in self.gauges.lag_buckets.iter().zip(lag_ranges) {
            g.store(v, Relaxed);
        }
        let snap = StateSnapshot {
            session: session.to_string(),
            journal_head: journal.head(),
            journal_tail: journal.tail(),
            sessions,
            channels: channels
                .iter()
                .map(|c| ChannelView {
                    name: c.name.clone(),
                    group: c.group.to_string(),
                    next_seq: c.next_seq,
                })
                .collect(),
            feeds: self
                .feeds
                .iter()
                .map(|f| {
                    let last = f.last_packet_ns.load(Relaxed);
                    FeedView {
                        name: f.name.clone(),
                        messages: f.messages.load(Relaxed),
                        idle_secs: (last > 0).then(|| now.saturating_sub(last) as f64 / 1e9),
                    }
                })
                .collect(),
        };
        if let Ok(mut st) = self.state.lock() {
            *st = snap;
        }
    }

    /// Publishes feed `i`'s counters as its arbiter keeps them (no deltas kept on the side).
    pub(super) fn publish_feed(&self, i: usize, feed: &super::feed::Feed) {
        let Some(stats) = self.feeds.get(i) else {
            return;
        };
        let c = feed.arbiter_counters();
        stats.messages.store(c.delivered, Relaxed);
        stats.gaps.store(c.gaps_detected, Relaxed);
        stats.duplicates.store(c.duplicates.total(), Relaxed);
        stats.bytes.store(feed.delivered_bytes(), Relaxed);
    }
}
