//! [`SoupSubscriber`]: a SoupBinTCP subscriber that understands the Herz extension.

use std::{
    fmt,
    net::{SocketAddr, ToSocketAddrs},
    time::{Duration, Instant},
};

use herz_core::protocol::{
    moldudp64::Session,
    soupbintcp::{
        self, Filter, HerzControl, LoginAccepted, LoginRequest, MAX_PACKET_LEN, Packet, SkipReason,
    },
};

use super::{
    SoupClientError, SoupOptions,
    conn::{Conn, WaitResult},
};

/// What a subscriber receives, borrowing payloads from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A Sequenced Data packet: the message with journal sequence `seq`.
    Message {
        /// The message's sequence number (implicit SoupBinTCP numbering).
        seq: u64,
        /// The message bytes (a Herz tick).
        payload: &'a [u8],
    },
    /// `HERZ SKIP <count> <reason>`: sequences `seq .. seq + count` will not be sent.
    Skip {
        /// The first skipped sequence number.
        seq: u64,
        /// How many sequence numbers are skipped.
        count: u64,
        /// Why.
        reason: SkipReason,
    },
    /// A Server Heartbeat.
    Heartbeat,
    /// Debug text that is not a Herz command (or a Herz command a client does not act on).
    Debug(&'a [u8]),
    /// `HERZ ERROR <text>`: the server is about to close; the text says why.
    HerzError(&'a str),
    /// `HERZ LIVE <next>`: the snapshot asked for with
    /// [`login_with_snapshot`](SoupSubscriber::login_with_snapshot) is complete; from `next` on,
    /// the stream is live.
    Live {
        /// The first live sequence number.
        next: u64,
    },
    /// End of Session (`Z`): the server closes next.
    EndOfSession,
    /// The server closed the connection. Delivered again on every later call.
    Closed,
}

impl Event<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> OwnedEvent {
        match *self {
            Event::Message { seq, payload } => OwnedEvent::Message {
                seq,
                payload: payload.to_vec(),
            },
            Event::Skip { seq, count, reason } => OwnedEvent::Skip { seq, count, reason },
            Event::Heartbeat => OwnedEvent::Heartbeat,
            Event::Debug(text) => OwnedEvent::Debug(String::from_utf8_lossy(text).into_owned()),
            Event::HerzError(text) => OwnedEvent::HerzError(text.to_owned()),
            Event::Live { next } => OwnedEvent::Live { next },
            Event::EndOfSession => OwnedEvent::EndOfSession,
            Event::Closed => OwnedEvent::Closed,
        }
    }
}

/// An owned [`Event`], for the convenience API ([`SoupSubscriber::recv_timeout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEvent {
    /// See [`Event::Message`].
    Message {
        /// Sequence number.
        seq: u64,
        /// Message bytes.
        payload: Vec<u8>,
    },
    /// See [`Event::Skip`].
    Skip {
        /// First skipped sequence number.
        seq: u64,
        /// Count.
        count: u64,
        /// Reason.
        reason: SkipReason,
    },
    /// See [`Event::Heartbeat`].
    Heartbeat,
    /// See [`Event::Debug`] (lossy UTF-8).
    Debug(String),
    /// See [`Event::HerzError`].
    HerzError(String),
    /// See [`Event::Live`].
    Live {
        /// The first live sequence number.
        next: u64,
    },
    /// See [`Event::EndOfSession`].
    EndOfSession,
    /// See [`Event::Closed`].
    Closed,
}

/// A SoupBinTCP subscriber.
///
/// ```no_run
/// use std::time::Duration;
/// use herz_client::soup::{Event, Session, SoupSubscriber};
///
/// let mut sub = SoupSubscriber::connect("127.0.0.1:7100", Duration::from_secs(2))?;
/// let accepted = sub.login("demo", "demo", Session::BLANK, 1, None)?;
/// println!("session {} starts at {}", accepted.session, accepted.sequence);
/// loop {
///     let mut done = false;
///     sub.poll(Some(Duration::from_millis(100)), |event| match event {
///         Event::Message { seq, payload } => println!("{seq}: {} bytes", payload.len()),
///         Event::EndOfSession | Event::Closed => done = true,
///         _ => {}
///     })?;
///     if done {
///         break;
///     }
/// }
/// // A reconnect would log in with `accepted.session` and `sub.next_seq()`.
/// # Ok::<(), herz_client::soup::SoupClientError>(())
/// ```
///
/// The implicit sequence counter follows `docs/PROTOCOL.md` section 5: it starts at the Login
/// Accepted sequence, each `S` packet takes the next number and each `HERZ SKIP n` advances it by
/// `n`. [`next_seq`](Self::next_seq) is therefore always the exact resume point, filtered or not.
///
/// Receiving reads into one buffer (256 KiB by default) and parses every complete packet of a
/// read before the next one, handing borrowed payloads to the callback: no allocation per
/// message.
pub struct SoupSubscriber {
    conn: Conn,
    logged_in: bool,
    session: Session,
    next_seq: u64,
    /// `Z` received.
    ended: bool,
}

