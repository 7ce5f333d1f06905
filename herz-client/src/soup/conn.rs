//! The connection machinery shared by the subscriber and the publisher: a non-blocking TCP
//! stream with one reusable receive buffer, one write queue, send/receive timestamps for the
//! heartbeat and silence timers, and the login exchange.

use std::{
    fmt,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use herz_core::protocol::soupbintcp::{
    self, DEFAULT_MAX_CLIENT_PACKET_LEN, Filter, HerzControl, LoginAccepted, LoginRequest,
    MAX_PACKET_LEN, Packet,
};

use super::{MIN_READ_BUFFER, SoupClientError, SoupOptions};
use crate::sys;

/// Below this much free space at the end of the receive buffer, move the unparsed tail to the
/// front before reading, so reads stay large.
const MIN_READ_ROOM: usize = 16 * 1024;

/// Result of one non-blocking read attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadResult {
    /// New bytes were appended to the receive buffer.
    Data,
    /// Nothing to read right now.
    WouldBlock,
    /// The server closed (or reset) the connection.
    Eof,
}

/// Result of waiting for more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitResult {
    /// New bytes arrived.
    Data,
    /// The connection is closed.
    Eof,
    /// The caller's deadline passed.
    TimedOut,
}

pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) peer: SocketAddr,
    /// Receive buffer; `rbuf[start..end]` holds bytes not parsed yet. Its length is fixed.
    pub(super) rbuf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Write queue; `wbuf[wpos..]` is not written yet.
    pub(super) wbuf: Vec<u8>,
    pub(super) wpos: usize,
    pub(super) last_send: Instant,
    pub(super) last_recv: Instant,
    pub(super) eof: bool,
    /// The last `HERZ ERROR` text received: explains a reject or a close.
    pub(super) detail: Option<String>,
    pub(super) opts: SoupOptions,
}

