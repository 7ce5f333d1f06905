//! The MoldUDP64 re-request server is no reflector: over real sockets, its replies are measured in
//! bytes against the requests that caused them (at the UDP layer of the test's sockets, plus 28
//! bytes of IPv4 and UDP headers each way), one IP address gets one budget however many source
//! ports it uses, all requesters together share a global budget, and sources outside
//! `rerequest.allow` get nothing.

use std::{
    io::ErrorKind,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use herz_client::SoupPublisher;
use herz_core::protocol::moldudp64::{Packet, RequestPacket, Session};
use herz_tests::{
    Daemon,
    dist::{self, Endpoints, LOGIN_TIMEOUT, message, publish},
    read_config, unique_id,
};
use herz_user::{
    cidr::Cidr,
    config::{ChannelConfig, Config},
};

/// IPv4 and UDP headers of every datagram, both ways.
const OVERHEAD: usize = 28;

/// Datagrams and their bytes on the wire, counted at the test's sockets.
#[derive(Debug, Default)]
struct Wire {
    requests: usize,
    request_bytes: usize,
    replies: usize,
    reply_bytes: usize,
    messages: u64,
    largest_reply: usize,
}

impl Wire {
    fn sent(&mut self, sock: &UdpSocket, to: SocketAddr, datagram: &[u8]) {
        sock.send_to(datagram, to).unwrap();
        self.requests += 1;
        self.request_bytes += datagram.len() + OVERHEAD;
    }

    /// Counts a reply; returns its first sequence number and messages.
    fn received(&mut self, datagram: &[u8]) -> (u64, Vec<Vec<u8>>) {
        let packet = Packet::parse(datagram).expect("a reply is a MoldUDP64 packet");
        let messages: Vec<Vec<u8>> = packet.messages().map(<[u8]>::to_vec).collect();
        self.replies += 1;
        self.reply_bytes += datagram.len() + OVERHEAD;
        self.largest_reply = self.largest_reply.max(datagram.len() + OVERHEAD);
        self.messages += messages.len() as u64;
        (packet.sequence(), messages)
    }

    /// Reply bytes over request bytes.
    fn amplification(&self) -> f64 {
        self.reply_bytes as f64 / self.request_bytes as f64
    }
}

fn session() -> Session {
    Session::new("HZTEST0001").unwrap()
}

fn request(sequence: u64, count: u16) -> [u8; 20] {
    RequestPacket {
        session: session(),
        sequence,
        count,
    }
    .to_bytes()
}

/// A daemon with one unfiltered channel on loopback, configured further by `edit`.
fn start(edit: impl FnOnce(&mut Config)) -> (Daemon, tempfile::TempDir, Endpoints) {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let port = dist::free_port();
    let group = Ipv4Addr::new(239, 18, 201, (unique_id() % 250) as u8 + 1);
    let (d, dir) = dist::start(&ep, |c| {
        c.channels.push(ChannelConfig {
            name: "all".into(),
            group: SocketAddr::from((group, port)),
            interface: Ipv4Addr::LOCALHOST.into(),
            ..Default::default()
        });
        edit(c);
    });
    (d, dir, ep)
}

/// A publisher logged in with the daemon's configured publisher login.
fn publisher(d: &Daemon, ep: &Endpoints) -> SoupPublisher {
    let login = read_config(&d.config).publishers.users[0].clone();
    let mut p = SoupPublisher::connect(ep.publishers, LOGIN_TIMEOUT).unwrap();
    p.login(&login.name, &login.password).unwrap();
    p
}

/// Waits until the channel has sent `n` messages (the server answers only for those).
fn wait_sent(d: &mut Daemon, ep: &Endpoints, n: u64) {
    d.wait_for(
        "the channel to send every message",
        Duration::from_secs(30),
        || dist::sample(&dist::scrape(ep), "herz_channel_messages_total") >= n as f64,
    );
}

/// A socket on `ip` with a fresh port.
fn socket(ip: Ipv4Addr) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

/// Recovers messages `1..=n` the way a receiver does: asks for the whole rest of the range, and
/// again for what a reply did not cover. Returns the messages in order.
fn recover(ep: &Endpoints, n: u64, wire: &mut Wire) -> Vec<Vec<u8>> {
    let sock = socket(Ipv4Addr::LOCALHOST);
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(30);
    while (got.len() as u64) < n {
        assert!(Instant::now() < deadline, "recovery stuck at {}", got.len());
        let next = got.len() as u64 + 1;
        let count = (n + 1 - next).min(u64::from(u16::MAX)) as u16;
        wire.sent(&sock, ep.rerequest, &request(next, count));
        let len = match sock.recv(&mut buf) {
            Ok(len) => len,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) => panic!("{e}"),
        };
        let (first, messages) = wire.received(&buf[..len]);
        assert_eq!(first, next, "a reply starts at the sequence asked for");
        assert!(!messages.is_empty(), "a reply carries at least one message");
        got.extend(messages);
    }
    got
}

