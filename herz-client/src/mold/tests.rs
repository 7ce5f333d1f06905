//! MoldFeedSender → MoldReceiver over loopback, with deliberate loss.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use super::*;

const T: Duration = Duration::from_secs(4);

fn session() -> Session {
    Session::new("FEED000001").unwrap()
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn msg(seq: u64) -> Vec<u8> {
    format!("message {seq:08}").into_bytes()
}

/// Receives until End of Session (or the time limit), checking order and contents.
fn receive_all(rx: &mut MoldReceiver) -> (Vec<u64>, Vec<(u64, u64)>, bool) {
    let (mut seqs, mut gaps, mut ended) = (Vec::new(), Vec::new(), false);
    let start = Instant::now();
    while !ended && start.elapsed() < T {
        rx.poll(Some(Duration::from_millis(100)), |e| match e {
            MoldEvent::Message { seq, payload } => {
                assert_eq!(payload, msg(seq), "payload of {seq}");
                seqs.push(seq);
            }
            MoldEvent::Gap { from, count } => gaps.push((from, count)),
            MoldEvent::Heartbeat { .. } => {}
            MoldEvent::EndOfSession { .. } => ended = true,
        })
        .unwrap();
    }
    (seqs, gaps, ended)
}

/// Runs `feed` in a thread, then keeps serving re-requests until `stop` (bounded by `T`).
fn run_feed<F>(
    mut sender: MoldFeedSender,
    feed: F,
) -> (Arc<AtomicBool>, thread::JoinHandle<MoldSenderStats>)
where
    F: FnOnce(&mut MoldFeedSender) + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let handle = thread::spawn(move || {
        feed(&mut sender);
        let start = Instant::now();
        while !flag.load(Ordering::Relaxed) && start.elapsed() < T {
            sender
                .serve_rerequests_once(Duration::from_millis(10))
                .unwrap();
        }
        sender.stats()
    });
    (stop, handle)
}

#[test]
fn dropped_packets_are_recovered_through_rerequests() {
    const N: u64 = 3000;
    let mut rx = MoldReceiver::new(MoldReceiverConfig::unicast(loopback())).unwrap();
    let mut config = MoldFeedSenderConfig::new(session(), vec![rx.local_addr()]);
    config.bind = loopback();
    let mut sender = MoldFeedSender::new(config).unwrap();
    rx.set_rerequest(Some(sender.local_addr())).unwrap();
    // Lose the first packet, a run in the middle, the tail, and ~5 % at random.
    let mut sequences: BTreeSet<u64> = [2, N].into_iter().collect();
    sequences.extend(1000..1200);
    sender
        .set_drop(
            0,
            DropRule {
                sequences,
                probability: 0.05,
                down: false,
            },
        )
        .unwrap();
    let (stop, feed) = run_feed(sender, |s| {
        for seq in 1..=N {
            s.push(&msg(seq)).unwrap();
        }
        s.end_session(3, Duration::from_millis(50)).unwrap();
    });
    let (seqs, gaps, ended) = receive_all(&mut rx);
    stop.store(true, Ordering::Relaxed);
    let sent = feed.join().unwrap();
    assert!(ended, "no end of session");
    assert!(gaps.is_empty(), "gaps {gaps:?}");
    // The first packet (with sequence 2) was lost: joining at "first seen", the receiver starts
    // with the first packet that arrived, and recovers every later loss.
    let first = seqs[0];
    assert_eq!(seqs, (first..=N).collect::<Vec<_>>());
    let stats = rx.stats();
    assert!(stats.requests_sent > 0 && sent.replies > 0 && sent.datagrams_dropped > 0);
    assert_eq!(stats.gaps, 0);
}

#[test]
fn start_from_one_replays_history_and_heartbeat_reveals_tail_loss() {
    const N: u64 = 40;
    let mut config = MoldReceiverConfig::unicast(loopback()).with_start(StartFrom::Sequence(1));
    config.retry_interval = Duration::from_millis(30);
    let mut rx = MoldReceiver::new(config).unwrap();
    let mut config = MoldFeedSenderConfig::new(session(), vec![rx.local_addr()]);
    config.bind = loopback();
    config.max_packet_len = 80; // a few messages per packet
    let mut sender = MoldFeedSender::new(config).unwrap();
    rx.set_rerequest(Some(sender.local_addr())).unwrap();
    // Everything before 30 is lost on the line (a late joiner), and so is the tail; the first
    // re-request is also lost (retry path).
    sender
        .set_drop(
            0,
            DropRule {
                sequences: (1..30).chain(N - 1..=N).collect(),
                ..DropRule::default()
            },
        )
        .unwrap();
    sender.drop_next_replies(1);
    let (stop, feed) = run_feed(sender, |s| {
        for seq in 1..=N {
            s.push(&msg(seq)).unwrap();
        }
        s.flush().unwrap();
        // Only the heartbeat tells the receiver that N-1 and N exist.
        s.send_heartbeat().unwrap();
        s.serve_rerequests_once(Duration::from_millis(300)).unwrap();
        s.end_session(2, Duration::from_millis(50)).unwrap();
    });
    let (seqs, gaps, ended) = receive_all(&mut rx);
    stop.store(true, Ordering::Relaxed);
    let sent = feed.join().unwrap();
    assert!(ended);
    assert!(gaps.is_empty(), "gaps {gaps:?}");
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    assert!(
        sent.requests_ignored >= 1,
        "the dropped reply was not retried"
    );
}

