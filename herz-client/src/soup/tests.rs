//! SoupSubscriber / SoupPublisher against tiny in-test servers built from the herz-core codecs.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use herz_core::protocol::soupbintcp::{
    self, DEFAULT_MAX_CLIENT_PACKET_LEN, HerzControl, LoginAccepted, LoginRequest, Packet,
    PacketType, RejectReason, SkipReason, encode_error_packet, encode_skip_packet,
};

use super::*;

const T: Duration = Duration::from_secs(5);

fn session() -> Session {
    Session::new("HZ20261126").unwrap()
}

/// The server side of one test connection: blocking, with a read timeout so tests never hang.
struct ServerConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A client packet, owned.
#[derive(Debug, Clone, PartialEq)]
enum Client {
    Debug(Vec<u8>),
    Login(LoginRequest),
    Unsequenced(Vec<u8>),
    Heartbeat,
    Logout,
}

impl ServerConn {
    fn new(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(T)).unwrap();
        stream.set_nodelay(true).unwrap();
        ServerConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next client packet; `None` on close or timeout.
    fn read(&mut self) -> Option<Client> {
        loop {
            if let Some((packet, used)) =
                soupbintcp::next_client_packet(&self.buf, DEFAULT_MAX_CLIENT_PACKET_LEN).unwrap()
            {
                let owned = match packet {
                    Packet::Debug(t) => Client::Debug(t.to_vec()),
                    Packet::LoginRequest(l) => Client::Login(l),
                    Packet::UnsequencedData(m) => Client::Unsequenced(m.to_vec()),
                    Packet::ClientHeartbeat => Client::Heartbeat,
                    Packet::LogoutRequest => Client::Logout,
                    other => panic!("client sent {other:?}"),
                };
                self.buf.drain(..used);
                return Some(owned);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    fn accept(&mut self, sequence: u64) {
        let mut out = Vec::new();
        LoginAccepted {
            session: session(),
            sequence,
        }
        .encode(&mut out);
        self.send(&out);
    }

    fn sequenced(&mut self, msg: &[u8]) {
        let mut out = Vec::new();
        soupbintcp::encode_sequenced(msg, &mut out).unwrap();
        self.send(&out);
    }
}

/// Runs `f` on each of the next `connections` accepted connections, in a thread.
fn serve<F>(connections: usize, f: F) -> (SocketAddr, JoinHandle<()>)
where
    F: Fn(usize, ServerConn) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = thread::spawn(move || {
        for i in 0..connections {
            let (stream, _) = listener.accept().unwrap();
            f(i, ServerConn::new(stream));
        }
    });
    (addr, handle)
}

fn events_until_closed(sub: &mut SoupSubscriber) -> Vec<OwnedEvent> {
    let mut events = Vec::new();
    let deadline = Instant::now() + T;
    while Instant::now() < deadline && events.len() < 1000 {
        match sub.recv_timeout(Duration::from_millis(500)).unwrap() {
            Some(OwnedEvent::Closed) => {
                events.push(OwnedEvent::Closed);
                break;
            }
            Some(e) => events.push(e),
            None => {}
        }
    }
    events
}

#[test]
fn login_with_filter_then_messages_skips_and_end_of_session() {
    let (addr, server) = serve(1, |_, mut c| {
        // The FILTER comes first, then the Login Request.
        let Some(Client::Debug(text)) = c.read() else {
            panic!("expected FILTER first")
        };
        match HerzControl::parse(&text).unwrap() {
            Some(HerzControl::Filter(f)) => {
                let symbols: Vec<_> = f.symbols().map(|s| s.to_string()).collect();
                let prefixes: Vec<_> = f.prefixes().map(|s| s.to_string()).collect();
                assert_eq!(symbols, ["AAPL", "MSFT"]);
                assert_eq!(prefixes, ["BR"]);
            }
            other => panic!("expected FILTER, got {other:?}"),
        }
        let Some(Client::Login(login)) = c.read() else {
            panic!("expected login")
        };
        assert!(login.credentials_match("demo", "demo"));
        assert!(login.session.is_blank());
        assert_eq!(login.sequence, 5);
        c.accept(5);
        let mut out = Vec::new();
        soupbintcp::encode_sequenced(b"five", &mut out).unwrap();
        encode_skip_packet(3, SkipReason::Filtered, &mut out);
        soupbintcp::encode_sequenced(b"nine", &mut out).unwrap();
        soupbintcp::encode_server_heartbeat(&mut out);
        soupbintcp::encode_debug(b"hello", &mut out).unwrap();
        soupbintcp::encode_end_of_session(&mut out);
        c.send(&out);
    });
    let mut sub = SoupSubscriber::connect(addr, T).unwrap();
    let filter = Filter::new("AAPL,MSFT", "BR").unwrap();
    let accepted = sub
        .login("demo", "demo", Session::BLANK, 5, Some(filter))
        .unwrap();
    assert_eq!(accepted.sequence, 5);
    assert!(accepted.session.matches(&session()));
    let events = events_until_closed(&mut sub);
    assert_eq!(
        events,
        [
            OwnedEvent::Message {
                seq: 5,
                payload: b"five".to_vec()
            },
            OwnedEvent::Skip {
                seq: 6,
                count: 3,
                reason: SkipReason::Filtered
            },
            OwnedEvent::Message {
                seq: 9,
                payload: b"nine".to_vec()
            },
            OwnedEvent::Heartbeat,
            OwnedEvent::Debug("hello".into()),
            OwnedEvent::EndOfSession,
            OwnedEvent::Closed,
        ]
    );
    assert_eq!(sub.next_seq(), 10);
    assert!(sub.is_ended());
    // Closed is sticky.
    assert_eq!(sub.recv_timeout(T).unwrap(), Some(OwnedEvent::Closed));
    server.join().unwrap();
}

#[test]
fn rejected_login_carries_reason_and_server_text() {
    let (addr, server) = serve(1, |_, mut c| {
        assert!(matches!(c.read(), Some(Client::Login(_))));
        let mut out = Vec::new();
        encode_error_packet("unknown user or wrong password", &mut out).unwrap();
        soupbintcp::encode_login_rejected(RejectReason::NotAuthorized, &mut out);
        c.send(&out);
    });
    let mut sub = SoupSubscriber::connect(addr, T).unwrap();
    let err = sub
        .login("demo", "wrong", Session::BLANK, 0, None)
        .unwrap_err();
    match &err {
        SoupClientError::LoginRejected { reason, detail, .. } => {
            assert_eq!(*reason, RejectReason::NotAuthorized);
            assert_eq!(detail.as_deref(), Some("unknown user or wrong password"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("not authorized") && text.contains("wrong password"),
        "{text}"
    );
    server.join().unwrap();
}

#[test]
fn invalid_credentials_are_refused_locally() {
    let (addr, server) = serve(1, |_, mut c| {
        assert_eq!(c.read(), None);
    });
    let mut sub = SoupSubscriber::connect(addr, T).unwrap();
    let err = sub
        .login("toolonguser", "x", Session::BLANK, 0, None)
        .unwrap_err();
    assert!(matches!(err, SoupClientError::InvalidRequest(_)), "{err}");
    drop(sub);
    server.join().unwrap();
}

#[test]
fn client_heartbeats_and_silent_server_detection() {
    let (addr, server) = serve(1, |_, mut c| {
        assert!(matches!(c.read(), Some(Client::Login(_))));
        c.accept(1);
        // Count client heartbeats for a while, sending nothing: the client must detect silence.
        let mut heartbeats = 0;
        let start = Instant::now();
        c.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        while start.elapsed() < Duration::from_millis(700) {
            match c.read() {
                Some(Client::Heartbeat) => heartbeats += 1,
                Some(other) => panic!("unexpected {other:?}"),
                None => {}
            }
        }
        assert!(heartbeats >= 3, "only {heartbeats} client heartbeats");
    });
    let options = SoupOptions {
        heartbeat_interval: Duration::from_millis(50),
        silence_timeout: Duration::from_millis(300),
        ..SoupOptions::default()
    };
    let mut sub = SoupSubscriber::connect_with(addr, T, options).unwrap();
    sub.login("demo", "demo", Session::BLANK, 0, None).unwrap();
    let start = Instant::now();
    let err = loop {
        assert!(start.elapsed() < T, "silence never detected");
        match sub.poll(Some(Duration::from_millis(100)), |_| {}) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert!(
        matches!(err, SoupClientError::ServerSilent { next_seq: 1, .. }),
        "{err}"
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(290) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    server.join().unwrap();
}

#[test]
fn reconnect_resumes_exactly_after_skips() {
    let (addr, server) = serve(2, |i, mut c| {
        let Some(Client::Debug(_)) = c.read() else {
            panic!("filter expected on every login")
        };
        let Some(Client::Login(login)) = c.read() else {
            panic!("login expected")
        };
        if i == 0 {
            assert_eq!(login.sequence, 1);
            c.accept(1);
            c.sequenced(b"1");
            c.sequenced(b"2");
            let mut out = Vec::new();
            encode_skip_packet(4, SkipReason::Filtered, &mut out);
            c.send(&out);
            c.sequenced(b"7");
            // Then the link breaks (abortive close).
            socket2::SockRef::from(&c.stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        } else {
            assert!(login.session.matches(&session()));
            assert_eq!(login.sequence, 8, "resume point");
            c.accept(8);
            c.sequenced(b"8");
            let mut out = Vec::new();
            soupbintcp::encode_end_of_session(&mut out);
            c.send(&out);
        }
    });
    let filter = Filter::new("", "S").unwrap();
    let mut sub = SoupSubscriber::connect(addr, T).unwrap();
    sub.login("demo", "demo", Session::BLANK, 1, Some(filter))
        .unwrap();
    let mut seqs = Vec::new();
    for e in events_until_closed(&mut sub) {
        if let OwnedEvent::Message { seq, payload } = e {
            assert_eq!(payload, seq.to_string().into_bytes());
            seqs.push(seq);
        }
    }
    assert_eq!(seqs, [1, 2, 7]);
    let (resume_session, resume_seq) = (sub.session(), sub.next_seq());
    assert_eq!(resume_seq, 8);
    let mut sub = SoupSubscriber::connect(addr, T).unwrap();
    sub.login("demo", "demo", resume_session, resume_seq, Some(filter))
        .unwrap();
    let events = events_until_closed(&mut sub);
    assert_eq!(
        events[0],
        OwnedEvent::Message {
            seq: 8,
            payload: b"8".to_vec()
        }
    );
    assert_eq!(events[1], OwnedEvent::EndOfSession);
    server.join().unwrap();
}

#[test]
fn poll_delivers_a_large_stream_in_order_across_reads() {
    const N: u64 = 50_000;
    let (addr, server) = serve(1, |_, mut c| {
        assert!(matches!(c.read(), Some(Client::Login(_))));
        c.accept(1);
        let mut out = Vec::new();
        for seq in 1..=N {
            if seq == N / 2 {
                // One maximal packet, certainly split over several reads.
                soupbintcp::encode_sequenced(&[0xAB; soupbintcp::MAX_PAYLOAD_LEN], &mut out)
                    .unwrap();
            } else {
                soupbintcp::encode_sequenced(&seq.to_be_bytes(), &mut out).unwrap();
            }
            if out.len() > 100_000 {
                c.send(&out);
                out.clear();
            }
        }
        soupbintcp::encode_end_of_session(&mut out);
        c.send(&out);
    });
    let mut sub = SoupSubscriber::connect(addr, T).unwrap();
    sub.login("demo", "demo", Session::BLANK, 1, None).unwrap();
    let (mut next, mut ended, mut polls) = (1u64, false, 0);
    let start = Instant::now();
    while !ended && start.elapsed() < T {
        polls += 1;
        sub.poll(Some(Duration::from_millis(200)), |e| match e {
            Event::Message { seq, payload } => {
                assert_eq!(seq, next);
                if seq == N / 2 {
                    assert_eq!(payload.len(), soupbintcp::MAX_PAYLOAD_LEN);
                } else {
                    assert_eq!(payload, seq.to_be_bytes());
                }
                next += 1;
            }
            Event::EndOfSession | Event::Closed => ended = true,
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
    }
    assert!(ended);
    assert_eq!(next, N + 1);
    assert!(
        polls < N / 10,
        "{polls} polls: packets are not batched per read"
    );
    server.join().unwrap();
}

#[test]
fn byte_by_byte_delivery_is_reassembled() {
    let (addr, server) = serve(1, |_, mut c| {
        assert!(matches!(c.read(), Some(Client::Login(_))));
        let mut out = Vec::new();
        LoginAccepted {
            session: session(),
            sequence: 3,
        }
        .encode(&mut out);
        soupbintcp::encode_sequenced(b"abc", &mut out).unwrap();
        encode_skip_packet(2, SkipReason::Dropped, &mut out);
        soupbintcp::encode_sequenced(b"def", &mut out).unwrap();
        for b in out {
            c.send(&[b]);
            thread::sleep(Duration::from_micros(200));
        }
    });
    let mut sub = SoupSubscriber::connect(addr, T).unwrap();
    assert_eq!(
        sub.login("demo", "demo", Session::BLANK, 0, None)
            .unwrap()
            .sequence,
        3
    );
    let events = events_until_closed(&mut sub);
    assert_eq!(
        events,
        [
            OwnedEvent::Message {
                seq: 3,
                payload: b"abc".to_vec()
            },
            OwnedEvent::Skip {
                seq: 4,
                count: 2,
                reason: SkipReason::Dropped
            },
            OwnedEvent::Message {
                seq: 6,
                payload: b"def".to_vec()
            },
            OwnedEvent::Closed
        ]
    );
    server.join().unwrap();
}

#[test]
fn protocol_errors_name_the_sequence() {
    let (addr, server) = serve(1, |_, mut c| {
        assert!(matches!(c.read(), Some(Client::Login(_))));
        c.accept(10);
        c.sequenced(b"x");
        // A Login Request from a server is invalid.
        let mut out = Vec::new();
        LoginRequest::new("a", "b", Session::BLANK, 0)
            .unwrap()
            .encode(&mut out);
        c.send(&out);
        thread::sleep(Duration::from_millis(200));
    });
    let mut sub = SoupSubscriber::connect(addr, T).unwrap();
    sub.login("demo", "demo", Session::BLANK, 0, None).unwrap();
    let mut got = Vec::new();
    let err = loop {
        match sub.poll(Some(T), |e| got.push(e.to_owned())) {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(got.len(), 1);
    match err {
        SoupClientError::Protocol {
            next_seq, source, ..
        } => {
            assert_eq!(next_seq, 11);
            assert!(matches!(
                source,
                SoupError::UnexpectedType {
                    packet: PacketType::LoginRequest,
                    ..
                }
            ));
        }
        other => panic!("unexpected {other}"),
    }
    server.join().unwrap();
}

#[test]
fn publisher_batches_u_packets_and_logs_out() {
    const N: usize = 20_000;
    let (addr, server) = serve(1, |_, mut c| {
        let Some(Client::Login(login)) = c.read() else {
            panic!("login expected")
        };
        assert!(login.credentials_match("feed", "feed"));
        assert!(login.session.is_blank());
        assert_eq!(login.sequence, 0);
        c.accept(1);
        let mut received = 0;
        loop {
            match c.read() {
                Some(Client::Unsequenced(m)) => {
                    assert_eq!(m, (received as u32).to_be_bytes());
                    received += 1;
                }
                Some(Client::Heartbeat) => {}
                Some(Client::Logout) => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, N);
        // The server closes after a logout.
    });
    let mut publisher = SoupPublisher::connect(addr, T).unwrap();
    publisher.login("feed", "feed").unwrap();
    for i in 0..N as u32 {
        publisher.send(&i.to_be_bytes()).unwrap();
    }
    assert_eq!(publisher.sent(), N as u64);
    publisher.flush().unwrap();
    assert_eq!(publisher.pending_bytes(), 0);
    publisher.logout().unwrap();
    server.join().unwrap();
}

#[test]
fn publisher_sees_rejects_heartbeats_and_end_of_session() {
    let (addr, server) = serve(2, |i, mut c| {
        assert!(matches!(c.read(), Some(Client::Login(_))));
        if i == 0 {
            let mut out = Vec::new();
            soupbintcp::encode_login_rejected(RejectReason::NotAuthorized, &mut out);
            c.send(&out);
            return;
        }
        c.accept(1);
        // Expect client heartbeats while the publisher idles.
        c.stream
            .set_read_timeout(Some(Duration::from_millis(400)))
            .unwrap();
        assert_eq!(c.read(), Some(Client::Heartbeat));
        let mut out = Vec::new();
        encode_error_packet("feed closed by operator", &mut out).unwrap();
        soupbintcp::encode_end_of_session(&mut out);
        c.send(&out);
        thread::sleep(Duration::from_millis(300));
    });
    let mut publisher = SoupPublisher::connect(addr, T).unwrap();
    let err = publisher.login("feed", "bad").unwrap_err();
    assert!(
        matches!(
            err,
            SoupClientError::LoginRejected {
                reason: RejectReason::NotAuthorized,
                ..
            }
        ),
        "{err}"
    );
    let options = SoupOptions {
        heartbeat_interval: Duration::from_millis(50),
        ..SoupOptions::default()
    };
    let mut publisher = SoupPublisher::connect_with(addr, T, options).unwrap();
    publisher.login("feed", "feed").unwrap();
    let start = Instant::now();
    let err = loop {
        assert!(start.elapsed() < T, "end of session never seen");
        if let Err(e) = publisher.idle(Duration::from_millis(20)) {
            break e;
        }
    };
    match err {
        SoupClientError::SessionEnded { detail, .. } => {
            assert_eq!(detail.as_deref(), Some("feed closed by operator"));
        }
        other => panic!("unexpected {other}"),
    }
    assert!(publisher.send(b"x").is_err());
    server.join().unwrap();
}