/// A legitimate receiver recovers everything through replies of at most 4 times its requests'
/// bytes (the default `max_amplification`) when messages are small, and through one message per
/// reply when they are large, never worse than that one message.
#[test]
fn replies_are_bounded_in_bytes_and_recovery_still_completes() {
    let (mut d, _dir, ep) = start(|_| {});
    const N: u64 = 600;
    publish(ep.publishers, 1, N);
    wait_sent(&mut d, &ep, N);
    let mut wire = Wire::default();
    let got = recover(&ep, N, &mut wire);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(&m[..], &message(i as u64 + 1)[..]);
    }
    // 41-byte quotes: 20 + 3 x 43 = 149 bytes, 177 on the wire, against 48.
    println!(
        "small messages: {wire:?}, amplification {:.3}",
        wire.amplification()
    );
    assert!(wire.amplification() <= 4.0, "{wire:?}");
    assert_eq!(wire.largest_reply, 177, "{wire:?}");
    assert_eq!(wire.replies, 200, "three quotes per reply: {wire:?}");

    // Large messages go one per reply: the bound gives way to progress, by that one message.
    // 1023 bytes is the most a publisher's SoupBinTCP packet (1024 bytes with its type) carries:
    // 1073 bytes on the wire, 22.35 times the request (a feed's 1024-byte message, 1074).
    const BIG: usize = 1023;
    let big = |i: u64| {
        let mut m = vec![b'X'; BIG];
        m[1..9].copy_from_slice(b"BIG     ");
        m[9..17].copy_from_slice(&i.to_be_bytes());
        m
    };
    let mut p = publisher(&d, &ep);
    for i in 1..=20 {
        p.send(&big(i)).unwrap();
    }
    p.flush().unwrap();
    wait_sent(&mut d, &ep, N + 20);
    let mut wire = Wire::default();
    let got = recover(&ep, N + 20, &mut wire);
    assert_eq!(got[N as usize..], (1..=20).map(big).collect::<Vec<_>>());
    let one_big = OVERHEAD + 20 + 2 + BIG;
    println!(
        "with {BIG}-byte messages: {wire:?}, amplification {:.3}, worst reply {:.3}",
        wire.amplification(),
        wire.largest_reply as f64 / 48.0
    );
    assert_eq!((wire.largest_reply, one_big), (1073, 1073), "{wire:?}");
    assert_eq!(
        wire.replies,
        200 + 20,
        "one large message per reply: {wire:?}"
    );
    let _ = p.logout();
}

