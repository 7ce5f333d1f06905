//! The hot loop: one mio event loop for ingest, fan-out and timers.
//!
//! Each iteration: wait for events (or the nearest timer) → read publishers and feeds into the journal →
//! serve logins, heartbeats and re-requests → pump every egress cursor (TCP subscribers, multicast
//! channels) from the journal → timers. Per message nothing allocates, locks or logs; sockets are written
//! once per iteration per session and datagrams leave in `sendmmsg` batches.

mod admit;
pub mod channel;
pub mod commands;
pub mod counters;
mod demo;
mod feed;
pub mod keeper;
mod rerequest;
pub mod session;
pub mod sock;
mod stats;
mod tokens;

use std::{
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use herz_core::{
    engine::{
        admission::{Admission, AdmissionConfig, Refusal},
        filter::SubscriptionFilter,
        journal::Journal,
    },
    protocol::{moldudp64::Session as SessionName, soupbintcp::RejectReason},
    session::{CloseReason, Ctx, Event, LagAction, Role, State, Timers},
};
use mio::{Events, Interest, Poll, net::TcpListener, unix::SourceFd};
use slab::Slab;

pub use self::stats::{NamedStats, Shared};
use self::{
    counters::add,
    session::Conn,
    tokens::{Owner, Tokens},
};
use crate::{config::Config, ratelog::RateLimitedLog};

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
    /// Syncs and expires the durable journal.
    keeper: keeper::Keeper,
    /// Per-IP caps on connections and failed-login throttling.
    admission: Admission,
    session_name: SessionName,
    config: Config,
    sub_listener: TcpListener,
    pub_listener: TcpListener,
    sessions: Slab<Conn>,
    tokens: Tokens,
    commands: std::sync::mpsc::Receiver<commands::Command>,
    handle: commands::LoopHandle,
    channels: Vec<channel::Channel>,
    feeds: Vec<feed::Feed>,
    rerequest: Option<rerequest::RerequestServer>,
    demo: Option<demo::DemoFeed>,
    shared: Arc<Shared>,
    logs: Logs,
    last_snapshot: u64,
    /// Marks logged-in peers as trusted in the shield (never dropped by its flood rules).
    trust: Option<crate::shield::TrustWriter>,
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
        let (journal, session_name, keeper) = keeper::Keeper::open(config)?;
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
        let mut tokens = Tokens::default();
        let waker = std::sync::Arc::new(
            mio::Waker::new(poll.registry(), tokens.add(Owner::Waker))
                .context("creating the loop's waker")?,
        );
        let (tx, commands) = std::sync::mpsc::channel();
        let handle = commands::LoopHandle::new(tx, waker);
        poll.registry().register(
            &mut sub_listener,
            tokens.add(Owner::SubscriberListener),
            Interest::READABLE,
        )?;
        poll.registry().register(
            &mut pub_listener,
            tokens.add(Owner::PublisherListener),
            Interest::READABLE,
        )?;

        let mut channels = Vec::new();
        for (i, c) in config.channels.iter().enumerate() {
            let sock =
                sock::udp_multicast_sender(c.group, c.interface, c.ttl).with_context(|| {
                    format!(
                        "channels[{i}] ({}): cannot send to {} from {}",
                        c.name, c.group, c.interface
                    )
                })?;
            let filter = (!c.symbols.is_empty() || !c.prefixes.is_empty())
                .then(|| SubscriptionFilter::from_lists(&c.symbols, &c.prefixes));
            let session = c.session.unwrap_or(session_name);
            channels.push(channel::Channel::new(
                c.name.clone(),
                session,
                c.group,
                sock,
                filter,
                &journal,
                config.journal.max_messages,
                c.max_payload,
                c.flush_us,
                now,
            )?);
        }
        let rerequest = if channels.is_empty() {
            None
        } else {
            let r = rerequest::RerequestServer::bind(&config.rerequest, &config.channels, now)
                .with_context(|| {
                    format!("rerequest.listen: cannot bind {}", config.rerequest.listen)
                })?;
            poll.registry().register(
                &mut SourceFd(&r.fd()),
                tokens.add(Owner::Rerequest),
                Interest::READABLE,
            )?;
            Some(r)
        };
        let mut feeds = Vec::new();
        for (i, f) in config.feeds.iter().enumerate() {
            let feed = feed::Feed::bind(f, config.journal.max_message_len, now)
                .with_context(|| format!("feeds[{i}] ({})", f.name))?;
            for (line, fd) in feed.fds().into_iter().enumerate() {
                poll.registry().register(
                    &mut SourceFd(&fd),
                    tokens.add(Owner::FeedLine { feed: i, line }),
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
            keeper,
            admission: Admission::new(AdmissionConfig {
                max_pending_per_ip: config.admission.max_pending_per_ip,
                max_sessions_per_ip: config.admission.max_sessions_per_ip,
                max_failures: config.admission.max_failed_logins,
                forgive_ns: config.admission.failed_login_forgive_ms * 1_000_000,
                max_tracked: config.admission.max_tracked_ips,
            }),
            session_name,
            config: config.clone(),
            sub_listener,
            pub_listener,
            sessions: Slab::with_capacity(
                config.subscribers.max_sessions + config.publishers.max_sessions,
            ),
            tokens,
            commands,
            handle,
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

    /// Lets the shield trust logged-in peers: logins and closes queue a change for the shield's trust
    /// thread (which writes the map on a peer's first login and removes it after its last session).
    pub fn set_trust(&mut self, writer: crate::shield::TrustWriter) {
        self.trust = Some(writer);
    }

    /// The instant the loop's monotonic clock counts from.
    pub fn started(&self) -> Instant {
        self.clock.0
    }

    /// Lets other threads ask the loop to act ([`commands::Command`]).
    pub fn handle(&self) -> commands::LoopHandle {
        self.handle.clone()
    }

    fn run_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                commands::Command::Logins {
                    subscribers,
                    publishers,
                    policy,
                } => {
                    self.config.subscribers.users = subscribers;
                    self.config.publishers.users = publishers;
                    self.config.subscribers.policy = policy;
                }
            }
        }
    }

    /// The session name subscribers log in to.
    pub fn session_name(&self) -> SessionName {
        self.session_name
    }

    /// Serves until a signal arrives on `signals` (registered here), then ends every session cleanly.
    pub fn run(&mut self, signals: &mut signal_hook_mio::v1_0::Signals) -> anyhow::Result<()> {
        let token = self.tokens.add(Owner::Signals);
        self.poll
            .registry()
            .register(signals, token, Interest::READABLE)?;
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
                let Some(owner) = self.tokens.owner(event.token()) else {
                    continue;
                };
                match owner {
                    Owner::Signals => {
                        if let Some(sig) = signals.pending().next() {
                            tracing::info!(signal = sig, "shutting down");
                            self.shutdown();
                            return Ok(());
                        }
                    }
                    Owner::Waker => self.run_commands(),
                    Owner::SubscriberListener => self.accept(Role::Subscriber, now),
                    Owner::PublisherListener => self.accept(Role::Publisher, now),
                    Owner::Rerequest => self.serve_rerequests(now),
                    Owner::FeedLine { feed, line } => self.read_feed(feed, line, now),
                    Owner::Session(key) => {
                        if event.is_writable()
                            && let Some(c) = self.sessions.get_mut(key)
                        {
                            c.writable = true;
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
            for (i, f) in self.feeds.iter_mut().enumerate() {
                f.on_timer(now, &mut self.journal, &self.shared.counters);
                self.shared.publish_feed(i, f);
            }
            self.keeper
                .after_ingest(&mut self.journal, now, &self.shared);
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
        if let Some(sync) = self.keeper.deadline(&self.journal) {
            ns = ns.min(sync.saturating_sub(now));
        }
        let head = self.journal.head();
        if !self.reread.is_empty()
            || self.channels.iter().any(|c| c.cursor < head)
            || self.sessions.iter().any(|(_, c)| {
                c.session.state() == State::Active
                    && c.session.role() == Role::Subscriber
                    && c.writable
                    && c.session.cursor() < head
            })
        {
            ns = 0;
        }
        Duration::from_nanos(ns)
    }

    /// Reads a session's socket; `drain`: read until it would block (see [`Conn::on_readable`]).
    fn read_session(&mut self, key: usize, now: u64, drain: bool) {
        let Some(c) = self.sessions.get_mut(key) else {
            return;
        };
        let users = match c.session.role() {
            Role::Subscriber => &self.config.subscribers.users,
            Role::Publisher => &self.config.publishers.users,
        };
        let ctx = Ctx {
            session: self.session_name,
            users,
            policy: self.config.subscribers.policy,
            now,
        };
        if c.on_readable(&ctx, &mut self.journal, drain) {
            self.reread.push(key);
        }
        // Answers (Login Accepted/Rejected, HERZ ERROR) go out at once.
        c.flush(now);
        self.handle_events(key, now);
    }

    /// Acts on what a session reported: counters, log lines, the shield's trust, and the close.
    fn handle_events(&mut self, key: usize, now: u64) {
        let mut logins = false;
        while let Some(event) = self
            .sessions
            .get_mut(key)
            .and_then(|c| c.session.poll_event())
        {
            let c = &self.sessions[key];
            let counters = &self.shared.counters;
            match event {
                Event::Appended { count, .. } => {
                    add(&counters.publisher_messages, count);
                    add(&counters.journal_appended, count);
                }
                Event::LoginAccepted { user, from } => {
                    add(&counters.logins_accepted, 1);
                    self.admission.logged_in(c.peer.ip());
                    logins = true;
                    if let Some(t) = &self.trust {
                        t.trust(c.peer.ip());
                    }
                    tracing::info!(peer = %c.peer, %user, role = ?c.session.role(), from, "login accepted");
                }
                Event::LoginRejected(reason) => {
                    add(&counters.logins_rejected, 1);
                    if reason == RejectReason::NotAuthorized {
                        self.admission.failed(c.peer.ip(), now);
                    }
                    if let Some(suppressed) = self.logs.closes.allow(now) {
                        tracing::info!(peer = %c.peer, ?reason, suppressed, "login rejected");
                    }
                }
                // Counted and logged when the session closes, once the error is written.
                Event::Refused(_) => {}
                Event::Close(reason) => {
                    self.close(key, reason, now);
                    return;
                }
            }
        }
        if logins {
            self.shared.update_session_gauges(&self.sessions);
        }
    }

    fn fan_out(&mut self, now: u64) {
        let max_lag = self.config.subscribers.max_lag;
        let mut ended: Vec<usize> = Vec::new();
        let mut max_seen_lag = 0;
        for (key, c) in self.sessions.iter_mut() {
            let writable = c.writable;
            let s = &mut c.session;
            if s.role() != Role::Subscriber || s.state() != State::Active {
                continue;
            }
            match s.enforce_lag(&self.journal, max_lag, writable) {
                LagAction::None => {}
                LagAction::Disconnect => {
                    ended.push(key);
                    continue;
                }
                LagAction::Dropped(n) => {
                    add(&self.shared.counters.slow_dropped_messages, n);
                    add(&self.shared.counters.slow_drop_events, 1);
                    if let Some(suppressed) = self.logs.slow.allow(now) {
                        tracing::warn!(peer = %c.peer, user = %s.user(), skipped = n, suppressed, "slow consumer: drop-oldest skipped ahead");
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
                        tracing::warn!(peer = %c.peer, user = %s.user(), superseded, dropped, suppressed, "slow consumer: conflating backlog");
                    }
                }
            }
            max_seen_lag = max_seen_lag.max(s.lag(&self.journal));
            if !c.writable {
                continue;
            }
            let (sent_before, bytes_before) = (c.session.sent(), c.session.bytes_out());
            c.pump(&self.journal, now);
            let s = &c.session;
            add(
                &self.shared.counters.session_bytes_out,
                s.bytes_out() - bytes_before,
            );
            if s.sent() > sent_before {
                add(
                    &self.shared.counters.subscriber_messages,
                    s.sent() - sent_before,
                );
                if let Some(at) = self.journal.ingest_ns(s.cursor() - 1).filter(|at| *at > 0) {
                    self.shared
                        .latency
                        .record(self.clock.now().saturating_sub(at));
                }
            }
            if s.is_closed() {
                ended.push(key);
            }
        }
        for key in ended {
            self.handle_events(key, now);
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
                        if sent.lost > 0 {
                            add(&self.shared.counters.channel_lost_messages, sent.lost);
                            if let Some(suppressed) = self.logs.errors.allow(now) {
                                tracing::warn!(channel = %c.name, lost = sent.lost, suppressed, "multicast channel fell off the journal: messages never sent");
                            }
                        }
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
        self.shared.publish_snapshot(
            self.session_name,
            &self.journal,
            &self.sessions,
            &self.channels,
            now,
        );
    }

    fn timers(&mut self, now: u64) {
        self.snapshot(now);
        self.keeper
            .housekeeping(&mut self.journal, now, &self.shared);
        let s = &self.config.subscribers;
        let timers = Timers {
            heartbeat_ns: s.heartbeat_ms * 1_000_000,
            silence_ns: s.timeout_ms * 1_000_000,
            login_ns: s.login_timeout_ms * 1_000_000,
        };
        let mut ended = Vec::new();
        for (key, c) in self.sessions.iter_mut() {
            c.session.on_timer(now, &timers);
            if !c.session.is_closed() && c.session.queued() > 0 && c.writable {
                c.flush(now);
            }
            if c.session.is_closed() {
                ended.push(key);
            }
        }
        for key in ended {
            self.handle_events(key, now);
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
            self.shared.publish_feed(i, f);
            if let Some(stats) = self.shared.feeds.get(i) {
                stats
                    .last_packet_ns
                    .store(now, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    fn shutdown(&mut self) {
        let now = self.clock.now();
        self.fan_out(now);
        // A durable journal's session continues at the next start: End of Session (SoupBinTCP `Z`,
        // MoldUDP64's end-of-session packet) would tell clients it is over. They see the
        // connection close instead, and resume after the restart.
        let session_ends = self.journal.segments().is_none();
        if session_ends {
            for (_, c) in self.sessions.iter_mut() {
                c.session.end_of_session();
            }
        }
        // Best effort: give sessions up to a second to take what is queued for them.
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let mut pending = false;
            for (_, c) in self.sessions.iter_mut() {
                if c.session.queued() > 0 && !c.session.is_closed() {
                    c.writable = true;
                    c.flush(self.clock.now());
                    if c.session.queued() > 0 && !c.session.is_closed() {
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
            if session_ends {
                c.end_of_session(now);
            } else {
                c.flush(now);
            }
        }
        if let Err(e) = self.journal.sync() {
            tracing::error!(error = %e, "journal sync at shutdown failed");
        }
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, CloseReason::Shutdown, now);
        }
        tracing::info!(
            journal_head = self.journal.head(),
            session_continues = !session_ends,
            "distributor stopped"
        );
    }
}
