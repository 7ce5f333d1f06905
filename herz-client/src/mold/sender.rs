//! [`MoldFeedSender`]: an upstream MoldUDP64 feed simulator, to test Herz's UDP feed ingest
//! (A/B arbitration, gap filling through re-requests, heartbeats, end of session).

use std::{
    collections::{BTreeSet, VecDeque},
    fmt, io,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use herz_core::protocol::moldudp64::{
    DEFAULT_MAX_PACKET_LEN, Packet, PacketBuilder, RequestPacket, Session, encode_end_of_session,
    encode_heartbeat,
};
use socket2::{Domain, Protocol, Socket, Type};

use super::MoldClientError;
use crate::{generator::XorShift, sys};

/// How a [`MoldFeedSender`] sends.
#[derive(Debug, Clone)]
pub struct MoldFeedSenderConfig {
    /// The session name in every packet.
    pub session: Session,
    /// Destinations: one per line (A, and optionally B), multicast groups or unicast addresses.
    /// Every data packet goes to every line (subject to [`DropRule`]s).
    pub lines: Vec<SocketAddr>,
    /// Local address: the packets' source and the re-request server address
    /// (`0.0.0.0:0`: any interface, ephemeral port; see [`MoldFeedSender::local_addr`]).
    pub bind: SocketAddr,
    /// Interface address for outgoing multicast (IP_MULTICAST_IF); `None`: the routing table's
    /// choice.
    pub interface: Option<Ipv4Addr>,
    /// IP_MULTICAST_TTL (1 keeps it on the local network).
    pub multicast_ttl: u32,
    /// IP_MULTICAST_LOOP: whether receivers on this host get the packets (needed for tests).
    pub multicast_loop: bool,
    /// Datagram size limit, header included (1400 keeps packets under a 1500-byte MTU).
    pub max_packet_len: usize,
    /// Data packets kept for re-requests; older ones are forgotten (requests for them are
    /// ignored, and the requester eventually reports a gap).
    pub history_packets: usize,
    /// Sequence number of the first message.
    pub first_sequence: u64,
    /// [`MoldFeedSender::maintain`] sends a heartbeat after this long without sending.
    pub heartbeat_interval: Duration,
}

impl MoldFeedSenderConfig {
    /// Defaults for `session` sent to `lines`: ephemeral local port, 1400-byte packets, 16384
    /// packets of history (~22 MiB), first sequence 1, 1 s heartbeats.
    pub fn new(session: Session, lines: Vec<SocketAddr>) -> Self {
        MoldFeedSenderConfig {
            session,
            lines,
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            interface: None,
            multicast_ttl: 1,
            multicast_loop: true,
            max_packet_len: DEFAULT_MAX_PACKET_LEN,
            history_packets: 16_384,
            first_sequence: 1,
            heartbeat_interval: Duration::from_secs(1),
        }
    }
}

/// Deliberate loss on one line, for tests of A/B arbitration and gap filling. Applies to data
/// packets (a line that is [`down`](Self::down) also loses heartbeats and end of session);
/// re-request replies are never dropped by these rules (see
/// [`MoldFeedSender::drop_next_replies`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DropRule {
    /// Drop every data packet that carries one of these sequence numbers.
    pub sequences: BTreeSet<u64>,
    /// Drop each data packet with this probability (0.0 to 1.0), from a seeded generator.
    pub probability: f64,
    /// Drop everything: the line is down.
    pub down: bool,
}

impl DropRule {
    fn drops(&self, first: u64, next: u64, rng: &mut XorShift) -> bool {
        self.down
            || self.sequences.range(first..next).next().is_some()
            || (self.probability > 0.0 && rng.next_f64() < self.probability)
    }
}

/// Counters of a [`MoldFeedSender`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MoldSenderStats {
    /// Messages pushed.
    pub messages: u64,
    /// Data packets built (each sent once per line unless dropped).
    pub data_packets: u64,
    /// Datagrams put on the wire (data, heartbeats, end of session, replies).
    pub datagrams_sent: u64,
    /// Datagrams deliberately dropped by [`DropRule`]s.
    pub datagrams_dropped: u64,
    /// Heartbeat rounds sent.
    pub heartbeats: u64,
    /// Re-requests received.
    pub requests: u64,
    /// Re-requests not answered (other session, zero count, not in history, malformed, or
    /// deliberately dropped).
    pub requests_ignored: u64,
    /// Replies sent.
    pub replies: u64,
    /// Messages sent again in replies.
    pub messages_resent: u64,
}

