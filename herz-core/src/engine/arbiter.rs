//! Ingest of one upstream MoldUDP64 feed received on redundant lines A and B.
//!
//! Exchanges and upstream distributors send the same packets on two independent lines so that a
//! packet lost on one is (almost always) received on the other. [`FeedArbiter`] merges them into
//! one gapless, in-order stream of messages, and recovers what both lines lost from the upstream
//! re-request server:
//!
//! - The feed has one session and a next expected sequence number. Each message is a
//!   **duplicate** (below expected: dropped, counted per line), the **next one** (delivered at
//!   once, followed by any buffered successors), or **early** (kept in a bounded reorder buffer
//!   until the messages before it arrive). The first copy of a sequence number wins, whichever
//!   line brings it.
//! - A **gap** (expected < the highest sequence number known to exist, learnt from data packets,
//!   heartbeats and end of session) is usually filled by the other line within microseconds, so
//!   recovery waits [`rerequest_delay_ns`](ArbiterConfig::rerequest_delay_ns) before
//!   [`poll_timers`](FeedArbiter::poll_timers) returns a re-request for the first missing run
//!   (at most [`max_request_count`](ArbiterConfig::max_request_count) messages). Replies are
//!   ordinary packets, passed in with [`Line::Recovery`]. A request that brings nothing is sent
//!   again after [`rerequest_timeout_ns`](ArbiterConfig::rerequest_timeout_ns), at most
//!   [`max_retries`](ArbiterConfig::max_retries) times; then the run is declared
//!   [`Lost`](Event::Lost) and skipped, so the distributor never stalls for good. How much is
//!   skipped depends on whether the server still answers: if any reply arrived since the
//!   previous loss, only the run asked for (a flaky server or a lost reply costs no more than
//!   that); if none did, the server looks dead and the whole hole is skipped, up to the next
//!   buffered message or the feed's head, so that the feed catches up at once instead of
//!   crawling forward one unanswered request at a time.
//! - Every hole gets the same grace period, counted from when it became visible: when the
//!   message after it arrived (or, for a hole at the feed's tail, when a packet or heartbeat
//!   showed that more exists, or when an overflowing reorder buffer dropped its successors).
//!   So when a hole is filled and the next one comes into view, that one is asked for at once
//!   only if the lines have already had their chance, while the usual jitter holes of a busy
//!   feed are left to the other line. A reply that fills only the start of the run asked for
//!   (it holds what fits in one datagram) is followed at once by a request for the rest; while
//!   a request is outstanding, progress made by the lines does not trigger another one.
//!
//! Everything comes out, in sequence order, through one callback of [`Event`]s: messages are
//! handed out zero-copy, borrowed from the datagram or from the reorder buffer. The reorder
//! buffer is allocated once from the configuration: a ring of slots indexed by sequence number
//! (with an occupancy bitmap) over one byte arena. Nothing allocates per message.
//!
//! Time is `now`, nanoseconds on a monotonic clock, passed in; call
//! [`poll_timers`](FeedArbiter::poll_timers) at [`next_deadline`](FeedArbiter::next_deadline)
//! (or on every loop iteration).

mod reorder;

use self::reorder::ReorderBuffer;
use super::ConfigError;
use crate::protocol::moldudp64::{Packet, RequestPacket, Session};

/// Where a packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Line {
    /// Line A of the feed.
    A,
    /// Line B of the feed.
    B,
    /// A reply from the upstream re-request server.
    Recovery,
}

impl Line {
    /// Every line, in [`PerLine`] order.
    pub const ALL: [Line; 3] = [Line::A, Line::B, Line::Recovery];
}

/// One count per [`Line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PerLine {
    /// Line A.
    pub a: u64,
    /// Line B.
    pub b: u64,
    /// Re-request replies.
    pub recovery: u64,
}

impl PerLine {
    /// The count of one line.
    pub const fn get(&self, line: Line) -> u64 {
        match line {
            Line::A => self.a,
            Line::B => self.b,
            Line::Recovery => self.recovery,
        }
    }