/// Requests from one IP address through 300 source ports get one requester's budget, and the
/// bytes they draw stay within the bound; a source outside `rerequest.allow` gets nothing at all,
/// counted and logged.
#[test]
fn rotating_source_ports_gets_no_extra_budget_and_outsiders_get_nothing() {
    const RATE: u64 = 20;
    const BURST: u64 = 30;
    let (mut d, _dir, ep) = start(|c| {
        c.rerequest.rate = RATE;
        c.rerequest.burst = BURST;
        c.rerequest.allow = vec!["127.0.0.1/32".parse::<Cidr>().unwrap()];
    });
    publish(ep.publishers, 1, 100);
    wait_sent(&mut d, &ep, 100);

    // 300 ports on 127.0.0.1, one request each (3 messages fit a reply).
    let socks: Vec<UdpSocket> = (0..300).map(|_| socket(Ipv4Addr::LOCALHOST)).collect();
    let mut wire = Wire::default();
    let start = Instant::now();
    for s in &socks {
        wire.sent(s, ep.rerequest, &request(1, 3));
    }
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 2048];
    for s in &socks {
        s.set_nonblocking(true).unwrap();
        while let Ok(len) = s.recv(&mut buf) {
            wire.received(&buf[..len]);
        }
    }
    // One bucket: its burst plus what it refilled while the requests were sent (plus one reply,
    // for a token earned while the last ones were being answered).
    let budget = BURST + (RATE as f64 * elapsed.as_secs_f64()).ceil() as u64 + 3;
    println!(
        "300 ports: {wire:?} in {elapsed:?}, amplification {:.3}",
        wire.amplification()
    );
    assert!(
        wire.messages >= BURST && wire.messages <= budget,
        "{} messages for 300 ports, budget {budget}: {wire:?}",
        wire.messages
    );
    assert!(wire.amplification() <= 4.0, "{wire:?}");
    let s = dist::scrape(&ep);
    assert!(dist::sample(&s, "herz_rerequests_limited_total") >= 250.0);

    // 127.0.0.2 is loopback, but not in `allow`.
    let outsider = socket(Ipv4Addr::new(127, 0, 0, 2));
    let mut wire = Wire::default();
    for _ in 0..100 {
        wire.sent(&outsider, ep.rerequest, &request(1, 1));
    }
    match outsider.recv(&mut buf) {
        Ok(len) => panic!("an outsider got a {len}-byte reply"),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        ),
    }
    assert_eq!(wire.reply_bytes, 0);
    let s = dist::scrape(&ep);
    assert_eq!(dist::sample(&s, "herz_rerequests_refused_total"), 100.0);
    assert!(d.log().contains("not in rerequest.allow"), "{}", d.log());
}

/// The global budget caps what all requesters together get, even keyed by address and port
/// (`per_ip = false`) with generous per-requester limits.
#[test]
fn the_global_budget_caps_every_requester_together() {
    const GLOBAL_RATE: u64 = 20;
    const GLOBAL_BURST: u64 = 45;
    let (mut d, _dir, ep) = start(|c| {
        c.rerequest.per_ip = false;
        c.rerequest.global_rate = GLOBAL_RATE;
        c.rerequest.global_burst = GLOBAL_BURST;
    });
    publish(ep.publishers, 1, 100);
    wait_sent(&mut d, &ep, 100);
    let socks: Vec<UdpSocket> = (0..200).map(|_| socket(Ipv4Addr::LOCALHOST)).collect();
    let mut wire = Wire::default();
    let start = Instant::now();
    for s in &socks {
        wire.sent(s, ep.rerequest, &request(1, 3));
    }
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; 2048];
    for s in &socks {
        s.set_nonblocking(true).unwrap();
        while let Ok(len) = s.recv(&mut buf) {
            wire.received(&buf[..len]);
        }
    }
    let budget = GLOBAL_BURST + (GLOBAL_RATE as f64 * elapsed.as_secs_f64()).ceil() as u64 + 3;
    println!("200 ports, global budget: {wire:?} in {elapsed:?}");
    assert!(
        wire.messages >= GLOBAL_BURST && wire.messages <= budget,
        "{} messages, budget {budget}: {wire:?}",
        wire.messages
    );
}
