//! [`MoldReceiver`]: receives a MoldUDP64 stream and delivers it in sequence order, recovering
//! lost packets through a re-request server.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt, io,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use herz_core::protocol::moldudp64::{Packet, RequestPacket, Session};
use socket2::{Domain, Protocol, Socket, Type};

use super::{MAX_DATAGRAM, MoldClientError};
use crate::sys;

/// Where a receiver starts delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// From the first packet seen (its first message, or the next sequence of a heartbeat):
    /// a late joiner that only wants live data.
    FirstSeen,
    /// From this sequence number; everything between it and the live stream is requested from
    /// the re-request server. `Sequence(1)` replays the whole session.
    Sequence(u64),
}

/// How a [`MoldReceiver`] listens and recovers.
#[derive(Debug, Clone)]
pub struct MoldReceiverConfig {
    /// Local address to bind. For multicast, its port is the group's port (the socket is then
    /// bound to `group:port`, so that only that group's traffic arrives).
    pub listen: SocketAddr,
    /// IPv4 multicast group to join, or `None` for unicast reception.
    pub group: Option<Ipv4Addr>,
    /// Address of the interface to join the group on (`0.0.0.0`: the kernel's choice).
    pub interface: Ipv4Addr,
    /// The re-request server. `None`: no recovery; a gap is reported once it has stayed open for
    /// [`retry_interval`](Self::retry_interval) (time for reordered packets to arrive).
    pub rerequest: Option<SocketAddr>,
    /// The session to follow; `None` locks onto the session of the first valid packet. Packets
    /// of other sessions are counted and ignored.
    pub session: Option<Session>,
    /// Where delivery starts.
    pub start: StartFrom,
    /// The most messages asked for in one re-request (the server replies with one packet, so a
    /// bigger number only says how far the gap goes).
    pub max_request_count: u16,
    /// How long to wait for a reply before asking again.
    pub retry_interval: Duration,
    /// Requests for one gap position before it is declared lost
    /// ([`MoldEvent::Gap`]). Progress (any message filling the gap) starts the count again.
    pub max_retries: u32,
    /// The most out-of-order messages held while waiting for a gap to fill. Beyond it, newer
    /// messages are dropped and requested again later: memory stays bounded.
    pub max_buffered: usize,
    /// SO_RCVBUF for the data socket (bursts of multicast are lost in the kernel otherwise).
    pub recv_buffer_bytes: usize,
}

impl MoldReceiverConfig {
    /// Unicast reception on `listen` (e.g. `127.0.0.1:30001`), no recovery by default.
    pub fn unicast(listen: SocketAddr) -> Self {
        MoldReceiverConfig {
            listen,
            group: None,
            interface: Ipv4Addr::UNSPECIFIED,
            rerequest: None,
            session: None,
            start: StartFrom::FirstSeen,
            max_request_count: 500,
            retry_interval: Duration::from_millis(100),
            max_retries: 10,
            max_buffered: 100_000,
            recv_buffer_bytes: 4 << 20,
        }
    }

    /// Multicast reception of `group:port`, joined on the interface with address `interface`.
    pub fn multicast(group: Ipv4Addr, port: u16, interface: Ipv4Addr) -> Self {
        MoldReceiverConfig {
            group: Some(group),
            interface,
            ..Self::unicast(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        }
    }

    /// Sets the re-request server.
    pub fn with_rerequest(mut self, server: SocketAddr) -> Self {
        self.rerequest = Some(server);
        self
    }

    /// Sets where delivery starts.
    pub fn with_start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }
}

/// What a receiver delivers, in sequence order. Payloads borrow the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoldEvent<'a> {
    /// The message with sequence `seq`.
    Message {
        /// Sequence number.
        seq: u64,
        /// Message bytes.
        payload: &'a [u8],
    },
    /// Messages `from .. from + count` could not be recovered and are skipped.
    Gap {
        /// First lost sequence number.
        from: u64,
        /// How many.
        count: u64,
    },
    /// A heartbeat: the sender's next sequence is `next_seq`.
    Heartbeat {
        /// The next sequence the sender will use.
        next_seq: u64,
    },
    /// End of session, delivered once every message before `next_seq` was delivered (or
    /// reported lost).
    EndOfSession {
        /// The sequence after the last message of the session.
        next_seq: u64,
    },
}

