//! The hot loop: one mio event loop for ingest, fan-out and timers.
//!
//! Each iteration: wait for events (or the nearest timer) → read publishers and feeds into the journal →
//! serve logins, heartbeats and re-requests → pump every egress cursor (TCP subscribers, multicast
//! channels) from the journal → timers. Per message nothing allocates, locks or logs; sockets are written
//! once per iteration per session and datagrams leave in `sendmmsg` batches.

pub mod batch;
pub mod channel;
pub mod counters;
mod demo;
mod feed;
pub mod ratelog;
mod rerequest;
pub mod session;
pub mod sock;

use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use herz_core::{
    engine::{
        filter::SubscriptionFilter,
        journal::{Journal, JournalConfig},
    },
    protocol::moldudp64::Session as SessionName,
};
use mio::{Events, Interest, Poll, Token, net::TcpListener, unix::SourceFd};
use slab::Slab;

use crate::config::Config;
use counters::{AtomicHistogram, Counters, Gauges, add};
use ratelog::RateLimitedLog;
use session::{CloseReason, Ctx, LagAction, Pump, Role, Session, State};

const SIGNALS: Token = Token(0);
const SUB_LISTENER: Token = Token(1);
const PUB_LISTENER: Token = Token(2);
const REREQUEST: Token = Token(3);
const FEED_BASE: usize = 100;
const SESSION_BASE: usize = 10_000;

/// Shared view of the hot loop for the control plane: atomics written by the loop, read at scrape
/// time; a state snapshot refreshed twice a second.
#[derive(Debug, Default)]
pub struct Shared {
    /// Counters.
    pub counters: Counters,
    /// Gauges.
    pub gauges: Gauges,
    /// End-to-end latency, journal ingest to socket write (one observation per write, for the newest
    /// message it carried).
    pub latency: AtomicHistogram,
    /// Event-loop iteration time (from waking up to waiting again).
    pub loop_time: AtomicHistogram,
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
}

/// The operator's JSON view (`/state`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StateSnapshot {
    /// Journal session name.
    pub session: String,
    /// Next journal sequence.
    pub journal_head: u64,
    /// Oldest retained sequence.
    pub journal_tail: u64,
    /// Every session.
    pub sessions: Vec<SessionView>,
    /// Channels.
    pub channels: Vec<ChannelView>,
    /// Feeds.
    pub feeds: Vec<FeedView>,
}

/// One session in [`StateSnapshot`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionView {
    /// Remote address.
    pub peer: String,
    /// Username (empty before login).
    pub user: String,
    /// subscriber | publisher.
    pub role: &'static str,
    /// awaiting-login | active | closing.
    pub state: &'static str,
    /// Messages behind the journal head (subscribers).
    pub lag: u64,
    /// Slow-consumer policy.
    pub policy: &'static str,
    /// Messages sent.
    pub sent: u64,
    /// Bytes queued in Herz.
    pub queued: usize,
}

/// One channel in [`StateSnapshot`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChannelView {
    /// Name.
    pub name: String,
    /// Group.
    pub group: String,
    /// Next channel sequence.
    pub next_seq: u64,
}

/// One feed in [`StateSnapshot`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct FeedView {
    /// Name.
    pub name: String,
    /// Messages delivered to the journal.
    pub messages: u64,
    /// Seconds since the last packet (None: never).
    pub idle_secs: Option<f64>,
}

/// Monotonic nanoseconds since the loop started.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The distributor: sockets bound, journal allocated, ready to run.
pub struct Distributor {
    poll: Poll,
    clock: Clock,
    journal: Journal,
    session_name: SessionName,
    config: Config,
    sub_listener: TcpListener,
    pub_listener: TcpListener,
    sessions: Slab<Session>,
    channels: Vec<channel::Channel>,
    feeds: Vec<feed::Feed>,
    rerequest: Option<rerequest::RerequestServer>,
    demo: Option<demo::DemoFeed>,
    shared: Arc<Shared>,
    logs: Logs,
    last_snapshot: u64,
    /// Marks logged-in peers as trusted in the shield (never dropped by its flood rules).
    trust: Option<crate::shield::ShieldHandle>,
    /// Sessions whose read budget ran out: read again next iteration (edge-triggered events will not
    /// say so).
    reread: Vec<usize>,
}

