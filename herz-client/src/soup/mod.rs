//! SoupBinTCP 3.00 clients: a subscriber ([`SoupSubscriber`]) and a publisher ([`SoupPublisher`]).
//!
//! Both are blocking from the caller's point of view but drive a non-blocking socket internally,
//! waiting with `ppoll`, so that one call can wait for data *and* send a client heartbeat when one
//! is due *and* notice a silent server, without a helper thread.
//!
//! Framing and packet layouts come from [`herz_core::protocol::soupbintcp`]; the Herz extension
//! (filters before login, `HERZ SKIP` markers) from its [`herz`](soupbintcp::herz) module. See
//! `docs/PROTOCOL.md` sections 4 and 5.

use std::{fmt, io, net::SocketAddr, time::Duration};

use herz_core::protocol::soupbintcp::{self, PacketType, RejectReason, SoupError};
use thiserror::Error;

mod conn;
mod publisher;
mod subscriber;
#[cfg(test)]
mod tests;

pub use herz_core::protocol::{
    moldudp64::Session,
    soupbintcp::{Filter, LoginAccepted, SkipReason},
};

pub use self::{
    publisher::SoupPublisher,
    subscriber::{Event, OwnedEvent, SoupSubscriber},
};

/// The smallest receive buffer: one maximal SoupBinTCP packet (2 + 65535 bytes) must fit.
pub const MIN_READ_BUFFER: usize = 2 + soupbintcp::MAX_PACKET_LEN;

/// Timers and buffer sizes of a SoupBinTCP client.
#[derive(Debug, Clone)]
pub struct SoupOptions {
    /// Send a client heartbeat (`R`) after this long without sending anything (spec: 1 s).
    pub heartbeat_interval: Duration,
    /// Fail with [`SoupClientError::ServerSilent`] after this long without receiving anything
    /// (spec: "about 15 s"; the server heartbeats every second).
    pub silence_timeout: Duration,
    /// How long [`SoupSubscriber::login`] / [`SoupPublisher::login`] wait for Login Accepted.
    pub login_timeout: Duration,
    /// How long `logout` waits for the server to close the connection.
    pub logout_timeout: Duration,
    /// Receive buffer size; at least [`MIN_READ_BUFFER`]. Larger buffers mean fewer `read`
    /// calls under load (each read parses every complete packet it got).
    pub read_buffer: usize,
    /// Publisher: write the batched `U` packets once this many bytes are queued (one `write`
    /// call per batch).
    pub flush_threshold: usize,
}

impl Default for SoupOptions {
    fn default() -> Self {
        SoupOptions {
            heartbeat_interval: Duration::from_secs(1),
            silence_timeout: Duration::from_secs(15),
            login_timeout: Duration::from_secs(10),
            logout_timeout: Duration::from_secs(2),
            read_buffer: 256 * 1024,
            flush_threshold: 64 * 1024,
        }
    }
}

/// Errors of the SoupBinTCP clients. Each names the peer and, where it matters, the sequence
/// number the subscriber was at.
#[derive(Debug, Error)]
pub enum SoupClientError {
    /// The address did not resolve.
    #[error("cannot resolve {addr}: {source}")]
    Resolve {
        /// The address as given.
        addr: String,
        /// The resolver error.
        source: io::Error,
    },
    /// No resolved address accepted a connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The error of the last address tried.
        source: io::Error,
    },
    /// A socket call failed.
    #[error("{peer}: {op} failed: {source}")]
    Io {
        /// The server.
        peer: SocketAddr,
        /// What was being done (`"read"`, `"write"`, ...).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The server sent bytes that are not valid SoupBinTCP (or malformed Herz control text).
    #[error("{peer}: protocol error at implicit sequence {next_seq}: {source}")]
    Protocol {
        /// The server.
        peer: SocketAddr,
        /// The subscriber's sequence counter when it happened (0 before login).
        next_seq: u64,
        /// What was wrong.
        source: SoupError,
    },
    /// The Login Request or filter could not be encoded (field too long, bad characters).
    #[error("invalid login request: {0}")]
    InvalidRequest(SoupError),
    /// The server answered the Login Request with Login Rejected (`J`).
    #[error("{peer}: login rejected: {}{}", reject_text(*.reason), detail_suffix(.detail))]
    LoginRejected {
        /// The server.
        peer: SocketAddr,
        /// The reject reason code.
        reason: RejectReason,
        /// The `HERZ ERROR` text sent before the reject, if any.
        detail: Option<String>,
    },
    /// No Login Accepted or Rejected arrived in time.
    #[error("{peer}: no answer to the Login Request within {timeout:?}")]
    LoginTimeout {
        /// The server.
        peer: SocketAddr,
        /// The limit.
        timeout: Duration,
    },
    /// The server closed the connection before answering the Login Request.
    #[error("{peer}: connection closed before login was answered{}", detail_suffix(.detail))]
    ClosedDuringLogin {
        /// The server.
        peer: SocketAddr,
        /// The `HERZ ERROR` text sent before closing, if any.
        detail: Option<String>,
    },
    /// A packet the server must not send at this point (e.g. `S` before Login Accepted).
    #[error("{peer}: unexpected {packet} packet {context}")]
    Unexpected {
        /// The server.
        peer: SocketAddr,
        /// The packet type.
        packet: PacketType,
        /// When it came (`"before Login Accepted"`, ...).
        context: &'static str,
    },
    /// An operation that needs a session was called before `login` succeeded.
    #[error("{peer}: not logged in")]
    NotLoggedIn {
        /// The server.
        peer: SocketAddr,
    },
    /// `login` was called twice on one connection.
    #[error("{peer}: already logged in")]
    AlreadyLoggedIn {
        /// The server.
        peer: SocketAddr,
    },
    /// Nothing at all (not even a heartbeat) arrived for too long: the server or the path is
    /// dead.
    #[error(
        "{peer}: server silent for {silent:?} (limit {limit:?}); resume at sequence {next_seq}"
    )]
    ServerSilent {
        /// The server.
        peer: SocketAddr,
        /// How long nothing arrived.
        silent: Duration,
        /// The configured limit.
        limit: Duration,
        /// The sequence a reconnect should request.
        next_seq: u64,
    },
    /// The server accepted no bytes for too long while the publisher had data to write.
    #[error("{peer}: server has not read anything for {stalled:?} ({pending} bytes queued)")]
    WriteStalled {
        /// The server.
        peer: SocketAddr,
        /// How long no byte could be written.
        stalled: Duration,
        /// Bytes still queued.
        pending: usize,
    },
    /// The server ended the session (`Z`); nothing more can be sent.
    #[error("{peer}: the server ended the session{}", detail_suffix(.detail))]
    SessionEnded {
        /// The server.
        peer: SocketAddr,
        /// The last `HERZ ERROR` text, if any.
        detail: Option<String>,
    },
    /// The server closed the connection.
    #[error("{peer}: connection closed by the server{}", detail_suffix(.detail))]
    Closed {
        /// The server.
        peer: SocketAddr,
        /// The last `HERZ ERROR` text, if any.
        detail: Option<String>,
    },
}

/// A human description of a reject reason.
pub fn reject_text(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::NotAuthorized => "not authorized (A)",
        RejectReason::SessionNotAvailable => "session not available (S)",
    }
}

fn detail_suffix(detail: &Option<String>) -> DetailSuffix<'_> {
    DetailSuffix(detail.as_deref())
}

struct DetailSuffix<'a>(Option<&'a str>);

impl fmt::Display for DetailSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(text) => write!(f, " (server said: {text})"),
            None => Ok(()),
        }
    }
}