impl MoldEvent<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> OwnedMoldEvent {
        match *self {
            MoldEvent::Message { seq, payload } => OwnedMoldEvent::Message {
                seq,
                payload: payload.to_vec(),
            },
            MoldEvent::Gap { from, count } => OwnedMoldEvent::Gap { from, count },
            MoldEvent::Heartbeat { next_seq } => OwnedMoldEvent::Heartbeat { next_seq },
            MoldEvent::EndOfSession { next_seq } => OwnedMoldEvent::EndOfSession { next_seq },
        }
    }
}

/// An owned [`MoldEvent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedMoldEvent {
    /// See [`MoldEvent::Message`].
    Message {
        /// Sequence number.
        seq: u64,
        /// Message bytes.
        payload: Vec<u8>,
    },
    /// See [`MoldEvent::Gap`].
    Gap {
        /// First lost sequence number.
        from: u64,
        /// How many.
        count: u64,
    },
    /// See [`MoldEvent::Heartbeat`].
    Heartbeat {
        /// Next sequence.
        next_seq: u64,
    },
    /// See [`MoldEvent::EndOfSession`].
    EndOfSession {
        /// Next sequence.
        next_seq: u64,
    },
}

/// Counters of a [`MoldReceiver`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoldReceiverStats {
    /// Datagrams received (data socket and re-request replies).
    pub datagrams: u64,
    /// Datagrams that are not valid MoldUDP64.
    pub invalid: u64,
    /// Valid datagrams of another session.
    pub foreign_session: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Messages received again (A/B lines, overlapping replies) and ignored.
    pub duplicates: u64,
    /// Out-of-order messages not kept because the buffer was full (requested again later).
    pub buffer_overflow: u64,
    /// Re-requests sent.
    pub requests_sent: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Gaps declared lost.
    pub gaps: u64,
    /// Messages declared lost, in total.
    pub gap_messages: u64,
}

/// An open gap and its request timer.
#[derive(Debug, Clone, Copy)]
struct GapState {
    /// `expected` when the gap was (re)opened: progress restarts the retries.
    from: u64,
    retries: u32,
    due: Instant,
}

/// The socket-free sequencing logic: ordering, buffering, gap timers, requests.
struct Sequencer {
    cfg: MoldReceiverConfig,
    session: Option<Session>,
    /// The next sequence to deliver; `None` until the start is known.
    expected: Option<u64>,
    /// The highest "next sequence" any packet showed: everything below it exists.
    known_end: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    /// Buffers of delivered pending messages, reused to avoid allocating per reordered message.
    spare: Vec<Vec<u8>>,
    gap: Option<GapState>,
    end_of_session: Option<u64>,
    end_delivered: bool,
    stats: MoldReceiverStats,
}

impl Sequencer {
    fn new(cfg: MoldReceiverConfig) -> Self {
        Sequencer {
            session: cfg.session,
            cfg,
            expected: None,
            known_end: 0,
            pending: BTreeMap::new(),
            spare: Vec::new(),
            gap: None,
            end_of_session: None,
            end_delivered: false,
            stats: MoldReceiverStats::default(),
        }
    }

    /// Handles one datagram; returns the number of events delivered.
    fn on_datagram<F: FnMut(MoldEvent<'_>)>(&mut self, dgram: &[u8], f: &mut F) -> usize {
        self.stats.datagrams += 1;
        let Ok(packet) = Packet::parse(dgram) else {
            // One bad datagram must not stop a receiver: count it and go on.
            self.stats.invalid += 1;
            return 0;
        };
        match self.session {
            Some(s) if !s.matches(&packet.session()) => {
                self.stats.foreign_session += 1;
                return 0;
            }
            Some(_) => {}
            None => self.session = Some(packet.session()),
        }
        if self.expected.is_none() {
            // The first packet of the session fixes the start. For a heartbeat or end of
            // session, its sequence is the next one to come, so "first seen" needs nothing older.
            self.expected = Some(match self.cfg.start {
                StartFrom::FirstSeen => packet.sequence(),
                StartFrom::Sequence(n) => n,
            });
        }
        self.known_end = self.known_end.max(packet.next_sequence());
        let mut delivered = 0;
        if packet.is_end_of_session() {
            self.end_of_session.get_or_insert(packet.next_sequence());
            return delivered;
        }
        if packet.is_heartbeat() {
            self.stats.heartbeats += 1;
            f(MoldEvent::Heartbeat {
                next_seq: packet.sequence(),
            });
            return 1;
        }
        for (seq, msg) in packet.sequenced_messages() {
            let expected = self.expected.unwrap_or(seq);
            if seq < expected || self.pending.contains_key(&seq) {
                self.stats.duplicates += 1;
            } else if seq == expected {
                f(MoldEvent::Message { seq, payload: msg });
                self.stats.messages += 1;
                self.expected = Some(seq + 1);
                delivered += 1 + self.drain_pending(f);
            } else if self.pending.len() < self.cfg.max_buffered {
                let mut buf = self.spare.pop().unwrap_or_default();
                buf.clear();
                buf.extend_from_slice(msg);
                self.pending.insert(seq, buf);
            } else {
                self.stats.buffer_overflow += 1;
            }
        }
        delivered
    }