    fn get_mut(&mut self, line: Line) -> &mut u64 {
        match line {
            Line::A => &mut self.a,
            Line::B => &mut self.b,
            Line::Recovery => &mut self.recovery,
        }
    }

    /// The sum over all lines.
    pub const fn total(&self) -> u64 {
        self.a + self.b + self.recovery
    }
}

/// [`FeedArbiter`] configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArbiterConfig {
    /// The feed's session; `None` adopts the session of the first packet received.
    pub session: Option<Session>,
    /// The first sequence number wanted; `None` starts at the first packet received (a data
    /// packet's first message, or a heartbeat's next sequence number: "from now on").
    /// `Some(1)` recovers the whole session from its first message.
    pub start_sequence: Option<u64>,
    /// How far ahead of the next expected sequence number messages are buffered: the reorder
    /// buffer holds sequence numbers `expected + 1 ..= expected + reorder_capacity_messages`
    /// (1 to 2^24). Later ones are dropped (counted) and recovered by re-request later.
    pub reorder_capacity_messages: usize,
    /// The most message bytes buffered (1 to 2^30). When full, the highest sequence numbers are
    /// dropped first: the lowest are needed first. The arena allocated is twice this, so that
    /// compacting it is rare and amortised O(1) per byte.
    pub reorder_capacity_bytes: usize,
    /// How long a gap may wait for the other line before it is re-requested.
    pub rerequest_delay_ns: u64,
    /// How long a re-request may go unanswered before it is sent again (at least 1 ns).
    pub rerequest_timeout_ns: u64,
    /// Re-sends of an unanswered re-request before the gap is declared lost (0 = ask once).
    pub max_retries: u32,
    /// The most messages asked for in one re-request (at least 1). The reply holds what fits
    /// in one datagram; the rest is asked for next.
    pub max_request_count: u16,
    /// The largest forward jump believed on one packet's word: a packet showing more than this
    /// many sequence numbers beyond the highest known (a data packet far ahead, or a heartbeat
    /// announcing a far head) is *suspicious*: counted, reported once, and ignored until another
    /// packet confirms the jump — one from the other line or the re-request server, or
    /// [`jump_confirmations`](Self::jump_confirmations) more from the same line showing at least
    /// as far. So one forged packet cannot make the feed skip a hole or count real packets as
    /// duplicates. `None`: every jump is believed.
    pub max_jump: Option<u64>,
    /// Packets from the same line that confirm a suspicious jump (at least 1).
    pub jump_confirmations: u32,
    /// Whether a re-request server exists. Without one, [`poll_timers`](FeedArbiter::poll_timers)
    /// never returns a request: a hole is declared [`Lost`](Event::Lost) once it has been
    /// visible for [`rerequest_delay_ns`](Self::rerequest_delay_ns) (the lines' chance to fill it).
    pub rerequests: bool,
}

impl Default for ArbiterConfig {
    fn default() -> Self {
        ArbiterConfig {
            session: None,
            start_sequence: None,
            reorder_capacity_messages: 65_536,
            reorder_capacity_bytes: 4 << 20,
            rerequest_delay_ns: 5_000_000,
            rerequest_timeout_ns: 50_000_000,
            max_retries: 3,
            max_request_count: 1_000,
            max_jump: Some(10_000_000),
            jump_confirmations: 3,
            rerequests: true,
        }
    }
}

impl ArbiterConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(start) = self.start_sequence {
            ConfigError::check_range(
                "start_sequence",
                start,
                1,
                u64::MAX,
                "must be at least 1 (MoldUDP64 numbers messages from 1)",
            )?;
        }
        ConfigError::check_range(
            "reorder_capacity_messages",
            self.reorder_capacity_messages as u64,
            1,
            1 << 24,
            "must be between 1 and 16777216",
        )?;
        ConfigError::check_range(
            "reorder_capacity_bytes",
            self.reorder_capacity_bytes as u64,
            1,
            1 << 30,
            "must be between 1 and 1073741824",
        )?;
        ConfigError::check_range(
            "rerequest_timeout_ns",
            self.rerequest_timeout_ns,
            1,
            u64::MAX,
            "must be at least 1",
        )?;
        ConfigError::check_range(
            "max_request_count",
            u64::from(self.max_request_count),
            1,
            u64::from(u16::MAX),
            "must be between 1 and 65535",
        )
    }
}

