//! The distributor end to end, over real sockets: fan-out completeness, resume, filters, feeds with
//! A/B arbitration, multicast with loss and recovery, slow consumers, dead peers, malformed input.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use herz_client::{
    SoupPublisher, SoupSubscriber,
    mold::{
        DropRule, MoldEvent, MoldFeedSender, MoldFeedSenderConfig, MoldReceiver,
        MoldReceiverConfig, StartFrom,
    },
    soup::Event,
};
use herz_core::protocol::{
    moldudp64::Session,
    soupbintcp::{self, Filter, SkipReason},
};
use herz_tests::{
    dist::{
        self, Endpoints, LOGIN_TIMEOUT, message, publish, publish_paced, receive_exact, symbol_of,
    },
    netns::VethNs,
    privileged, read_config, unique_id, write_config,
};
use herz_user::config::{ChannelConfig, FeedConfig, SlowConsumerPolicy, User};

fn fan_out_16(
    ep: &Endpoints,
    count: u64,
    run_subscribers: impl FnOnce(Box<dyn FnOnce() + Send>) + Send,
) {
    let subscribers = ep.subscribers;
    let barrier = Arc::new(Barrier::new(17));
    let b = barrier.clone();
    let subs = move || {
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut sub =
                        SoupSubscriber::connect(subscribers, LOGIN_TIMEOUT).expect("connect");
                    let acc = sub
                        .login("tester", "t3st3r", Session::BLANK, 1, None)
                        .expect("login");
                    assert_eq!(acc.sequence, 1);
                    b.wait();
                    receive_exact(&mut sub, 1, count, Duration::from_secs(240));
                })
            })
            .collect();
        for h in handles {
            h.join().expect("subscriber thread");
        }
    };
    let publisher = ep.publishers;
    std::thread::scope(|s| {
        s.spawn(move || run_subscribers(Box::new(subs)));
        barrier.wait();
        publish(publisher, 1, count);
    });
}

#[test]
fn sixteen_subscribers_get_a_million_messages_exactly_over_loopback() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |_| {});
    fan_out_16(&ep, 1_000_000, |subs| subs());
}

#[test]
fn sixteen_subscribers_get_a_million_messages_exactly_across_a_veth_pair() {
    if !privileged("sixteen_subscribers_get_a_million_messages_exactly_across_a_veth_pair") {
        return;
    }
    let net = VethNs::new(unique_id());
    let ep = Endpoints::on(net.host_addr);
    let (_d, _dir) = dist::start(&ep, |_| {});
    fan_out_16(&ep, 1_000_000, |subs| net.run_in(subs));
}

#[test]
fn a_subscriber_resumes_exactly_after_reconnecting() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |_| {});
    publish(ep.publishers, 1, 5000);
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    sub.login("tester", "t3st3r", Session::BLANK, 1, None)
        .unwrap();
    let checked_to = receive_exact(&mut sub, 1, 1234, Duration::from_secs(30));
    let resume = sub.next_seq();
    assert_eq!(resume, checked_to);
    assert!(resume < 5001);
    drop(sub); // abrupt: no logout
    publish(ep.publishers, 5001, 8000);
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    let acc = sub
        .login(
            "tester",
            "t3st3r",
            Session::new("HZTEST0001").unwrap(),
            resume,
            None,
        )
        .unwrap();
    assert_eq!(acc.sequence, resume);
    receive_exact(&mut sub, resume, 8000, Duration::from_secs(30));
    // Nothing more: no duplicates after the last message.
    let extra = sub.recv_timeout(Duration::from_millis(300)).unwrap();
    assert!(
        matches!(extra, None | Some(herz_client::soup::OwnedEvent::Heartbeat)),
        "{extra:?}"
    );
}

