//! UDP feed ingest: MoldUDP64 on one or two lines (A/B), arbitrated (first copy wins, gaps filled from
//! the other line or re-requested upstream), appended to the journal in feed order.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
};

use herz_core::{
    engine::{
        arbiter::{ArbiterConfig, Event, FeedArbiter, Line},
        journal::Journal,
    },
    protocol::moldudp64::Packet,
};
use herz_sys::mmsg::RecvBatch;
use socket2::Socket;

use super::{
    counters::{Counters, add},
    sock,
};
use crate::{config::FeedConfig, ratelog::RateLimitedLog};

/// Datagrams handled per wake-up and line before giving the loop back.
const MAX_BATCHES_PER_CALL: usize = 16;

/// One upstream feed.
pub struct Feed {
    name: String,
    /// Line sockets (A, then B), then the unicast socket re-requests go out of and replies come back to.
    socks: Vec<Socket>,
    lines: usize,
    arbiter: FeedArbiter,
    rerequest: Option<SocketAddr>,
    sources: Vec<IpAddr>,
    batch: RecvBatch,
    log: RateLimitedLog,
    max_message_len: usize,
    delivered_bytes: u64,
}

impl Feed {
    /// Binds the feed's sockets and joins its groups.
    pub fn bind(config: &FeedConfig, max_message_len: usize, _now: u64) -> anyhow::Result<Self> {
        let mut socks = Vec::new();
        for (i, line) in config.lines.iter().enumerate() {
            let s = sock::udp_feed_line(*line, config.interface).map_err(|e| {
                anyhow::anyhow!(
                    "lines[{i}]: cannot receive on {line} (interface {}): {e}",
                    config.interface
                )
            })?;
            socks.push(s);
        }
        let lines = socks.len();
        let local = match config.interface {
            IpAddr::V4(v4) if !v4.is_unspecified() => SocketAddr::from((v4, 0)),
            _ => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        socks.push(sock::udp_bound(local).map_err(|e| anyhow::anyhow!("re-request socket: {e}"))?);
        let arbiter = FeedArbiter::new(ArbiterConfig {
            session: config.session,
            start_sequence: config.from_start.then_some(1),
            max_jump: (config.max_jump > 0).then_some(config.max_jump),
            rerequest_delay_ns: config.rerequest_delay_us * 1000,
            rerequests: config.rerequest.is_some(),
            ..ArbiterConfig::default()
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            name: config.name.clone(),
            socks,
            lines,
            arbiter,
            rerequest: config.rerequest,
            sources: config.sources.clone(),
            batch: RecvBatch::default(),
            log: RateLimitedLog::new(5),
            max_message_len,
            delivered_bytes: 0,
        })
    }

    /// The sockets to register: lines first, then the re-request socket.
    pub fn fds(&self) -> Vec<RawFd> {
        self.socks.iter().map(|s| s.as_raw_fd()).collect()
    }

    /// Reads what socket `k` has (a line, or the re-request replies).
    pub fn on_readable(&mut self, k: usize, now: u64, journal: &mut Journal, counters: &Counters) {
        let Some(sock) = self.socks.get(k) else {
            return;
        };
        let fd = sock.as_raw_fd();
        let line = if k >= self.lines {
            Line::Recovery
        } else if k == 0 {
            Line::A
        } else {
            Line::B
        };
        for _ in 0..MAX_BATCHES_PER_CALL {
            let n = match self.batch.recv(fd) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for i in 0..n {
                let (bytes, from) = self.batch.get(i);
                add(&counters.feed_packets, 1);
                if !self.sources.is_empty() && !from.is_some_and(|f| self.sources.contains(&f.ip()))
                {
                    continue;
                }
                let packet = match Packet::parse(bytes) {
                    Ok(p) => p,
                    Err(e) => {
                        if let Some(suppressed) = self.log.allow(now) {
                            tracing::warn!(feed = %self.name, ?from, error = %e, suppressed, "malformed feed packet dropped");
                        }
                        continue;
                    }
                };
                let (name, log, max_len) = (&self.name, &mut self.log, self.max_message_len);
                self.arbiter.on_packet(line, &packet, now, |ev| {
                    handle(ev, name, log, max_len, now, journal, counters)
                });
            }
        }
        self.on_timer(now, journal, counters);
    }

    /// Re-requests gaps that the other line did not fill in time; declares lost what never came.
    pub fn on_timer(&mut self, now: u64, journal: &mut Journal, counters: &Counters) {
        let (name, log, max_len) = (&self.name, &mut self.log, self.max_message_len);
        let request = self.arbiter.poll_timers(now, |ev| {
            handle(ev, name, log, max_len, now, journal, counters)
        });
        if let (Some(req), Some(server)) = (request, self.rerequest) {
            let sock = self.socks.last().expect("re-request socket");
            if sock.send_to(&req.to_bytes(), &server.into()).is_ok() {
                add(&counters.feed_rerequests, 1);
            }
        }
    }

    /// The arbiter's own counters (delivered, gaps, duplicates, ...): the loop publishes them as they
    /// are, per feed.
    pub fn arbiter_counters(&self) -> &herz_core::engine::arbiter::ArbiterCounters {
        self.arbiter.counters()
    }

    /// Message bytes delivered to the journal so far.
    pub fn delivered_bytes(&self) -> u64 {
        self.delivered_bytes
    }

    /// Nanoseconds until [`on_timer`](Self::on_timer) has work.
    pub fn next_deadline(&self, now: u64) -> u64 {
        self.arbiter
            .next_deadline()
            .map_or(u64::MAX, |d| d.saturating_sub(now))
    }
}

fn handle(
    ev: Event<'_>,
    name: &str,
    log: &mut RateLimitedLog,
    max_len: usize,
    now: u64,
    journal: &mut Journal,
    counters: &Counters,
) {
    match ev {
        Event::Message { bytes, .. } => {
            if bytes.len() > max_len || bytes.len() < herz_core::protocol::tick::ROUTING_HEADER_LEN
            {
                add(&counters.messages_refused, 1);
                return;
            }
            if journal.append_at(bytes, now).is_ok() {
                add(&counters.feed_messages, 1);
                add(&counters.journal_appended, 1);
            } else {
                // The durable journal could not start a segment (disk full): counted, and the
                // keeper's housekeeping reports the storage state.
                add(&counters.messages_refused, 1);
            }
        }
        Event::Lost { from, count } => {
            add(&counters.feed_lost, count);
            if let Some(suppressed) = log.allow(now) {
                tracing::error!(feed = %name, from, count, suppressed, "feed messages lost: upstream could not resend them");
            }
        }
        Event::EndOfSession { next } => {
            tracing::info!(feed = %name, next, "feed announced end of session")
        }
        Event::SuspiciousJump { claimed, known } => {
            add(&counters.feed_suspicious_jumps, 1);
            if let Some(suppressed) = log.allow(now) {
                tracing::warn!(feed = %name, claimed, known, suppressed, "feed packet claims a jump too far to believe on its own: ignored until confirmed");
            }
        }
        Event::ForeignSession { session } => {
            if let Some(suppressed) = log.allow(now) {
                tracing::warn!(feed = %name, %session, suppressed, "packets of another session ignored");
            }
        }
    }
}
