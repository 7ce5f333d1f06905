//! The sending side of each system: publishers into Herz and nats-server, the ZeroMQ XPUB
//! publisher (which is the server, there is no broker), and the raw-socket baselines (a bare loop
//! writing pre-framed SoupBinTCP `S` packets to N TCP sockets; a bare `sendmmsg` loop of pre-built
//! MoldUDP64 packets).
//!
//! Each runs on its own thread and talks to the run driver over a channel: `Ready` (with the thread
//! ids whose CPU counts as the server's, if the bench is the server), `Armed` (subscribers known,
//! waiting for the start signal), then `Done` with what it sent. It keeps its sockets open until the
//! driver says stop, so nothing is torn down while subscribers still read.

use std::{
    io::{self, Write as _},
    mem,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use herz_client::soup::SoupPublisher;
use herz_core::protocol::{
    moldudp64::{PacketBuilder, Session},
    soupbintcp::{self, LoginAccepted},
};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    msg::{stamp, template},
    recv::{NATS_SUBJECT, NatsConn, ZMQ_HWM},
    sys::{gettid, mono_ns, precise_timers, sleep_until_mono, thread_ids},
};

/// The session name of the raw baselines (Herz's is configured to the same).
pub const SESSION: &str = "HZBENCH001";

/// What to send.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Load {
    /// Messages (bench sequence numbers 1..=n).
    pub n: u64,
    /// Message size, bytes.
    pub size: usize,
    /// Messages per second; `None`: as fast as the system takes them.
    pub rate: Option<u64>,
    /// Latency samples start after this many messages.
    pub warmup: u64,
}

/// What a publisher did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct PubStats {
    /// Messages handed to the system.
    pub sent: u64,
    /// `CLOCK_MONOTONIC` at the first / after the last message.
    pub start_ns: u64,
    /// See `start_ns`.
    pub end_ns: u64,
    /// Paced runs: the furthest a batch fell behind its schedule, ns.
    pub max_late_ns: u64,
}

/// Messages from a sending thread to the run driver.
#[derive(Debug)]
pub enum PubMsg {
    /// Listening / connected. Thread ids whose CPU is the server's (empty: an external process).
    Ready(Vec<i32>),
    /// Every subscriber is known to the sender: waiting for the start signal.
    Armed,
    /// Finished sending.
    Done(PubStats),
    /// Failed.
    Failed(String),
}

/// The sending thread's side of the run protocol.
#[derive(Debug)]
pub struct PubCtl {
    /// To the driver.
    pub tx: Sender<PubMsg>,
    /// The start signal.
    pub go: Receiver<()>,
    /// Set when the run ends.
    pub stop: Arc<AtomicBool>,
    /// Hard limit for everything this thread does.
    pub deadline: Instant,
}

impl PubCtl {
    fn send(&self, m: PubMsg) {
        let _ = self.tx.send(m);
    }

