//! The server session driven deterministically: a test client and the session exchange bytes through an
//! in-memory "wire" whose capacity the test sets (a full socket), and time is virtual.

use super::*;
use crate::{
    engine::journal::JournalConfig,
    protocol::soupbintcp::{Filter, encode_filter_packets, encode_unsequenced},
};

const MS: u64 = 1_000_000;
const HB: u64 = 1_000 * MS;
const TIMEOUT: u64 = 15_000 * MS;
const LOGIN: u64 = 5_000 * MS;
const TIMERS: Timers = Timers {
    heartbeat_ns: HB,
    silence_ns: TIMEOUT,
    login_ns: LOGIN,
};

fn users() -> Vec<User> {
    vec![
        User {
            name: "demo".into(),
            password: "demo".into(),
            policy: None,
        },
        User {
            name: "slow".into(),
            password: "slow".into(),
            policy: Some(SlowConsumerPolicy::DropOldest),
        },
        User {
            name: "conf".into(),
            password: "conf".into(),
            policy: Some(SlowConsumerPolicy::Conflate),
        },
    ]
}

fn tick(symbol: &str, n: u8) -> Vec<u8> {
    let mut m = vec![b'Q'];
    let mut sym = [b' '; 8];
    sym[..symbol.len()].copy_from_slice(symbol.as_bytes());
    m.extend_from_slice(&sym);
    m.extend_from_slice(&[n; 7]);
    m
}

/// What the client saw, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Accepted(u64),
    Rejected(RejectReason),
    Data(Vec<u8>),
    Heartbeat,
    EndOfSession,
    Debug(String),
}

/// A session, its journal, a client's received bytes, and virtual time.
struct Pair {
    session: ServerSession,
    journal: Journal,
    users: Vec<User>,
    name: SessionName,
    now: u64,
    /// Bytes the "socket" takes per write (None: unlimited).
    wire: Option<usize>,
    received: Vec<u8>,
    events: Vec<Event>,
}

impl Pair {
    fn new(role: Role) -> Pair {
        Pair::with_limit(role, 1 << 20)
    }