/// One sent data packet kept for re-requests.
struct Sent {
    first: u64,
    next: u64,
    bytes: Vec<u8>,
}

/// An upstream MoldUDP64 feed: batches messages into packets of at most 1400 bytes, sends them
/// to one or two lines, keeps a bounded history and answers re-requests on its own socket.
///
/// It has no thread of its own: call [`serve_rerequests_once`](Self::serve_rerequests_once) (or
/// [`maintain`](Self::maintain), which also heartbeats) between bursts, or use it as the pacing
/// sleep. For a background server, move the sender into a thread that alternates
/// [`push`](Self::push) and `serve_rerequests_once`.
pub struct MoldFeedSender {
    sock: UdpSocket,
    local: SocketAddr,
    cfg: MoldFeedSenderConfig,
    builder: PacketBuilder,
    reply: PacketBuilder,
    history: VecDeque<Sent>,
    drops: Vec<DropRule>,
    rng: XorShift,
    drop_replies: u32,
    last_send: Instant,
    scratch: Vec<u8>,
    stats: MoldSenderStats,
}

impl fmt::Debug for MoldFeedSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoldFeedSender")
            .field("local", &self.local)
            .field("session", &self.cfg.session)
            .field("lines", &self.cfg.lines)
            .field("next_sequence", &self.builder.next_sequence())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn socket_error(op: &'static str, addr: SocketAddr) -> impl FnOnce(io::Error) -> MoldClientError {
    move |source| MoldClientError::Socket { op, addr, source }
}

/// Sends one datagram, waiting if the socket buffer is full. A refused earlier datagram (ICMP
/// port unreachable: nobody listens on a unicast line yet) is not an error for a feed.
fn send_blocking(
    sock: &UdpSocket,
    local: SocketAddr,
    buf: &[u8],
    to: SocketAddr,
) -> Result<(), MoldClientError> {
    loop {
        match sock.send_to(buf, to) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                sys::wait(
                    [(sock.as_raw_fd(), sys::OUT)],
                    Some(Duration::from_millis(100)),
                )
                .map_err(|source| MoldClientError::Poll { local, source })?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(source) => return Err(MoldClientError::Send { local, to, source }),
        }
    }
}