impl Conn {
    /// Connects to the first address of `addr` that accepts, sets TCP_NODELAY (every packet is
    /// small and latency matters more than segment count) and keepalive, and switches the socket
    /// to non-blocking mode.
    pub(super) fn connect<A: ToSocketAddrs + fmt::Display>(
        addr: A,
        timeout: Duration,
        opts: SoupOptions,
    ) -> Result<Conn, SoupClientError> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| SoupClientError::Resolve {
                addr: addr.to_string(),
                source,
            })?
            .collect();
        let mut last_err =
            io::Error::new(io::ErrorKind::NotFound, "the address resolved to nothing");
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(stream) => return Conn::from_stream(stream, opts),
                Err(e) => last_err = e,
            }
        }
        Err(SoupClientError::Connect {
            addr: addr.to_string(),
            source: last_err,
        })
    }

    /// Wraps a connected stream.
    pub(super) fn from_stream(
        stream: TcpStream,
        opts: SoupOptions,
    ) -> Result<Conn, SoupClientError> {
        let peer = stream
            .peer_addr()
            .map_err(|source| SoupClientError::Connect {
                addr: "(accepted stream)".into(),
                source,
            })?;
        let io_err = |op| move |source| SoupClientError::Io { peer, op, source };
        stream
            .set_nodelay(true)
            .map_err(io_err("set TCP_NODELAY"))?;
        socket2::SockRef::from(&stream)
            .set_keepalive(true)
            .map_err(io_err("set SO_KEEPALIVE"))?;
        stream
            .set_nonblocking(true)
            .map_err(io_err("set O_NONBLOCK"))?;
        let now = Instant::now();
        let rbuf_len = opts.read_buffer.max(MIN_READ_BUFFER);
        Ok(Conn {
            stream,
            peer,
            rbuf: vec![0; rbuf_len],
            start: 0,
            end: 0,
            wbuf: Vec::with_capacity(opts.flush_threshold.max(4096) + MAX_PACKET_LEN + 2),
            wpos: 0,
            last_send: now,
            last_recv: now,
            eof: false,
            detail: None,
            opts,
        })
    }

    pub(super) fn io_error(&self, op: &'static str, source: io::Error) -> SoupClientError {
        SoupClientError::Io {
            peer: self.peer,
            op,
            source,
        }
    }

    /// Bytes queued but not written yet.
    #[inline]
    pub(super) fn pending_write(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes as much of the queue as the socket takes without blocking.
    pub(super) fn try_flush(&mut self) -> Result<(), SoupClientError> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => {
                    return Err(self.io_error("write", io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => {
                    self.wpos += n;
                    self.last_send = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.write_failed(e)),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        Ok(())
    }

    /// A failed write usually means the server closed the connection; read what it sent before
    /// (a `HERZ ERROR` explains why) so the error can say so.
    fn write_failed(&mut self, e: io::Error) -> SoupClientError {
        if matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            self.drain_for_detail();
            return SoupClientError::Closed {
                peer: self.peer,
                detail: self.detail.clone(),
            };
        }
        self.io_error("write", e)
    }

    /// Reads whatever is left and remembers any `HERZ ERROR` text in it (best effort).
    fn drain_for_detail(&mut self) {
        for _ in 0..64 {
            let mut consumed_any = false;
            while let Ok(Some((packet, used))) =
                soupbintcp::next_server_packet(&self.rbuf[self.start..self.end], MAX_PACKET_LEN)
            {
                if let Packet::Debug(text) = packet
                    && let Ok(Some(HerzControl::Error(t))) = HerzControl::parse(text)
                {
                    self.detail = Some(t.to_owned());
                }
                self.start += used;
                consumed_any = true;
            }
            match self.try_read() {
                Ok(ReadResult::Data) => {}
                _ if consumed_any => {}
                _ => return,
            }
        }
    }

    /// Writes the whole queue, waiting for the socket when needed. Fails if the server takes no
    /// bytes at all for `stall_limit`.
    pub(super) fn flush_blocking(&mut self, stall_limit: Duration) -> Result<(), SoupClientError> {
        let mut progress_at = Instant::now();
        loop {
            let before = self.pending_write();
            self.try_flush()?;
            let after = self.pending_write();
            if after == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if after < before {
                progress_at = now;
            }
            let stalled = now.duration_since(progress_at);
            if stalled >= stall_limit {
                return Err(SoupClientError::WriteStalled {
                    peer: self.peer,
                    stalled,
                    pending: after,
                });
            }
            sys::wait(
                [(self.stream.as_raw_fd(), sys::OUT)],
                Some(stall_limit - stalled),
            )
            .map_err(|e| self.io_error("poll", e))?;
        }
    }

    /// One non-blocking read into the receive buffer.
    pub(super) fn try_read(&mut self) -> Result<ReadResult, SoupClientError> {
        if self.eof {
            return Ok(ReadResult::Eof);
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.rbuf.len() - self.end < MIN_READ_ROOM {
            self.rbuf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Cannot happen: the buffer holds at least one maximal packet, and a complete packet
        // is always parsed before reading again.
        debug_assert!(self.end < self.rbuf.len(), "receive buffer full");
        loop {
            match self.stream.read(&mut self.rbuf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(ReadResult::Eof);
                }
                Ok(n) => {
                    self.end += n;
                    self.last_recv = Instant::now();
                    return Ok(ReadResult::Data);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadResult::WouldBlock);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An abortive close (SO_LINGER 0, how Herz drops dead or slow subscribers) is
                // still the server closing the connection.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    self.eof = true;
                    return Ok(ReadResult::Eof);
                }
                Err(e) => return Err(self.io_error("read", e)),
            }
        }
    }

    /// After login: queues a client heartbeat when nothing was sent for the heartbeat
    /// interval, writes what is queued, and fails if the server has been silent too long.
    pub(super) fn housekeeping(
        &mut self,
        now: Instant,
        next_seq: u64,
    ) -> Result<(), SoupClientError> {
        if self.pending_write() == 0
            && now.duration_since(self.last_send) >= self.opts.heartbeat_interval
        {
            soupbintcp::encode_client_heartbeat(&mut self.wbuf);
        }
        if self.pending_write() > 0 {
            self.try_flush()?;
        }
        let silent = now.saturating_duration_since(self.last_recv);
        if silent > self.opts.silence_timeout {
            return Err(SoupClientError::ServerSilent {
                peer: self.peer,
                silent,
                limit: self.opts.silence_timeout,
                next_seq,
            });
        }
        Ok(())
    }

    /// Waits until more bytes arrive, the connection closes or `deadline` passes. With
    /// `logged_in`, keeps the heartbeat and silence timers running meanwhile.
    pub(super) fn wait_for_data(
        &mut self,
        deadline: Option<Instant>,
        logged_in: bool,
        next_seq: u64,
    ) -> Result<WaitResult, SoupClientError> {
        loop {
            let now = Instant::now();
            if logged_in {
                self.housekeeping(now, next_seq)?;
            }
            match self.try_read()? {
                ReadResult::Data => return Ok(WaitResult::Data),
                ReadResult::Eof => return Ok(WaitResult::Eof),
                ReadResult::WouldBlock => {}
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(WaitResult::TimedOut);
            }
            let mut wake = deadline;
            let mut events = sys::IN;
            if self.pending_write() > 0 {
                // Blocked on a full send buffer: wake when it drains rather than for the
                // heartbeat timer (which would find the queue still busy and spin).
                events |= sys::OUT;
            } else if logged_in {
                wake = sys::earliest(wake, Some(self.last_send + self.opts.heartbeat_interval));
            }
            if logged_in {
                // Just past the limit, so the check above trips on wake-up.
                let limit = self.last_recv + self.opts.silence_timeout + Duration::from_millis(1);
                wake = sys::earliest(wake, Some(limit));
            }
            sys::wait(
                [(self.stream.as_raw_fd(), events)],
                sys::remaining(wake, now),
            )
            .map_err(|e| self.io_error("poll", e))?;
        }
    }

    /// Sends the filter (if any) and the Login Request, and waits for the answer. Debug packets
    /// before the answer are skipped, but a `HERZ ERROR` among them is kept to explain a reject.
    /// Bytes after Login Accepted stay in the receive buffer.
    pub(super) fn login(
        &mut self,
        request: &LoginRequest,
        filter: Option<&Filter<'_>>,
        snapshot: bool,
    ) -> Result<LoginAccepted, SoupClientError> {
        if snapshot {
            HerzControl::Snapshot
                .encode_packet(&mut self.wbuf)
                .map_err(SoupClientError::InvalidRequest)?;
        }
        if let Some(filter) = filter {
            // The server caps client packets at 1024 bytes by default; a big filter is split.
            soupbintcp::encode_filter_packets(
                filter,
                DEFAULT_MAX_CLIENT_PACKET_LEN,
                &mut self.wbuf,
            )
            .map_err(SoupClientError::InvalidRequest)?;
        }
        request.encode(&mut self.wbuf);
        let timeout = self.opts.login_timeout;
        let deadline = Instant::now() + timeout;
        self.flush_blocking(timeout)?;
        loop {
            while let Some((packet, used)) =
                soupbintcp::next_server_packet(&self.rbuf[self.start..self.end], MAX_PACKET_LEN)
                    .map_err(|source| SoupClientError::Protocol {
                        peer: self.peer,
                        next_seq: 0,
                        source,
                    })?
            {
                match packet {
                    Packet::LoginAccepted(accepted) => {
                        self.start += used;
                        return Ok(accepted);
                    }
                    Packet::LoginRejected(reason) => {
                        return Err(SoupClientError::LoginRejected {
                            peer: self.peer,
                            reason,
                            detail: self.detail.clone(),
                        });
                    }
                    Packet::Debug(text) => {
                        if let Ok(Some(HerzControl::Error(t))) = HerzControl::parse(text) {
                            self.detail = Some(t.to_owned());
                        }
                    }
                    other => {
                        return Err(SoupClientError::Unexpected {
                            peer: self.peer,
                            packet: other.packet_type(),
                            context: "before Login Accepted",
                        });
                    }
                }
                self.start += used;
            }
            match self.wait_for_data(Some(deadline), false, 0)? {
                WaitResult::Data => {}
                WaitResult::Eof => {
                    return Err(SoupClientError::ClosedDuringLogin {
                        peer: self.peer,
                        detail: self.detail.clone(),
                    });
                }
                WaitResult::TimedOut => {
                    return Err(SoupClientError::LoginTimeout {
                        peer: self.peer,
                        timeout,
                    });
                }
            }
        }
    }

    /// Sends a Logout Request and waits (up to the logout timeout) for the server to close,
    /// discarding whatever it still sends.
    pub(super) fn logout(&mut self) -> Result<(), SoupClientError> {
        if self.eof {
            return Ok(());
        }
        soupbintcp::encode_logout_request(&mut self.wbuf);
        let timeout = self.opts.logout_timeout;
        match self.flush_blocking(timeout) {
            Ok(()) => {}
            // The server may already have closed; a logout has nothing more to do then.
            Err(SoupClientError::Closed { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + timeout;
        loop {
            self.start = 0;
            self.end = 0;
            match self.wait_for_data(Some(deadline), false, 0)? {
                WaitResult::Data => {}
                WaitResult::Eof | WaitResult::TimedOut => return Ok(()),
            }
        }
    }
}
