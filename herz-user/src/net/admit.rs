//! Sessions coming and going: accepting a connection (session limits, per-IP admission, socket
//! options) and closing one (counters, the shield's trust, admission, the log line).

use std::{io, time::Duration};

use herz_core::session::{CloseReason, Role};
use mio::Interest;

use super::{Distributor, Refusal, counters::add, session::Conn, sock, tokens::Tokens};

impl Distributor {
    pub(super) fn accept(&mut self, role: Role, now: u64) {
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
            if let Err(why) = self.admission.admit(peer.ip(), now) {
                let counters = &self.shared.counters;
                add(
                    if why == Refusal::Throttled {
                        &counters.logins_throttled
                    } else {
                        &counters.sessions_refused_per_ip
                    },
                    1,
                );
                if let Some(suppressed) = self.logs.closes.allow(now) {
                    tracing::warn!(%peer, reason = ?why, suppressed, "connection refused");
                }
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
            let token = Tokens::session(entry.key());
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(%peer, error = %e, "cannot register session");
                continue;
            }
            entry.insert(Conn::new(
                stream,
                peer,
                role,
                s.output_buffer,
                s.policy,
                now,
            ));
            self.shared.update_session_gauges(&self.sessions);
        }
    }

    fn count_sessions(&self, role: Role) -> usize {
        self.sessions
            .iter()
            .filter(|(_, c)| c.session.role() == role)
            .count()
    }

    /// Removes a session whose [`Event::Close`] came: deregisters (abortively for dead or evicted
    /// peers), withdraws its trust, counts and logs why.
    pub(super) fn close(&mut self, key: usize, reason: CloseReason, now: u64) {
        let c = self.sessions.remove(key);
        let mut stream = c.stream;
        let _ = self.poll.registry().deregister(&mut stream);
        let s = &c.session;
        self.admission.closed(c.peer.ip(), !s.logged_in(), now);
        if s.logged_in()
            && let Some(t) = &self.trust
        {
            t.untrust(c.peer.ip());
        }
        let counters = &self.shared.counters;
        match &reason {
            CloseReason::Malformed(_) | CloseReason::Refused(_) => {
                add(&counters.malformed_closes, 1)
            }
            CloseReason::HeartbeatTimeout => add(&counters.heartbeat_timeouts, 1),
            CloseReason::LoginTimeout => add(&counters.login_timeouts, 1),
            CloseReason::SocketError(_) => add(&counters.socket_errors, 1),
            CloseReason::SlowConsumer => add(&counters.slow_disconnects, 1),
            _ => {}
        }
        if reason.is_abortive() {
            sock::abort(&stream);
        }
        self.shared.update_session_gauges(&self.sessions);
        if let Some(suppressed) = self.logs.closes.allow(now) {
            if reason.is_orderly() {
                tracing::debug!(peer = %c.peer, user = %s.user(), reason = ?reason, "session closed");
            } else {
                tracing::warn!(peer = %c.peer, user = %s.user(), reason = ?reason, sent = s.sent(), suppressed, "session closed");
            }
        }
    }
}
