//! Subscribers: one thread each, one per system's client, all feeding the same [`Checker`].
//!
//! - SoupBinTCP (Herz and the raw baseline): `herz_client::SoupSubscriber::poll`, the zero-allocation
//!   path.
//! - MoldUDP64 multicast (Herz and the raw baseline): a lean `recvmmsg` receiver that parses with
//!   `herz_core`'s MoldUDP64 codec and counts every gap as loss (no recovery, so loss is visible).
//! - NATS core: a minimal blocking client of the NATS text protocol (CONNECT, SUB, PING/PONG, MSG)
//!   that parses into one buffer without allocating per message; see docs/PERFORMANCE.md for why not
//!   a client crate.
//! - ZeroMQ: a SUB socket of libzmq (Debian's), receiving into one reused `zmq::Message`.

use std::{
    io::{self, Read as _, Write as _},
    mem,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::Sender,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use herz_client::soup::{Event, Session, SoupOptions, SoupSubscriber};
use herz_core::protocol::moldudp64::Packet;
use socket2::{Domain, Protocol, Socket, Type};

use crate::msg::{Checker, SubResult};

/// Stop conditions shared by the subscribers of one run.
#[derive(Debug, Clone)]
pub struct SubCtl {
    /// Set by the bench to end the run.
    pub stop: Arc<AtomicBool>,
    /// Set once the publisher has handed its last message to the system under test.
    pub pub_done: Arc<AtomicBool>,
    /// Hard time limit.
    pub deadline: Instant,
    /// After the publisher is done, give up when nothing arrived for this long (the rest is lost).
    pub idle: Duration,
}

impl SubCtl {
    fn should_stop(&self, last_activity: Instant) -> Option<String> {
        if self.stop.load(Ordering::Relaxed) {
            return Some("stopped by the bench".into());
        }
        let now = Instant::now();
        if now >= self.deadline {
            return Some("time limit reached".into());
        }
        if self.pub_done.load(Ordering::Relaxed) && now.duration_since(last_activity) > self.idle {
            return Some(format!(
                "nothing received for {:?} after the publisher finished",
                self.idle
            ));
        }
        None
    }
}

/// Which client a subscriber uses.
#[derive(Debug, Clone)]
pub enum SubKind {
    /// SoupBinTCP server (Herz or the raw baseline).
    Soup(SocketAddr),
    /// MoldUDP64 on a multicast group joined on 127.0.0.1.
    Mold(SocketAddrV4),
    /// nats-server.
    Nats(SocketAddr),
    /// ZeroMQ PUB/XPUB endpoint.
    Zmq(String),
}

/// Starts a subscriber thread. It sends `Ok` on `ready` once the system knows about it (logged in,
/// subscribed, joined), or the setup error.
pub fn spawn(
    kind: SubKind,
    ctl: SubCtl,
    chk: Checker,
    ready: Sender<Result<(), String>>,
) -> JoinHandle<SubResult> {
    std::thread::Builder::new()
        .name("bench-sub".into())
        .spawn(move || match kind {
            SubKind::Soup(addr) => soup(addr, ctl, chk, ready),
            SubKind::Mold(group) => mold(group, ctl, chk, ready),
            SubKind::Nats(addr) => nats(addr, ctl, chk, ready),
            SubKind::Zmq(ep) => zmq_sub(&ep, ctl, chk, ready),
        })
        .expect("spawning a subscriber thread")
}

fn setup_failed(chk: Checker, ready: &Sender<Result<(), String>>, e: String) -> SubResult {
    let _ = ready.send(Err(e.clone()));
    chk.finish(Some(format!("setup failed: {e}")))
}

fn soup(
    addr: SocketAddr,
    ctl: SubCtl,
    mut chk: Checker,
    ready: Sender<Result<(), String>>,
) -> SubResult {
    let opts = SoupOptions {
        read_buffer: 1 << 20,
        ..SoupOptions::default()
    };
    let mut sub = match SoupSubscriber::connect_with(addr, Duration::from_secs(5), opts) {
        Ok(s) => s,
        Err(e) => return setup_failed(chk, &ready, e.to_string()),
    };
    if let Err(e) = sub.login("bench", "b3nch", Session::BLANK, 1, None) {
        return setup_failed(chk, &ready, e.to_string());
    }
    let _ = ready.send(Ok(()));
    let mut last = Instant::now();
    let mut closed = false;
    let stopped = loop {
        if chk.done() {
            break None;
        }
        if closed {
            break Some("the server closed the connection".into());
        }
        if let Some(why) = ctl.should_stop(last) {
            break Some(why);
        }
        let before = chk.received();
        let polled = sub.poll(Some(Duration::from_millis(50)), |ev| match ev {
            Event::Message { seq, payload } => chk.on_msg(payload, Some(seq)),
            Event::Skip { count, reason, .. } => {
                chk.withheld(&format!("HERZ SKIP {}", reason.as_str()), count)
            }
            Event::Closed | Event::EndOfSession => closed = true,
            _ => {}
        });
        if let Err(e) = polled {
            break Some(e.to_string());
        }
        if chk.received() != before {
            chk.mark();
            last = Instant::now();
        }
    };
    chk.finish(stopped)
}

/// SO_RCVBUFFORCE (root may exceed net.core.rmem_max): multicast bursts are absorbed instead of lost.
fn force_rcvbuf(sock: &Socket, bytes: usize) {
    let v = bytes as libc::c_int;
    // SAFETY: valid fd, option value is a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &v as *const _ as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let _ = sock.set_recv_buffer_size(bytes);
    }
}