/// What the arbiter reports, in order, through its callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The next message of the feed: `seq` is exactly one more than the previous message's (or
    /// the end of the previous `Lost` run). `bytes` is borrowed for the call only.
    Message {
        /// Its sequence number.
        seq: u64,
        /// Its bytes.
        bytes: &'a [u8],
    },
    /// Messages `from .. from + count` could not be recovered and are skipped.
    Lost {
        /// First lost sequence number.
        from: u64,
        /// How many.
        count: u64,
    },
    /// The feed announced the end of its session (reported once per session); `next` is the
    /// sequence number after its last message. Messages still missing before `next` keep being
    /// recovered and delivered.
    EndOfSession {
        /// The sequence number after the session's last message.
        next: u64,
    },
    /// A packet claimed a jump larger than [`max_jump`](ArbiterConfig::max_jump) and is ignored
    /// until confirmed (reported once per claim; every such packet is counted).
    SuspiciousJump {
        /// One past the highest sequence number the packet claims.
        claimed: u64,
        /// One past the highest sequence number known before it.
        known: u64,
    },
    /// Packets of another session arrived and are ignored (reported once per run of a new
    /// foreign session; counted every time). A real session change is the caller's decision:
    /// [`FeedArbiter::reset`].
    ForeignSession {
        /// The foreign session.
        session: Session,
    },
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArbiterCounters {
    /// Messages delivered.
    pub delivered: u64,
    /// Copies dropped because the sequence number was already delivered or buffered, per line.
    pub duplicates: PerLine,
    /// Gaps detected (a gap-free stream turning gapped; holes found while recovering one gap
    /// are not counted again).
    pub gaps_detected: u64,
    /// Re-requests returned by [`FeedArbiter::poll_timers`] (retries included).
    pub rerequests_sent: u64,
    /// Messages delivered whose first copy came from a re-request reply.
    pub recovered: u64,
    /// Messages declared lost.
    pub lost: u64,
    /// `Lost` runs declared.
    pub lost_runs: u64,
    /// Messages dropped (on arrival or evicted later) because the reorder buffer was full.
    pub reorder_overflow: u64,
    /// Packets of a foreign session, ignored.
    pub foreign_session_packets: u64,
    /// Packets claiming a jump beyond `max_jump`, ignored until confirmed.
    pub suspicious_packets: u64,
    /// Suspicious jumps later confirmed and followed.
    pub jumps_confirmed: u64,
}

/// Merges the redundant lines of one MoldUDP64 feed; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct FeedArbiter {
    config: ArbiterConfig,
    session: Option<Session>,
    /// Next sequence number to deliver; meaningless until `synced`.
    expected: u64,
    synced: bool,
    /// One past the highest sequence number known to exist. A gap is `expected < high`.
    high: u64,
    /// When `high` last rose.
    high_at: u64,
    /// When the reorder buffer first dropped a message during the current gap.
    dropped_at: Option<u64>,
    buffer: ReorderBuffer,
    /// When `poll_timers` acts on the current hole next (valid while there is a gap).
    deadline: u64,
    /// Requests sent for the current hole since it last moved.
    attempts: u32,
    /// One past the last sequence number of the last request (0: none outstanding).
    requested_until: u64,
    /// A re-request reply arrived since the last `Lost` declaration (or since the start).
    server_alive: bool,
    end_reported: bool,
    last_foreign: Option<Session>,
    /// A suspicious jump waiting for confirmation: (line that claimed it, how far, confirmations).
    jump_claim: Option<(Line, u64, u32)>,
    counters: ArbiterCounters,
}

