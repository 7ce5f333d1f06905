//! SoupBinTCP server sessions: subscribers (egress, a cursor on the journal) and publishers (ingest).
//!
//! The mio loop moves bytes and time in; this module decides what they mean. Per message the egress path
//! does one bounds check, one filter test and one copy into the session's output buffer; the socket is
//! written once per loop iteration per session, however many messages that carries.

use std::{
    io::{self, Read, Write},
    net::SocketAddr,
};

use herz_core::{
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
    },
};
use mio::net::TcpStream;

use crate::config::{SlowConsumerPolicy, User};

/// Client packets larger than this are refused (a Login Request is 49 bytes; filters are split).
pub const MAX_CLIENT_PACKET: usize = soupbintcp::DEFAULT_MAX_CLIENT_PACKET_LEN;

/// Which endpoint a session came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives the stream.
    Subscriber,
    /// Sends messages into the journal.
    Publisher,
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Connected, no login yet.
    AwaitingLogin,
    /// Logged in.
    Active,
    /// Rejected or logged out: flush what is queued, then close.
    Closing,
}

/// Why a session ended; each has a counter and a (rate-limited) log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed or sent a Logout Request.
    Logout,
    /// The peer closed the connection.
    PeerClosed,
    /// A login was rejected.
    Rejected,
    /// Malformed input (framing, unknown type, bad login fields, bad filter, bad message).
    Malformed(String),
    /// A Herz control request was refused with `HERZ ERROR` (bad or late filter); closed after the error
    /// is written, not abortively.
    Refused(String),
    /// No data from the peer within the timeout.
    HeartbeatTimeout,
    /// The socket failed (reset, TCP_USER_TIMEOUT, keepalive).
    SocketError(io::ErrorKind),
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
                | CloseReason::SocketError(_)
                | CloseReason::SlowConsumer
                | CloseReason::Malformed(_)
        )
    }
}

/// Shared, read-only context for handling input.
pub struct Ctx<'a> {
    /// Herz's session name.
    pub session: SessionName,
    /// Accepted logins for this session's role.
    pub users: &'a [User],
    /// Default slow-consumer policy.
    pub policy: SlowConsumerPolicy,
    /// Monotonic now, ns.
    pub now: u64,
}

/// What handling input produced.
#[derive(Debug, Default)]
pub struct InputOutcome {
    /// Session must close.
    pub close: Option<CloseReason>,
    /// A login was accepted just now.
    pub logged_in: bool,
    /// The read budget ran out before the socket was drained: read again next iteration.
    pub more: bool,
}

/// Bytes read from one session per loop iteration, so one fast publisher cannot starve fan-out.
const READ_BUDGET: usize = 256 * 1024;

/// One SoupBinTCP session.
pub struct Session {
    /// The socket.
    pub stream: TcpStream,
    /// Peer address.
    pub peer: SocketAddr,
    /// Endpoint.
    pub role: Role,
    /// Life stage.
    pub state: State,
    /// Logged-in username (for the operator's view).
    pub user: String,
    inbuf: Box<[u8]>,
    in_len: usize,
    out: Vec<u8>,
    out_pos: usize,
    out_limit: usize,
    /// Next journal sequence to send (subscribers).
    pub cursor: u64,
    filter: Option<SubscriptionFilter>,
    pending_filter: Vec<u8>,
    skips: SkipAccumulator,
    /// Slow-consumer policy in force.
    pub policy: SlowConsumerPolicy,
    conflator: Option<Box<Conflator>>,
    /// While conflating: send only kept sequences below this one.
    conflate_until: u64,
    /// Last time anything was received, ns.
    pub last_rx: u64,
    /// Last time anything was sent, ns.
    pub last_tx: u64,
    /// False after a write would block, until the socket says writable again.
    pub writable: bool,
    /// Messages sent to this subscriber.
    pub sent: u64,
    /// Bytes written to the socket.
    pub bytes_out: u64,
    refused: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("role", &self.role)
            .field("state", &self.state)
            .finish()
    }
}