/// Receives a filtered stream until `to` is accounted for; returns the sequences of the messages.
fn receive_filtered(sub: &mut SoupSubscriber, from: u64, to: u64, wanted: &[&str]) -> Vec<u64> {
    let start = Instant::now();
    let mut next = from;
    let mut got = Vec::new();
    while next <= to {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out at {next}"
        );
        sub.poll(Some(Duration::from_millis(200)), |ev| match ev {
            Event::Message { seq, payload } => {
                assert_eq!(seq, next);
                assert_eq!(payload, &message(seq)[..]);
                assert!(
                    wanted.contains(&symbol_of(seq)),
                    "seq {seq} ({}) does not match the filter",
                    symbol_of(seq)
                );
                got.push(seq);
                next += 1;
            }
            Event::Skip { seq, count, reason } => {
                assert_eq!(seq, next);
                assert_eq!(reason, SkipReason::Filtered);
                for s in seq..seq + count {
                    assert!(
                        !wanted.contains(&symbol_of(s)),
                        "matching seq {s} was skipped"
                    );
                }
                next += count;
            }
            Event::Heartbeat | Event::Debug(_) => {}
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
    }
    got
}

#[test]
fn a_filtered_subscriber_gets_only_its_symbols_and_resumes_without_loss() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |_| {});
    publish(ep.publishers, 1, 4000);
    // Exact symbol AAPL plus every symbol starting with BR (BRK, BRKB).
    let wanted = ["AAPL", "BRK", "BRKB"];
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    sub.login(
        "tester",
        "t3st3r",
        Session::BLANK,
        1,
        Some(Filter::new("AAPL", "BR").unwrap()),
    )
    .unwrap();
    let first = receive_filtered(&mut sub, 1, 2000, &wanted);
    let resume = sub.next_seq();
    drop(sub);
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    sub.login(
        "tester",
        "t3st3r",
        Session::BLANK,
        resume,
        Some(Filter::new("AAPL", "BR").unwrap()),
    )
    .unwrap();
    let second = receive_filtered(&mut sub, resume, 4000, &wanted);
    let all: Vec<u64> = first.into_iter().chain(second).collect();
    let expected: Vec<u64> = (1..=4000)
        .filter(|i| wanted.contains(&symbol_of(*i)))
        .collect();
    assert_eq!(all, expected, "every matching message exactly once");
}

#[test]
fn bad_logins_are_rejected_per_spec() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |_| {});
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    let e = sub
        .login("tester", "wrong", Session::BLANK, 1, None)
        .unwrap_err();
    assert!(
        e.to_string().contains("not authorized") || e.to_string().contains("'A'"),
        "{e}"
    );
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    let e = sub
        .login(
            "tester",
            "t3st3r",
            Session::new("OTHERSESS").unwrap(),
            1,
            None,
        )
        .unwrap_err();
    assert!(e.to_string().contains("session"), "{e}");
    // A publisher login on the subscriber port is not authorized.
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    assert!(
        sub.login("pubber", "pubb3r", Session::BLANK, 1, None)
            .is_err()
    );
}

#[test]
fn malformed_input_closes_only_that_session() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (d, _dir) = dist::start(&ep, |_| {});
    let mut good = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    good.login("tester", "t3st3r", Session::BLANK, 0, None)
        .unwrap();
    let bad_inputs: [&[u8]; 4] = [
        b"\x00\x00",      // zero length
        b"\x00\x05Xabcd", // unknown type
        b"\x00\x02L!",    // login of the wrong length
        b"\xff\xffL",     // longer than the client limit
    ];
    for bad in bad_inputs {
        let mut s = TcpStream::connect(ep.subscribers).unwrap();
        s.write_all(bad).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        // Herz closes the connection (EOF or reset), without answering.
        match s.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("expected close, got {:?}", &buf[..n]),
        }
    }
    // A bad message from a publisher (shorter than type + symbol) closes that publisher.
    let mut p = SoupPublisher::connect(ep.publishers, LOGIN_TIMEOUT).unwrap();
    p.login("pubber", "pubb3r").unwrap();
    p.send(b"Qshort").unwrap();
    let _ = p.flush();
    std::thread::sleep(Duration::from_millis(200));
    // Everyone else is unaffected.
    publish(ep.publishers, 1, 1000);
    receive_exact(&mut good, 1, 1000, Duration::from_secs(20));
    let log = d.log();
    assert!(
        log.matches("Malformed").count() >= 5,
        "each malformed close is logged with its reason:\n{log}"
    );
}