impl fmt::Debug for SoupSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoupSubscriber")
            .field("peer", &self.conn.peer)
            .field("logged_in", &self.logged_in)
            .field("session", &self.session)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl SoupSubscriber {
    /// Connects with default [`SoupOptions`] (1 s heartbeats, 15 s silence limit).
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
        Ok(Self::over(Conn::connect(addr, timeout, options)?))
    }

    /// Wraps a stream connected by the caller (e.g. from a chosen source address).
    pub fn from_stream(
        stream: std::net::TcpStream,
        options: SoupOptions,
    ) -> Result<Self, SoupClientError> {
        Ok(Self::over(Conn::from_stream(stream, options)?))
    }

    fn over(conn: Conn) -> Self {
        SoupSubscriber {
            conn,
            logged_in: false,
            session: Session::BLANK,
            next_seq: 0,
            ended: false,
        }
    }

    /// Logs in. `session` may be [`Session::BLANK`] (the current session); `next_seq` is the
    /// next message wanted (`0`: only messages generated from now on). With a `filter`, the
    /// `HERZ FILTER` packet(s) are sent before the Login Request. On Login Rejected the error
    /// carries the reason code and any `HERZ ERROR` text the server sent first.
    pub fn login(
        &mut self,
        username: &str,
        password: &str,
        session: Session,
        next_seq: u64,
        filter: Option<Filter<'_>>,
    ) -> Result<LoginAccepted, SoupClientError> {
        self.login_inner(username, password, session, next_seq, filter, false)
    }

    /// Logs in asking for a snapshot (`HERZ SNAPSHOT`, docs/PROTOCOL.md): the latest retained
    /// message of each symbol (of `filter`) from `next_seq` on (`0`: from the oldest retained),
    /// then [`Event::Live`], then the live stream. The Login Accepted sequence is where the
    /// window starts; the messages in it that are not sent come as [`Event::Skip`]s, so the
    /// counter stays exact and a reconnect resumes like any other.
    pub fn login_with_snapshot(
        &mut self,
        username: &str,
        password: &str,
        session: Session,
        next_seq: u64,
        filter: Option<Filter<'_>>,
    ) -> Result<LoginAccepted, SoupClientError> {
        self.login_inner(username, password, session, next_seq, filter, true)
    }

    fn login_inner(
        &mut self,
        username: &str,
        password: &str,
        session: Session,
        next_seq: u64,
        filter: Option<Filter<'_>>,
        snapshot: bool,
    ) -> Result<LoginAccepted, SoupClientError> {
        if self.logged_in {
            return Err(SoupClientError::AlreadyLoggedIn {
                peer: self.conn.peer,
            });
        }
        let request = LoginRequest::new(username, password, session, next_seq)
            .map_err(SoupClientError::InvalidRequest)?;
        let accepted = self.conn.login(&request, filter.as_ref(), snapshot)?;
        self.logged_in = true;
        self.session = accepted.session;
        self.next_seq = accepted.sequence;
        Ok(accepted)
    }

    /// The server's address.
    pub fn peer(&self) -> SocketAddr {
        self.conn.peer
    }

    /// The session from Login Accepted (blank before login).
    pub fn session(&self) -> Session {
        self.session
    }

    /// The sequence number a reconnect should request to resume exactly: the sequence of the
    /// next message this subscriber has not been given (nor told to skip).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether End of Session was received.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The last `HERZ ERROR` text the server sent, if any.
    pub fn last_error_text(&self) -> Option<&str> {
        self.conn.detail.as_deref()
    }

    /// Decodes the next complete packet in the receive buffer, if any.
    fn next_buffered(&mut self) -> Result<Option<Event<'_>>, SoupClientError> {
        let decoded = soupbintcp::next_server_packet(
            &self.conn.rbuf[self.conn.start..self.conn.end],
            MAX_PACKET_LEN,
        );
        let (packet, used) = match decoded {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(source) => {
                return Err(SoupClientError::Protocol {
                    peer: self.conn.peer,
                    next_seq: self.next_seq,
                    source,
                });
            }
        };
        self.conn.start += used;
        let event = match packet {
            Packet::SequencedData(payload) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                Event::Message { seq, payload }
            }
            Packet::Debug(text) => match HerzControl::parse(text) {
                Ok(Some(HerzControl::Skip { count, reason })) => {
                    let seq = self.next_seq;
                    self.next_seq = seq.saturating_add(count);
                    Event::Skip { seq, count, reason }
                }
                Ok(Some(HerzControl::Error(t))) => {
                    self.conn.detail = Some(t.to_owned());
                    Event::HerzError(t)
                }
                Ok(Some(HerzControl::Live { next })) => Event::Live { next },
                // A FILTER from the server means nothing to a client; ordinary text is shown.
                Ok(Some(HerzControl::Filter(_) | HerzControl::Snapshot)) | Ok(None) => {
                    Event::Debug(text)
                }
                // A malformed SKIP would desynchronise the counter: refuse rather than guess.
                Err(source) => {
                    return Err(SoupClientError::Protocol {
                        peer: self.conn.peer,
                        next_seq: self.next_seq,
                        source,
                    });
                }
            },
            Packet::ServerHeartbeat => Event::Heartbeat,
            Packet::EndOfSession => {
                self.ended = true;
                Event::EndOfSession
            }
            other => {
                return Err(SoupClientError::Unexpected {
                    peer: self.conn.peer,
                    packet: other.packet_type(),
                    context: "after Login Accepted",
                });
            }
        };
        Ok(Some(event))
    }

    /// Delivers every event that is already received, or waits up to `timeout` (`None`: no
    /// limit) for more bytes and delivers what they complete. Returns the number of events given
    /// to `f`; 0 means the timeout passed with nothing new.
    ///
    /// Meanwhile it sends a client heartbeat whenever nothing was sent for the heartbeat
    /// interval, and fails with [`SoupClientError::ServerSilent`] when nothing arrived for the
    /// silence limit. After the connection closes, every call delivers [`Event::Closed`].
    pub fn poll<F>(&mut self, timeout: Option<Duration>, mut f: F) -> Result<usize, SoupClientError>
    where
        F: FnMut(Event<'_>),
    {
        if !self.logged_in {
            return Err(SoupClientError::NotLoggedIn {
                peer: self.conn.peer,
            });
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut delivered = 0;
            while let Some(event) = self.next_buffered()? {
                f(event);
                delivered += 1;
            }
            if delivered > 0 {
                // Under a continuous stream the wait below is never reached: keep the heartbeat
                // and silence timers running here too.
                self.conn.housekeeping(Instant::now(), self.next_seq)?;
                return Ok(delivered);
            }
            if self.conn.eof {
                f(Event::Closed);
                return Ok(1);
            }
            match self.conn.wait_for_data(deadline, true, self.next_seq)? {
                WaitResult::Data | WaitResult::Eof => {}
                WaitResult::TimedOut => return Ok(0),
            }
        }
    }

    /// The next event as an owned value, waiting up to `timeout`; `Ok(None)` on timeout.
    /// Convenient for tests; [`poll`](Self::poll) avoids the copy.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<OwnedEvent>, SoupClientError> {
        if !self.logged_in {
            return Err(SoupClientError::NotLoggedIn {
                peer: self.conn.peer,
            });
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.next_buffered()? {
                return Ok(Some(event.to_owned()));
            }
            if self.conn.eof {
                return Ok(Some(OwnedEvent::Closed));
            }
            match self
                .conn
                .wait_for_data(Some(deadline), true, self.next_seq)?
            {
                WaitResult::Data | WaitResult::Eof => {}
                WaitResult::TimedOut => return Ok(None),
            }
        }
    }

    /// The next event, waiting as long as it takes (heartbeats arrive every second, and a silent
    /// server ends the wait with an error).
    pub fn recv(&mut self) -> Result<OwnedEvent, SoupClientError> {
        loop {
            if let Some(event) = self.recv_timeout(Duration::from_secs(3600))? {
                return Ok(event);
            }
        }
    }

    /// Sends a Logout Request and waits briefly for the server to close. Messages still in
    /// flight are discarded and do not advance [`next_seq`](Self::next_seq), so it stays the
    /// exact resume point.
    pub fn logout(&mut self) -> Result<(), SoupClientError> {
        self.conn.logout()
    }
}