    /// Delivers buffered messages that are now in order.
    fn drain_pending<F: FnMut(MoldEvent<'_>)>(&mut self, f: &mut F) -> usize {
        let Some(mut expected) = self.expected else {
            return 0;
        };
        let mut delivered = 0;
        while let Some(entry) = self.pending.first_entry() {
            let seq = *entry.key();
            if seq > expected {
                break;
            }
            let buf = entry.remove();
            if seq == expected {
                f(MoldEvent::Message { seq, payload: &buf });
                self.stats.messages += 1;
                delivered += 1;
                expected += 1;
            }
            if self.spare.len() < 1024 {
                self.spare.push(buf);
            }
        }
        self.expected = Some(expected);
        delivered
    }

    /// Runs the gap timers: declares lost gaps, delivers End of Session when due, and returns
    /// the re-request to send now, if any.
    fn on_timer<F: FnMut(MoldEvent<'_>)>(
        &mut self,
        now: Instant,
        f: &mut F,
    ) -> (usize, Option<RequestPacket>) {
        let mut delivered = 0;
        let can_request = self.cfg.rerequest.is_some();
        loop {
            let Some(expected) = self.expected else {
                return (delivered, None);
            };
            if expected >= self.known_end {
                self.gap = None;
                if let Some(end) = self.end_of_session
                    && expected >= end
                    && !self.end_delivered
                {
                    self.end_delivered = true;
                    f(MoldEvent::EndOfSession { next_seq: end });
                    delivered += 1;
                }
                return (delivered, None);
            }
            // Missing: from `expected` up to the first buffered message, or to the known end.
            let missing_end = self
                .pending
                .first_key_value()
                .map_or(self.known_end, |(&seq, _)| seq);
            let count = missing_end - expected;
            let gap = match self.gap {
                Some(g) if g.from == expected => g,
                // A new gap, or progress on the old one: ask at once (a reply covers one packet,
                // so partial progress is the normal case); without a server, give reordered
                // packets one retry interval to show up.
                _ => GapState {
                    from: expected,
                    retries: 0,
                    due: if can_request {
                        now
                    } else {
                        now + self.cfg.retry_interval
                    },
                },
            };
            if now < gap.due {
                self.gap = Some(gap);
                return (delivered, None);
            }
            if !can_request || gap.retries >= self.cfg.max_retries {
                f(MoldEvent::Gap {
                    from: expected,
                    count,
                });
                delivered += 1;
                self.stats.gaps += 1;
                self.stats.gap_messages += count;
                self.expected = Some(missing_end);
                self.gap = None;
                delivered += self.drain_pending(f);
                continue;
            }
            self.gap = Some(GapState {
                from: expected,
                retries: gap.retries + 1,
                due: now + self.cfg.retry_interval,
            });
            let Some(session) = self.session else {
                return (delivered, None);
            };
            let request = RequestPacket {
                session,
                sequence: expected,
                count: count.min(u64::from(self.cfg.max_request_count.max(1))) as u16,
            };
            self.stats.requests_sent += 1;
            return (delivered, Some(request));
        }
    }

    /// When [`on_timer`](Self::on_timer) next has something to do.
    fn next_wake(&self) -> Option<Instant> {
        self.gap.map(|g| g.due)
    }
}