    fn with_limit(role: Role, out_limit: usize) -> Pair {
        Pair {
            session: ServerSession::new(role, out_limit, SlowConsumerPolicy::Disconnect, 0),
            journal: Journal::new(JournalConfig {
                max_messages: 1000,
                max_bytes: 1 << 20,
                max_message_len: 1024,
            }),
            users: users(),
            name: SessionName::new("HZ20261203").unwrap(),
            now: 0,
            wire: None,
            received: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The client sends `bytes`, delivered `chunk` bytes at a time.
    fn send_chunked(&mut self, bytes: &[u8], chunk: usize) {
        for piece in bytes.chunks(chunk.max(1)) {
            let buf = self.session.recv_buf();
            buf[..piece.len()].copy_from_slice(piece);
            let ctx = Ctx {
                session: self.name,
                users: &self.users,
                policy: SlowConsumerPolicy::Disconnect,
                now: self.now,
            };
            self.session
                .on_received(piece.len(), &ctx, &mut self.journal);
        }
        self.step();
    }

    fn send(&mut self, bytes: &[u8]) {
        self.send_chunked(bytes, bytes.len());
    }

    fn login(&mut self, user: &str, password: &str, session: SessionName, seq: u64) {
        let mut b = Vec::new();
        LoginRequest::new(user, password, session, seq)
            .unwrap()
            .encode(&mut b);
        self.send(&b);
    }

    /// Moves output to the client as far as the wire takes it, and collects events.
    fn step(&mut self) {
        loop {
            let out = self.session.transmit();
            let n = self.wire.map_or(out.len(), |w| w.min(out.len()));
            self.received.extend_from_slice(&out[..n]);
            self.session.on_sent(n, self.now);
            if n == 0 || self.session.queued() == 0 || self.wire.is_some() {
                break;
            }
        }
        while let Some(e) = self.session.poll_event() {
            self.events.push(e);
        }
    }

    fn pump(&mut self) {
        self.session.fill(&self.journal);
        self.step();
    }

    fn advance(&mut self, ns: u64) {
        self.now += ns;
        self.session.on_timer(self.now, &TIMERS);
        self.step();
    }

    fn publish(&mut self, msgs: &[Vec<u8>]) {
        for m in msgs {
            self.journal.append_at(m, self.now).unwrap();
        }
    }

    /// Everything the client received so far, decoded (and consumed).
    fn seen(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some((p, used)) = soupbintcp::next_packet(&self.received[at..]).unwrap() {
            out.push(match p {
                Packet::LoginAccepted(a) => Seen::Accepted(a.sequence),
                Packet::LoginRejected(r) => Seen::Rejected(r),
                Packet::SequencedData(d) => Seen::Data(d.to_vec()),
                Packet::ServerHeartbeat => Seen::Heartbeat,
                Packet::EndOfSession => Seen::EndOfSession,
                Packet::Debug(t) => Seen::Debug(String::from_utf8_lossy(t).into_owned()),
                other => panic!("unexpected {other:?}"),
            });
            at += used;
        }
        self.received.drain(..at);
        out
    }

    fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

fn filter_packets(symbols: &str, prefixes: &str) -> Vec<u8> {
    let mut b = Vec::new();
    encode_filter_packets(
        &Filter::new(symbols, prefixes).unwrap(),
        MAX_CLIENT_PACKET,
        &mut b,
    )
    .unwrap();
    b
}

#[test]
fn a_login_is_accepted_and_the_stream_follows_from_the_next_message() {
    let mut p = Pair::new(Role::Subscriber);
    p.publish(&[tick("A", 1)]);
    p.login("demo", "demo", SessionName::BLANK, 0);
    assert_eq!(p.seen(), vec![Seen::Accepted(2)]);
    assert_eq!(
        p.take_events(),
        vec![Event::LoginAccepted {
            user: "demo".into(),
            from: 2
        }]
    );
    assert_eq!(p.session.state(), State::Active);
    p.publish(&[tick("A", 2), tick("B", 3)]);
    p.pump();
    assert_eq!(
        p.seen(),
        vec![Seen::Data(tick("A", 2)), Seen::Data(tick("B", 3))]
    );
    assert_eq!(p.session.sent(), 2);
    assert_eq!(p.session.cursor(), 4);
}

#[test]
fn a_login_split_into_single_bytes_is_the_same_login() {
    let mut p = Pair::new(Role::Subscriber);
    let mut b = Vec::new();
    LoginRequest::new("demo", "demo", SessionName::BLANK, 0)
        .unwrap()
        .encode(&mut b);
    p.send_chunked(&b, 1);
    assert_eq!(p.seen(), vec![Seen::Accepted(1)]);
}

#[test]
fn resume_starts_at_the_requested_sequence() {
    let mut p = Pair::new(Role::Subscriber);
    p.publish(&[tick("A", 1), tick("A", 2), tick("A", 3)]);
    p.login("demo", "demo", p.name, 2);
    p.pump();
    assert_eq!(
        p.seen(),
        vec![
            Seen::Accepted(2),
            Seen::Data(tick("A", 2)),
            Seen::Data(tick("A", 3))
        ]
    );
}

#[test]
fn bad_credentials_and_a_foreign_session_are_rejected_then_closed_once_written() {
    for (user, password, session, reason) in [
        (
            "demo",
            "wrong",
            SessionName::BLANK,
            RejectReason::NotAuthorized,
        ),
        (
            "nobody",
            "demo",
            SessionName::BLANK,
            RejectReason::NotAuthorized,
        ),
        (
            "demo",
            "demo",
            SessionName::new("OTHER").unwrap(),
            RejectReason::SessionNotAvailable,
        ),
    ] {
        let mut p = Pair::new(Role::Subscriber);
        p.login(user, password, session, 0);
        assert_eq!(p.seen(), vec![Seen::Rejected(reason)]);
        assert_eq!(
            p.take_events(),
            vec![
                Event::LoginRejected(reason),
                Event::Close(CloseReason::Rejected)
            ]
        );
        assert!(!p.session.logged_in());
    }
}

/// A resume the journal cannot serve exactly is refused with `J` reason `S`: before the oldest
/// retained message (it was evicted) or past the head (numbers this journal never gave, e.g.
/// another run's). Serving either would hand out other messages under the asked-for numbers.
#[test]
fn a_resume_outside_the_journal_is_refused_not_moved() {
    let journal = |p: &mut Pair| {
        p.journal = Journal::new(JournalConfig {
            max_messages: 10,
            max_bytes: 1 << 20,
            max_message_len: 1024,
        });
        for n in 0..25 {
            p.journal.append(&tick("AAPL", n)).unwrap();
        }
        // Retains 16..=25; the next is 26.
        assert_eq!((p.journal.tail(), p.journal.head()), (16, 26));
    };
    for (seq, accepted) in [
        (1, None),
        (15, None),
        (16, Some(16)),
        (25, Some(25)),
        (26, Some(26)),
        (27, None),
        (1_000_000, None),
        (0, Some(26)),
    ] {
        let mut p = Pair::new(Role::Subscriber);
        journal(&mut p);
        p.login("demo", "demo", SessionName::BLANK, seq);
        let seen = p.seen();
        match accepted {
            Some(from) => assert_eq!(seen.first(), Some(&Seen::Accepted(from)), "resume at {seq}"),
            None => {
                assert_eq!(
                    seen,
                    vec![Seen::Rejected(RejectReason::SessionNotAvailable)],
                    "resume at {seq}"
                );
                assert_eq!(
                    p.take_events(),
                    vec![
                        Event::LoginRejected(RejectReason::SessionNotAvailable),
                        Event::Close(CloseReason::Rejected)
                    ]
                );
            }
        }
    }
}

#[test]
fn a_rejected_session_closes_only_after_its_answer_is_written() {
    let mut p = Pair::new(Role::Subscriber);
    p.wire = Some(1);
    p.login("demo", "wrong", SessionName::BLANK, 0);
    assert_eq!(
        p.take_events(),
        vec![Event::LoginRejected(RejectReason::NotAuthorized)]
    );
    while p.session.queued() > 1 {
        p.step();
        assert_eq!(
            p.take_events(),
            vec![],
            "closed before its answer was written"
        );
        assert!(!p.session.is_closed());
    }
    p.step();
    assert_eq!(p.take_events(), vec![Event::Close(CloseReason::Rejected)]);
    assert_eq!(p.seen(), vec![Seen::Rejected(RejectReason::NotAuthorized)]);
}

#[test]
fn a_filter_sent_before_login_delivers_only_its_symbols_and_marks_the_rest() {
    let mut p = Pair::new(Role::Subscriber);
    let mut b = filter_packets("AAPL", "MS");
    LoginRequest::new("demo", "demo", SessionName::BLANK, 0)
        .unwrap()
        .encode(&mut b);
    p.send(&b);
    p.publish(&[
        tick("AAPL", 1),
        tick("IBM", 2),
        tick("MSFT", 3),
        tick("IBM", 4),
    ]);
    p.pump();
    p.advance(HB);
    let seen = p.seen();
    assert_eq!(seen[0], Seen::Accepted(1));
    assert_eq!(seen[1], Seen::Data(tick("AAPL", 1)));
    assert!(
        matches!(&seen[2], Seen::Debug(t) if t == "HERZ SKIP 1 filtered"),
        "{seen:?}"
    );
    assert_eq!(seen[3], Seen::Data(tick("MSFT", 3)));
    // The trailing filtered message is reported before the heartbeat, so the position is current.
    assert!(
        matches!(&seen[4], Seen::Debug(t) if t == "HERZ SKIP 1 filtered"),
        "{seen:?}"
    );
    assert_eq!(seen[5], Seen::Heartbeat);
}

#[test]
fn a_filter_after_login_is_refused_with_herz_error_and_the_session_closes() {
    let mut p = Pair::new(Role::Subscriber);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.take_events();
    p.send(&filter_packets("AAPL", ""));
    let events = p.take_events();
    assert!(
        matches!(&events[0], Event::Refused(r) if r.contains("only accepted before")),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], Event::Close(CloseReason::Refused(_))),
        "{events:?}"
    );
    let seen = p.seen();
    assert!(
        matches!(seen.last(), Some(Seen::Debug(t)) if t.starts_with("HERZ ERROR")),
        "{seen:?}"
    );
}

#[test]
fn heartbeats_go_out_after_a_quiet_second_and_a_silent_peer_is_closed() {
    let mut p = Pair::new(Role::Subscriber);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.seen();
    p.advance(HB - 1);
    assert_eq!(p.seen(), vec![]);
    p.advance(1);
    assert_eq!(p.seen(), vec![Seen::Heartbeat]);
    // The client's heartbeat keeps it alive.
    p.advance(TIMEOUT - HB);
    p.send(&soupbintcp::CLIENT_HEARTBEAT_PACKET);
    p.advance(TIMEOUT);
    assert!(!p.session.is_closed());
    p.advance(1);
    assert!(
        p.take_events()
            .contains(&Event::Close(CloseReason::HeartbeatTimeout))
    );
}

#[test]
fn a_connection_that_never_logs_in_is_closed_at_the_login_deadline_whatever_it_sends() {
    let mut p = Pair::new(Role::Subscriber);
    // Heartbeats and a filter keep the line busy, but are not a login.
    for _ in 0..4 {
        p.advance(LOGIN / 4);
        p.send(&soupbintcp::CLIENT_HEARTBEAT_PACKET);
    }
    p.send(&filter_packets("AAPL", ""));
    assert_eq!(p.take_events(), vec![], "not yet past the deadline");
    p.advance(1);
    assert_eq!(
        p.take_events(),
        vec![Event::Close(CloseReason::LoginTimeout)]
    );
    assert!(CloseReason::LoginTimeout.is_abortive());
    // A login in time is not affected.
    let mut p = Pair::new(Role::Subscriber);
    p.advance(LOGIN - 1);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.advance(2 * LOGIN);
    assert!(!p.session.is_closed(), "{:?}", p.take_events());
}

#[test]
fn a_publishers_messages_go_into_the_journal_and_are_reported_once_per_read() {
    let mut p = Pair::new(Role::Publisher);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.take_events();
    let mut b = Vec::new();
    for i in 0..5 {
        encode_unsequenced(&tick("X", i), &mut b).unwrap();
    }
    p.send(&b);
    assert_eq!(p.take_events(), vec![Event::Appended { count: 5, last: 5 }]);
    assert_eq!(p.journal.head(), 6);
    assert_eq!(p.journal.get(3), Some(&tick("X", 2)[..]));
}

#[test]
fn malformed_input_closes_the_session() {
    let mut b = Vec::new();
    encode_unsequenced(&tick("X", 1), &mut b).unwrap();
    let mut p = Pair::new(Role::Publisher);
    p.send(&b);
    assert_eq!(
        p.take_events(),
        vec![Event::Close(CloseReason::Malformed(
            "data before login".into()
        ))]
    );
    assert_eq!(p.journal.head(), 1, "nothing appended");

    let mut p = Pair::new(Role::Publisher);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.take_events();
    let mut short = Vec::new();
    encode_unsequenced(b"Qabc", &mut short).unwrap();
    p.send(&short);
    assert!(
        matches!(&p.take_events()[..], [Event::Close(CloseReason::Malformed(m))] if m.contains("9-byte"))
    );

    let mut p = Pair::new(Role::Subscriber);
    p.send(&[0, 1, b'?']);
    assert!(matches!(
        &p.take_events()[..],
        [Event::Close(CloseReason::Malformed(_))]
    ));

    let mut p = Pair::new(Role::Subscriber);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.login("demo", "demo", SessionName::BLANK, 0);
    assert!(
        p.take_events()
            .contains(&Event::Close(CloseReason::Malformed(
                "second Login Request".into()
            )))
    );
}

#[test]
fn logout_ends_the_session_and_nothing_after_it_is_read() {
    let mut p = Pair::new(Role::Publisher);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.take_events();
    let mut b = soupbintcp::LOGOUT_REQUEST_PACKET.to_vec();
    encode_unsequenced(&tick("X", 1), &mut b).unwrap();
    p.send(&b);
    assert_eq!(p.take_events(), vec![Event::Close(CloseReason::Logout)]);
    assert_eq!(p.journal.head(), 1);
    p.on_peer_closed_twice();
}

impl Pair {
    fn on_peer_closed_twice(&mut self) {
        self.session.on_peer_closed();
        self.session.on_peer_closed();
        self.step();
        assert_eq!(self.take_events(), vec![], "a session closes once");
    }
}

#[test]
fn the_disconnect_policy_fires_only_when_the_socket_is_full_and_the_lag_too_large() {
    let mut p = Pair::new(Role::Subscriber);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.take_events();
    let burst: Vec<Vec<u8>> = (0..50).map(|i| tick("A", i)).collect();
    p.publish(&burst);
    assert_eq!(
        p.session.enforce_lag(&p.journal, 10, true),
        LagAction::None,
        "a writable socket is not slow"
    );
    assert_eq!(
        p.session.enforce_lag(&p.journal, 100, false),
        LagAction::None,
        "within the allowance"
    );
    assert_eq!(
        p.session.enforce_lag(&p.journal, 10, false),
        LagAction::Disconnect
    );
    p.step();
    assert_eq!(
        p.take_events(),
        vec![Event::Close(CloseReason::SlowConsumer)]
    );
}

#[test]
fn drop_oldest_skips_ahead_and_says_how_much() {
    let mut p = Pair::new(Role::Subscriber);
    p.login("slow", "slow", SessionName::BLANK, 0);
    p.seen();
    let burst: Vec<Vec<u8>> = (0..40).map(|i| tick("A", i)).collect();
    p.publish(&burst);
    assert_eq!(p.session.policy(), SlowConsumerPolicy::DropOldest);
    // Keeps the newest quarter of the allowance (20 / 4 = 5 messages).
    assert_eq!(
        p.session.enforce_lag(&p.journal, 20, false),
        LagAction::Dropped(35)
    );
    p.pump();
    let seen = p.seen();
    assert!(
        matches!(&seen[0], Seen::Debug(t) if t == "HERZ SKIP 35 dropped"),
        "{seen:?}"
    );
    assert_eq!(
        seen[1..],
        burst[35..]
            .iter()
            .map(|m| Seen::Data(m.clone()))
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn conflate_sends_the_latest_message_per_symbol_of_the_backlog() {
    let mut p = Pair::new(Role::Subscriber);
    p.login("conf", "conf", SessionName::BLANK, 0);
    p.seen();
    let backlog = [
        tick("A", 1),
        tick("B", 2),
        tick("A", 3),
        tick("B", 4),
        tick("A", 5),
    ];
    p.publish(&backlog);
    assert_eq!(
        p.session.enforce_lag(&p.journal, 2, false),
        LagAction::Conflated {
            superseded: 3,
            dropped: 0
        }
    );
    p.pump();
    let data: Vec<Seen> = p
        .seen()
        .into_iter()
        .filter(|s| matches!(s, Seen::Data(_)))
        .collect();
    assert_eq!(
        data,
        vec![Seen::Data(tick("B", 4)), Seen::Data(tick("A", 5))]
    );
    assert_eq!(
        p.session.cursor(),
        6,
        "the skipped numbers are accounted for"
    );
}

#[test]
fn output_is_bounded_by_the_limit_and_resumes_as_the_socket_drains() {
    let mut p = Pair::with_limit(Role::Subscriber, 64);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.seen();
    let burst: Vec<Vec<u8>> = (0..20).map(|i| tick("A", i)).collect();
    p.publish(&burst);
    p.wire = Some(0);
    assert!(
        !p.session.fill(&p.journal),
        "not caught up: the buffer is full"
    );
    assert!(
        p.session.queued() <= 64 + 19,
        "bounded: {}",
        p.session.queued()
    );
    p.wire = None;
    let mut data = Vec::new();
    for _ in 0..20 {
        p.pump();
        data.extend(p.seen());
    }
    assert_eq!(
        data,
        burst
            .iter()
            .map(|m| Seen::Data(m.clone()))
            .collect::<Vec<_>>()
    );
}

#[test]
fn end_of_session_follows_the_last_message() {
    let mut p = Pair::new(Role::Subscriber);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.seen();
    p.publish(&[tick("A", 1)]);
    p.pump();
    p.session.end_of_session();
    p.step();
    assert_eq!(p.seen(), vec![Seen::Data(tick("A", 1)), Seen::EndOfSession]);
}

#[test]
fn filters_are_capped_as_they_arrive_not_at_login() {
    let mut p = Pair::new(Role::Subscriber);
    let symbols: Vec<String> = (0..400).map(|i| format!("S{i:05}")).collect();
    let one = filter_packets(&symbols.join(","), "");
    // Three packets of 400 entries: the third passes the 1,024-entry cap and is refused at once,
    // before any login.
    p.send(&one);
    p.send(&one);
    assert_eq!(p.take_events(), vec![], "800 entries are within the cap");
    p.send(&one);
    let events = p.take_events();
    assert!(
        matches!(&events[0], Event::Refused(r) if r.contains("filter refused")),
        "{events:?}"
    );
    assert!(
        matches!(&events[1], Event::Close(CloseReason::Refused(_))),
        "{events:?}"
    );
    assert!(!p.session.logged_in());
}

fn snapshot_packet() -> Vec<u8> {
    let mut b = Vec::new();
    HerzControl::Snapshot.encode_packet(&mut b).unwrap();
    b
}

/// Replays what a Herz client keeps: its counter (S packets and SKIPs), the messages with their
/// sequence numbers, and where `HERZ LIVE` said the live stream starts.
/// Messages with their sequence numbers, as a client numbers them.
type Numbered = Vec<(u64, Vec<u8>)>;

fn client_view(seen: &[Seen], mut counter: u64) -> (Numbered, Option<u64>, u64) {
    let (mut msgs, mut live) = (Vec::new(), None);
    for s in seen {
        match s {
            Seen::Data(d) => {
                msgs.push((counter, d.clone()));
                counter += 1;
            }
            Seen::Debug(t) => match HerzControl::parse(t.as_bytes()).unwrap() {
                Some(HerzControl::Skip { count, .. }) => counter += count,
                Some(HerzControl::Live { next }) => {
                    assert_eq!(next, counter, "LIVE where the counter is");
                    live = Some(next);
                }
                other => panic!("unexpected {other:?}"),
            },
            Seen::Heartbeat => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    (msgs, live, counter)
}

/// A late joiner asking for a snapshot gets the latest retained message of each symbol (of its
/// filter), in sequence order, every other message accounted for by SKIPs, `HERZ LIVE` at the
/// head of the login, then every new message: no gap, no duplicate.
#[test]
fn a_snapshot_sends_the_latest_per_symbol_then_goes_live() {
    for filtered in [false, true] {
        let mut p = Pair::new(Role::Subscriber);
        p.publish(&[
            tick("AAPL", 1),
            tick("MSFT", 1),
            tick("AAPL", 2),
            tick("TSLA", 1),
            tick("MSFT", 2),
            tick("AAPL", 3),
        ]);
        let mut hello = snapshot_packet();
        if filtered {
            hello.extend(filter_packets("AAPL,TSLA", ""));
        }
        p.send(&hello);
        p.login("demo", "demo", SessionName::BLANK, 0);
        assert_eq!(p.seen(), vec![Seen::Accepted(1)]);
        p.pump();
        let (msgs, live, counter) = client_view(&p.seen(), 1);
        let want: Numbered = if filtered {
            vec![(4, tick("TSLA", 1)), (6, tick("AAPL", 3))]
        } else {
            vec![
                (4, tick("TSLA", 1)),
                (5, tick("MSFT", 2)),
                (6, tick("AAPL", 3)),
            ]
        };
        assert_eq!(msgs, want, "filtered: {filtered}");
        assert_eq!((live, counter), (Some(7), 7));
        // Live: every new message of the filter, numbered on.
        p.publish(&[tick("AAPL", 4), tick("MSFT", 3), tick("AAPL", 5)]);
        p.pump();
        let (msgs, live, counter) = client_view(&p.seen(), counter);
        let want: Numbered = if filtered {
            vec![(7, tick("AAPL", 4)), (9, tick("AAPL", 5))]
        } else {
            vec![
                (7, tick("AAPL", 4)),
                (8, tick("MSFT", 3)),
                (9, tick("AAPL", 5)),
            ]
        };
        assert_eq!((msgs, live), (want, None));
        assert!(counter >= 9);
    }
}

/// A window larger than one planning step is planned over several fills (nothing is sent until
/// the plan is complete), then sent exactly.
#[test]
fn a_large_snapshot_is_planned_in_steps_and_stays_exact() {
    let mut p = Pair::new(Role::Subscriber);
    p.journal = Journal::new(JournalConfig {
        max_messages: 300_000,
        max_bytes: 64 << 20,
        max_message_len: 1024,
    });
    let symbols = ["A", "B", "C", "D", "E"];
    let n = 150_000u64;
    for i in 0..n {
        p.journal
            .append(&tick(symbols[(i % 5) as usize], (i % 251) as u8))
            .unwrap();
    }
    p.send(&snapshot_packet());
    p.login("demo", "demo", SessionName::BLANK, 0);
    assert_eq!(p.seen(), vec![Seen::Accepted(1)]);
    let mut fills = 0;
    while !p.session.fill(&p.journal) {
        fills += 1;
        assert!(
            p.session.transmit().is_empty(),
            "sent before the plan was complete"
        );
        assert!(fills < 10);
    }
    assert_eq!(fills, (n / snapshot::PLAN_BUDGET) as usize);
    p.step();
    let (msgs, live, counter) = client_view(&p.seen(), 1);
    let seqs: Vec<u64> = msgs.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (n - 4..=n).collect::<Vec<_>>());
    assert_eq!((live, counter), (Some(n + 1), n + 1));
}

#[test]
fn a_snapshot_after_login_or_from_a_publisher_is_refused() {
    let mut p = Pair::new(Role::Subscriber);
    p.login("demo", "demo", SessionName::BLANK, 0);
    p.seen();
    p.send(&snapshot_packet());
    assert!(matches!(
        p.seen().as_slice(),
        [Seen::Debug(t)] if t.starts_with("HERZ ERROR HERZ SNAPSHOT is only accepted")
    ));
    let mut p = Pair::new(Role::Publisher);
    p.send(&snapshot_packet());
    assert!(matches!(p.seen().as_slice(), [Seen::Debug(t)] if t.starts_with("HERZ ERROR")));
}
