//! The durable journal from outside: a daemon killed with SIGKILL mid-stream and started again on
//! the same directory loses nothing and renumbers nothing, for SoupBinTCP subscribers and for a
//! multicast receiver recovering through re-requests; resumes the journal cannot serve are refused
//! with `J`/`S`; a directory of another session is refused at start.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use herz_client::{
    mold::{MoldEvent, MoldReceiver, MoldReceiverConfig, StartFrom},
    soup::{SoupClientError, SoupSubscriber},
};
use herz_core::protocol::{moldudp64::Session, soupbintcp::RejectReason};
use herz_tests::{
    dist::{self, Endpoints, LOGIN_TIMEOUT, message, publish, receive_exact},
    herz, unique_id,
};
use herz_user::config::{ChannelConfig, Config, Durability};

/// A durable journal in `journal`, small segments (many files, rollovers under test), and an
/// unfiltered multicast channel on loopback.
fn durable(c: &mut Config, journal: &Path, group: SocketAddr) {
    c.journal.dir = Some(journal.to_path_buf());
    c.journal.segment_bytes = 256 << 10;
    c.journal.durability = Durability::Batch;
    c.channels.push(ChannelConfig {
        name: "all".into(),
        group,
        interface: Ipv4Addr::LOCALHOST.into(),
        ..Default::default()
    });
}

fn login(addr: SocketAddr, next: u64) -> Result<SoupSubscriber, SoupClientError> {
    let mut sub = SoupSubscriber::connect(addr, LOGIN_TIMEOUT)?;
    sub.login("tester", "t3st3r", Session::BLANK, next, None)?;
    Ok(sub)
}

fn rejected_with(result: Result<SoupSubscriber, SoupClientError>) -> RejectReason {
    match result {
        Err(SoupClientError::LoginRejected { reason, .. }) => reason,
        Err(e) => panic!("expected Login Rejected, got {e}"),
        Ok(_) => panic!("expected Login Rejected, got Login Accepted"),
    }
}

/// Receives on the multicast receiver until `to` was delivered, checking every message.
fn receive_multicast(rx: &mut MoldReceiver, next: &mut u64, to: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while *next <= to {
        assert!(Instant::now() < deadline, "multicast stuck at {next}");
        rx.poll(Some(Duration::from_millis(100)), |ev| match ev {
            MoldEvent::Message { seq, payload } => {
                assert_eq!(seq, *next, "multicast order");
                assert_eq!(payload, &message(seq)[..], "multicast payload of {seq}");
                *next += 1;
            }
            MoldEvent::Gap { from, count } => panic!("multicast lost {count} from {from}"),
            _ => {}
        })
        .unwrap();
    }
}