/// Receive buffer of each multicast subscriber.
pub const MCAST_RCVBUF: usize = 64 << 20;

fn mold_socket(group: SocketAddrV4) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    force_rcvbuf(&sock, MCAST_RCVBUF);
    sock.bind(&SocketAddr::V4(group).into())?;
    sock.join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(sock)
}

fn mold(
    group: SocketAddrV4,
    ctl: SubCtl,
    mut chk: Checker,
    ready: Sender<Result<(), String>>,
) -> SubResult {
    let sock = match mold_socket(group) {
        Ok(s) => s,
        Err(e) => return setup_failed(chk, &ready, format!("multicast {group}: {e}")),
    };
    let _ = ready.send(Ok(()));
    let mut batch = herz_sys::mmsg::RecvBatch::default();
    let mut last = Instant::now();
    let stopped = loop {
        if chk.done() {
            break None;
        }
        if let Some(why) = ctl.should_stop(last) {
            break Some(why);
        }
        // Blocks for the first datagram up to SO_RCVTIMEO.
        let n = match batch.recv_with(sock.as_raw_fd(), libc::MSG_WAITFORONE) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(format!("recvmmsg: {e}")),
        };
        let before = chk.received();
        for i in 0..n {
            let Ok(p) = Packet::parse(batch.get(i).0) else {
                chk.withheld("invalid MoldUDP64 datagram", 0);
                continue;
            };
            for (seq, m) in p.sequenced_messages() {
                chk.on_msg(m, Some(seq));
            }
        }
        if chk.received() != before {
            chk.mark();
            last = Instant::now();
        }
    };
    chk.finish(stopped)
}

/// A minimal NATS protocol connection (client side).
pub struct NatsConn {
    /// The socket.
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl NatsConn {
    /// Connects, reads INFO, sends CONNECT and waits for the PONG of a PING (so the server has
    /// processed everything sent before).
    pub fn connect(addr: SocketAddr, name: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut c = NatsConn {
            stream,
            buf: vec![0; 1 << 20],
            start: 0,
            end: 0,
        };
        let info = c.read_line(Instant::now() + Duration::from_secs(5))?;
        anyhow::ensure!(
            info.starts_with("INFO"),
            "nats-server at {addr} sent {info:?} instead of INFO"
        );
        let connect = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"echo\":false,\"name\":\"{name}\",\"lang\":\"rust\",\"version\":\"0\",\"protocol\":1}}\r\n"
        );
        c.stream.write_all(connect.as_bytes())?;
        c.ping_pong(Instant::now() + Duration::from_secs(5))?;
        Ok(c)
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "nats-server closed the connection",
            )),
            Ok(n) => {
                self.end += n;
                Ok(n)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    fn read_line(&mut self, deadline: Instant) -> anyhow::Result<String> {
        loop {
            if let Some(i) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line = String::from_utf8_lossy(&self.buf[self.start..self.start + i])
                    .trim_end()
                    .to_owned();
                self.start += i + 1;
                return Ok(line);
            }
            anyhow::ensure!(Instant::now() < deadline, "no answer from nats-server");
            self.fill()?;
        }
    }

    /// PING, then skip everything up to the PONG.
    pub fn ping_pong(&mut self, deadline: Instant) -> anyhow::Result<()> {
        self.stream.write_all(b"PING\r\n")?;
        loop {
            let line = self.read_line(deadline)?;
            if line == "PONG" {
                return Ok(());
            }
            if line.starts_with("-ERR") {
                anyhow::bail!("nats-server: {line}");
            }
            if line == "PING" {
                self.stream.write_all(b"PONG\r\n")?;
            }
        }
    }

    /// Parses every complete protocol line / message in the buffer, handing MSG payloads to `f`.
    /// Returns an error on `-ERR`.
    fn drain(&mut self, mut f: impl FnMut(&[u8])) -> anyhow::Result<()> {
        loop {
            let avail = &self.buf[self.start..self.end];
            let Some(nl) = avail.iter().position(|&b| b == b'\n') else {
                return Ok(());
            };
            let line = &avail[..nl];
            if line.starts_with(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>\r\n<payload>\r\n
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let len_tok = line.rsplit(|&b| b == b' ').next().unwrap_or(b"");
                let len = parse_usize(len_tok).ok_or_else(|| {
                    anyhow::anyhow!("bad MSG line {:?}", String::from_utf8_lossy(line))
                })?;
                let total = nl + 1 + len + 2;
                if avail.len() < total {
                    if total > self.buf.len() {
                        anyhow::bail!("message of {len} bytes exceeds the receive buffer");
                    }
                    return Ok(());
                }
                f(&avail[nl + 1..nl + 1 + len]);
                self.start += total;
            } else {
                let l = String::from_utf8_lossy(line).trim_end().to_owned();
                self.start += nl + 1;
                if l == "PING" {
                    self.stream.write_all(b"PONG\r\n")?;
                } else if l.starts_with("-ERR") {
                    anyhow::bail!("nats-server: {l}");
                }
            }
        }
    }
}