#[test]
fn a_b_feed_arbitration_loses_nothing_when_each_line_drops_packets() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (a, b) = (dist::free_port(), dist::free_port());
    let mut cfg = MoldFeedSenderConfig::new(
        Session::new("UPSTREAM01").unwrap(),
        vec![
            SocketAddr::from(([127, 0, 0, 1], a)),
            SocketAddr::from(([127, 0, 0, 1], b)),
        ],
    );
    cfg.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut sender = MoldFeedSender::new(cfg).unwrap();
    let rerequest = sender.local_addr();
    let (d, _dir) = dist::start(&ep, |c| {
        c.feeds.push(FeedConfig {
            name: "upstream".into(),
            lines: vec![
                SocketAddr::from(([127, 0, 0, 1], a)),
                SocketAddr::from(([127, 0, 0, 1], b)),
            ],
            rerequest: Some(rerequest),
            from_start: true,
            ..Default::default()
        });
    });
    // Each line loses 20% of its packets independently; the few packets lost on both come back
    // through the re-request server.
    sender
        .set_drop(
            0,
            DropRule {
                probability: 0.2,
                ..Default::default()
            },
        )
        .unwrap();
    sender
        .set_drop(
            1,
            DropRule {
                probability: 0.2,
                ..Default::default()
            },
        )
        .unwrap();
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    sub.login("tester", "t3st3r", Session::BLANK, 1, None)
        .unwrap();
    const N: u64 = 50_000;
    let handle = std::thread::spawn(move || {
        for i in 1..=N {
            sender.push(&message(i)).unwrap();
            if i % 200 == 0 {
                sender.flush().unwrap();
                sender.serve_rerequests_once(Duration::ZERO).unwrap();
            }
        }
        sender.flush().unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            sender
                .serve_rerequests_once(Duration::from_millis(20))
                .unwrap();
            sender.maintain().unwrap();
        }
        sender.stats()
    });
    receive_exact(&mut sub, 1, N, Duration::from_secs(60));
    let stats = handle.join().unwrap();
    assert!(
        stats.datagrams_dropped > 300,
        "loss was injected on both lines: {stats:?}"
    );
    assert!(
        stats.replies > 0,
        "packets lost on both lines were re-requested: {stats:?}"
    );
    assert!(!d.log().contains("lost"), "{}", d.log());
    // The feed's own counters, as its arbiter keeps them.
    let m = dist::scrape(&ep);
    assert_eq!(dist::sample(&m, "herz_feed_in_messages_total"), N as f64);
    assert!(dist::sample(&m, "herz_feed_duplicates_total") > (N / 4) as f64);
    assert!(dist::sample(&m, "herz_feed_gaps_total") > 0.0);
}

/// A deliberately slow SoupBinTCP reader: tiny receive buffer, small reads with pauses (about 1% of
/// a normal reader's speed), then full speed once `fast` is set. Checks every message byte for byte
/// and accounts for every sequence number (messages + skip markers). Returns (messages, skips by
/// reason, the last message per symbol, whether the server closed the connection early).
struct SlowResult {
    messages: u64,
    dropped: u64,
    conflated: u64,
    closed_at: Option<u64>,
    last_by_symbol: std::collections::BTreeMap<&'static str, u64>,
}