#[test]
fn a_kill_9_mid_stream_loses_nothing_and_renumbers_nothing() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let journal = tempfile::tempdir().unwrap();
    let group_ip = Ipv4Addr::new(239, 18, 202, (unique_id() % 250) as u8 + 1);
    let group = SocketAddr::from((group_ip, dist::free_port()));
    let (mut d, dir) = dist::start(&ep, |c| durable(c, journal.path(), group));
    let config = d.config.clone();
    let mold = MoldReceiverConfig::multicast(group_ip, group.port(), Ipv4Addr::LOCALHOST)
        .with_start(StartFrom::Sequence(1))
        .with_rerequest(ep.rerequest);
    let mut rx = MoldReceiver::new(mold).unwrap();
    let mut rx_next = 1;

    const FIRST: u64 = 30_000;
    const MIDSTREAM: u64 = 100_000;
    const N: u64 = 150_000;
    // Subscribers at different positions: one from the start, one that stops early, one live.
    let mut from_start = login(ep.subscribers, 1).unwrap();
    let mut early = login(ep.subscribers, 1).unwrap();
    publish(ep.publishers, 1, FIRST);
    let full_next = receive_exact(&mut from_start, 1, FIRST, Duration::from_secs(60));
    let early_next = receive_exact(&mut early, 1, 10_000, Duration::from_secs(60));
    receive_multicast(&mut rx, &mut rx_next, FIRST);

    // kill -9 with messages flowing: a publisher is mid-stream (about 50k messages/s) when the
    // daemon dies.
    let publisher = ep.publishers;
    let midstream = std::thread::spawn(move || {
        let mut p = herz_client::soup::SoupPublisher::connect(publisher, LOGIN_TIMEOUT).unwrap();
        p.login("pubber", "pubb3r").unwrap();
        for i in 0..MIDSTREAM {
            if p.send(&message(FIRST + 1 + i)).is_err() {
                break;
            }
            if i % 50 == 49 {
                if p.flush().is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = dist::http_get(&ep, "/state").1;
        let v: serde_json::Value = serde_json::from_str(&state).unwrap();
        if v["journal_head"].as_u64().unwrap() > FIRST + 5_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mid-stream publisher never got going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d.stop_with(libc::SIGKILL);
    midstream.join().unwrap();
    drop((from_start, early));

    let mut d = dist::serve(&config);
    let log = d.log();
    assert!(log.contains("journal recovered"), "{log}");
    // Where did the journal get to? Whatever the killed daemon had appended is kept; a new
    // subscriber from 1 reads it all back, numbered as before.
    let mut probe = login(ep.subscribers, 0).unwrap();
    let resumed_head = probe.next_seq();
    let recovered = log
        .lines()
        .find(|l| l.contains("journal recovered"))
        .unwrap_or_default();
    eprintln!("after SIGKILL: next sequence {resumed_head}; {recovered}");
    drop(probe.logout());
    assert!(
        resumed_head > FIRST,
        "nothing of the mid-stream publisher kept? {resumed_head}"
    );
    // The killed daemon's messages from FIRST + 1 on were published by the mid-stream publisher
    // as message(FIRST + 1 + i): byte-identical to the numbering the tests check. The rest of
    // the run continues from the recovered head.
    publish_from(ep.publishers, resumed_head, N);
    assert!(
        resumed_head <= N,
        "the mid-stream publisher outran the test: {resumed_head}"
    );

    // Every subscriber resumes exactly where it was; a new one reads 1..N from disk and memory.
    let mut a = login(ep.subscribers, full_next).unwrap();
    receive_exact(&mut a, full_next, N, Duration::from_secs(60));
    let mut b = login(ep.subscribers, early_next).unwrap();
    receive_exact(&mut b, early_next, N, Duration::from_secs(60));
    let mut c = login(ep.subscribers, 1).unwrap();
    receive_exact(&mut c, 1, N, Duration::from_secs(60));
    // The multicast receiver missed what was sent while the daemon was down and re-requests it.
    receive_multicast(&mut rx, &mut rx_next, N);
    let stats = rx.stats();
    assert_eq!(stats.gaps, 0, "{stats:?}");

    // Beyond the head: numbers this journal never gave: refused, not served.
    assert_eq!(
        rejected_with(login(ep.subscribers, N + 2)),
        RejectReason::SessionNotAvailable
    );
    d.stop_with(libc::SIGTERM);
    drop(dir);
}

/// Publishes `from..=to` as [`message`]s (the numbering the tests check).
fn publish_from(addr: SocketAddr, from: u64, to: u64) {
    if from <= to {
        publish(addr, from, to);
    }
}

#[test]
fn a_resume_before_the_oldest_retained_message_is_refused() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let journal = tempfile::tempdir().unwrap();
    let group = SocketAddr::from((
        Ipv4Addr::new(239, 18, 203, (unique_id() % 250) as u8 + 1),
        dist::free_port(),
    ));
    let (mut d, _dir) = dist::start(&ep, |c| {
        durable(c, journal.path(), group);
        c.journal.segment_bytes = 64 << 10;
        c.journal.max_bytes = 4 * (80 << 10);
    });
    // Enough to fill several 64 KiB segments: the oldest are removed.
    publish(ep.publishers, 1, 20_000);
    let deadline = Instant::now() + Duration::from_secs(20);
    let tail = loop {
        let state = dist::http_get(&ep, "/state").1;
        let v: serde_json::Value = serde_json::from_str(&state).unwrap();
        let (head, tail) = (
            v["journal_head"].as_u64().unwrap(),
            v["journal_tail"].as_u64().unwrap(),
        );
        if head == 20_001 && tail > 1 {
            break tail;
        }
        assert!(
            Instant::now() < deadline,
            "retention never removed a segment: {state}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        rejected_with(login(ep.subscribers, 1)),
        RejectReason::SessionNotAvailable
    );
    assert_eq!(
        rejected_with(login(ep.subscribers, tail - 1)),
        RejectReason::SessionNotAvailable
    );
    let mut sub = login(ep.subscribers, tail).unwrap();
    receive_exact(&mut sub, tail, 20_000, Duration::from_secs(30));
    let files = std::fs::read_dir(journal.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "hzj"))
        })
        .count();
    assert!((2..=4).contains(&files), "{files} segment files");
    d.stop_with(libc::SIGTERM);
}