/// A MoldUDP64 receiver delivering messages in sequence order.
///
/// Out-of-order messages are buffered (bounded); a gap (a hole below the highest sequence seen,
/// including one revealed by a heartbeat or end-of-session sequence) is re-requested from the
/// re-request server, from its own ephemeral unicast socket so that replies reach this receiver
/// even when several receivers share the multicast port. A gap that stays unfilled after
/// [`max_retries`](MoldReceiverConfig::max_retries) requests is reported as
/// [`MoldEvent::Gap`] and skipped, so the receiver never hangs.
///
/// ```no_run
/// use std::net::Ipv4Addr;
/// use std::time::Duration;
/// use herz_client::mold::{MoldEvent, MoldReceiver, MoldReceiverConfig};
///
/// let config = MoldReceiverConfig::multicast(Ipv4Addr::new(239, 1, 1, 1), 30001, Ipv4Addr::LOCALHOST)
///     .with_rerequest("127.0.0.1:30002".parse().unwrap());
/// let mut rx = MoldReceiver::new(config)?;
/// rx.poll(Some(Duration::from_secs(1)), |event| {
///     if let MoldEvent::Message { seq, payload } = event {
///         println!("{seq}: {} bytes", payload.len());
///     }
/// })?;
/// # Ok::<(), herz_client::mold::MoldClientError>(())
/// ```
pub struct MoldReceiver {
    data: UdpSocket,
    data_addr: SocketAddr,
    req: Option<UdpSocket>,
    req_addr: Option<SocketAddr>,
    buf: Vec<u8>,
    seq: Sequencer,
    /// Events decoded but not yet returned by `recv_timeout`.
    queue: VecDeque<OwnedMoldEvent>,
}

impl fmt::Debug for MoldReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoldReceiver")
            .field("local", &self.data_addr)
            .field("session", &self.seq.session)
            .field("expected", &self.seq.expected)
            .field("stats", &self.seq.stats)
            .finish_non_exhaustive()
    }
}

fn socket_error(op: &'static str, addr: SocketAddr) -> impl FnOnce(io::Error) -> MoldClientError {
    move |source| MoldClientError::Socket { op, addr, source }
}

impl MoldReceiver {
    /// Binds the data socket (SO_REUSEADDR and SO_REUSEPORT, so several receivers can share a
    /// multicast port), joins the group if any, and opens the re-request socket if a server is
    /// configured.
    pub fn new(config: MoldReceiverConfig) -> Result<Self, MoldClientError> {
        let bind = match config.group {
            Some(group) => {
                if !group.is_multicast() {
                    return Err(MoldClientError::Config(format!(
                        "{group} is not an IPv4 multicast group (224.0.0.0/4)"
                    )));
                }
                SocketAddr::from((group, config.listen.port()))
            }
            None => config.listen,
        };
        let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
            .map_err(socket_error("create socket for", bind))?;
        socket
            .set_reuse_address(true)
            .map_err(socket_error("set SO_REUSEADDR on", bind))?;
        socket
            .set_reuse_port(true)
            .map_err(socket_error("set SO_REUSEPORT on", bind))?;
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(config.recv_buffer_bytes);
        socket
            .bind(&bind.into())
            .map_err(socket_error("bind", bind))?;
        if let Some(group) = config.group {
            socket
                .join_multicast_v4(&group, &config.interface)
                .map_err(socket_error("join multicast group", bind))?;
        }
        socket
            .set_nonblocking(true)
            .map_err(socket_error("set O_NONBLOCK on", bind))?;
        let data: UdpSocket = socket.into();
        let data_addr = data
            .local_addr()
            .map_err(socket_error("get address of", bind))?;

        let rerequest = config.rerequest;
        let mut receiver = MoldReceiver {
            data,
            data_addr,
            req: None,
            req_addr: None,
            buf: vec![0; MAX_DATAGRAM],
            seq: Sequencer::new(config),
            queue: VecDeque::new(),
        };
        receiver.set_rerequest(rerequest)?;
        Ok(receiver)
    }