impl std::fmt::Debug for Distributor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Distributor")
            .field("session", &self.session_name)
            .finish()
    }
}

struct Logs {
    closes: RateLimitedLog,
    slow: RateLimitedLog,
    errors: RateLimitedLog,
}

impl Distributor {
    /// Binds every socket and allocates the journal. Errors name the endpoint at fault.
    pub fn bind(config: &Config) -> anyhow::Result<Self> {
        let poll = Poll::new().context("creating the event loop")?;
        let clock = Clock(Instant::now());
        let now = clock.now();
        let name = config.session_name();
        let session_name = SessionName::new(&name)
            .map_err(|e| anyhow::anyhow!("journal.session `{name}`: {e}"))?;
        let j = &config.journal;
        let journal = Journal::new(JournalConfig {
            max_messages: j.max_messages,
            max_bytes: j.max_bytes,
            max_message_len: j.max_message_len,
        });
        let mut sub_listener =
            sock::tcp_listener(config.subscribers.listen).with_context(|| {
                format!(
                    "subscribers.listen: cannot listen on {}",
                    config.subscribers.listen
                )
            })?;
        let mut pub_listener = sock::tcp_listener(config.publishers.listen).with_context(|| {
            format!(
                "publishers.listen: cannot listen on {}",
                config.publishers.listen
            )
        })?;
        poll.registry()
            .register(&mut sub_listener, SUB_LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut pub_listener, PUB_LISTENER, Interest::READABLE)?;

        let mut channels = Vec::new();
        for (i, c) in config.channels.iter().enumerate() {
            let sock =
                sock::udp_multicast_sender(c.group, c.interface, c.ttl).with_context(|| {
                    format!(
                        "channels[{i}] ({}): cannot send to {} from {}",
                        c.name, c.group, c.interface
                    )
                })?;
            let filter = if c.symbols.is_empty() && c.prefixes.is_empty() {
                None
            } else {
                let (symbols, prefixes) = (c.symbols.join(","), c.prefixes.join(","));
                let filter = herz_core::protocol::soupbintcp::Filter::new(&symbols, &prefixes)
                    .map_err(|e| anyhow::anyhow!("channels[{i}].symbols/prefixes: {e}"))?;
                Some(SubscriptionFilter::from_filter(&filter))
            };
            let session = match &c.session {
                Some(s) => SessionName::new(s)
                    .map_err(|e| anyhow::anyhow!("channels[{i}].session: {e}"))?,
                None => session_name,
            };
            channels.push(channel::Channel::new(
                c.name.clone(),
                session,
                c.group,
                sock,
                filter,
                &journal,
                j.max_messages,
                c.max_payload,
                c.flush_us,
                now,
            ));
        }
        let rerequest = if channels.is_empty() {
            None
        } else {
            let r =
                rerequest::RerequestServer::bind(&config.rerequest, now).with_context(|| {
                    format!("rerequest.listen: cannot bind {}", config.rerequest.listen)
                })?;
            poll.registry()
                .register(&mut SourceFd(&r.fd()), REREQUEST, Interest::READABLE)?;
            Some(r)
        };
        let mut feeds = Vec::new();
        for (i, f) in config.feeds.iter().enumerate() {
            let feed = feed::Feed::bind(f, config.journal.max_message_len, now)
                .with_context(|| format!("feeds[{i}] ({})", f.name))?;
            for (line, fd) in feed.fds().into_iter().enumerate() {
                poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(FEED_BASE + i * 3 + line),
                    Interest::READABLE,
                )?;
            }
            feeds.push(feed);
        }
        let demo = config
            .demo
            .enabled
            .then(|| demo::DemoFeed::new(config.demo.rate, config.demo.symbols, now));
        Ok(Self {
            poll,
            clock,
            journal,
            session_name,
            config: config.clone(),
            sub_listener,
            pub_listener,
            sessions: Slab::with_capacity(
                config.subscribers.max_sessions + config.publishers.max_sessions,
            ),
            channels,
            feeds,
            rerequest,
            demo,
            shared: Arc::new(Shared {
                feeds: config
                    .feeds
                    .iter()
                    .map(|f| NamedStats {
                        name: f.name.clone(),
                        ..Default::default()
                    })
                    .collect(),
                channels: config
                    .channels
                    .iter()
                    .map(|c| NamedStats {
                        name: c.name.clone(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            last_snapshot: 0,
            trust: None,
            reread: Vec::new(),
            logs: Logs {
                closes: RateLimitedLog::new(10),
                slow: RateLimitedLog::new(10),
                errors: RateLimitedLog::new(10),
            },
        })
    }

    /// The counters and gauges the control plane reads.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Lets the shield trust logged-in peers: one map update on a peer's first login, one delete when its
    /// last session closes.
    pub fn set_trust(&mut self, handle: crate::shield::ShieldHandle) {
        self.trust = Some(handle);
    }

    /// The instant the loop's monotonic clock counts from.
    pub fn started(&self) -> Instant {
        self.clock.0
    }

    /// The session name subscribers log in to.
    pub fn session_name(&self) -> SessionName {
        self.session_name
    }

    /// Serves until a signal arrives on `signals` (registered here), then ends every session cleanly.
    pub fn run(&mut self, signals: &mut signal_hook_mio::v1_0::Signals) -> anyhow::Result<()> {
        self.poll
            .registry()
            .register(signals, SIGNALS, Interest::READABLE)?;
        if self.demo.is_some() {
            tracing::warn!(
                rate = self.config.demo.rate,
                symbols = self.config.demo.symbols,
                "demo feed on: publishing SYNTHETIC ticks (set demo.enabled = false for real feeds)"
            );
        }
        tracing::info!(
            session = %self.session_name,
            subscribers = %self.config.subscribers.listen,
            publishers = %self.config.publishers.listen,
            channels = self.channels.len(),
            feeds = self.feeds.len(),
            "distributor serving"
        );
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout();
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("event loop"),
            }
            let now = self.clock.now();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => {
                        if let Some(sig) = signals.pending().next() {
                            tracing::info!(signal = sig, "shutting down");
                            self.shutdown();
                            return Ok(());
                        }
                    }
                    SUB_LISTENER => self.accept(Role::Subscriber, now),
                    PUB_LISTENER => self.accept(Role::Publisher, now),
                    REREQUEST => self.serve_rerequests(now),
                    Token(t) if (FEED_BASE..SESSION_BASE).contains(&t) => {
                        let (i, line) = ((t - FEED_BASE) / 3, (t - FEED_BASE) % 3);
                        self.read_feed(i, line, now);
                    }
                    Token(t) => {
                        let key = t - SESSION_BASE;
                        if event.is_writable()
                            && let Some(s) = self.sessions.get_mut(key)
                        {
                            s.writable = true;
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_session(key, now, event.is_read_closed() || event.is_error());
                        }
                    }
                }
            }
            self.shared
                .gauges
                .loop_alive_ns
                .store(now, std::sync::atomic::Ordering::Relaxed);
            for key in std::mem::take(&mut self.reread) {
                self.read_session(key, now, true);
            }
            if let Some(d) = &mut self.demo {
                d.produce(now, &mut self.journal, &self.shared.counters);
            }
            for f in &mut self.feeds {
                f.on_timer(now, &mut self.journal, &self.shared.counters);
            }
            self.fan_out(now);
            self.timers(now);
            self.shared
                .loop_time
                .record(self.clock.now().saturating_sub(now));
        }
    }

