//! [`MoldReceiver`]: receives a MoldUDP64 stream and delivers it in sequence order, recovering
//! lost packets through a re-request server.

use std::{
    collections::VecDeque,
    fmt, io,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use herz_core::{
    engine::arbiter::{ArbiterConfig, Event, FeedArbiter, Line},
    protocol::moldudp64::{Packet, RequestPacket, Session},
};
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
    /// ([`MoldEvent::Gap`]); at least one is sent. A reply filling part of the gap starts the
    /// count again.
    pub max_retries: u32,
    /// How far ahead of the next sequence to deliver messages are held while a gap fills
    /// (sequence numbers `next + 1 ..= next + max_buffered`, at most 2^24). Later ones are
    /// dropped and requested again later: memory stays bounded.
    pub max_buffered: usize,
    /// The most message bytes held while a gap fills (at most 2^30); the highest sequence
    /// numbers are dropped first.
    pub max_buffered_bytes: usize,
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
            max_buffered_bytes: 16 << 20,
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

/// The socket-free side of a receiver: herz-core's [`FeedArbiter`] (ordering, the bounded
/// reorder buffer, gap timers, re-requests; the same mechanism the distributor runs on its
/// upstream feeds) behind the receiver's event vocabulary (heartbeats reported, end of session
/// held back until everything before it is delivered).
struct Sequencer {
    arbiter: FeedArbiter,
    /// Time zero of the arbiter's nanosecond clock.
    epoch: Instant,
    retry_interval: Duration,
    /// End of session announced (its next sequence), not yet delivered.
    end_of_session: Option<u64>,
    end_delivered: bool,
    /// What the arbiter does not count: datagrams, invalid ones, heartbeats.
    datagrams: u64,
    invalid: u64,
    heartbeats: u64,
}

/// Hands an arbiter event on as a receiver event; returns how many were delivered.
fn forward<F: FnMut(MoldEvent<'_>)>(event: Event<'_>, f: &mut F, end: &mut Option<u64>) -> usize {
    match event {
        Event::Message { seq, bytes } => f(MoldEvent::Message {
            seq,
            payload: bytes,
        }),
        Event::Lost { from, count } => f(MoldEvent::Gap { from, count }),
        Event::EndOfSession { next } => {
            end.get_or_insert(next);
            return 0;
        }
        // Counted by the arbiter; the receiver follows one session.
        Event::ForeignSession { .. } | Event::SuspiciousJump { .. } => return 0,
    }
    1
}

impl Sequencer {
    fn new(cfg: &MoldReceiverConfig) -> Result<Self, MoldClientError> {
        let mut arbiter = FeedArbiter::new(ArbiterConfig {
            session: cfg.session,
            start_sequence: match cfg.start {
                StartFrom::FirstSeen => None,
                StartFrom::Sequence(n) => Some(n),
            },
            reorder_capacity_messages: cfg.max_buffered.clamp(1, 1 << 24),
            reorder_capacity_bytes: cfg.max_buffered_bytes.clamp(1, 1 << 30),
            rerequest_delay_ns: 0,
            rerequest_timeout_ns: nanos(cfg.retry_interval).max(1),
            max_retries: cfg.max_retries.saturating_sub(1),
            max_request_count: cfg.max_request_count.max(1),
            // A receiver follows whatever its sender says; the distributor guards its feeds.
            max_jump: None,
            jump_confirmations: 1,
            rerequests: false,
        })
        .map_err(|e| MoldClientError::Config(e.to_string()))?;
        arbiter.set_rerequests(false, nanos(cfg.retry_interval));
        let mut seq = Sequencer {
            arbiter,
            epoch: Instant::now(),
            retry_interval: cfg.retry_interval,
            end_of_session: None,
            end_delivered: false,
            datagrams: 0,
            invalid: 0,
            heartbeats: 0,
        };
        seq.set_server(cfg.rerequest.is_some());
        Ok(seq)
    }

    /// With a server, a hole is asked for at once (a reply covers one packet, so partial
    /// progress is the normal case); without one, it gets one retry interval for reordered
    /// packets to show up before it is reported lost.
    fn set_server(&mut self, present: bool) {
        let delay = if present {
            0
        } else {
            nanos(self.retry_interval)
        };
        self.arbiter.set_rerequests(present, delay);
    }

    fn clock(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }

    /// Handles one datagram from `line`; returns the number of events delivered.
    fn on_datagram<F: FnMut(MoldEvent<'_>)>(
        &mut self,
        line: Line,
        dgram: &[u8],
        now: Instant,
        f: &mut F,
    ) -> usize {
        self.datagrams += 1;
        let Ok(packet) = Packet::parse(dgram) else {
            // One bad datagram must not stop a receiver: count it and go on.
            self.invalid += 1;
            return 0;
        };
        let foreign = self.arbiter.counters().foreign_session_packets;
        let now = self.clock(now);
        let mut delivered = 0;
        let end = &mut self.end_of_session;
        self.arbiter
            .on_packet(line, &packet, now, |e| delivered += forward(e, f, end));
        if packet.is_heartbeat() && self.arbiter.counters().foreign_session_packets == foreign {
            self.heartbeats += 1;
            f(MoldEvent::Heartbeat {
                next_seq: packet.sequence(),
            });
            delivered += 1;
        }
        delivered + self.deliver_end(f)
    }

    /// Delivers End of Session once every message before it was delivered or reported lost.
    fn deliver_end<F: FnMut(MoldEvent<'_>)>(&mut self, f: &mut F) -> usize {
        match (self.end_of_session, self.arbiter.expected()) {
            (Some(end), Some(expected)) if expected >= end && !self.end_delivered => {
                self.end_delivered = true;
                f(MoldEvent::EndOfSession { next_seq: end });
                1
            }
            _ => 0,
        }
    }

    /// Runs the gap timers: declares lost gaps, delivers End of Session when due, and returns
    /// the re-request to send now, if any.
    fn on_timer<F: FnMut(MoldEvent<'_>)>(
        &mut self,
        now: Instant,
        f: &mut F,
    ) -> (usize, Option<RequestPacket>) {
        let now = self.clock(now);
        let mut delivered = 0;
        let end = &mut self.end_of_session;
        let request = self
            .arbiter
            .poll_timers(now, |e| delivered += forward(e, f, end));
        (delivered + self.deliver_end(f), request)
    }

    /// When [`on_timer`](Self::on_timer) next has something to do.
    fn next_wake(&self) -> Option<Instant> {
        self.arbiter
            .next_deadline()
            .map(|ns| self.epoch + Duration::from_nanos(ns))
    }

    fn stats(&self) -> MoldReceiverStats {
        let c = self.arbiter.counters();
        MoldReceiverStats {
            datagrams: self.datagrams,
            invalid: self.invalid,
            foreign_session: c.foreign_session_packets,
            messages: c.delivered,
            duplicates: c.duplicates.total(),
            buffer_overflow: c.reorder_overflow,
            requests_sent: c.rerequests_sent,
            heartbeats: self.heartbeats,
            gaps: c.lost_runs,
            gap_messages: c.lost,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
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
    /// The re-request server, if any.
    rerequest: Option<SocketAddr>,
    /// Events decoded but not yet returned by `recv_timeout`.
    queue: VecDeque<OwnedMoldEvent>,
}

impl fmt::Debug for MoldReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoldReceiver")
            .field("local", &self.data_addr)
            .field("session", &self.session())
            .field("expected", &self.next_expected())
            .field("stats", &self.stats())
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
            seq: Sequencer::new(&config)?,
            rerequest: None,
            queue: VecDeque::new(),
        };
        receiver.set_rerequest(rerequest)?;
        Ok(receiver)
    }

    /// Sets (or changes, or removes) the re-request server. The request socket is an ephemeral
    /// unicast socket of the server's address family, separate from the data socket: with
    /// SO_REUSEPORT, replies sent to a shared port could reach another receiver.
    pub fn set_rerequest(&mut self, server: Option<SocketAddr>) -> Result<(), MoldClientError> {
        self.rerequest = server;
        self.seq.set_server(server.is_some());
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
        self.seq.arbiter.session()
    }

    /// The next sequence to deliver (`None` before the start is known).
    pub fn next_expected(&self) -> Option<u64> {
        self.seq.arbiter.expected()
    }

    /// Counters.
    pub fn stats(&self) -> MoldReceiverStats {
        self.seq.stats()
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
            // One clock reading per wake-up: a datagram's arrival time needs no finer grain than
            // the gap timers' (milliseconds).
            let woke = Instant::now();
            // Bounded batches per socket so the gap timers below still run under a flood.
            for _ in 0..64 {
                match self.data.recv_from(&mut self.buf) {
                    Ok((len, _)) => {
                        let dgram = &self.buf[..len];
                        delivered += self.seq.on_datagram(Line::A, dgram, woke, &mut f);
                    }
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
                            let dgram = &self.buf[..len];
                            delivered += self.seq.on_datagram(Line::Recovery, dgram, woke, &mut f);
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
            if let (Some(request), Some(req), Some(server)) = (request, &self.req, self.rerequest) {
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
