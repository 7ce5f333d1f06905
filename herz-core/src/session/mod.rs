//! The SoupBinTCP server session, sans I/O: one subscriber's or publisher's login, Herz control packets,
//! journal cursor, heartbeats and slow-consumer policy, with no socket and no clock.
//!
//! The event loop owns the socket and moves bytes and time in and out:
//! - received bytes go into [`ServerSession::recv_buf`] and are announced with
//!   [`ServerSession::on_received`]; end of stream with [`ServerSession::on_peer_closed`];
//! - bytes to send are [`ServerSession::transmit`]; what the socket took is reported with
//!   [`ServerSession::on_sent`]; [`ServerSession::fill`] moves journal messages into that buffer;
//! - [`ServerSession::on_timer`] sends heartbeats and notices a silent peer;
//! - what happened comes back as explicit [`Event`]s from [`ServerSession::poll_event`]: the loop acts
//!   on them (counters, logs, the shield's trust, closing the socket) and never infers them from state.
//!
//! Per message the egress path does one bounds check, one filter test and one copy into the output
//! buffer; nothing allocates once a session is built.

use std::collections::VecDeque;

use crate::{
    engine::{
        conflate::{Conflator, ConflatorConfig},
        filter::SubscriptionFilter,
        journal::Journal,
        skip::SkipAccumulator,
    },
    protocol::{
        moldudp64::Session as SessionName,
        soupbintcp::{
            self, HerzControl, LoginAccepted, LoginRequest, Packet, RejectReason, SkipReason,
        },
        tick::ROUTING_HEADER_LEN,
    },
};

mod lag;
mod snapshot;
#[cfg(test)]
mod tests;

use snapshot::Snapshot;

/// Client packets larger than this are refused (a Login Request is 49 bytes; filters are split).
pub const MAX_CLIENT_PACKET: usize = soupbintcp::DEFAULT_MAX_CLIENT_PACKET_LEN;

/// Bytes of client input a session buffers: whole packets up to [`MAX_CLIENT_PACKET`], many at once.
pub const INPUT_BUFFER: usize = 64 * 1024;

/// Which endpoint a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Receives the stream.
    Subscriber,
    /// Sends messages into the journal.
    Publisher,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Connected, no login yet.
    AwaitingLogin,
    /// Logged in.
    Active,
    /// Rejected, refused or logged out: flush what is queued, then close.
    Closing,
}

/// What happens to a subscriber that falls too far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Close the session (abortively, so its fd is freed at once). The subscriber reconnects and resumes.
    Disconnect,
    /// Skip ahead to recent messages and tell the subscriber how many it missed (`HERZ SKIP n dropped`).
    DropOldest,
    /// Send only the latest message per symbol of the backlog (`HERZ SKIP n conflated` for the rest).
    Conflate,
}

impl SlowConsumerPolicy {
    /// The name used in the configuration and in `/state`.
    pub fn name(self) -> &'static str {
        match self {
            SlowConsumerPolicy::Disconnect => "disconnect",
            SlowConsumerPolicy::DropOldest => "drop-oldest",
            SlowConsumerPolicy::Conflate => "conflate",
        }
    }
}

/// A login (name and password) accepted on a SoupBinTCP port.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Username, 1 to 6 characters.
    pub name: String,
    /// Password, up to 10 characters.
    pub password: String,
    /// Slow-consumer policy for this user's sessions (subscribers only; defaults to the endpoint's).
    #[serde(default)]
    pub policy: Option<SlowConsumerPolicy>,
}

/// Why a session ended; each has a counter and a (rate-limited) log line in the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent a Logout Request.
    Logout,
    /// The peer closed the connection.
    PeerClosed,
    /// A login was rejected (the Login Rejected packet was written).
    Rejected,
    /// Malformed input (framing, unknown type, bad login fields, bad message).
    Malformed(String),
    /// A Herz control request was refused with `HERZ ERROR` (bad or late filter); closed after the error
    /// is written, not abortively.
    Refused(String),
    /// No data from the peer within the timeout.
    HeartbeatTimeout,
    /// Connected, but no login accepted within the login deadline (heartbeats or Herz control
    /// packets do not extend it).
    LoginTimeout,
    /// The socket failed (reset, TCP_USER_TIMEOUT, keepalive).
    SocketError(std::io::ErrorKind),
    /// Slow consumer under the `disconnect` policy.
    SlowConsumer,
    /// Herz is shutting down.
    Shutdown,
}