#[test]
fn unrecoverable_gap_is_reported_not_waited_for() {
    let mut config = MoldReceiverConfig::unicast(loopback()).with_start(StartFrom::Sequence(1));
    config.retry_interval = Duration::from_millis(20);
    config.max_retries = 3;
    let mut rx = MoldReceiver::new(config).unwrap();
    let mut config = MoldFeedSenderConfig::new(session(), vec![rx.local_addr()]);
    config.bind = loopback();
    config.max_packet_len = 20 + 4 * (2 + 16); // 4 messages of 16 bytes per packet
    config.history_packets = 2; // the lost packet is forgotten by the time it is asked for
    let mut sender = MoldFeedSender::new(config).unwrap();
    rx.set_rerequest(Some(sender.local_addr())).unwrap();
    sender
        .set_drop(
            0,
            DropRule {
                sequences: [2].into_iter().collect(),
                ..DropRule::default()
            },
        )
        .unwrap();
    let (stop, feed) = run_feed(sender, |s| {
        for seq in 1..=20 {
            s.push(&msg(seq)).unwrap();
        }
        s.end_session(3, Duration::from_millis(100)).unwrap();
    });
    let start = Instant::now();
    let (seqs, gaps, ended) = receive_all(&mut rx);
    stop.store(true, Ordering::Relaxed);
    feed.join().unwrap();
    assert!(ended);
    assert_eq!(gaps, [(1, 4)]);
    assert_eq!(seqs, (5..=20).collect::<Vec<_>>());
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(rx.stats().gap_messages, 4);
}

#[test]
fn two_lines_are_deduplicated() {
    // Lines A and B both reach the receiver; each loses different packets, no re-requests.
    let mut rx = MoldReceiver::new(MoldReceiverConfig::unicast(loopback())).unwrap();
    let mut config = MoldFeedSenderConfig::new(session(), vec![rx.local_addr(), rx.local_addr()]);
    config.bind = loopback();
    config.max_packet_len = 100;
    let mut sender = MoldFeedSender::new(config).unwrap();
    let rule = |seqs: &[u64]| DropRule {
        sequences: seqs.iter().copied().collect(),
        ..DropRule::default()
    };
    sender.set_drop(0, rule(&[10, 20, 30])).unwrap();
    sender.set_drop(1, rule(&[15, 25])).unwrap();
    assert!(sender.set_drop(2, DropRule::default()).is_err());
    for seq in 1..=50 {
        sender.push(&msg(seq)).unwrap();
    }
    sender.end_session(1, Duration::ZERO).unwrap();
    let (seqs, gaps, ended) = receive_all(&mut rx);
    assert!(ended && gaps.is_empty());
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert!(rx.stats().duplicates > 0);
}

#[test]
fn multicast_on_loopback_if_available() {
    let group = Ipv4Addr::new(239, 255, 77, 1);
    let config = MoldReceiverConfig::multicast(group, 0, Ipv4Addr::LOCALHOST);
    let mut rx = match MoldReceiver::new(config) {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("skipped: cannot join {group} on lo: {e}");
            return;
        }
    };
    let port = rx.local_addr().port();
    let mut config = MoldFeedSenderConfig::new(session(), vec![SocketAddr::from((group, port))]);
    config.interface = Some(Ipv4Addr::LOCALHOST);
    let mut sender = match MoldFeedSender::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipped: cannot send multicast on lo: {e}");
            return;
        }
    };
    for seq in 1..=10 {
        sender.push(&msg(seq)).unwrap();
    }
    if let Err(e) = sender.end_session(1, Duration::ZERO) {
        eprintln!("skipped: multicast send failed: {e}");
        return;
    }
    let (seqs, _, ended) = receive_all(&mut rx);
    if seqs.is_empty() {
        eprintln!("skipped: no multicast route on lo");
        return;
    }
    assert!(ended);
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

#[test]
fn config_errors_are_explicit() {
    let config = MoldReceiverConfig::multicast(Ipv4Addr::new(10, 0, 0, 1), 0, Ipv4Addr::LOCALHOST);
    let err = MoldReceiver::new(config).unwrap_err();
    assert!(
        err.to_string().contains("not an IPv4 multicast group"),
        "{err}"
    );
    let err = MoldFeedSender::new(MoldFeedSenderConfig::new(session(), vec![])).unwrap_err();
    assert!(err.to_string().contains("at least one line"), "{err}");
    let mut config = MoldFeedSenderConfig::new(session(), vec![loopback()]);
    config.bind = loopback();
    let mut sender = MoldFeedSender::new(config).unwrap();
    let err = sender.push(&[0u8; 2000]).unwrap_err();
    assert!(err.to_string().contains("message at sequence 1"), "{err}");
}