impl FeedArbiter {
    /// Allocates the reorder buffer. Fails on an unusable configuration.
    pub fn new(config: ArbiterConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut arbiter = FeedArbiter {
            config,
            session: None,
            expected: 0,
            synced: false,
            high: 0,
            high_at: 0,
            dropped_at: None,
            buffer: ReorderBuffer::new(
                config.reorder_capacity_messages,
                config.reorder_capacity_bytes,
            ),
            deadline: 0,
            attempts: 0,
            requested_until: 0,
            server_alive: true,
            end_reported: false,
            last_foreign: None,
            jump_claim: None,
            counters: ArbiterCounters::default(),
        };
        arbiter.reset(config.session, config.start_sequence);
        Ok(arbiter)
    }

    /// Starts over, e.g. after a [`ForeignSession`](Event::ForeignSession) the caller decided
    /// to follow: forgets the buffered messages and the gap state, then behaves like a new
    /// arbiter with this `session` and `start_sequence` (see [`ArbiterConfig`]). Counters are
    /// kept. Allocates nothing.
    pub fn reset(&mut self, session: Option<Session>, start_sequence: Option<u64>) {
        self.session = session;
        self.synced = start_sequence.is_some();
        self.expected = start_sequence.unwrap_or(0);
        self.high = self.expected;
        self.high_at = 0;
        self.dropped_at = None;
        self.buffer.clear();
        self.deadline = 0;
        self.attempts = 0;
        self.requested_until = 0;
        self.server_alive = true;
        self.end_reported = false;
        self.last_foreign = None;
        self.jump_claim = None;
    }

    /// Turns re-requests on or off (a re-request server was configured or removed), with the
    /// grace period a hole gets before it is asked for (or, without a server, declared lost).
    /// Applies from the next timer on; buffered messages and counters are kept.
    pub fn set_rerequests(&mut self, rerequests: bool, rerequest_delay_ns: u64) {
        self.config.rerequests = rerequests;
        self.config.rerequest_delay_ns = rerequest_delay_ns;
    }