    fn wait_go(&self) -> anyhow::Result<()> {
        loop {
            match self.go.recv_timeout(Duration::from_millis(50)) {
                Ok(()) => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {
                    if self.stop.load(Ordering::Relaxed) || Instant::now() > self.deadline {
                        bail!("no start signal");
                    }
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the driver went away"),
            }
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("stopped by the bench");
        }
        if Instant::now() > self.deadline {
            bail!("time limit reached while sending");
        }
        Ok(())
    }

    /// Waits for the stop flag, running `tick` every 50 ms (heartbeats etc.).
    fn hold(&self, mut tick: impl FnMut()) {
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < self.deadline {
            std::thread::sleep(Duration::from_millis(50));
            tick();
        }
    }

    /// Runs `body`, reporting a failure to the driver.
    pub fn run(self, body: impl FnOnce(&PubCtl) -> anyhow::Result<()>) {
        if let Err(e) = body(&self) {
            self.send(PubMsg::Failed(format!("{e:#}")));
        }
    }
}

/// Unpaced senders hand this many messages at a time to the sink.
const UNPACED_CHUNK: u64 = 512;
/// Paced senders hand at most this many at a time (a sender that fell behind catches up in slices).
const PACED_MAX_BATCH: u64 = 4096;

/// Calls `send(first_seq, count, timestamp_ns)` until `load.n` messages went out: as fast as
/// possible, or on the `load.rate` schedule (sleeping between batches with 1 ns timer slack; each
/// batch is stamped with the time it is handed over).
pub fn drive(
    load: &Load,
    ctl: &PubCtl,
    mut send: impl FnMut(u64, u64, u64) -> anyhow::Result<()>,
) -> anyhow::Result<PubStats> {
    let start = mono_ns();
    let mut sent = 0u64;
    let mut max_late = 0u64;
    match load.rate {
        None => {
            let mut chunks = 0u32;
            while sent < load.n {
                let c = UNPACED_CHUNK.min(load.n - sent);
                send(sent + 1, c, mono_ns())?;
                sent += c;
                chunks += 1;
                if chunks.is_multiple_of(256) {
                    ctl.check()?;
                }
            }
        }
        Some(rate) => {
            precise_timers();
            let due_at = |k: u64| start + (k as u128 * 1_000_000_000 / rate as u128) as u64;
            while sent < load.n {
                let now = mono_ns();
                let due =
                    (((now - start) as u128 * rate as u128 / 1_000_000_000) as u64 + 1).min(load.n);
                if due > sent {
                    max_late = max_late.max(now.saturating_sub(due_at(sent)));
                    let c = (due - sent).min(PACED_MAX_BATCH);
                    send(sent + 1, c, now)?;
                    sent += c;
                    continue;
                }
                ctl.check()?;
                sleep_until_mono(due_at(sent));
            }
        }
    }
    Ok(PubStats {
        sent,
        start_ns: start,
        end_ns: mono_ns(),
        max_late_ns: max_late,
    })
}

/// Publishes into Herz over SoupBinTCP (`U` packets, batched by `SoupPublisher`).
pub fn herz(addr: SocketAddr, load: Load, ctl: PubCtl) {
    ctl.run(|ctl| {
        let mut p = SoupPublisher::connect(addr, Duration::from_secs(5))?;
        p.login("bpub", "bpub3r")?;
        ctl.send(PubMsg::Ready(Vec::new()));
        ctl.send(PubMsg::Armed);
        ctl.wait_go()?;
        let mut m = template(load.size);
        let paced = load.rate.is_some();
        let stats = drive(&load, ctl, |first, count, ts| {
            for s in first..first + count {
                stamp(&mut m, s, ts);
                p.send(&m)?;
            }
            if paced {
                p.flush()?;
            }
            Ok(())
        })?;
        p.flush()?;
        ctl.send(PubMsg::Done(stats));
        ctl.hold(|| {
            let _ = p.maintain();
        });
        Ok(())
    })
}

/// Publishes into nats-server (`PUB` with the message as payload), batched into 64 KiB writes.
pub fn nats(addr: SocketAddr, load: Load, ctl: PubCtl) {
    ctl.run(|ctl| {
        let mut c = NatsConn::connect(addr, "bench-pub")?;
        ctl.send(PubMsg::Ready(Vec::new()));
        ctl.send(PubMsg::Armed);
        ctl.wait_go()?;
        let hdr = format!("PUB {NATS_SUBJECT} {}\r\n", load.size);
        let mut m = template(load.size);
        let mut buf = Vec::with_capacity(128 << 10);
        let paced = load.rate.is_some();
        let mut stats = drive(&load, ctl, |first, count, ts| {
            for s in first..first + count {
                stamp(&mut m, s, ts);
                buf.extend_from_slice(hdr.as_bytes());
                buf.extend_from_slice(&m);
                buf.extend_from_slice(b"\r\n");
                if buf.len() >= 64 << 10 {
                    c.stream.write_all(&buf)?;
                    buf.clear();
                }
            }
            if paced && !buf.is_empty() {
                c.stream.write_all(&buf)?;
                buf.clear();
            }
            Ok(())
        })?;
        c.stream.write_all(&buf)?;
        // The PONG comes after the server processed every PUB before the PING.
        c.ping_pong(ctl.deadline)?;
        stats.end_ns = mono_ns();
        ctl.send(PubMsg::Done(stats));
        ctl.hold(|| {});
        Ok(())
    })
}

fn set_xpub_nodrop(sock: &mut zmq::Socket) -> anyhow::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: a live socket; the option value is a c_int of the given size.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            sock.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as libc::c_int,
            &one as *const _ as *const libc::c_void,
            mem::size_of::<libc::c_int>(),
        )
    };
    if rc != 0 {
        bail!(
            "ZMQ_XPUB_NODROP: {}",
            // SAFETY: zmq_errno only reads the calling thread's error number.
            zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() })
        );
    }
    Ok(())
}