fn slow_reader(
    addr: SocketAddr,
    user: &str,
    to: u64,
    fast: Arc<std::sync::atomic::AtomicBool>,
) -> SlowResult {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    let login = soupbintcp::LoginRequest::new(user, user, Session::BLANK, 1).unwrap();
    let mut out = Vec::new();
    login.encode(&mut out);
    s.write_all(&out).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0;
    let mut next = 0u64;
    let mut r = SlowResult {
        messages: 0,
        dropped: 0,
        conflated: 0,
        closed_at: None,
        last_by_symbol: Default::default(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while next <= to || next == 0 {
        assert!(Instant::now() < deadline, "slow reader timed out at {next}");
        let fast_now = fast.load(std::sync::atomic::Ordering::Relaxed);
        let want = if fast_now {
            buf.len() - len
        } else {
            512.min(buf.len() - len)
        };
        let n = match s.read(&mut buf[len..len + want]) {
            Ok(0) => {
                r.closed_at = Some(next);
                return r;
            }
            Ok(n) => n,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(_) => {
                r.closed_at = Some(next);
                return r;
            }
        };
        len += n;
        let mut used = 0;
        while let Some((p, k)) =
            soupbintcp::next_server_packet(&buf[used..len], soupbintcp::MAX_PACKET_LEN).unwrap()
        {
            match p {
                soupbintcp::Packet::LoginAccepted(a) => next = a.sequence,
                soupbintcp::Packet::SequencedData(m) => {
                    assert_eq!(m, &message(next)[..], "seq {next}");
                    r.last_by_symbol.insert(symbol_of(next), next);
                    r.messages += 1;
                    next += 1;
                }
                soupbintcp::Packet::Debug(text) => {
                    if let Ok(Some(soupbintcp::HerzControl::Skip { count, reason })) =
                        soupbintcp::HerzControl::parse(text)
                    {
                        match reason {
                            SkipReason::Dropped => r.dropped += count,
                            SkipReason::Conflated => {
                                // Only messages superseded by a later one of the same symbol.
                                for s in next..next + count {
                                    assert!(
                                        (s + 1..)
                                            .take(100_000)
                                            .any(|t| symbol_of(t) == symbol_of(s))
                                    );
                                }
                                r.conflated += count
                            }
                            other => panic!("unexpected skip reason {other:?}"),
                        }
                        next += count;
                    }
                }
                soupbintcp::Packet::LoginRejected(why) => panic!("login rejected: {why:?}"),
                _ => {}
            }
            used += k;
        }
        buf.copy_within(used..len, 0);
        len -= used;
        if !fast_now {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    r
}

fn slow_consumer_scenario(policy: SlowConsumerPolicy) -> (SlowResult, herz_tests::Daemon) {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (d, dir) = dist::start(&ep, |c| {
        c.subscribers.max_lag = 20_000;
        c.subscribers.send_buffer = 65536;
        c.subscribers.users.push(User {
            policy: Some(policy),
            ..dist::user("slow", "slow")
        });
    });
    std::mem::forget(dir);
    const N: u64 = 300_000;
    let fast = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = fast.clone();
    let slow = std::thread::spawn(move || slow_reader(ep.subscribers, "slow", N, f2));
    std::thread::sleep(Duration::from_millis(300));
    let fast_subs: Vec<_> = (0..3)
        .map(|_| {
            let addr = ep.subscribers;
            std::thread::spawn(move || {
                let mut sub = SoupSubscriber::connect(addr, LOGIN_TIMEOUT).unwrap();
                sub.login("tester", "t3st3r", Session::BLANK, 1, None)
                    .unwrap();
                let t = Instant::now();
                receive_exact(&mut sub, 1, N, Duration::from_secs(120));
                t.elapsed()
            })
        })
        .collect();
    // 100k messages/s for 3 s: fast readers keep up; the slow one (about 2% of that) cannot.
    let t = Instant::now();
    publish_paced(ep.publishers, 1, N, Some(100_000));
    let publish_time = t.elapsed();
    for h in fast_subs {
        let took = h.join().expect("fast subscribers get everything");
        // The slow reader never holds the others back: they finish when publishing does.
        assert!(
            took < publish_time + Duration::from_secs(10),
            "fast subscriber took {took:?} (publishing {publish_time:?})"
        );
    }
    fast.store(true, std::sync::atomic::Ordering::Relaxed);
    (slow.join().unwrap(), d)
}

#[test]
fn slow_consumer_disconnect_policy_evicts_only_the_slow_one() {
    let (r, d) = slow_consumer_scenario(SlowConsumerPolicy::Disconnect);
    assert!(
        r.closed_at.is_some(),
        "the slow subscriber was disconnected"
    );
    assert!(r.closed_at.unwrap() < 300_000);
    assert_eq!(r.dropped + r.conflated, 0);
    assert!(d.log().contains("SlowConsumer"), "{}", d.log());
}

#[test]
fn slow_consumer_drop_oldest_skips_ahead_and_says_how_much() {
    let (r, _d) = slow_consumer_scenario(SlowConsumerPolicy::DropOldest);
    assert_eq!(r.closed_at, None);
    assert!(r.dropped > 0, "drop-oldest fired");
    assert_eq!(
        r.messages + r.dropped,
        300_000,
        "every sequence number is a message or a counted skip"
    );
}

#[test]
fn slow_consumer_conflate_sends_the_latest_per_symbol() {
    let (r, _d) = slow_consumer_scenario(SlowConsumerPolicy::Conflate);
    assert_eq!(r.closed_at, None);
    assert!(r.conflated > 0, "conflation fired");
    assert_eq!(r.messages + r.conflated + r.dropped, 300_000);
    // The final state per symbol is the publisher's final state.
    for sym in dist::SYMBOLS {
        let last = (1..=300_000u64)
            .rev()
            .find(|i| symbol_of(*i) == sym)
            .unwrap();
        assert_eq!(r.last_by_symbol.get(sym), Some(&last), "{sym}");
    }
}

#[test]
fn a_dead_peer_is_detected_and_its_fd_freed() {
    if !privileged("a_dead_peer_is_detected_and_its_fd_freed") {
        return;
    }
    let net = VethNs::new(unique_id());
    let ep = Endpoints::on(net.host_addr);
    let (d, _dir) = dist::start(&ep, |c| {
        c.subscribers.timeout_ms = 4000;
        c.subscribers.user_timeout_ms = 2000;
        c.subscribers.keepalive_secs = 1;
    });
    let pid = d.child.as_ref().unwrap().id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    let addr = ep.subscribers;
    // Log in from the namespace and keep the socket open (the thread's socket stays in the namespace).
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        net.spawn_in(move || {
            let mut sub = SoupSubscriber::connect(addr, LOGIN_TIMEOUT).unwrap();
            sub.login("tester", "t3st3r", Session::BLANK, 0, None)
                .unwrap();
            let _ = rx.recv();
            std::mem::forget(sub);
        })
    };
    let t = Instant::now();
    while fds() <= before {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "session fd never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The peer vanishes: its namespace (and the veth pair) is deleted; no FIN, no RST.
    let vanished = Instant::now();
    drop(net);
    let _ = tx.send(());
    holder.join().unwrap();
    while fds() > before {
        assert!(
            vanished.elapsed() < Duration::from_secs(10),
            "the dead peer's fd was not freed within 10 s:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = vanished.elapsed();
    assert!(
        took <= Duration::from_millis(4500),
        "detected after {took:?}, configured timeout 4 s"
    );
    let log = d.log();
    assert!(
        log.contains("HeartbeatTimeout") || log.contains("SocketError"),
        "{log}"
    );
}

#[test]
fn multicast_subscriber_in_a_namespace_recovers_5_percent_loss_through_rerequests() {
    if !privileged("multicast_subscriber_in_a_namespace_recovers_5_percent_loss_through_rerequests")
    {
        return;
    }
    let net = VethNs::new(unique_id());
    let ep = Endpoints::on(net.host_addr);
    let port = dist::free_port();
    let group = Ipv4Addr::new(239, 18, (unique_id() % 250) as u8, 1);
    let (d, _dir) = dist::start(&ep, |c| {
        c.channels.push(ChannelConfig {
            name: "all".into(),
            group: SocketAddr::from((group, port)),
            interface: net.host_addr.into(),
            ..Default::default()
        });
    });
    // 5% random loss on the subscriber's path, inside its namespace.
    let port_s = port.to_string();
    for cmd in [
        &["nft", "add", "table", "inet", "hzloss"][..],
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "hzloss",
            "input",
            "{ type filter hook input priority 0; }",
        ],
        &[
            "nft", "add", "rule", "inet", "hzloss", "input", "udp", "dport", &port_s, "numgen",
            "random", "mod", "100", "lt", "5", "drop",
        ],
    ] {
        let out = net.exec(cmd);
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    const N: u64 = 100_000;
    let ns_addr = net.ns_addr;
    let rerequest = ep.rerequest;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = {
        net.spawn_in(move || {
            let cfg = MoldReceiverConfig::multicast(group, port, ns_addr)
                .with_rerequest(rerequest)
                .with_start(StartFrom::Sequence(1));
            let mut rx = MoldReceiver::new(cfg).unwrap();
            ready_tx.send(()).unwrap();
            let mut next = 1;
            let deadline = Instant::now() + Duration::from_secs(120);
            while next <= N {
                assert!(
                    Instant::now() < deadline,
                    "multicast receiver stuck at {next}"
                );
                rx.poll(Some(Duration::from_millis(100)), |ev| match ev {
                    MoldEvent::Message { seq, payload } => {
                        assert_eq!(seq, next);
                        assert_eq!(payload, &message(seq)[..]);
                        next += 1;
                    }
                    MoldEvent::Gap { from, count } => panic!("unrecovered gap {from}+{count}"),
                    _ => {}
                })
                .unwrap();
            }
            rx.stats()
        })
    };
    ready_rx.recv().unwrap();
    publish(ep.publishers, 1, N);
    let stats = receiver.join().expect("every message recovered in order");
    assert!(
        stats.requests_sent > 0,
        "losses were recovered through the re-request server: {stats:?}"
    );
    assert_eq!(stats.gaps, 0, "{stats:?}");
    drop(d);
    drop(net);
}

#[test]
fn a_multicast_channel_sends_every_message_exactly_once() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let port = dist::free_port();
    let group = Ipv4Addr::new(239, 18, 200, (unique_id() % 250) as u8 + 1);
    // A short flush delay, so that both full and timed-out packets occur.
    let (_d, _dir) = dist::start(&ep, |c| {
        c.channels.push(ChannelConfig {
            name: "all".into(),
            group: SocketAddr::from((group, port)),
            interface: Ipv4Addr::LOCALHOST.into(),
            flush_us: 50,
            ..Default::default()
        });
    });
    let cfg = MoldReceiverConfig::multicast(group, port, Ipv4Addr::LOCALHOST)
        .with_start(StartFrom::Sequence(1));
    let mut rx = MoldReceiver::new(cfg.with_rerequest(ep.rerequest)).unwrap();
    const N: u64 = 30_000;
    // Bursts and pauses, so that packets close both when full and when the flush delay expires.
    let publisher = ep.publishers;
    let h = std::thread::spawn(move || {
        for k in 0..30 {
            publish(publisher, k * 1000 + 1, k * 1000 + 1000);
            std::thread::sleep(Duration::from_millis(3));
        }
    });
    let mut next = 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next <= N {
        assert!(Instant::now() < deadline, "stuck at {next}");
        rx.poll(Some(Duration::from_millis(100)), |ev| {
            if let MoldEvent::Message { seq, payload } = ev {
                assert_eq!(seq, next);
                assert_eq!(payload, &message(seq)[..]);
                next += 1;
            }
        })
        .unwrap();
    }
    h.join().unwrap();
    let stats = rx.stats();
    assert_eq!(stats.duplicates, 0, "each message is sent once: {stats:?}");
    assert_eq!(stats.gaps, 0, "{stats:?}");
}

/// Reads server packets until the connection closes; returns them as (type, payload).
fn read_until_closed(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let mut out = Vec::new();
    let mut used = 0;
    while let Ok(Some((p, k))) = soupbintcp::next_packet(&buf[used..]) {
        let mut bytes = Vec::new();
        p.encode(&mut bytes).unwrap();
        out.push((bytes[2], bytes[3..].to_vec()));
        used += k;
    }
    out
}

#[test]
fn a_bad_or_late_filter_is_refused_with_herz_error_before_the_close() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (d, _dir) = dist::start(&ep, |_| {});
    // Malformed FILTER before login.
    let mut s = TcpStream::connect(ep.subscribers).unwrap();
    let mut out = Vec::new();
    soupbintcp::encode_debug(b"HERZ FILTER symbols=", &mut out).unwrap();
    s.write_all(&out).unwrap();
    let packets = read_until_closed(&mut s);
    assert_eq!(packets.len(), 1, "{packets:?}");
    assert_eq!(packets[0].0, b'+');
    assert!(
        String::from_utf8_lossy(&packets[0].1).starts_with("HERZ ERROR "),
        "{packets:?}"
    );
    // FILTER after the Login Request.
    let mut s = TcpStream::connect(ep.subscribers).unwrap();
    let mut out = Vec::new();
    soupbintcp::LoginRequest::new("tester", "t3st3r", Session::BLANK, 0)
        .unwrap()
        .encode(&mut out);
    soupbintcp::encode_debug(b"HERZ FILTER symbols=AAPL", &mut out).unwrap();
    s.write_all(&out).unwrap();
    let packets = read_until_closed(&mut s);
    let types: Vec<u8> = packets.iter().map(|p| p.0).collect();
    assert_eq!(types.first(), Some(&b'A'), "{packets:?}");
    let last = packets.last().unwrap();
    assert_eq!(last.0, b'+');
    assert!(
        String::from_utf8_lossy(&last.1).contains("only accepted before the Login Request"),
        "{packets:?}"
    );
    assert!(d.log().contains("Refused"), "{}", d.log());
    // A rejected login too; then no session may still be counted.
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    assert!(
        sub.login("tester", "wrong", Session::BLANK, 0, None)
            .is_err()
    );
    std::thread::sleep(Duration::from_millis(300));
    let m = dist::scrape(&ep);
    for s in m.samples.iter().filter(|s| s.metric == "herz_sessions") {
        assert!(
            matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 0.0),
            "{s:?}"
        );
    }
    assert_eq!(dist::sample(&m, "herz_malformed_closes_total"), 2.0);
    assert_eq!(dist::sample(&m, "herz_logins_rejected_total"), 1.0);
}

/// A publisher whose messages and FIN reach Herz together (one write, then shutdown): every message is
/// appended, and the close is noticed at once, not at the heartbeat timeout. Herz stops reading a
/// socket after a short read unless the readiness event says the peer closed; this checks that the
/// FIN is never left unread.
#[test]
fn a_publisher_closing_right_after_its_data_loses_nothing_and_is_closed_at_once() {
    const N: u64 = 500;
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |_| {});
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    sub.login("tester", "t3st3r", Session::BLANK, 1, None)
        .unwrap();
    for round in 0..5u64 {
        let mut out = Vec::new();
        soupbintcp::LoginRequest::new("pubber", "pubb3r", Session::BLANK, 0)
            .unwrap()
            .encode(&mut out);
        for i in round * N + 1..=(round + 1) * N {
            soupbintcp::encode_unsequenced(&message(i), &mut out).unwrap();
        }
        let mut p = TcpStream::connect(ep.publishers).unwrap();
        p.write_all(&out).unwrap();
        p.shutdown(std::net::Shutdown::Write).unwrap();
        receive_exact(
            &mut sub,
            round * N + 1,
            (round + 1) * N,
            Duration::from_secs(10),
        );
        // Herz closes its side once it has seen the FIN: the read returns 0.
        p.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match p.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => panic!(
                    "round {round}: Herz did not close the publisher within {:?}: {e}",
                    start.elapsed()
                ),
            }
        }
    }
    let m = dist::scrape(&ep);
    assert_eq!(
        dist::sample(&m, "herz_publisher_messages_total"),
        (5 * N) as f64
    );
    let publishers = m
        .samples
        .iter()
        .find(|s| s.metric == "herz_sessions" && s.labels.get("role") == Some("publisher"));
    if let Some(p) = publishers {
        assert!(
            matches!(p.value, prometheus_parse::Value::Gauge(v) if v == 0.0),
            "{p:?}"
        );
    }
}