fn parse_usize(b: &[u8]) -> Option<usize> {
    if b.is_empty() || b.len() > 10 {
        return None;
    }
    b.iter().try_fold(0usize, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + (d - b'0') as usize)
    })
}

/// The subject every NATS run publishes on.
pub const NATS_SUBJECT: &str = "bench.q";

fn nats(
    addr: SocketAddr,
    ctl: SubCtl,
    mut chk: Checker,
    ready: Sender<Result<(), String>>,
) -> SubResult {
    let setup = (|| -> anyhow::Result<NatsConn> {
        let mut c = NatsConn::connect(addr, "bench-sub")?;
        c.stream
            .write_all(format!("SUB {NATS_SUBJECT} 1\r\n").as_bytes())?;
        c.ping_pong(Instant::now() + Duration::from_secs(5))?;
        Ok(c)
    })();
    let mut c = match setup {
        Ok(c) => c,
        Err(e) => return setup_failed(chk, &ready, format!("{e:#}")),
    };
    let _ = ready.send(Ok(()));
    let mut last = Instant::now();
    let stopped = loop {
        if chk.done() {
            break None;
        }
        if let Some(why) = ctl.should_stop(last) {
            break Some(why);
        }
        if let Err(e) = c.fill() {
            break Some(e.to_string());
        }
        let before = chk.received();
        if let Err(e) = c.drain(|p| chk.on_msg(p, None)) {
            break Some(format!("{e:#}"));
        }
        if chk.received() != before {
            chk.mark();
            last = Instant::now();
        }
    };
    chk.finish(stopped)
}

/// High-water marks for ZeroMQ sockets: above any run's message count, so that libzmq never drops
/// silently (the publisher also sets ZMQ_XPUB_NODROP and retries instead).
pub const ZMQ_HWM: i32 = 50_000_000;

fn zmq_sub(
    endpoint: &str,
    ctl: SubCtl,
    mut chk: Checker,
    ready: Sender<Result<(), String>>,
) -> SubResult {
    // One context per subscriber, as separate client processes would have.
    let ctx = zmq::Context::new();
    let setup = (|| -> zmq::Result<zmq::Socket> {
        let s = ctx.socket(zmq::SUB)?;
        s.set_rcvhwm(ZMQ_HWM)?;
        s.set_linger(0)?;
        s.set_rcvtimeo(50)?;
        s.connect(endpoint)?;
        s.set_subscribe(b"")?;
        Ok(s)
    })();
    let sock = match setup {
        Ok(s) => s,
        Err(e) => return setup_failed(chk, &ready, format!("zmq {endpoint}: {e}")),
    };
    let _ = ready.send(Ok(()));
    let mut msg = zmq::Message::new();
    let mut last = Instant::now();
    let mut since_mark = 0u32;
    let stopped = loop {
        if chk.done() {
            break None;
        }
        match sock.recv(&mut msg, 0) {
            Ok(()) => {
                chk.on_msg(&msg, None);
                since_mark += 1;
                if since_mark >= 1024 || chk.done() {
                    chk.mark();
                    since_mark = 0;
                    last = Instant::now();
                    if let Some(why) = ctl.should_stop(last) {
                        break Some(why);
                    }
                }
            }
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                if since_mark > 0 {
                    chk.mark();
                    since_mark = 0;
                    last = Instant::now();
                }
                if let Some(why) = ctl.should_stop(last) {
                    break Some(why);
                }
            }
            Err(e) => break Some(format!("zmq recv: {e}")),
        }
    };
    if since_mark > 0 {
        chk.mark();
    }
    drop(sock);
    chk.finish(stopped)
}