    /// Handles one received packet (data, heartbeat or end of session) at `now`, reporting
    /// what follows from it through `out`, in order. O(messages in the packet) plus O(1)
    /// amortised per buffered message; allocates nothing.
    pub fn on_packet<F>(&mut self, line: Line, packet: &Packet<'_>, now: u64, mut out: F)
    where
        F: FnMut(Event<'_>),
    {
        let header = packet.header();
        match &self.session {
            None => self.session = Some(header.session),
            // Byte equality first: the same feed sends the same bytes every time.
            Some(s) if *s == header.session || s.matches(&header.session) => {}
            Some(_) => {
                self.counters.foreign_session_packets += 1;
                if self.last_foreign != Some(header.session) {
                    self.last_foreign = Some(header.session);
                    out(Event::ForeignSession {
                        session: header.session,
                    });
                }
                return;
            }
        }
        if !self.synced {
            // MoldUDP64 numbers messages from 1: a (bogus) sequence 0 must not become a gap.
            self.synced = true;
            self.expected = header.sequence.max(1);
            self.high = self.expected;
        }
        if !self.believe(line, header.next_sequence(), &mut out) {
            return;
        }
        if line == Line::Recovery {
            self.server_alive = true;
        }
        let had_gap = self.has_gap();
        let before = self.expected;
        if header.next_sequence() > self.high {
            self.high = header.next_sequence();
            self.high_at = now;
        }
        if header.is_end_of_session() && !self.end_reported {
            self.end_reported = true;
            out(Event::EndOfSession {
                next: header.sequence,
            });
        }

        if header.next_sequence() <= self.expected {
            // Entirely old (the other line's copy, a late reply): no need to look inside.
            *self.counters.duplicates.get_mut(line) += u64::from(packet.message_count());
        } else {
            for (seq, msg) in packet.sequenced_messages() {
                self.on_message(line, seq, msg, now, &mut out);
            }
        }
        self.after_progress(had_gap, before, now, line == Line::Recovery);
    }

    /// Whether a packet showing `next` (one past its highest sequence number) from `line` is
    /// believed (see [`ArbiterConfig::max_jump`]).
    fn believe<F>(&mut self, line: Line, next: u64, out: &mut F) -> bool
    where
        F: FnMut(Event<'_>),
    {
        let Some(max) = self.config.max_jump else {
            return true;
        };
        if next <= self.high.saturating_add(max) {
            return true;
        }
        let confirmed = match &mut self.jump_claim {
            Some((first, _, _)) if *first != line => Some(true),
            // The same line, consistent with its claim (as far or further): one more voice.
            Some((_, claimed, seen)) if next >= *claimed => {
                *seen += 1;
                *claimed = next;
                Some(*seen >= self.config.jump_confirmations.max(1))
            }
            // No claim, or one this packet contradicts: a new claim.
            _ => None,
        };
        match confirmed {
            Some(true) => {
                self.jump_claim = None;
                self.counters.jumps_confirmed += 1;
                return true;
            }
            Some(false) => {}
            None => {
                self.jump_claim = Some((line, next, 0));
                out(Event::SuspiciousJump {
                    claimed: next,
                    known: self.high,
                });
            }
        }
        self.counters.suspicious_packets += 1;
        false
    }

    #[inline]
    fn on_message<F>(&mut self, line: Line, seq: u64, msg: &[u8], now: u64, out: &mut F)
    where
        F: FnMut(Event<'_>),
    {
        if seq == self.expected {
            out(Event::Message { seq, bytes: msg });
            self.counters.delivered += 1;
            if line == Line::Recovery {
                self.counters.recovered += 1;
            }
            self.expected += 1;
            self.drain(out);
        } else if seq < self.expected || self.buffer.contains(seq) {
            *self.counters.duplicates.get_mut(line) += 1;
        } else {
            let dropped = if seq - self.expected > self.buffer.window {
                1
            } else {
                let recovered = line == Line::Recovery;
                self.buffer.insert(self.expected, seq, msg, recovered, now)
            };
            if dropped > 0 {
                self.counters.reorder_overflow += dropped;
                self.dropped_at.get_or_insert(now);
            }
        }
    }

    /// Delivers buffered messages that follow on from `expected`.
    #[inline]
    fn drain<F>(&mut self, out: &mut F)
    where
        F: FnMut(Event<'_>),
    {
        while self.buffer.count > 0 && self.buffer.contains(self.expected) {
            let seq = self.expected;
            let (bytes, recovered) = self.buffer.get(seq);
            out(Event::Message { seq, bytes });
            self.counters.delivered += 1;
            if recovered {
                self.counters.recovered += 1;
            }
            self.buffer.remove(seq);
            self.expected += 1;
        }
    }

    /// Updates the recovery timer after `expected` may have moved from `before`.
    fn after_progress(&mut self, had_gap: bool, before: u64, now: u64, via_recovery: bool) {
        if !self.has_gap() {
            self.dropped_at = None;
            return;
        }
        if !had_gap {
            // A new gap, visible from now: give the other line time to fill it.
            self.counters.gaps_detected += 1;
            self.attempts = 0;
            self.requested_until = 0;
            self.deadline = now.saturating_add(self.config.rerequest_delay_ns);
        } else if self.expected != before {
            self.hole_moved(now, via_recovery);
        }
    }

    /// Schedules the hole that came into view at `expected` after progress.
    fn hole_moved(&mut self, now: u64, via_recovery: bool) {
        if self.expected < self.requested_until {
            if via_recovery {
                // The reply held only part of the run asked for: ask for the rest now.
                self.attempts = 0;
                self.deadline = now;
            }
            // Otherwise the lines filled part of the run asked for, and the outstanding
            // request (and its timeout) still covers the rest.
            return;
        }
        self.attempts = 0;
        self.requested_until = 0;
        let visible_since = match self.next_buffered() {
            Some(next) => self.buffer.arrived(next),
            None => self.high_at.min(self.dropped_at.unwrap_or(u64::MAX)),
        };
        // In the past when the hole has been visible long enough: due at once.
        self.deadline = visible_since.saturating_add(self.config.rerequest_delay_ns);
    }

    /// The lowest buffered sequence number (all are above `expected`).
    fn next_buffered(&self) -> Option<u64> {
        if self.buffer.count == 0 {
            return None;
        }
        let limit = self
            .high
            .min(self.expected.saturating_add(self.buffer.window + 1));
        self.buffer.next_at_or_after(self.expected + 1, limit)
    }

    /// One past the end of the hole at `expected`: the next buffered sequence number, or `high`.
    fn hole_end(&self) -> u64 {
        self.next_buffered().unwrap_or(self.high)
    }

    /// Acts on expired timers at `now`: returns the re-request to send, if one is due, and
    /// reports through `out` any run declared lost (followed by the buffered messages it
    /// releases). Returns at most one request per call; the next deadline is
    /// [`next_deadline`](Self::next_deadline). Allocates nothing.
    pub fn poll_timers<F>(&mut self, now: u64, mut out: F) -> Option<RequestPacket>
    where
        F: FnMut(Event<'_>),
    {
        // At most two rounds: a Lost declaration resets `attempts`, so the next round sends.
        while self.has_gap() && now >= self.deadline {
            let end = self.hole_end();
            let from = self.expected;
            if !self.config.rerequests {
                // Nobody to ask: the hole had its grace period, skip all of it.
                self.declare_lost(from, end - from, now, &mut out);
                continue;
            }
            if self.attempts <= self.config.max_retries {
                let count = (end - from).min(u64::from(self.config.max_request_count));
                self.attempts += 1;
                self.requested_until = from + count;
                self.deadline = now.saturating_add(self.config.rerequest_timeout_ns);
                self.counters.rerequests_sent += 1;
                return Some(RequestPacket {
                    session: self.session?,
                    sequence: from,
                    // At most max_request_count, a u16.
                    count: count as u16,
                });
            }
            // The run asked for (always from `expected`, so `requested_until > from`), or,
            // when the server looks dead, the whole hole.
            let count = if self.server_alive {
                end.min(self.requested_until.max(from + 1)) - from
            } else {
                end - from
            };
            self.server_alive = false;
            self.declare_lost(from, count, now, &mut out);
        }
        None
    }

    /// Skips `from .. from + count`, reports it, and releases what follows it.
    fn declare_lost<F>(&mut self, from: u64, count: u64, now: u64, out: &mut F)
    where
        F: FnMut(Event<'_>),
    {
        out(Event::Lost { from, count });
        self.counters.lost += count;
        self.counters.lost_runs += 1;
        self.expected = from + count;
        self.requested_until = 0;
        self.drain(out);
        self.after_progress(true, from, now, false);
    }

    /// When [`poll_timers`](Self::poll_timers) has something to do next (possibly already
    /// past: due at once); `None` while there is no gap.
    pub fn next_deadline(&self) -> Option<u64> {
        self.has_gap().then_some(self.deadline)
    }

    /// Whether messages are missing (known to exist but not delivered).
    pub const fn has_gap(&self) -> bool {
        self.synced && self.expected < self.high
    }

    /// The next sequence number to deliver, once known.
    pub const fn expected(&self) -> Option<u64> {
        if self.synced {
            Some(self.expected)
        } else {
            None
        }
    }

    /// One past the highest sequence number known to exist, once known.
    pub const fn high(&self) -> Option<u64> {
        if self.synced { Some(self.high) } else { None }
    }

    /// The feed's session, once known.
    pub const fn session(&self) -> Option<Session> {
        self.session
    }

    /// Messages in the reorder buffer.
    pub const fn buffered(&self) -> usize {
        self.buffer.count
    }

    /// Bytes of the messages in the reorder buffer.
    pub const fn buffered_bytes(&self) -> usize {
        self.buffer.live_bytes
    }

    /// The configuration.
    pub const fn config(&self) -> &ArbiterConfig {
        &self.config
    }

    /// Counters since creation.
    pub const fn counters(&self) -> &ArbiterCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests;