/// SIGHUP applies new logins without a restart (no control plane needed): a removed user is refused, an
/// added one logs in, and a session already logged in keeps streaming.
#[test]
fn a_reload_changes_logins_live_and_keeps_the_sessions_already_in() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (mut d, _dir) = dist::start(&ep, |_| {});
    let config = read_config(&d.config);
    let mut kept = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    kept.login("tester", "t3st3r", Session::BLANK, 1, None)
        .unwrap();
    // Replace demo/demo by ops/s3cret, and turn the control plane off: SIGHUP must not depend on it.
    let mut reloaded = config.clone();
    reloaded.subscribers.users = vec![dist::user("ops", "s3cret")];
    reloaded.control.enabled = false;
    assert_ne!(reloaded, config);
    write_config(&d.config, &reloaded);
    d.reload();
    let line = d
        .log()
        .lines()
        .find(|l| l.contains("reload applied"))
        .unwrap()
        .to_string();
    assert!(line.contains("users") && line.contains("control"), "{line}");
    let mut old = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    assert!(
        old.login("tester", "t3st3r", Session::BLANK, 1, None)
            .is_err()
    );
    let mut new = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    new.login("ops", "s3cret", Session::BLANK, 1, None).unwrap();
    publish(ep.publishers, 1, 100);
    assert_eq!(
        receive_exact(&mut kept, 1, 100, Duration::from_secs(10)),
        101
    );
    assert_eq!(
        receive_exact(&mut new, 1, 100, Duration::from_secs(10)),
        101
    );
    assert!(
        d.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the daemon still runs"
    );
}