impl CloseReason {
    /// Dead and evicted peers are closed abortively; orderly ends are not.
    pub fn is_abortive(&self) -> bool {
        matches!(
            self,
            CloseReason::HeartbeatTimeout
                | CloseReason::LoginTimeout
                | CloseReason::SocketError(_)
                | CloseReason::SlowConsumer
                | CloseReason::Malformed(_)
        )
    }

    /// Ends that are part of normal operation (logged quietly).
    pub fn is_orderly(&self) -> bool {
        matches!(
            self,
            CloseReason::Logout
                | CloseReason::PeerClosed
                | CloseReason::Rejected
                | CloseReason::Shutdown
        )
    }
}

/// What a session reports to the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A login was accepted; the stream starts at `from`.
    LoginAccepted {
        /// The user that logged in.
        user: String,
        /// First sequence number the subscriber will receive (the Login Accepted's).
        from: u64,
    },
    /// A login was refused with Login Rejected; the session closes once that is written.
    LoginRejected(RejectReason),
    /// A Herz control request was refused with `HERZ ERROR`; the session closes once that is written.
    Refused(String),
    /// A publisher's messages were appended to the journal, the last at `last`.
    Appended {
        /// How many.
        count: u64,
        /// Sequence number of the last one.
        last: u64,
    },
    /// The session is over: close the socket (abortively when [`CloseReason::is_abortive`]).
    Close(CloseReason),
}

/// Settings shared by every session of one endpoint, and the current time.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// Herz's session name.
    pub session: SessionName,
    /// Accepted logins for this endpoint.
    pub users: &'a [User],
    /// Default slow-consumer policy.
    pub policy: SlowConsumerPolicy,
    /// Monotonic now, ns.
    pub now: u64,
}

/// The session's timers, ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Send a heartbeat after this long without sending anything.
    pub heartbeat_ns: u64,
    /// Close after this long without receiving anything.
    pub silence_ns: u64,
    /// Close a connection that has not logged in this long after it connected.
    pub login_ns: u64,
}

/// What [`ServerSession::enforce_lag`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagAction {
    /// Within bounds.
    None,
    /// Policy `disconnect` fired (an [`Event::Close`] is queued).
    Disconnect,
    /// Policy `drop-oldest` skipped this many messages.
    Dropped(u64),
    /// Policy `conflate` planned a backlog: this many superseded, `dropped` already evicted.
    Conflated {
        /// Messages superseded by newer ones for the same symbol.
        superseded: u64,
        /// Messages that fell off the journal before conflation.
        dropped: u64,
    },
}

/// One SoupBinTCP server session.
pub struct ServerSession {
    role: Role,
    state: State,
    user: String,
    inbuf: Box<[u8]>,
    in_len: usize,
    out: Vec<u8>,
    out_pos: usize,
    out_limit: usize,
    cursor: u64,
    /// Compiled as each `HERZ FILTER` packet arrives (before login), so it is bounded by
    /// `MAX_FILTER_ENTRIES` from the first packet on.
    filter: Option<SubscriptionFilter>,
    skips: SkipAccumulator,
    policy: SlowConsumerPolicy,
    conflator: Option<Box<Conflator>>,
    /// While conflating: send only kept sequences below this one.
    conflate_until: u64,
    /// `HERZ SNAPSHOT` arrived before the login.
    snapshot_requested: bool,
    /// The snapshot being planned or sent, until `HERZ LIVE` is written.
    snapshot: Option<Snapshot>,
    connected_at: u64,
    last_rx: u64,
    last_tx: u64,
    sent: u64,
    bytes_out: u64,
    /// Why the session closes once its output is written (rejected, refused, logged out).
    closing: Option<CloseReason>,
    closed: bool,
    events: VecDeque<Event>,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("user", &self.user)
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl ServerSession {
    /// A session that has just connected. `out_limit` bounds the bytes of journal messages queued.
    pub fn new(role: Role, out_limit: usize, policy: SlowConsumerPolicy, now: u64) -> Self {
        Self {
            role,
            state: State::AwaitingLogin,
            user: String::new(),
            inbuf: vec![0u8; INPUT_BUFFER].into_boxed_slice(),
            in_len: 0,
            out: Vec::with_capacity(out_limit + 64 * 1024),
            out_pos: 0,
            out_limit,
            cursor: 0,
            filter: None,
            skips: SkipAccumulator::default(),
            policy,
            conflator: None,
            conflate_until: 0,
            snapshot_requested: false,
            snapshot: None,
            connected_at: now,
            last_rx: now,
            last_tx: now,
            sent: 0,
            bytes_out: 0,
            closing: None,
            closed: false,
            events: VecDeque::with_capacity(8),
        }
    }

    /// The endpoint.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Where the session is in its life (awaiting login, active, closing).
    pub fn state(&self) -> State {
        self.state
    }

    /// The logged-in user ("" before login).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// True once a login was accepted (it stays true while the session closes).
    pub fn logged_in(&self) -> bool {
        !self.user.is_empty()
    }

    /// Next journal sequence number to send (subscribers).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The slow-consumer policy in force.
    pub fn policy(&self) -> SlowConsumerPolicy {
        self.policy
    }

    /// Messages sent to this subscriber so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes the socket took so far.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out
    }