/// The ZeroMQ publisher: an XPUB socket bound on `port` (verbose, so every SUB's subscription is
/// seen before the start; no-drop, so a full pipe makes the sender retry instead of losing
/// messages). Its thread and the context's I/O threads are the "server" whose CPU is counted.
pub fn zmq_pub(port: u16, subs: usize, load: Load, ctl: PubCtl) {
    ctl.run(|ctl| {
        let me = gettid();
        let before = thread_ids();
        let ctx = zmq::Context::new();
        let mut sock = ctx.socket(zmq::XPUB)?;
        let mut tids: Vec<i32> = thread_ids().difference(&before).copied().collect();
        tids.insert(0, me);
        sock.set_sndhwm(ZMQ_HWM)?;
        sock.set_linger(0)?;
        sock.set_xpub_verbose(true)?;
        set_xpub_nodrop(&mut sock)?;
        sock.set_rcvtimeo(50)?;
        sock.bind(&format!("tcp://127.0.0.1:{port}"))
            .with_context(|| format!("zmq bind 127.0.0.1:{port}"))?;
        ctl.send(PubMsg::Ready(tids));
        let mut joined = 0;
        let mut msg = zmq::Message::new();
        while joined < subs {
            match sock.recv(&mut msg, 0) {
                Ok(()) if msg.first() == Some(&1) => joined += 1,
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => ctl.check()?,
                Err(e) => bail!("zmq: waiting for subscriptions: {e}"),
            }
        }
        ctl.send(PubMsg::Armed);
        ctl.wait_go()?;
        let mut m = template(load.size);
        let stats = drive(&load, ctl, |first, count, ts| {
            for s in first..first + count {
                stamp(&mut m, s, ts);
                let mut spins = 0u32;
                loop {
                    match sock.send(&m[..], zmq::DONTWAIT) {
                        Ok(()) => break,
                        Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                            spins += 1;
                            if spins.is_multiple_of(1024) {
                                ctl.check()?;
                            }
                            std::thread::sleep(Duration::from_micros(20));
                        }
                        Err(e) => bail!("zmq send: {e}"),
                    }
                }
            }
            Ok(())
        })?;
        ctl.send(PubMsg::Done(stats));
        ctl.hold(|| {});
        drop(sock);
        drop(ctx);
        Ok(())
    })
}

/// The whole SoupBinTCP stream of a throughput run: `S` packets of messages 1..=n, pre-framed.
pub fn soup_stream(load: &Load) -> Vec<u8> {
    let mut m = template(load.size);
    let mut out = Vec::with_capacity(load.n as usize * (load.size + 3));
    let hdr = soupbintcp::sequenced_header(load.size).expect("message fits a packet");
    for s in 1..=load.n {
        stamp(&mut m, s, 0);
        out.extend_from_slice(&hdr);
        out.extend_from_slice(&m);
    }
    out
}