#[test]
fn a_directory_of_another_session_is_refused_at_start() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let journal = tempfile::tempdir().unwrap();
    let group = SocketAddr::from((Ipv4Addr::new(239, 18, 204, 1), dist::free_port()));
    let (mut d, dir) = dist::start(&ep, |c| durable(c, journal.path(), group));
    publish(ep.publishers, 1, 100);
    d.stop_with(libc::SIGTERM);
    let mut other = herz_tests::read_config(&d.config);
    other.journal.session = Some(Session::new("HZOTHER001").unwrap());
    let path = dir.path().join("other.toml");
    herz_tests::write_config(&path, &other);
    let out = herz(&["--config", path.to_str().unwrap(), "run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds session HZTEST0001") && err.contains("HZOTHER001"),
        "{err}"
    );
    // The same configuration without a session name continues the directory's session.
    other.journal.session = None;
    herz_tests::write_config(&path, &other);
    let mut again = dist::serve(&path);
    let mut sub = login(ep.subscribers, 1).unwrap();
    assert_eq!(sub.session().to_string(), "HZTEST0001");
    receive_exact(&mut sub, 1, 100, Duration::from_secs(10));
    // Ending the session on purpose: refused while the daemon holds the directory...
    let dir_arg = journal.path().to_str().unwrap().to_string();
    let out = herz(&["journal", "new-session", "--dir", &dir_arg]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use by another herz daemon"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sub);
    again.stop_with(libc::SIGTERM);
    // ... then archived, and the other session starts at 1 in the same directory.
    let out = herz(&["journal", "new-session", "--dir", &dir_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = herz(&["journal", "info", "--dir", &dir_arg]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no journal yet"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    other.journal.session = Some(Session::new("HZOTHER001").unwrap());
    herz_tests::write_config(&path, &other);
    let mut renewed = dist::serve(&path);
    let sub = login(ep.subscribers, 0).unwrap();
    assert_eq!(
        (sub.session().to_string().as_str(), sub.next_seq()),
        ("HZOTHER001", 1)
    );
    renewed.stop_with(libc::SIGTERM);
    assert!(journal.path().join("archive").read_dir().unwrap().count() == 1);
}

/// A late joiner's snapshot, served from the segment files after a restart: the latest message of
/// each symbol (of its filter), `HERZ LIVE`, then the live stream, with the counter exact across
/// the two (no gap, no duplicate); and the same through `herz sub --snapshot`.
#[test]
fn a_late_joiner_gets_the_latest_per_symbol_then_the_live_stream() {
    use herz_client::soup::Event;
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let journal = tempfile::tempdir().unwrap();
    let group = SocketAddr::from((Ipv4Addr::new(239, 18, 205, 1), dist::free_port()));
    let (mut d, _dir) = dist::start(&ep, |c| durable(c, journal.path(), group));
    const N: u64 = 20_000;
    let mut watcher = login(ep.subscribers, 1).unwrap();
    publish(ep.publishers, 1, N);
    let watched = receive_exact(&mut watcher, 1, N, Duration::from_secs(30));
    let config = d.config.clone();
    d.stop_with(libc::SIGTERM);
    // The session goes on after the restart: a stop closes the connection without End of Session.
    let (mut ended, mut closed) = (false, false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !closed && Instant::now() < deadline {
        let _ = watcher.poll(Some(Duration::from_millis(100)), |ev| match ev {
            Event::EndOfSession => ended = true,
            Event::Closed => closed = true,
            _ => {}
        });
    }
    assert!(closed && !ended, "closed {closed}, end of session {ended}");
    let mut d = dist::serve(&config);
    // ... and it resumes where it was.
    let watcher = login(ep.subscribers, watched).unwrap();
    assert_eq!(watcher.next_seq(), N + 1);
    drop(watcher);

    let mut head = N;
    for filter in [None, Some(("AAPL,MSFT", ""))] {
        let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
        let f = filter.map(|(s, p)| herz_core::protocol::soupbintcp::Filter::new(s, p).unwrap());
        let accepted = sub
            .login_with_snapshot("tester", "t3st3r", Session::BLANK, 0, f)
            .unwrap();
        assert_eq!(
            accepted.sequence, 1,
            "the window starts at the oldest retained"
        );
        let (mut got, mut counter, mut live) = (Vec::new(), 1u64, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while live.is_none() {
            assert!(Instant::now() < deadline, "no HERZ LIVE; got {got:?}");
            sub.poll(Some(Duration::from_millis(100)), |ev| match ev {
                Event::Message { seq, payload } => {
                    assert_eq!(seq, counter);
                    assert_eq!(payload, &message(seq)[..]);
                    got.push(seq);
                    counter += 1;
                }
                Event::Skip { seq, count, .. } => {
                    assert_eq!(seq, counter);
                    counter += count;
                }
                Event::Live { next } => {
                    assert_eq!(next, counter);
                    live = Some(next);
                }
                Event::Heartbeat => {}
                other => panic!("unexpected {other:?}"),
            })
            .unwrap();
        }
        // The latest of each symbol: the last message of each of the 8 test symbols (or of the
        // two filtered ones), in sequence order.
        let want: Vec<u64> = (head - 7..=head)
            .filter(|&i| filter.is_none() || ["AAPL", "MSFT"].contains(&dist::symbol_of(i)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(live, Some(head + 1));
        // Live from there: everything new (of the filter), numbered on.
        let from = head + 1;
        publish(ep.publishers, from, from + 99);
        head += 100;
        let mut next_live = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while next_live.len() < if filter.is_none() { 100 } else { 25 } {
            assert!(
                Instant::now() < deadline,
                "live stream stuck: {next_live:?}"
            );
            sub.poll(Some(Duration::from_millis(100)), |ev| {
                if let Event::Message { seq, payload } = ev {
                    assert_eq!(payload, &message(seq)[..]);
                    next_live.push(seq);
                }
            })
            .unwrap();
        }
        let want: Vec<u64> = (from..from + 100)
            .filter(|&i| filter.is_none() || ["AAPL", "MSFT"].contains(&dist::symbol_of(i)))
            .collect();
        assert_eq!(next_live, want);
    }

    // The command-line subscriber: the 8 latest, then it says the stream is live.
    let out = herz(&[
        "sub",
        "--connect",
        &ep.subscribers.to_string(),
        "--user",
        "tester",
        "--password",
        "t3st3r",
        "--snapshot",
        "--count",
        "8",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let seqs: Vec<u64> = stdout
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    let latest: Vec<u64> = (head - 7..=head).collect();
    assert_eq!(seqs, latest, "{stdout}");
    d.stop_with(libc::SIGTERM);
}

/// A channel with a symbol filter numbers its own messages; after a restart it counts them again
/// from the journal, so its numbers keep their meaning: a receiver joining afterwards recovers the
/// whole channel session from 1, across the restart, with each number carrying the same message.
#[test]
fn a_filtered_channel_keeps_its_numbering_across_a_restart() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let journal = tempfile::tempdir().unwrap();
    let group_ip = Ipv4Addr::new(239, 18, 206, (unique_id() % 250) as u8 + 1);
    let group = SocketAddr::from((group_ip, dist::free_port()));
    let (mut d, _dir) = dist::start(&ep, |c| {
        c.journal.dir = Some(journal.path().to_path_buf());
        c.journal.segment_bytes = 256 << 10;
        c.channels.push(ChannelConfig {
            name: "aapl".into(),
            group,
            interface: Ipv4Addr::LOCALHOST.into(),
            symbols: vec![herz_core::protocol::tick::Symbol::new("AAPL").unwrap()],
            ..Default::default()
        });
    });
    // Message i is AAPL when i % 8 == 0: channel sequence c carries message 8c.
    publish(ep.publishers, 1, 800);
    let config = d.config.clone();
    d.stop_with(libc::SIGTERM);
    let mut d = dist::serve(&config);
    publish(ep.publishers, 801, 1600);
    let mold = MoldReceiverConfig::multicast(group_ip, group.port(), Ipv4Addr::LOCALHOST)
        .with_start(StartFrom::Sequence(1))
        .with_rerequest(ep.rerequest);
    let mut rx = MoldReceiver::new(mold).unwrap();
    let mut next = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while next <= 200 {
        assert!(Instant::now() < deadline, "channel stuck at {next}");
        rx.poll(Some(Duration::from_millis(100)), |ev| match ev {
            MoldEvent::Message { seq, payload } => {
                assert_eq!(seq, next);
                assert_eq!(payload, &message(8 * seq)[..], "channel sequence {seq}");
                next += 1;
            }
            MoldEvent::Gap { from, count } => panic!("lost {count} from {from}"),
            _ => {}
        })
        .unwrap();
    }
    d.stop_with(libc::SIGTERM);
}