    /// Last time anything was received, ns.
    pub fn last_rx(&self) -> u64 {
        self.last_rx
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// How far behind the journal head this subscriber is, in messages.
    pub fn lag(&self, journal: &Journal) -> u64 {
        journal.head().saturating_sub(self.cursor)
    }

    /// True once the session ended (its [`Event::Close`] is queued or was taken).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Where to read the socket into: the free part of the input buffer (never empty while the session
    /// is open: packets are bounded by [`MAX_CLIENT_PACKET`] and handled as soon as they are complete).
    pub fn recv_buf(&mut self) -> &mut [u8] {
        &mut self.inbuf[self.in_len..]
    }

    /// `n` bytes were read into [`Self::recv_buf`]: handles every complete packet. Publisher messages are
    /// appended to `journal`.
    pub fn on_received(&mut self, n: usize, ctx: &Ctx<'_>, journal: &mut Journal) {
        if self.closed {
            return;
        }
        self.in_len = (self.in_len + n).min(self.inbuf.len());
        self.last_rx = ctx.now;
        let mut consumed = 0;
        let mut appended = (0u64, 0u64);
        while !self.closed {
            if self.state == State::Closing {
                // Answered (rejected or refused) and closing once that is written: what the peer sends
                // meanwhile is not read.
                consumed = self.in_len;
                break;
            }
            let (packet, used) = match soupbintcp::next_client_packet(
                &self.inbuf[consumed..self.in_len],
                MAX_CLIENT_PACKET,
            ) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    self.close(CloseReason::Malformed(e.to_string()));
                    break;
                }
            };
            let end = match packet {
                Packet::LoginRequest(login) => self.on_login(ctx, &login, journal),
                Packet::Debug(text) => {
                    // Copy what the packet borrows before the session is touched.
                    let text = text.to_vec();
                    self.on_debug(&text)
                }
                Packet::ClientHeartbeat => None,
                Packet::LogoutRequest => Some(CloseReason::Logout),
                Packet::UnsequencedData(msg) => match (self.role, self.state) {
                    (Role::Publisher, State::Active) if msg.len() < ROUTING_HEADER_LEN => {
                        Some(CloseReason::Malformed(format!(
                            "message of {} bytes is shorter than the 9-byte type+symbol header",
                            msg.len()
                        )))
                    }
                    (Role::Publisher, State::Active) => match journal.append_at(msg, ctx.now) {
                        Ok(seq) => {
                            appended = (appended.0 + 1, seq);
                            None
                        }
                        Err(e) => Some(CloseReason::Malformed(e.to_string())),
                    },
                    (_, State::AwaitingLogin) => {
                        Some(CloseReason::Malformed("data before login".into()))
                    }
                    // Subscribers have nothing to publish; SoupBinTCP lets them send U, Herz ignores it.
                    _ => None,
                },
                other => Some(CloseReason::Malformed(format!(
                    "unexpected {} packet",
                    other.packet_type().name()
                ))),
            };
            consumed += used;
            if let Some(reason) = end {
                self.close(reason);
            }
        }
        if appended.0 > 0 {
            self.events.push_back(Event::Appended {
                count: appended.0,
                last: appended.1,
            });
        }
        self.inbuf.copy_within(consumed..self.in_len, 0);
        self.in_len -= consumed;
        if !self.closed && self.in_len == self.inbuf.len() {
            // Cannot happen while packets are bounded by MAX_CLIENT_PACKET; defensive.
            self.close(CloseReason::Malformed("input buffer overflow".into()));
        }
    }

    /// The peer closed its side: the session ends (unless it already did).
    pub fn on_peer_closed(&mut self) {
        self.close(CloseReason::PeerClosed);
    }

    /// The socket failed.
    pub fn on_socket_error(&mut self, kind: std::io::ErrorKind) {
        self.close(CloseReason::SocketError(kind));
    }

    /// The bytes to write next.
    pub fn transmit(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// The socket took `n` bytes of [`Self::transmit`] at `now`. A closing session whose output is all
    /// written reports its [`Event::Close`].
    pub fn on_sent(&mut self, n: usize, now: u64) {
        let n = n.min(self.queued());
        if n > 0 {
            self.out_pos += n;
            self.bytes_out += n as u64;
            self.last_tx = now;
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            if self.state == State::Closing
                && let Some(reason) = self.closing.take()
            {
                self.close(reason);
            }
        }
    }

    /// Moves journal messages into the output buffer, up to its limit; true when the cursor reached the
    /// journal head.
    pub fn fill(&mut self, journal: &Journal) -> bool {
        if self.state != State::Active || self.role != Role::Subscriber {
            return true;
        }
        if self.out_pos > 0 && self.out.len() >= self.out_limit {
            // Make room: move the unwritten tail to the front.
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        if let Some(snap) = &mut self.snapshot
            && !snap.planned
        {
            let conflator = self.conflator.as_mut().expect("created at login");
            if !snap.plan(conflator, journal) {
                return false;
            }
            self.conflate_until = snap.end;
        }
        let head = journal.head();
        while self.cursor < head && self.out.len() < self.out_limit {
            let seq = self.cursor;
            if self.snapshot.is_some_and(|s| seq >= s.end) {
                self.announce_live();
            }
            let Some(msg) = journal.get(seq) else { break };
            self.cursor += 1;
            if seq < self.conflate_until
                && let Some(c) = &self.conflator
                && !c.keep(seq, msg)
            {
                self.skip(1, SkipReason::Conflated);
                continue;
            }
            if let Some(f) = &self.filter
                && !f.matches(msg)
            {
                self.skip(1, SkipReason::Filtered);
                continue;
            }
            self.emit_skips();
            let hdr =
                soupbintcp::sequenced_header(msg.len()).expect("journal messages fit a packet");
            self.out.extend_from_slice(&hdr);
            self.out.extend_from_slice(msg);
            self.sent += 1;
        }
        if self.snapshot.is_some_and(|s| self.cursor >= s.end) {
            self.announce_live();
        }
        self.cursor >= head
    }

    /// Ends a snapshot: pending skips, then `HERZ LIVE <end>`.
    fn announce_live(&mut self) {
        if let Some(snap) = self.snapshot.take() {
            self.emit_skips();
            HerzControl::Live { next: snap.end }
                .encode_packet(&mut self.out)
                .expect("HERZ LIVE fits a packet");
        }
    }

    /// Timer work at `now`: a heartbeat after `timers.heartbeat_ns` of not sending; the session ends when
    /// the peer was silent past `timers.silence_ns`, or has not logged in `timers.login_ns` after it
    /// connected.
    pub fn on_timer(&mut self, now: u64, timers: &Timers) {
        if self.closed {
            return;
        }
        if self.state == State::AwaitingLogin
            && now.saturating_sub(self.connected_at) > timers.login_ns
        {
            self.close(CloseReason::LoginTimeout);
            return;
        }
        if now.saturating_sub(self.last_rx) > timers.silence_ns {
            self.close(CloseReason::HeartbeatTimeout);
            return;
        }
        if self.state == State::Active
            && self.queued() == 0
            && now.saturating_sub(self.last_tx) >= timers.heartbeat_ns
        {
            // Pending skip markers first, so a quiet filtered subscriber's position is current.
            self.emit_skips();
            soupbintcp::encode_server_heartbeat(&mut self.out);
            self.last_tx = now;
        }
    }

    /// Queues End of Session (Herz is shutting down); the loop writes it, then closes.
    pub fn end_of_session(&mut self) {
        if self.state == State::Active {
            self.emit_skips();
            soupbintcp::encode_end_of_session(&mut self.out);
        }
    }

    /// Ends the session now with `reason` (once).
    fn close(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.state = State::Closing;
        self.events.push_back(Event::Close(reason));
    }

    /// Ends the session once the queued output is written.
    fn close_after_output(&mut self, reason: CloseReason) {
        self.state = State::Closing;
        if self.queued() == 0 {
            self.close(reason);
        } else {
            self.closing = Some(reason);
        }
    }

    fn on_debug(&mut self, text: &[u8]) -> Option<CloseReason> {
        match HerzControl::parse(text) {
            Ok(Some(HerzControl::Filter(f)))
                if self.role == Role::Subscriber && self.state == State::AwaitingLogin =>
            {
                // Several FILTER packets add up; the total is capped as they arrive.
                match self
                    .filter
                    .get_or_insert_with(SubscriptionFilter::new)
                    .add(&f)
                {
                    Ok(()) => None,
                    Err(e) => self.refuse(&format!("filter refused: {e}")),
                }
            }
            Ok(Some(HerzControl::Filter(_))) => {
                self.refuse("HERZ FILTER is only accepted before the Login Request")
            }
            Ok(Some(HerzControl::Snapshot))
                if self.role == Role::Subscriber && self.state == State::AwaitingLogin =>
            {
                self.snapshot_requested = true;
                None
            }
            Ok(Some(HerzControl::Snapshot)) => self.refuse(
                "HERZ SNAPSHOT is only accepted from a subscriber before the Login Request",
            ),
            Ok(_) => None,
            Err(e) => self.refuse(&format!("bad Herz control packet: {e}")),
        }
    }

    /// Refuses a Herz control request (docs/PROTOCOL.md): says why in `HERZ ERROR <reason>`, then closes
    /// once that is written.
    fn refuse(&mut self, reason: &str) -> Option<CloseReason> {
        if soupbintcp::encode_error_packet(reason, &mut self.out).is_err() {
            return Some(CloseReason::Malformed(reason.to_string()));
        }
        self.events.push_back(Event::Refused(reason.to_string()));
        self.close_after_output(CloseReason::Refused(reason.to_string()));
        None
    }

    fn reject(&mut self, reason: RejectReason) -> Option<CloseReason> {
        soupbintcp::encode_login_rejected(reason, &mut self.out);
        self.events.push_back(Event::LoginRejected(reason));
        self.close_after_output(CloseReason::Rejected);
        None
    }

    fn on_login(
        &mut self,
        ctx: &Ctx<'_>,
        login: &LoginRequest,
        journal: &Journal,
    ) -> Option<CloseReason> {
        match self.state {
            State::AwaitingLogin => {}
            State::Active | State::Closing => {
                return Some(CloseReason::Malformed("second Login Request".into()));
            }
        }
        let Some(user) = ctx
            .users
            .iter()
            .find(|u| login.credentials_match(&u.name, &u.password))
        else {
            return self.reject(RejectReason::NotAuthorized);
        };
        if !login.session.is_blank() && !login.session.matches(&ctx.session) {
            return self.reject(RejectReason::SessionNotAvailable);
        }
        // 0 means "from the next new message". A sequence number the journal does not hold is
        // refused, never moved: older than retained would skip messages silently, and beyond the
        // head means the client saw numbers this journal never gave (another session's, or ones
        // lost with a machine), so serving it would hand out different messages under them.
        let next = match login.sequence {
            0 => journal.head(),
            n if n < journal.tail() || n > journal.head() => {
                return self.reject(RejectReason::SessionNotAvailable);
            }
            n => n,
        };
        let next = if self.snapshot_requested {
            // From the oldest retained message (or the one asked for) to the head: the latest of
            // each symbol, then live.
            let start = if login.sequence == 0 {
                journal.tail()
            } else {
                next
            };
            let conflator = self.conflator.get_or_insert_with(|| {
                Box::new(
                    Conflator::new(ConflatorConfig::default())
                        .expect("default conflator config is valid"),
                )
            });
            conflator.begin();
            let snap = Snapshot::new(start, journal.head());
            self.conflate_until = if snap.planned { snap.end } else { 0 };
            self.snapshot = Some(snap);
            start
        } else {
            next
        };
        self.cursor = next;
        self.user = user.name.clone();
        self.policy = user.policy.unwrap_or(ctx.policy);
        LoginAccepted {
            session: ctx.session,
            sequence: next,
        }
        .encode(&mut self.out);
        self.state = State::Active;
        self.events.push_back(Event::LoginAccepted {
            user: user.name.clone(),
            from: next,
        });
        None
    }

    /// Accounts `n` skipped sequence numbers; a run of another reason is closed with its marker now.
    fn skip(&mut self, n: u64, reason: SkipReason) {
        if let Some((count, r)) = self.skips.add(n, reason) {
            soupbintcp::encode_skip_packet(count, r, &mut self.out);
        }
    }

    fn emit_skips(&mut self) {
        while let Some((n, reason)) = self.skips.take() {
            soupbintcp::encode_skip_packet(n, reason, &mut self.out);
        }
    }
}
