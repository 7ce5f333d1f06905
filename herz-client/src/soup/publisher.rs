//! [`SoupPublisher`]: a SoupBinTCP publisher sending Herz messages as `U` packets.

use std::{
    fmt,
    net::{SocketAddr, ToSocketAddrs},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use herz_core::protocol::{
    moldudp64::Session,
    soupbintcp::{self, HerzControl, LoginAccepted, LoginRequest, MAX_PACKET_LEN, Packet},
};

use super::{
    SoupClientError, SoupOptions,
    conn::{Conn, ReadResult},
};
use crate::sys;

/// A SoupBinTCP publisher.
///
/// [`send`](Self::send) only appends a `U` packet to a write buffer; the buffer is written in one
/// `write` call once it reaches the flush threshold (64 KiB by default), so a fast publisher
/// makes one syscall per ~1500 ticks. Call [`flush`](Self::flush) when a burst is done, and
/// [`idle`](Self::idle) instead of sleeping between bursts: it keeps the client heartbeat going
/// and notices End of Session, `HERZ ERROR` and a closed connection.
///
/// ```no_run
/// use std::time::Duration;
/// use herz_client::soup::SoupPublisher;
///
/// let mut publisher = SoupPublisher::connect("127.0.0.1:7101", Duration::from_secs(2))?;
/// publisher.login("feed", "feed")?;
/// publisher.send(b"QAAPL    ...")?;
/// publisher.flush()?;
/// publisher.logout()?;
/// # Ok::<(), herz_client::soup::SoupClientError>(())
/// ```
pub struct SoupPublisher {
    conn: Conn,
    logged_in: bool,
    session: Session,
    /// `Z` received.
    ended: bool,
    sent: u64,
}

impl fmt::Debug for SoupPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoupPublisher")
            .field("peer", &self.conn.peer)
            .field("logged_in", &self.logged_in)
            .field("session", &self.session)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl SoupPublisher {
    /// Connects with default [`SoupOptions`].
    pub fn connect<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        timeout: Duration,
    ) -> Result<Self, SoupClientError> {
        Self::connect_with(addr, timeout, SoupOptions::default())
    }

    /// Connects with explicit timers and buffer sizes.
    pub fn connect_with<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        timeout: Duration,
        options: SoupOptions,
    ) -> Result<Self, SoupClientError> {
        Ok(SoupPublisher {
            conn: Conn::connect(addr, timeout, options)?,
            logged_in: false,
            session: Session::BLANK,
            ended: false,
            sent: 0,
        })
    }

    /// Logs in with publisher credentials (blank session, sequence 0, as `docs/PROTOCOL.md`
    /// specifies for publishers). Login Rejected is an error carrying the reason.
    pub fn login(
        &mut self,
        username: &str,
        password: &str,
    ) -> Result<LoginAccepted, SoupClientError> {
        if self.logged_in {
            return Err(SoupClientError::AlreadyLoggedIn {
                peer: self.conn.peer,
            });
        }
        let request = LoginRequest::new(username, password, Session::BLANK, 0)
            .map_err(SoupClientError::InvalidRequest)?;
        let accepted = self.conn.login(&request, None, false)?;
        self.logged_in = true;
        self.session = accepted.session;
        Ok(accepted)
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    /// The session from Login Accepted.
    pub fn session(&self) -> Session {
        self.session
    }

    /// Messages passed to [`send`](Self::send) so far (queued or written).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Bytes queued and not written yet.
    pub fn pending_bytes(&self) -> usize {
        self.conn.pending_write()
    }

    /// The last `HERZ ERROR` text the server sent, if any.
    pub fn last_error_text(&self) -> Option<&str> {
        self.conn.detail.as_deref()
    }

    fn check_open(&self) -> Result<(), SoupClientError> {
        if !self.logged_in {
            return Err(SoupClientError::NotLoggedIn {
                peer: self.conn.peer,
            });
        }
        if self.ended {
            return Err(SoupClientError::SessionEnded {
                peer: self.conn.peer,
                detail: self.conn.detail.clone(),
            });
        }
        if self.conn.eof {
            return Err(SoupClientError::Closed {
                peer: self.conn.peer,
                detail: self.conn.detail.clone(),
            });
        }
        Ok(())
    }

    /// Queues one message as a `U` packet; writes the queue when it reaches the flush threshold
    /// (blocking while the server's receive window is full: TCP back-pressure).
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SoupClientError> {
        self.check_open()?;
        soupbintcp::encode_unsequenced(msg, &mut self.conn.wbuf)
            .map_err(SoupClientError::InvalidRequest)?;
        self.sent += 1;
        if self.conn.pending_write() >= self.conn.opts.flush_threshold {
            self.conn.flush_blocking(self.conn.opts.silence_timeout)?;
        }
        Ok(())
    }

    /// Writes everything queued, then handles what the server sent meanwhile (heartbeats,
    /// `HERZ ERROR`, End of Session) and sends a client heartbeat if one is due.
    pub fn flush(&mut self) -> Result<(), SoupClientError> {
        self.check_open()?;
        self.conn.flush_blocking(self.conn.opts.silence_timeout)?;
        self.maintain()
    }

    /// Without blocking: reads and handles what the server sent, sends a client heartbeat if
    /// one is due, and checks the silence limit.
    pub fn maintain(&mut self) -> Result<(), SoupClientError> {
        self.check_open()?;
        loop {
            self.drain_incoming()?;
            match self.conn.try_read()? {
                ReadResult::Data => {}
                ReadResult::WouldBlock => break,
                ReadResult::Eof => {
                    self.drain_incoming()?;
                    break;
                }
            }
        }
        self.check_open()?;
        self.conn.housekeeping(Instant::now(), 0)
    }

    /// Flushes, then waits for `duration` while keeping the connection serviced (heartbeats,
    /// incoming packets). Use it instead of `sleep` when pacing.
    pub fn idle(&mut self, duration: Duration) -> Result<(), SoupClientError> {
        let deadline = Instant::now() + duration;
        self.flush()?;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            let heartbeat_at = self.conn.last_send + self.conn.opts.heartbeat_interval;
            let wake = deadline.min(heartbeat_at.max(now));
            sys::wait(
                [(self.conn.stream.as_raw_fd(), sys::IN)],
                Some(wake.saturating_duration_since(now)),
            )
            .map_err(|e| self.conn.io_error("poll", e))?;
            self.maintain()?;
        }
    }

    /// Handles the complete packets in the receive buffer.
    fn drain_incoming(&mut self) -> Result<(), SoupClientError> {
        while let Some((packet, used)) = soupbintcp::next_server_packet(
            &self.conn.rbuf[self.conn.start..self.conn.end],
            MAX_PACKET_LEN,
        )
        .map_err(|source| SoupClientError::Protocol {
            peer: self.conn.peer,
            next_seq: 0,
            source,
        })? {
            match packet {
                Packet::ServerHeartbeat => {}
                Packet::Debug(text) => {
                    if let Ok(Some(HerzControl::Error(t))) = HerzControl::parse(text) {
                        self.conn.detail = Some(t.to_owned());
                    }
                }
                Packet::EndOfSession => self.ended = true,
                other => {
                    return Err(SoupClientError::Unexpected {
                        peer: self.conn.peer,
                        packet: other.packet_type(),
                        context: "sent to a publisher",
                    });
                }
            }
            self.conn.start += used;
        }
        Ok(())
    }

    /// Writes what is queued, sends a Logout Request and waits briefly for the server to close.
    pub fn logout(mut self) -> Result<(), SoupClientError> {
        if !self.conn.eof && self.logged_in {
            self.conn.flush_blocking(self.conn.opts.silence_timeout)?;
        }
        self.conn.logout()
    }
}