    fn next_timeout(&self) -> Duration {
        let now = self.clock.now();
        // Heartbeats and timeouts are checked at least every 100 ms.
        let mut ns: u64 = 100_000_000;
        for c in &self.channels {
            ns = ns.min(c.next_deadline(now));
        }
        if let Some(d) = &self.demo {
            ns = ns.min(d.next_deadline(now));
        }
        for f in &self.feeds {
            ns = ns.min(f.next_deadline(now));
        }
        let head = self.journal.head();
        if !self.reread.is_empty()
            || self.channels.iter().any(|c| c.cursor < head)
            || self.sessions.iter().any(|(_, s)| {
                s.state == State::Active
                    && s.role == Role::Subscriber
                    && s.writable
                    && s.cursor < head
            })
        {
            ns = 0;
        }
        Duration::from_nanos(ns)
    }

    fn accept(&mut self, role: Role, now: u64) {
        loop {
            let listener = if role == Role::Subscriber {
                &self.sub_listener
            } else {
                &self.pub_listener
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if let Some(suppressed) = self.logs.errors.allow(now) {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    return;
                }
            };
            let (limit, live) = match role {
                Role::Subscriber => (
                    self.config.subscribers.max_sessions,
                    self.count_sessions(Role::Subscriber),
                ),
                Role::Publisher => (
                    self.config.publishers.max_sessions,
                    self.count_sessions(Role::Publisher),
                ),
            };
            if live >= limit {
                add(&self.shared.counters.sessions_refused, 1);
                sock::abort(&stream);
                continue;
            }
            let s = &self.config.subscribers;
            let opts = sock::TcpSessionOptions {
                keepalive: (s.keepalive_secs > 0).then(|| Duration::from_secs(s.keepalive_secs)),
                user_timeout: (s.user_timeout_ms > 0)
                    .then(|| Duration::from_millis(s.user_timeout_ms)),
                send_buffer: (s.send_buffer > 0).then_some(s.send_buffer),
            };
            if let Err(e) = sock::configure_session(&stream, opts) {
                tracing::debug!(%peer, error = %e, "socket options");
            }
            let entry = self.sessions.vacant_entry();
            let token = Token(SESSION_BASE + entry.key());
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(%peer, error = %e, "cannot register session");
                continue;
            }
            entry.insert(Session::new(
                stream,
                peer,
                role,
                s.output_buffer,
                s.policy,
                now,
            ));
            self.shared
                .gauges
                .sessions_pending
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn count_sessions(&self, role: Role) -> usize {
        self.sessions.iter().filter(|(_, s)| s.role == role).count()
    }

    /// Reads a session's socket; `drain`: read until it would block (see [`Session::on_readable`]).
    fn read_session(&mut self, key: usize, now: u64, drain: bool) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let users = match s.role {
            Role::Subscriber => &self.config.subscribers.users,
            Role::Publisher => &self.config.publishers.users,
        };
        let ctx = Ctx {
            session: self.session_name,
            users,
            policy: self.config.subscribers.policy,
            now,
        };
        let counters = &self.shared.counters;
        let was = s.state;
        let outcome = s.on_readable(&ctx, &mut self.journal, drain, |r| {
            if let Ok(_seq) = r {
                add(&counters.publisher_messages, 1);
                add(&counters.journal_appended, 1);
            }
        });
        if outcome.more {
            self.reread.push(key);
        }
        if outcome.logged_in {
            add(&counters.logins_accepted, 1);
            if let Some(t) = &mut self.trust
                && let Err(e) = t.trust(s.peer.ip())
            {
                tracing::warn!(peer = %s.peer, error = %e, "cannot mark the peer trusted in the shield");
            }
            self.shared
                .gauges
                .sessions_pending
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let g = if s.role == Role::Subscriber {
                &self.shared.gauges.subscribers_active
            } else {
                &self.shared.gauges.publishers_active
            };
            g.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(peer = %s.peer, user = %s.user, role = ?s.role, from = s.cursor, "login accepted");
        }
        if was == State::AwaitingLogin && s.state == State::Closing && s.refused().is_none() {
            add(&counters.logins_rejected, 1);
            if let Some(suppressed) = self.logs.closes.allow(now) {
                tracing::info!(peer = %s.peer, suppressed, "login rejected");
            }
        }
        // Answers (Login Accepted/Rejected) go out at once.
        let flushed = s.flush(now);
        if let Some(reason) = outcome.close {
            self.close(key, reason, now);
        } else if let Pump::Failed(kind) = flushed {
            self.close(key, CloseReason::SocketError(kind), now);
        } else if self.sessions[key].state == State::Closing && self.sessions[key].queued() == 0 {
            let reason = closing_reason(&self.sessions[key]);
            self.close(key, reason, now);
        }
    }

