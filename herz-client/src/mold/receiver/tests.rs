//! Unit tests of the receiver's sequencer: gaps, duplicates, re-requests and end of session.

use herz_core::protocol::moldudp64::{PacketBuilder, encode_end_of_session, encode_heartbeat};

use super::*;

fn session() -> Session {
    Session::new("TEST000001").unwrap()
}

fn data(first: u64, count: u64) -> Vec<u8> {
    let mut b = PacketBuilder::new(1400);
    b.start(session(), first);
    for seq in first..first + count {
        assert_eq!(b.try_push(format!("m{seq}").as_bytes()), Ok(true));
    }
    b.finish().to_vec()
}

fn collect(seq: &mut Sequencer, dgram: &[u8]) -> Vec<OwnedMoldEvent> {
    collect_from(seq, Line::A, dgram)
}

fn collect_from(seq: &mut Sequencer, line: Line, dgram: &[u8]) -> Vec<OwnedMoldEvent> {
    let mut out = Vec::new();
    seq.on_datagram(line, dgram, seq.epoch, &mut |e| out.push(e.to_owned()));
    out
}

fn msgs(events: &[OwnedMoldEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            OwnedMoldEvent::Message { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

fn config(rerequest: bool) -> MoldReceiverConfig {
    let mut c = MoldReceiverConfig::unicast("127.0.0.1:0".parse().unwrap());
    if rerequest {
        c.rerequest = Some("127.0.0.1:9".parse().unwrap());
    }
    c.max_retries = 2;
    c
}

#[test]
fn reorders_and_requests_then_declares_gap() {
    let mut s = Sequencer::new(&config(true)).unwrap();
    assert_eq!(msgs(&collect(&mut s, &data(1, 3))), [1, 2, 3]);
    // 4..=5 lost, 6..=7 arrive: buffered.
    assert!(msgs(&collect(&mut s, &data(6, 2))).is_empty());
    let t0 = s.epoch;
    let mut events = Vec::new();
    let (_, req) = s.on_timer(t0, &mut |e| events.push(e.to_owned()));
    let req = req.expect("request for the gap");
    assert_eq!((req.sequence, req.count), (4, 2));
    // Not due yet: no second request.
    assert!(s.on_timer(t0, &mut |_| {}).1.is_none());
    // The reply fills one message: progress, immediate request for the rest.
    assert_eq!(
        msgs(&collect_from(&mut s, Line::Recovery, &data(4, 1))),
        [4]
    );
    let (_, req) = s.on_timer(t0, &mut |_| {});
    assert_eq!(req.map(|r| (r.sequence, r.count)), Some((5, 1)));
    // Two retries later the gap is declared and buffered messages flow.
    let t1 = t0 + Duration::from_millis(150);
    assert!(s.on_timer(t1, &mut |_| {}).1.is_some());
    let t2 = t1 + Duration::from_millis(150);
    let mut events = Vec::new();
    let (_, req) = s.on_timer(t2, &mut |e| events.push(e.to_owned()));
    assert!(req.is_none());
    assert_eq!(events[0], OwnedMoldEvent::Gap { from: 5, count: 1 });
    assert_eq!(msgs(&events), [6, 7]);
    assert_eq!(s.stats().gaps, 1);
}

#[test]
fn heartbeat_reveals_tail_loss_and_end_of_session_waits() {
    let mut s = Sequencer::new(&config(false)).unwrap();
    assert_eq!(msgs(&collect(&mut s, &data(10, 2))), [10, 11]);
    let mut hb = Vec::new();
    encode_heartbeat(session(), 14, &mut hb);
    let ev = collect(&mut s, &hb);
    assert_eq!(ev, [OwnedMoldEvent::Heartbeat { next_seq: 14 }]);
    let mut eos = Vec::new();
    encode_end_of_session(session(), 14, &mut eos);
    assert!(collect(&mut s, &eos).is_empty());
    let t0 = s.epoch;
    let mut events = Vec::new();
    s.on_timer(t0, &mut |e| events.push(e.to_owned()));
    assert!(events.is_empty(), "reorder grace period first");
    s.on_timer(t0 + Duration::from_millis(101), &mut |e| {
        events.push(e.to_owned())
    });
    assert_eq!(
        events,
        [
            OwnedMoldEvent::Gap { from: 12, count: 2 },
            OwnedMoldEvent::EndOfSession { next_seq: 14 }
        ]
    );
    // Repeated end of session: delivered once only.
    collect(&mut s, &eos);
    let mut again = Vec::new();
    s.on_timer(t0 + Duration::from_secs(1), &mut |e| {
        again.push(e.to_owned())
    });
    assert!(again.is_empty());
}

#[test]
fn start_from_sequence_requests_history_and_ignores_other_sessions() {
    let mut s = Sequencer::new(&config(true).with_start(StartFrom::Sequence(1))).unwrap();
    assert!(msgs(&collect(&mut s, &data(100, 1))).is_empty());
    let (_, req) = s.on_timer(s.epoch, &mut |_| {});
    assert_eq!(req.map(|r| (r.sequence, r.count)), Some((1, 99)));
    let mut other = PacketBuilder::new(1400);
    other.start(Session::new("OTHER").unwrap(), 1);
    other.try_push(b"x").unwrap();
    assert!(collect(&mut s, other.finish()).is_empty());
    assert_eq!(s.stats().foreign_session, 1);
    assert!(collect(&mut s, b"junk").is_empty());
    assert_eq!(s.stats().invalid, 1);
    // Duplicates (A/B) are dropped.
    assert_eq!(msgs(&collect(&mut s, &data(1, 2))), [1, 2]);
    assert!(msgs(&collect(&mut s, &data(1, 2))).is_empty());
    assert_eq!(s.stats().duplicates, 2);
}

#[test]
fn buffer_is_bounded() {
    let mut c = config(true);
    c.max_buffered = 3;
    let mut s = Sequencer::new(&c).unwrap();
    collect(&mut s, &data(1, 1));
    collect(&mut s, &data(3, 10));
    assert_eq!(s.arbiter.buffered(), 3);
    assert_eq!(s.stats().buffer_overflow, 7);
}