/// A multicast channel that the journal overruns (a burst larger than the whole journal arrives between
/// two pumps) cannot send what was evicted: the loss is counted and logged, never silent.
#[test]
fn a_channel_overrun_by_the_journal_counts_and_logs_what_it_never_sent() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let port = dist::free_port();
    let group = Ipv4Addr::new(239, 18, 201, (unique_id() % 250) as u8 + 1);
    let (mut d, _dir) = dist::start(&ep, |c| {
        c.journal.max_messages = 64;
        c.journal.max_bytes = 1 << 20;
        c.channels.push(ChannelConfig {
            name: "small".into(),
            group: SocketAddr::from((group, port)),
            interface: Ipv4Addr::LOCALHOST.into(),
            ..Default::default()
        });
    });
    publish(ep.publishers, 1, 5_000);
    let lost = || dist::sample(&dist::scrape(&ep), "herz_channel_lost_messages_total");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lost() == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no loss counted; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lost = lost();
    assert!(lost > 0.0 && lost < 5_000.0, "{lost}");
    let log = d.log.clone();
    d.wait_for("the loss in the log", Duration::from_secs(5), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("multicast channel fell off the journal")
    });
}

/// A connection that never logs in is closed at the login deadline, however busy it keeps the line
/// with heartbeats, and a subscriber that logs in is not disturbed.
#[test]
fn a_connection_that_never_logs_in_is_closed_at_the_login_deadline() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |c| c.subscribers.login_timeout_ms = 500);
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    sub.login("tester", "t3st3r", Session::BLANK, 1, None)
        .unwrap();
    let start = Instant::now();
    let mut idle = TcpStream::connect(ep.subscribers).unwrap();
    idle.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 64];
    let closed_after = loop {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not closed by the deadline"
        );
        // A client heartbeat every 100 ms: activity, but no login.
        if idle
            .write_all(&soupbintcp::CLIENT_HEARTBEAT_PACKET)
            .is_err()
        {
            break start.elapsed();
        }
        match idle.read(&mut buf) {
            Ok(0) => break start.elapsed(),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => break start.elapsed(),
            Ok(_) => panic!("the server sent something to a connection that never logged in"),
        }
    };
    assert!(
        closed_after >= Duration::from_millis(450),
        "closed too early: {closed_after:?}"
    );
    let m = dist::scrape(&ep);
    assert_eq!(dist::sample(&m, "herz_login_timeouts_total"), 1.0);
    publish(ep.publishers, 1, 10);
    assert_eq!(receive_exact(&mut sub, 1, 10, Duration::from_secs(10)), 11);
}