    fn close(&mut self, key: usize, reason: CloseReason, now: u64) {
        let mut s = self.sessions.remove(key);
        let _ = self.poll.registry().deregister(&mut s.stream);
        if !s.user.is_empty()
            && let Some(t) = &mut self.trust
            && let Err(e) = t.untrust(s.peer.ip())
        {
            tracing::warn!(peer = %s.peer, error = %e, "cannot remove the peer's trust in the shield");
        }
        let c = &self.shared.counters;
        match &reason {
            CloseReason::Malformed(_) | CloseReason::Refused(_) => add(&c.malformed_closes, 1),
            CloseReason::HeartbeatTimeout => add(&c.heartbeat_timeouts, 1),
            CloseReason::SocketError(_) => add(&c.socket_errors, 1),
            CloseReason::SlowConsumer => add(&c.slow_disconnects, 1),
            _ => {}
        }
        if reason.is_abortive() {
            sock::abort(&s.stream);
        }
        let g = &self.shared.gauges;
        // A session that logged in (user set) counts as active until it closes, whatever its last
        // state; one that never did counts as pending.
        let logged_in = !s.user.is_empty();
        match (logged_in, s.role) {
            (true, Role::Subscriber) => g
                .subscribers_active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed),
            (true, Role::Publisher) => g
                .publishers_active
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed),
            (false, _) => g
                .sessions_pending
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed),
        };
        let quiet = matches!(
            reason,
            CloseReason::Logout
                | CloseReason::PeerClosed
                | CloseReason::Rejected
                | CloseReason::Shutdown
        );
        if let Some(suppressed) = self.logs.closes.allow(now) {
            if quiet {
                tracing::debug!(peer = %s.peer, user = %s.user, reason = ?reason, "session closed");
            } else {
                tracing::warn!(peer = %s.peer, user = %s.user, reason = ?reason, sent = s.sent, suppressed, "session closed");
            }
        }
    }

    fn fan_out(&mut self, now: u64) {
        let max_lag = self.config.subscribers.max_lag;
        let mut to_close: Vec<(usize, CloseReason)> = Vec::new();
        let mut max_seen_lag = 0;
        for (key, s) in self.sessions.iter_mut() {
            if s.role != Role::Subscriber || s.state != State::Active {
                continue;
            }
            match s.enforce_lag(&self.journal, max_lag) {
                LagAction::None => {}
                LagAction::Disconnect => {
                    to_close.push((key, CloseReason::SlowConsumer));
                    continue;
                }
                LagAction::Dropped(n) => {
                    add(&self.shared.counters.slow_dropped_messages, n);
                    add(&self.shared.counters.slow_drop_events, 1);
                    if let Some(suppressed) = self.logs.slow.allow(now) {
                        tracing::warn!(peer = %s.peer, user = %s.user, skipped = n, suppressed, "slow consumer: drop-oldest skipped ahead");
                    }
                }
                LagAction::Conflated {
                    superseded,
                    dropped,
                } => {
                    add(&self.shared.counters.slow_conflated_messages, superseded);
                    add(&self.shared.counters.slow_dropped_messages, dropped);
                    add(&self.shared.counters.slow_conflate_events, 1);
                    if let Some(suppressed) = self.logs.slow.allow(now) {
                        tracing::warn!(peer = %s.peer, user = %s.user, superseded, dropped, suppressed, "slow consumer: conflating backlog");
                    }
                }
            }
            max_seen_lag = max_seen_lag.max(s.lag(&self.journal));
            if !s.writable {
                continue;
            }
            let (sent_before, bytes_before) = (s.sent, s.bytes_out);
            let result = s.pump(&self.journal, now);
            add(
                &self.shared.counters.session_bytes_out,
                s.bytes_out - bytes_before,
            );
            if s.sent > sent_before {
                add(
                    &self.shared.counters.subscriber_messages,
                    s.sent - sent_before,
                );
                if let Some(at) = self.journal.ingest_ns(s.cursor - 1).filter(|at| *at > 0) {
                    self.shared
                        .latency
                        .record(self.clock.now().saturating_sub(at));
                }
            }
            if let Pump::Failed(kind) = result {
                to_close.push((key, CloseReason::SocketError(kind)));
            }
        }
        for (key, reason) in to_close {
            self.close(key, reason, now);
        }
        let g = &self.shared.gauges;
        g.max_lag
            .store(max_seen_lag, std::sync::atomic::Ordering::Relaxed);
        g.journal_head
            .store(self.journal.head(), std::sync::atomic::Ordering::Relaxed);
        g.journal_tail
            .store(self.journal.tail(), std::sync::atomic::Ordering::Relaxed);
        self.shared.counters.journal_bytes.store(
            self.journal.appended_bytes(),
            std::sync::atomic::Ordering::Relaxed,
        );
        for (i, c) in self.channels.iter_mut().enumerate() {
            // A few rounds: each round can fill one sendmmsg batch.
            for _ in 0..8 {
                match c.pump(&self.journal, now) {
                    Ok(sent) => {
                        add(&self.shared.channels[i].messages, sent.messages);
                        add(&self.shared.channels[i].packets, sent.packets);
                        add(&self.shared.channels[i].bytes, sent.bytes);
                        add(&self.shared.counters.channel_bytes, sent.bytes);
                        add(&self.shared.counters.channel_packets, sent.packets);
                        add(&self.shared.counters.channel_messages, sent.messages);
                        add(&self.shared.counters.channel_heartbeats, sent.heartbeats);
                        if sent.packets == 0 && sent.messages == 0 {
                            break;
                        }
                    }
                    Err(e) => {
                        if let Some(suppressed) = self.logs.errors.allow(now) {
                            tracing::warn!(channel = %c.name, error = %e, suppressed, "multicast send failed");
                        }
                        break;
                    }
                }
            }
        }
    }

    fn snapshot(&mut self, now: u64) {
        if now.saturating_sub(self.last_snapshot) < 500_000_000 {
            return;
        }
        self.last_snapshot = now;
        let head = self.journal.head();
        let mut lag_buckets = [0u64; 5];
        let sessions = self
            .sessions
            .iter()
            .map(|(_, s)| {
                let lag = if s.role == Role::Subscriber && s.state == State::Active {
                    s.lag(&self.journal)
                } else {
                    0
                };
                if s.role == Role::Subscriber && s.state == State::Active {
                    let b = match lag {
                        0 => 0,
                        1..=1_000 => 1,
                        1_001..=10_000 => 2,
                        10_001..=100_000 => 3,
                        _ => 4,
                    };
                    lag_buckets[b] += 1;
                }
                SessionView {
                    peer: s.peer.to_string(),
                    user: s.user.clone(),
                    role: if s.role == Role::Subscriber {
                        "subscriber"
                    } else {
                        "publisher"
                    },
                    state: match s.state {
                        State::AwaitingLogin => "awaiting-login",
                        State::Active => "active",
                        State::Closing => "closing",
                    },
                    lag,
                    policy: match s.policy {
                        crate::config::SlowConsumerPolicy::Disconnect => "disconnect",
                        crate::config::SlowConsumerPolicy::DropOldest => "drop-oldest",
                        crate::config::SlowConsumerPolicy::Conflate => "conflate",
                    },
                    sent: s.sent,
                    queued: s.queued(),
                }
            })
            .collect();
        for (g, v) in self.shared.gauges.lag_buckets.iter().zip(lag_buckets) {
            g.store(v, std::sync::atomic::Ordering::Relaxed);
        }
        let snap = StateSnapshot {
            session: self.session_name.to_string(),
            journal_head: head,
            journal_tail: self.journal.tail(),
            sessions,
            channels: self
                .channels
                .iter()
                .map(|c| ChannelView {
                    name: c.name.clone(),
                    group: c.group.to_string(),
                    next_seq: c.next_seq,
                })
                .collect(),
            feeds: self
                .shared
                .feeds
                .iter()
                .map(|f| {
                    let last = f.last_packet_ns.load(std::sync::atomic::Ordering::Relaxed);
                    FeedView {
                        name: f.name.clone(),
                        messages: f.messages.load(std::sync::atomic::Ordering::Relaxed),
                        idle_secs: (last > 0).then(|| now.saturating_sub(last) as f64 / 1e9),
                    }
                })
                .collect(),
        };
        if let Ok(mut st) = self.shared.state.lock() {
            *st = snap;
        }
    }

    fn timers(&mut self, now: u64) {
        self.snapshot(now);
        let hb = self.config.subscribers.heartbeat_ms * 1_000_000;
        let timeout = self.config.subscribers.timeout_ms * 1_000_000;
        let mut to_close = Vec::new();
        for (key, s) in self.sessions.iter_mut() {
            if s.on_timer(now, hb, timeout) {
                to_close.push((key, CloseReason::HeartbeatTimeout));
            } else if s.queued() > 0 && s.writable {
                if let Pump::Failed(kind) = s.flush(now) {
                    to_close.push((key, CloseReason::SocketError(kind)));
                } else if s.state == State::Closing && s.queued() == 0 {
                    to_close.push((key, closing_reason(s)));
                }
            }
        }
        for (key, reason) in to_close {
            self.close(key, reason, now);
        }
    }

    fn serve_rerequests(&mut self, now: u64) {
        if let Some(r) = &mut self.rerequest {
            r.serve(&self.channels, &self.journal, now, &self.shared.counters);
        }
    }

    fn read_feed(&mut self, i: usize, line: usize, now: u64) {
        if let Some(f) = self.feeds.get_mut(i) {
            f.on_readable(line, now, &mut self.journal, &self.shared.counters);
            let stats = &self.shared.feeds[i];
            stats
                .messages
                .store(f.delivered(), std::sync::atomic::Ordering::Relaxed);
            stats
                .bytes
                .store(f.delivered_bytes(), std::sync::atomic::Ordering::Relaxed);
            stats
                .last_packet_ns
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn shutdown(&mut self) {
        let now = self.clock.now();
        self.fan_out(now);
        for (_, s) in self.sessions.iter_mut() {
            s.end_of_session();
        }
        // Best effort: give sessions up to a second to take their End of Session.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let mut pending = false;
            for (_, s) in self.sessions.iter_mut() {
                if s.queued() > 0 {
                    s.writable = true;
                    if s.flush(self.clock.now()) == Pump::Ok && s.queued() > 0 {
                        pending = true;
                    }
                }
            }
            if !pending {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for c in &mut self.channels {
            c.end_of_session(now);
        }
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, CloseReason::Shutdown, now);
        }
        tracing::info!(journal_head = self.journal.head(), "distributor stopped");
    }
}

/// Why a session in `Closing` ends once its last bytes are written: a refused Herz request is malformed
/// input; otherwise its login was rejected.
fn closing_reason(s: &Session) -> CloseReason {
    match s.refused() {
        Some(why) => CloseReason::Refused(why.to_string()),
        None => CloseReason::Rejected,
    }
}