impl MoldFeedSender {
    /// Opens the socket (bound to `config.bind`, multicast options set) and starts the first
    /// packet at `config.first_sequence`.
    pub fn new(config: MoldFeedSenderConfig) -> Result<Self, MoldClientError> {
        if config.lines.is_empty() {
            return Err(MoldClientError::Config(
                "a feed needs at least one line".into(),
            ));
        }
        if config.max_packet_len < 64 || config.max_packet_len > super::MAX_DATAGRAM {
            return Err(MoldClientError::Config(format!(
                "max_packet_len {} is outside 64..={}",
                config.max_packet_len,
                super::MAX_DATAGRAM
            )));
        }
        let bind = config.bind;
        let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
            .map_err(socket_error("create socket for", bind))?;
        // A feed sends bursts: a large send buffer avoids blocking on them (best effort).
        let _ = socket.set_send_buffer_size(4 << 20);
        socket
            .bind(&bind.into())
            .map_err(socket_error("bind", bind))?;
        if bind.is_ipv4() {
            socket
                .set_multicast_ttl_v4(config.multicast_ttl)
                .map_err(socket_error("set IP_MULTICAST_TTL on", bind))?;
            socket
                .set_multicast_loop_v4(config.multicast_loop)
                .map_err(socket_error("set IP_MULTICAST_LOOP on", bind))?;
            if let Some(interface) = config.interface {
                socket
                    .set_multicast_if_v4(&interface)
                    .map_err(socket_error("set IP_MULTICAST_IF on", bind))?;
            }
        }
        socket
            .set_nonblocking(true)
            .map_err(socket_error("set O_NONBLOCK on", bind))?;
        let sock: UdpSocket = socket.into();
        let mut local = sock
            .local_addr()
            .map_err(socket_error("get address of", bind))?;
        if local.ip().is_unspecified() {
            // Tell users an address they can send re-requests to.
            local.set_ip(match local {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        let mut builder = PacketBuilder::new(config.max_packet_len);
        builder.start(config.session, config.first_sequence);
        Ok(MoldFeedSender {
            sock,
            local,
            drops: vec![DropRule::default(); config.lines.len()],
            builder,
            reply: PacketBuilder::new(config.max_packet_len),
            history: VecDeque::with_capacity(config.history_packets.min(65_536)),
            rng: XorShift::new(0x5eed_f00d),
            drop_replies: 0,
            last_send: Instant::now(),
            scratch: Vec::with_capacity(64),
            stats: MoldSenderStats::default(),
            cfg: config,
        })
    }

    /// The socket address re-requests should go to (an unspecified bind address is reported as
    /// loopback).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The session.
    pub fn session(&self) -> Session {
        self.cfg.session
    }

    /// The sequence number the next pushed message gets.
    pub fn next_sequence(&self) -> u64 {
        self.builder.next_sequence()
    }

    /// Counters.
    pub fn stats(&self) -> MoldSenderStats {
        self.stats
    }

    /// Sets the loss rule of line `line` (0 = A, 1 = B).
    pub fn set_drop(&mut self, line: usize, rule: DropRule) -> Result<(), MoldClientError> {
        let lines = self.drops.len();
        let slot = self.drops.get_mut(line).ok_or_else(|| {
            MoldClientError::Config(format!("line {line} does not exist ({lines} configured)"))
        })?;
        *slot = rule;
        Ok(())
    }

    /// Leaves the next `n` valid re-requests unanswered (to test requester retries).
    pub fn drop_next_replies(&mut self, n: u32) {
        self.drop_replies = n;
    }

    /// Adds a message to the current packet; sends the packet first if the message does not fit.
    pub fn push(&mut self, msg: &[u8]) -> Result<(), MoldClientError> {
        let seq = self.builder.next_sequence();
        let fits = self
            .builder
            .try_push(msg)
            .map_err(|source| MoldClientError::Message { seq, source })?;
        if !fits {
            self.send_current()?;
            let pushed = self
                .builder
                .try_push(msg)
                .map_err(|source| MoldClientError::Message { seq, source })?;
            debug_assert!(pushed, "a message that fits a packet fits an empty one");
        }
        self.stats.messages += 1;
        Ok(())
    }

    /// Sends the current packet if it holds any message.
    pub fn flush(&mut self) -> Result<(), MoldClientError> {
        self.send_current()
    }

    fn send_current(&mut self) -> Result<(), MoldClientError> {
        if self.builder.is_empty() {
            return Ok(());
        }
        let first = self.builder.first_sequence();
        let next = self.builder.next_sequence();
        let dgram = self.builder.finish();
        for (line, &to) in self.cfg.lines.iter().enumerate() {
            if self.drops[line].drops(first, next, &mut self.rng) {
                self.stats.datagrams_dropped += 1;
                continue;
            }
            send_blocking(&self.sock, self.local, dgram, to)?;
            self.stats.datagrams_sent += 1;
        }
        // Keep it for re-requests, reusing the evicted packet's buffer.
        let mut bytes = if self.history.len() >= self.cfg.history_packets.max(1) {
            self.history
                .pop_front()
                .map(|s| s.bytes)
                .unwrap_or_default()
        } else {
            Vec::with_capacity(self.cfg.max_packet_len)
        };
        bytes.clear();
        bytes.extend_from_slice(dgram);
        self.history.push_back(Sent { first, next, bytes });
        self.stats.data_packets += 1;
        self.last_send = Instant::now();
        self.builder.start(self.cfg.session, next);
        Ok(())
    }

    /// Sends a control packet (heartbeat or end of session in `scratch`) to every line that is
    /// not down.
    fn send_control(&mut self) -> Result<(), MoldClientError> {
        for (line, &to) in self.cfg.lines.iter().enumerate() {
            if self.drops[line].down {
                self.stats.datagrams_dropped += 1;
                continue;
            }
            send_blocking(&self.sock, self.local, &self.scratch, to)?;
            self.stats.datagrams_sent += 1;
        }
        self.last_send = Instant::now();
        Ok(())
    }

    /// Flushes the current packet, then sends a heartbeat carrying the next sequence number.
    pub fn send_heartbeat(&mut self) -> Result<(), MoldClientError> {
        self.send_current()?;
        self.scratch.clear();
        encode_heartbeat(
            self.cfg.session,
            self.builder.next_sequence(),
            &mut self.scratch,
        );
        self.stats.heartbeats += 1;
        self.send_control()
    }

    /// Without blocking: answers pending re-requests, and sends a heartbeat when nothing was
    /// sent for the heartbeat interval (flushing a partial packet first).
    pub fn maintain(&mut self) -> Result<(), MoldClientError> {
        self.serve_rerequests_once(Duration::ZERO)?;
        if self.last_send.elapsed() >= self.cfg.heartbeat_interval {
            self.send_heartbeat()?;
        }
        Ok(())
    }

    /// Flushes, then sends end of session `repeats` times, `interval` apart, answering
    /// re-requests meanwhile (receivers recover their tail after seeing the final sequence).
    pub fn end_session(&mut self, repeats: u32, interval: Duration) -> Result<(), MoldClientError> {
        self.send_current()?;
        for _ in 0..repeats.max(1) {
            self.scratch.clear();
            encode_end_of_session(
                self.cfg.session,
                self.builder.next_sequence(),
                &mut self.scratch,
            );
            self.send_control()?;
            let until = Instant::now() + interval;
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.serve_rerequests_once(left)?;
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for re-requests (not at all for `Duration::ZERO`), then answers
    /// every one that has arrived. Each answer is one packet starting at the requested sequence
    /// with as many of the requested messages as fit, sent to the requester's address. Returns
    /// the number of replies sent.
    pub fn serve_rerequests_once(&mut self, timeout: Duration) -> Result<usize, MoldClientError> {
        if !timeout.is_zero() {
            sys::wait([(self.sock.as_raw_fd(), sys::IN)], Some(timeout)).map_err(|source| {
                MoldClientError::Poll {
                    local: self.local,
                    source,
                }
            })?;
        }
        let mut replies = 0;
        let mut buf = [0u8; 64];
        for _ in 0..1024 {
            let (len, from) = match self.sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors of earlier sends to unicast lines nobody listens on.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    continue;
                }
                Err(source) => {
                    return Err(MoldClientError::Recv {
                        local: self.local,
                        source,
                    });
                }
            };
            self.stats.requests += 1;
            // A datagram longer than `buf` is truncated to 64 bytes and fails the 20-byte check.
            match RequestPacket::decode(&buf[..len]) {
                Ok(request) if self.answer(&request, from)? => replies += 1,
                _ => self.stats.requests_ignored += 1,
            }
        }
        Ok(replies)
    }

    /// Answers one request; `false` if it is not answerable.
    fn answer(&mut self, request: &RequestPacket, to: SocketAddr) -> Result<bool, MoldClientError> {
        if !request.session.matches(&self.cfg.session) || request.count == 0 {
            return Ok(false);
        }
        if self.drop_replies > 0 {
            self.drop_replies -= 1;
            return Ok(false);
        }
        let start = request.sequence;
        let end = start.saturating_add(u64::from(request.count));
        // First kept packet that ends after `start`.
        let index = self.history.partition_point(|s| s.next <= start);
        match self.history.get(index) {
            Some(sent) if sent.first <= start => {}
            _ => return Ok(false), // too old (forgotten) or not sent yet
        }
        self.reply.start(self.cfg.session, start);
        'packets: for sent in self.history.range(index..) {
            let Ok(packet) = Packet::parse(&sent.bytes) else {
                break;
            };
            for (seq, msg) in packet.sequenced_messages() {
                if seq < start {
                    continue;
                }
                if seq >= end || !matches!(self.reply.try_push(msg), Ok(true)) {
                    break 'packets;
                }
            }
        }
        let count = self.reply.count();
        send_blocking(&self.sock, self.local, self.reply.finish(), to)?;
        self.stats.datagrams_sent += 1;
        self.stats.replies += 1;
        self.stats.messages_resent += u64::from(count);
        Ok(true)
    }
}