/// Result of pumping journal messages to a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Pump {
    /// Caught up, or waiting for the socket.
    Ok,
    /// The socket failed.
    Failed(io::ErrorKind),
}

impl Session {
    /// A new session on an accepted socket.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        role: Role,
        out_limit: usize,
        policy: SlowConsumerPolicy,
        now: u64,
    ) -> Self {
        Self {
            stream,
            peer,
            role,
            state: State::AwaitingLogin,
            user: String::new(),
            inbuf: vec![0u8; 64 * 1024].into_boxed_slice(),
            in_len: 0,
            out: Vec::with_capacity(out_limit + 64 * 1024),
            out_pos: 0,
            out_limit,
            cursor: 0,
            filter: None,
            pending_filter: Vec::new(),
            skips: SkipAccumulator::default(),
            policy,
            conflator: None,
            conflate_until: 0,
            last_rx: now,
            last_tx: now,
            writable: true,
            sent: 0,
            bytes_out: 0,
            refused: None,
        }
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Reads everything available and handles complete packets. Publisher messages go to `journal`.
    ///
    /// A read that returns less than the buffer had room for has taken everything the socket held;
    /// the next arrival raises a new (edge-triggered) readiness event, so the loop stops there instead
    /// of paying one more `recv` for `EAGAIN` (one syscall in three for a publisher sending one small
    /// batch per wakeup). Unless `drain`: when the peer's FIN may already have arrived with the data,
    /// no further event would announce it, so the socket is read until it says so.
    pub fn on_readable(
        &mut self,
        ctx: &Ctx<'_>,
        journal: &mut Journal,
        drain: bool,
        mut on_message: impl FnMut(Result<u64, String>),
    ) -> InputOutcome {
        let mut outcome = InputOutcome::default();
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                outcome.more = true;
                return outcome;
            }
            if self.in_len == self.inbuf.len() {
                // A full buffer with no complete packet cannot happen under MAX_CLIENT_PACKET; defensive.
                outcome.close = Some(CloseReason::Malformed("input buffer overflow".into()));
                return outcome;
            }
            match self.stream.read(&mut self.inbuf[self.in_len..]) {
                Ok(0) => {
                    self.handle_packets(ctx, journal, &mut outcome, &mut on_message);
                    if outcome.close.is_none() {
                        outcome.close = Some(CloseReason::PeerClosed);
                    }
                    return outcome;
                }
                Ok(n) => {
                    let short = self.in_len + n < self.inbuf.len();
                    budget = budget.saturating_sub(n);
                    self.in_len += n;
                    self.last_rx = ctx.now;
                    self.handle_packets(ctx, journal, &mut outcome, &mut on_message);
                    if outcome.close.is_some() || (short && !drain) {
                        return outcome;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return outcome,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    outcome.close = Some(CloseReason::SocketError(e.kind()));
                    return outcome;
                }
            }
        }
    }

    fn handle_packets(
        &mut self,
        ctx: &Ctx<'_>,
        journal: &mut Journal,
        outcome: &mut InputOutcome,
        on_message: &mut impl FnMut(Result<u64, String>),
    ) {
        let mut consumed = 0;
        loop {
            let (packet, used) = match soupbintcp::next_client_packet(
                &self.inbuf[consumed..self.in_len],
                MAX_CLIENT_PACKET,
            ) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    outcome.close = Some(CloseReason::Malformed(e.to_string()));
                    return;
                }
            };
            // Copy what the packet borrows before the buffer is touched again.
            let close = match packet {
                Packet::LoginRequest(login) => self.on_login(ctx, &login, journal, outcome),
                Packet::Debug(text) => {
                    let text = text.to_vec();
                    self.on_debug(&text)
                }
                Packet::ClientHeartbeat => None,
                Packet::LogoutRequest => Some(CloseReason::Logout),
                Packet::UnsequencedData(msg) => match (self.role, self.state) {
                    (Role::Publisher, State::Active) => {
                        if msg.len() < herz_core::protocol::tick::ROUTING_HEADER_LEN {
                            Some(CloseReason::Malformed(format!(
                                "message of {} bytes is shorter than the 9-byte type+symbol header",
                                msg.len()
                            )))
                        } else {
                            match journal.append_at(msg, ctx.now) {
                                Ok(seq) => {
                                    on_message(Ok(seq));
                                    None
                                }
                                Err(e) => Some(CloseReason::Malformed(e.to_string())),
                            }
                        }
                    }
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
            if let Some(reason) = close {
                outcome.close = Some(reason);
                break;
            }
        }
        self.inbuf.copy_within(consumed..self.in_len, 0);
        self.in_len -= consumed;
    }

    fn on_debug(&mut self, text: &[u8]) -> Option<CloseReason> {
        match HerzControl::parse(text) {
            Ok(Some(HerzControl::Filter(_)))
                if self.role == Role::Subscriber && self.state == State::AwaitingLogin =>
            {
                // Kept as text and compiled at login: several FILTER packets add up.
                if !self.pending_filter.is_empty() {
                    self.pending_filter.push(b'\n');
                }
                self.pending_filter.extend_from_slice(text);
                None
            }
            Ok(Some(HerzControl::Filter(_))) => {
                self.refuse("HERZ FILTER is only accepted before the Login Request")
            }
            Ok(_) => None,
            Err(e) => self.refuse(&format!("bad Herz control packet: {e}")),
        }
    }

    /// Refuses a Herz control request (docs/PROTOCOL.md): says why in `HERZ ERROR <reason>`, then closes
    /// once that is written. The session is malformed input, so it is counted as such.
    fn refuse(&mut self, reason: &str) -> Option<CloseReason> {
        if soupbintcp::encode_error_packet(reason, &mut self.out).is_err() {
            return Some(CloseReason::Malformed(reason.to_string()));
        }
        self.refused = Some(reason.to_string());
        self.state = State::Closing;
        None
    }

    /// Why a Herz control request was refused, once it was.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    fn reject(&mut self, reason: RejectReason) -> Option<CloseReason> {
        soupbintcp::encode_login_rejected(reason, &mut self.out);
        self.state = State::Closing;
        None
    }

    fn on_login(
        &mut self,
        ctx: &Ctx<'_>,
        login: &LoginRequest,
        journal: &Journal,
        outcome: &mut InputOutcome,
    ) -> Option<CloseReason> {
        if self.state != State::AwaitingLogin {
            return Some(CloseReason::Malformed("second Login Request".into()));
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
        if self.role == Role::Subscriber && !self.pending_filter.is_empty() {
            let mut filter = SubscriptionFilter::new();
            for line in self.pending_filter.split(|b| *b == b'\n') {
                if let Ok(Some(HerzControl::Filter(f))) = HerzControl::parse(line)
                    && let Err(e) = filter.add(&f)
                {
                    return self.refuse(&format!("filter refused: {e}"));
                }
            }
            self.filter = Some(filter);
            self.pending_filter = Vec::new();
        }
        // 0 means "from the next new message"; older than retained starts at the oldest retained, and
        // the Login Accepted says so (the client sees where numbering starts).
        let next = match login.sequence {
            0 => journal.head(),
            n => n.clamp(journal.tail(), journal.head()),
        };
        self.cursor = next;
        self.user = user.name.clone();
        if let Some(p) = user.policy {
            self.policy = p;
        } else {
            self.policy = ctx.policy;
        }
        LoginAccepted {
            session: ctx.session,
            sequence: next,
        }
        .encode(&mut self.out);
        self.state = State::Active;
        outcome.logged_in = true;
        None
    }

    /// Writes queued bytes; returns Failed when the socket broke.
    pub fn flush(&mut self, now: u64) -> Pump {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Pump::Failed(io::ErrorKind::WriteZero),
                Ok(n) => {
                    self.out_pos += n;
                    self.bytes_out += n as u64;
                    self.last_tx = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Pump::Ok;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Pump::Failed(e.kind()),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        Pump::Ok
    }

    /// How far behind the journal head this subscriber is, in messages.
    pub fn lag(&self, journal: &Journal) -> u64 {
        journal.head().saturating_sub(self.cursor)
    }

    /// Applies the slow-consumer policy if the subscriber fell too far behind (or off the journal's tail).
    /// Returns what happened, for counting.
    ///
    /// A subscriber whose socket still takes data is not slow, whatever the burst: it is pumped now.
    /// The policy fires when the lag passes `max_lag` while its socket is full, or when it fell off
    /// the journal.
    pub fn enforce_lag(&mut self, journal: &Journal, max_lag: u64) -> LagAction {
        let fell_off = self.cursor < journal.tail();
        if !fell_off && (self.writable || self.lag(journal) <= max_lag) {
            return LagAction::None;
        }
        match self.policy {
            SlowConsumerPolicy::Disconnect => LagAction::Disconnect,
            SlowConsumerPolicy::DropOldest => {
                // Keep the newest quarter of the allowance, so the subscriber has a little history.
                let target = journal
                    .head()
                    .saturating_sub(max_lag / 4)
                    .max(journal.tail());
                let skipped = target - self.cursor;
                self.skip(skipped, SkipReason::Dropped);
                self.cursor = target;
                self.conflate_until = 0;
                LagAction::Dropped(skipped)
            }
            // A plan in progress covers the backlog up to `conflate_until`; planning again before the
            // cursor gets there would rescan the same messages on every loop iteration.
            SlowConsumerPolicy::Conflate if !fell_off && self.cursor < self.conflate_until => {
                LagAction::None
            }
            SlowConsumerPolicy::Conflate => {
                let mut dropped = 0;
                if fell_off {
                    dropped = journal.tail() - self.cursor;
                    self.skip(dropped, SkipReason::Dropped);
                    self.cursor = journal.tail();
                }
                let conflator = self.conflator.get_or_insert_with(|| {
                    Box::new(
                        Conflator::new(ConflatorConfig::default())
                            .expect("default conflator config is valid"),
                    )
                });
                let end = journal.head();
                let plan = conflator.plan(journal.range(self.cursor, end));
                self.conflate_until = end;
                LagAction::Conflated {
                    superseded: plan.conflated,
                    dropped,
                }
            }
        }
    }

    /// Moves journal messages into the output buffer (up to its limit) and writes them, until caught up
    /// or the socket would block.
    pub fn pump(&mut self, journal: &Journal, now: u64) -> Pump {
        loop {
            if self.out_pos > 0 && self.out.len() >= self.out_limit {
                // Make room: move the unwritten tail to the front.
                self.out.drain(..self.out_pos);
                self.out_pos = 0;
            }
            let head = journal.head();
            while self.cursor < head && self.out.len() < self.out_limit {
                let seq = self.cursor;
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
            if self.queued() == 0 {
                return Pump::Ok;
            }
            if let failed @ Pump::Failed(_) = self.flush(now) {
                return failed;
            }
            if !self.writable || self.cursor >= head {
                return Pump::Ok;
            }
        }
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

    /// Timer work: heartbeats after `hb` ns of not sending; true when the peer was silent past `timeout`.
    pub fn on_timer(&mut self, now: u64, hb: u64, timeout: u64) -> bool {
        if now.saturating_sub(self.last_rx) > timeout {
            return true;
        }
        if self.state == State::Active
            && self.queued() == 0
            && now.saturating_sub(self.last_tx) >= hb
        {
            // Pending skip markers first, so a quiet filtered subscriber's position is current.
            self.emit_skips();
            soupbintcp::encode_server_heartbeat(&mut self.out);
            self.last_tx = now;
        }
        false
    }

    /// Queues End of Session (on shutdown).
    pub fn end_of_session(&mut self) {
        if self.state == State::Active {
            self.emit_skips();
            soupbintcp::encode_end_of_session(&mut self.out);
        }
    }
}

/// What [`Session::enforce_lag`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagAction {
    /// Within bounds.
    None,
    /// Policy `disconnect` fired.
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