    /// Sets (or changes, or removes) the re-request server. The request socket is an ephemeral
    /// unicast socket of the server's address family, separate from the data socket: with
    /// SO_REUSEPORT, replies sent to a shared port could reach another receiver.
    pub fn set_rerequest(&mut self, server: Option<SocketAddr>) -> Result<(), MoldClientError> {
        self.seq.cfg.rerequest = server;
        let Some(server) = server else {
            self.req = None;
            self.req_addr = None;
            return Ok(());
        };
        if self
            .req_addr
            .is_some_and(|a| a.is_ipv4() == server.is_ipv4())
        {
            return Ok(());
        }
        let any: IpAddr = match server {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        let local = SocketAddr::new(any, 0);
        let sock = UdpSocket::bind(local).map_err(socket_error("bind", local))?;
        sock.set_nonblocking(true)
            .map_err(socket_error("set O_NONBLOCK on", local))?;
        self.req_addr = Some(
            sock.local_addr()
                .map_err(socket_error("get address of", local))?,
        );
        self.req = Some(sock);
        Ok(())
    }

    /// The data socket's local address (its port is useful with an ephemeral bind).
    pub fn local_addr(&self) -> SocketAddr {
        self.data_addr
    }

    /// The local address re-requests are sent from (and replies come back to).
    pub fn request_addr(&self) -> Option<SocketAddr> {
        self.req_addr
    }

    /// The session followed (`None` before the first packet when not configured).
    pub fn session(&self) -> Option<Session> {
        self.seq.session
    }

    /// The next sequence to deliver (`None` before the start is known).
    pub fn next_expected(&self) -> Option<u64> {
        self.seq.expected
    }

    /// Counters.
    pub fn stats(&self) -> MoldReceiverStats {
        self.seq.stats
    }

    /// Delivers what has arrived (or waits up to `timeout`, `None` = no limit, for more), in
    /// sequence order, and sends re-requests for gaps. Returns the number of events given to
    /// `f`; 0 when the timeout passed with nothing to deliver.
    pub fn poll<F>(&mut self, timeout: Option<Duration>, mut f: F) -> Result<usize, MoldClientError>
    where
        F: FnMut(MoldEvent<'_>),
    {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let mut delivered = 0;
            // Bounded batches per socket so the gap timers below still run under a flood.
            for _ in 0..64 {
                match self.data.recv_from(&mut self.buf) {
                    Ok((len, _)) => delivered += self.seq.on_datagram(&self.buf[..len], &mut f),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(MoldClientError::Recv {
                            local: self.data_addr,
                            source,
                        });
                    }
                }
            }
            if let (Some(req), Some(req_addr)) = (&self.req, self.req_addr) {
                for _ in 0..64 {
                    match req.recv_from(&mut self.buf) {
                        Ok((len, _)) => {
                            delivered += self.seq.on_datagram(&self.buf[..len], &mut f);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        // The ICMP "port unreachable" of an earlier request (no server running
                        // yet) surfaces here: keep retrying on the timer, it is not fatal.
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
                            ) => {}
                        Err(source) => {
                            return Err(MoldClientError::Recv {
                                local: req_addr,
                                source,
                            });
                        }
                    }
                }
            }
            let now = Instant::now();
            let (n, request) = self.seq.on_timer(now, &mut f);
            delivered += n;
            if let (Some(request), Some(req), Some(server)) =
                (request, &self.req, self.seq.cfg.rerequest)
            {
                match req.send_to(&request.to_bytes(), server) {
                    Ok(_) => {}
                    // A full send buffer or a refused earlier request: the retry timer resends.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::ConnectionRefused
                        ) => {}
                    Err(source) => {
                        return Err(MoldClientError::Send {
                            local: self.req_addr.unwrap_or(self.data_addr),
                            to: server,
                            source,
                        });
                    }
                }
            }
            if delivered > 0 {
                return Ok(delivered);
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(0);
            }
            let wake = sys::earliest(deadline, self.seq.next_wake());
            let req_fd = self.req.as_ref().map_or(-1, |s| s.as_raw_fd());
            sys::wait(
                [(self.data.as_raw_fd(), sys::IN), (req_fd, sys::IN)],
                sys::remaining(wake, now),
            )
            .map_err(|source| MoldClientError::Poll {
                local: self.data_addr,
                source,
            })?;
        }
    }

    /// The next event as an owned value, waiting up to `timeout`; `Ok(None)` on timeout.
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<OwnedMoldEvent>, MoldClientError> {
        if let Some(event) = self.queue.pop_front() {
            return Ok(Some(event));
        }
        let deadline = Instant::now() + timeout;
        let mut queue = std::mem::take(&mut self.queue);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let result = self.poll(Some(remaining), |event| queue.push_back(event.to_owned()));
            if let Err(e) = result {
                self.queue = queue;
                return Err(e);
            }
            if let Some(event) = queue.pop_front() {
                self.queue = queue;
                return Ok(Some(event));
            }
            if remaining.is_zero() {
                self.queue = queue;
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests;