/// Accepts `subs` SoupBinTCP logins on `listener` (any credentials) and answers Login Accepted
/// (session [`SESSION`], next sequence 1).
fn accept_logins(
    listener: &TcpListener,
    subs: usize,
    ctl: &PubCtl,
) -> anyhow::Result<Vec<TcpStream>> {
    listener.set_nonblocking(true)?;
    let mut socks = Vec::with_capacity(subs);
    let accepted = LoginAccepted {
        session: Session::new(SESSION).expect("valid session"),
        sequence: 1,
    };
    let mut reply = Vec::new();
    accepted.encode(&mut reply);
    while socks.len() < subs {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut len = [0u8; 2];
                io::Read::read_exact(&mut s, &mut len)?;
                let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
                io::Read::read_exact(&mut s, &mut body)?;
                if body.first() != Some(&b'L') {
                    bail!(
                        "raw server: expected a Login Request, got {:?}",
                        body.first()
                    );
                }
                s.write_all(&reply)?;
                socks.push(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                ctl.check()?;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(socks)
}

/// Writes `stream` to every socket, non-blocking, as much as each takes, polling when all are full.
fn write_all_multiplexed(socks: &[TcpStream], stream: &[u8], ctl: &PubCtl) -> anyhow::Result<()> {
    const CHUNK: usize = 256 << 10;
    for s in socks {
        s.set_nonblocking(true)?;
    }
    let mut off = vec![0usize; socks.len()];
    let mut left = socks.len();
    let mut rounds = 0u32;
    while left > 0 {
        let mut progress = false;
        for (i, mut s) in socks.iter().enumerate() {
            if off[i] >= stream.len() {
                continue;
            }
            let end = (off[i] + CHUNK).min(stream.len());
            match s.write(&stream[off[i]..end]) {
                Ok(n) => {
                    off[i] += n;
                    progress = true;
                    if off[i] >= stream.len() {
                        left -= 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("raw server write"),
            }
        }
        if !progress {
            let mut fds: Vec<libc::pollfd> = socks
                .iter()
                .enumerate()
                .filter(|(i, _)| off[*i] < stream.len())
                .map(|(_, s)| libc::pollfd {
                    fd: s.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a valid array of pollfd for the call.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        }
        rounds += 1;
        if rounds.is_multiple_of(1024) || !progress {
            ctl.check()?;
        }
    }
    for s in socks {
        s.set_nonblocking(false)?;
    }
    Ok(())
}

/// The raw TCP baseline: a bare server that answers N logins and then writes the same SoupBinTCP
/// bytes Herz would: pre-framed (`stream`, throughput runs) or framed per paced batch (latency runs,
/// where it is also the publisher: one hop fewer than any broker).
pub fn raw_tcp(
    listener: TcpListener,
    subs: usize,
    load: Load,
    stream: Option<Arc<Vec<u8>>>,
    ctl: PubCtl,
) {
    ctl.run(|ctl| {
        ctl.send(PubMsg::Ready(vec![gettid()]));
        let mut socks = accept_logins(&listener, subs, ctl)?;
        ctl.send(PubMsg::Armed);
        ctl.wait_go()?;
        let stats = match &stream {
            Some(stream) => {
                let start = mono_ns();
                write_all_multiplexed(&socks, stream, ctl)?;
                PubStats {
                    sent: load.n,
                    start_ns: start,
                    end_ns: mono_ns(),
                    max_late_ns: 0,
                }
            }
            None => {
                let mut m = template(load.size);
                let hdr = soupbintcp::sequenced_header(load.size).expect("fits");
                let mut frames = Vec::with_capacity(64 << 10);
                drive(&load, ctl, |first, count, ts| {
                    frames.clear();
                    for s in first..first + count {
                        stamp(&mut m, s, ts);
                        frames.extend_from_slice(&hdr);
                        frames.extend_from_slice(&m);
                    }
                    for s in socks.iter_mut() {
                        s.write_all(&frames)?;
                    }
                    Ok(())
                })?
            }
        };
        ctl.send(PubMsg::Done(stats));
        ctl.hold(|| {});
        Ok(())
    })
}

/// A UDP socket sending to `group` from 127.0.0.1, as Herz's channel sockets are set up
/// (IP_MULTICAST_IF, TTL 1, loopback on, 4 MiB send buffer, connected). Blocking.
pub fn mcast_sender(group: SocketAddrV4) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
    sock.set_multicast_ttl_v4(1)?;
    sock.set_multicast_loop_v4(true)?;
    sock.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.connect(&SocketAddr::V4(group).into())?;
    Ok(sock)
}

/// Sends every packet with `sendmmsg` (herz-sys batching), retrying what the socket did not take.
pub fn sendmmsg_all(fd: i32, packets: &[&[u8]]) -> io::Result<()> {
    let mut sent = 0;
    while sent < packets.len() {
        match herz_sys::mmsg::send_connected(fd, &packets[sent..]) {
            Ok(n) => sent += n,
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => continue,
                // No member on the group (ICMP from an earlier datagram): not a failure for multicast.
                io::ErrorKind::ConnectionRefused => continue,
                _ => return Err(e),
            },
        }
    }
    Ok(())
}

/// MoldUDP64 packets (1400 bytes at most, as Herz's channels) for messages 1..=n.
pub fn mold_packets(load: &Load) -> Vec<Vec<u8>> {
    let session = Session::new(SESSION).expect("valid session");
    let mut m = template(load.size);
    let mut b = PacketBuilder::new(1400);
    let mut out = Vec::new();
    b.start(session, 1);
    for s in 1..=load.n {
        stamp(&mut m, s, 0);
        if !b.try_push(&m).expect("message fits a packet") {
            out.push(b.finish().to_vec());
            b.start(session, s);
            b.try_push(&m).expect("message fits an empty packet");
        }
    }
    if !b.is_empty() {
        out.push(b.finish().to_vec());
    }
    out
}

/// The raw multicast baseline: a bare `sendmmsg` loop of pre-built MoldUDP64 packets (throughput),
/// or packets built per paced batch (latency).
pub fn raw_mcast(group: SocketAddrV4, load: Load, packets: Option<Arc<Vec<Vec<u8>>>>, ctl: PubCtl) {
    ctl.run(|ctl| {
        let sock = mcast_sender(group).with_context(|| format!("multicast sender to {group}"))?;
        let fd = sock.as_raw_fd();
        ctl.send(PubMsg::Ready(vec![gettid()]));
        ctl.send(PubMsg::Armed);
        ctl.wait_go()?;
        let stats = match &packets {
            Some(packets) => {
                let start = mono_ns();
                let slices: Vec<&[u8]> = packets.iter().map(|p| p.as_slice()).collect();
                for chunk in slices.chunks(1024) {
                    sendmmsg_all(fd, chunk)?;
                    ctl.check()?;
                }
                PubStats {
                    sent: load.n,
                    start_ns: start,
                    end_ns: mono_ns(),
                    max_late_ns: 0,
                }
            }
            None => {
                let session = Session::new(SESSION).expect("valid session");
                let mut m = template(load.size);
                let mut builders: Vec<PacketBuilder> = Vec::new();
                drive(&load, ctl, |first, count, ts| {
                    let mut used = 0;
                    for s in first..first + count {
                        stamp(&mut m, s, ts);
                        if used > 0 && builders[used - 1].try_push(&m)? {
                            continue;
                        }
                        if used == builders.len() {
                            builders.push(PacketBuilder::new(1400));
                        }
                        builders[used].start(session, s);
                        builders[used].try_push(&m)?;
                        used += 1;
                    }
                    let slices: Vec<&[u8]> =
                        builders[..used].iter_mut().map(|b| b.finish()).collect();
                    sendmmsg_all(fd, &slices)?;
                    Ok(())
                })?
            }
        };
        ctl.send(PubMsg::Done(stats));
        ctl.hold(|| {});
        Ok(())
    })
}
