//! Tests of the feed arbiter: every scenario is driven packet by packet with explicit times.

use super::*;
use crate::{
    engine::alloc_count::allocations,
    protocol::moldudp64::{PacketBuilder, encode_end_of_session, encode_heartbeat},
};

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const DELAY: u64 = 5 * MS;
const TIMEOUT: u64 = 50 * MS;

fn session() -> Session {
    Session::new("HZ00000001").unwrap()
}

/// Deterministic xorshift64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The bytes of message `seq`: its number, then filler of a length that varies with `seq`, so
/// that every delivered message can be checked and the arena sees uneven sizes.
fn payload(seq: u64) -> Vec<u8> {
    let mut m = seq.to_be_bytes().to_vec();
    m.extend((0..seq % 23).map(|i| (seq as u8).wrapping_add(i as u8)));
    m
}

/// A data packet carrying messages `first .. first + count`.
fn data(first: u64, count: u64) -> Vec<u8> {
    data_in(session(), first, count)
}

fn data_in(session: Session, first: u64, count: u64) -> Vec<u8> {
    let mut b = PacketBuilder::new(65_000);
    b.start(session, first);
    for seq in first..first + count {
        assert_eq!(b.try_push(&payload(seq)), Ok(true));
    }
    b.finish().to_vec()
}

/// A data packet with the given messages, numbered from `first`.
fn data_with(first: u64, msgs: &[&[u8]]) -> Vec<u8> {
    let mut b = PacketBuilder::new(65_000);
    b.start(session(), first);
    for m in msgs {
        assert_eq!(b.try_push(m), Ok(true));
    }
    b.finish().to_vec()
}

fn heartbeat(next: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_heartbeat(session(), next, &mut out);
    out
}

fn end_of_session(next: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_end_of_session(session(), next, &mut out);
    out
}

/// What came out of the arbiter, with message bytes already checked against [`payload`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Msg(u64),
    Lost(u64, u64),
    End(u64),
    Foreign(Session),
    Suspicious(u64, u64),
}

fn record(events: &mut Vec<Ev>, check_bytes: bool, e: Event<'_>) {
    events.push(match e {
        Event::Message { seq, bytes } => {
            if check_bytes {
                assert_eq!(bytes, payload(seq), "bytes of message {seq}");
            }
            Ev::Msg(seq)
        }
        Event::Lost { from, count } => Ev::Lost(from, count),
        Event::EndOfSession { next } => Ev::End(next),
        Event::ForeignSession { session } => Ev::Foreign(session),
        Event::SuspiciousJump { claimed, known } => Ev::Suspicious(claimed, known),
    });
}

struct Harness {
    arb: FeedArbiter,
    events: Vec<Ev>,
    /// Check delivered bytes against `payload` (off for hand-made messages).
    check_bytes: bool,
}

impl Harness {
    fn new(config: ArbiterConfig) -> Self {
        Harness {
            arb: FeedArbiter::new(config).unwrap(),
            events: Vec::new(),
            check_bytes: true,
        }
    }

    fn feed(&mut self, line: Line, datagram: &[u8], now: u64) {
        let packet = Packet::parse(datagram).unwrap();
        let (events, check) = (&mut self.events, self.check_bytes);
        self.arb
            .on_packet(line, &packet, now, |e| record(events, check, e));
    }

    fn poll(&mut self, now: u64) -> Option<RequestPacket> {
        let (events, check) = (&mut self.events, self.check_bytes);
        self.arb.poll_timers(now, |e| record(events, check, e))
    }

    fn take(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.events)
    }
}

fn config() -> ArbiterConfig {
    ArbiterConfig {
        session: None,
        start_sequence: Some(1),
        reorder_capacity_messages: 1024,
        reorder_capacity_bytes: 64 * 1024,
        rerequest_delay_ns: DELAY,
        rerequest_timeout_ns: TIMEOUT,
        max_retries: 2,
        max_request_count: 100,
        max_jump: None,
        jump_confirmations: 3,
        rerequests: true,
    }
}

fn msgs(range: std::ops::RangeInclusive<u64>) -> Vec<Ev> {
    range.map(Ev::Msg).collect()
}

fn request(sequence: u64, count: u16) -> Option<RequestPacket> {
    Some(RequestPacket {
        session: session(),
        sequence,
        count,
    })
}

/// Checks that the events cover `first..` contiguously with messages and lost runs; returns
/// one past the last sequence covered.
fn check_contiguous(events: &[Ev], first: u64) -> u64 {
    let mut next = first;
    for e in events {
        match *e {
            Ev::Msg(seq) => {
                assert_eq!(seq, next, "message out of order");
                next += 1;
            }
            Ev::Lost(from, count) => {
                assert_eq!(from, next, "lost run out of order");
                assert!(count > 0);
                next += count;
            }
            Ev::End(_) | Ev::Foreign(_) | Ev::Suspicious(..) => {}
        }
    }
    next
}

#[test]
fn in_order_single_line() {
    let mut h = Harness::new(ArbiterConfig {
        start_sequence: None,
        ..config()
    });
    let mut seq = 1;
    let mut now = 0;
    let mut rng = Rng(7);
    while seq <= 10_000 {
        let n = 1 + rng.next() % 4;
        h.feed(Line::A, &data(seq, n), now);
        assert_eq!(h.poll(now), None);
        assert_eq!(h.arb.next_deadline(), None);
        seq += n;
        now += 10 * US;
    }
    assert_eq!(h.take(), msgs(1..=seq - 1));
    let c = *h.arb.counters();
    assert_eq!(c.delivered, seq - 1);
    assert_eq!(c.duplicates.total(), 0);
    assert_eq!(
        c.gaps_detected + c.rerequests_sent + c.lost + c.reorder_overflow,
        0
    );
    assert_eq!(h.arb.expected(), Some(seq));
    assert_eq!(h.arb.high(), Some(seq));
    assert_eq!(h.arb.session(), Some(session()));
    assert!(!h.arb.has_gap());
    assert_eq!(h.arb.buffered(), 0);
}

/// One packet schedule per line: (arrival time, line, first seq, count).
type Schedule = Vec<(u64, Line, u64, u64)>;

/// Packets of 1 to 3 messages for `1..=n`, sent every `spacing` ns, arriving on A with a jitter of up to
/// 100 us and on B with a jitter of up to 200 us; each copy lost with `loss` percent, but never both copies of a packet unless
/// `both_loss` percent says so. Sorted by arrival.
fn ab_schedule(
    rng: &mut Rng,
    n: u64,
    spacing: u64,
    loss: u64,
    both_loss: u64,
) -> (Schedule, Vec<(u64, u64)>) {
    let mut schedule = Vec::new();
    let mut lost_both = Vec::new();
    let mut seq = 1;
    let mut t = 0;
    while seq <= n {
        let count = (1 + rng.next() % 3).min(n + 1 - seq);
        let a_time = t + rng.next() % (100 * US);
        let b_time = t + rng.next() % (200 * US);
        let (mut lose_a, mut lose_b) = (rng.chance(loss), rng.chance(loss));
        if lose_a && lose_b && !rng.chance(both_loss) {
            // Keep one copy.
            if rng.chance(50) {
                lose_a = false;
            } else {
                lose_b = false;
            }
        }
        if !lose_a {
            schedule.push((a_time, Line::A, seq, count));
        }
        if !lose_b {
            schedule.push((b_time, Line::B, seq, count));
        }
        if lose_a && lose_b {
            lost_both.push((seq, count));
        }
        seq += count;
        t += spacing;
    }
    schedule.sort_by_key(|&(time, line, ..)| (time, line == Line::B));
    (schedule, lost_both)
}

#[test]
fn ab_random_loss_covered_by_the_other_line() {
    for seed in [1, 2, 3] {
        let mut rng = Rng(0x5EED_0000 + seed);
        let n = 20_000;
        let (schedule, lost_both) = ab_schedule(&mut rng, n, 10 * US, 15, 0);
        assert!(lost_both.is_empty());
        let mut h = Harness::new(config());
        let mut copies = 0;
        for &(t, line, first, count) in &schedule {
            h.feed(line, &data(first, count), t);
            copies += count;
            assert_eq!(
                h.poll(t),
                None,
                "no re-request: the other line always covers"
            );
        }
        assert_eq!(h.take(), msgs(1..=n), "seed {seed}");
        let c = *h.arb.counters();
        assert_eq!(c.delivered, n);
        assert_eq!(c.duplicates.a + c.duplicates.b, copies - n);
        assert_eq!(c.duplicates.recovery, 0);
        assert!(c.duplicates.a > 0 && c.duplicates.b > 0);
        assert!(c.gaps_detected > 100, "gaps were seen and filled: {c:?}");
        assert_eq!(c.rerequests_sent + c.lost + c.reorder_overflow, 0);
        assert_eq!(h.arb.buffered(), 0);
        assert_eq!(h.arb.buffered_bytes(), 0);
        assert!(!h.arb.has_gap());
    }
}

/// Feeds 1..=9 and 15..=20 on both lines (10..=14 lost on both) at t = 0.
fn hole_10_to_14(h: &mut Harness) {
    for line in [Line::A, Line::B] {
        for seq in (1..=9).chain(15..=20) {
            h.feed(line, &data(seq, 1), 0);
        }
    }
    assert_eq!(h.take(), msgs(1..=9));
    assert!(h.arb.has_gap());
    assert_eq!(h.arb.buffered(), 6);
    assert_eq!(h.arb.next_deadline(), Some(DELAY));
}

#[test]
fn loss_on_both_lines_is_rerequested_after_the_delay() {
    let mut h = Harness::new(ArbiterConfig {
        max_request_count: 3,
        ..config()
    });
    hole_10_to_14(&mut h);
    assert_eq!(h.poll(DELAY - 1), None);
    assert_eq!(h.poll(DELAY), request(10, 3), "capped at max_request_count");
    assert_eq!(h.poll(DELAY), None, "not again before the timeout");
    assert_eq!(h.arb.next_deadline(), Some(DELAY + TIMEOUT));
    // The reply fills the first part; the rest is asked for at once.
    h.feed(Line::Recovery, &data(10, 3), DELAY + MS);
    assert_eq!(h.take(), msgs(10..=12));
    assert_eq!(
        h.arb.next_deadline(),
        Some(DELAY),
        "13 visible since 15 arrived at 0: due"
    );
    assert_eq!(h.poll(DELAY + MS), request(13, 2), "up to the buffered 15");
    h.feed(Line::Recovery, &data(13, 2), DELAY + 2 * MS);
    assert_eq!(h.take(), msgs(13..=20));
    assert!(!h.arb.has_gap());
    assert_eq!(h.poll(DELAY + TIMEOUT * 10), None);
    let c = *h.arb.counters();
    assert_eq!(c.recovered, 5);
    assert_eq!(c.rerequests_sent, 2);
    assert_eq!(c.gaps_detected, 1);
    assert_eq!(c.duplicates.a, 0);
    assert_eq!(c.duplicates.b, 15);
}

#[test]
fn other_line_filling_late_still_beats_the_request() {
    let mut h = Harness::new(config());
    for seq in (1..=3).chain(5..=6) {
        h.feed(Line::A, &data(seq, 1), 0);
    }
    assert_eq!(h.arb.next_deadline(), Some(DELAY));
    h.feed(Line::B, &data(1, 4), DELAY - 1);
    assert_eq!(h.take(), msgs(1..=6));
    assert_eq!(h.poll(DELAY), None);
    assert_eq!(h.arb.counters().rerequests_sent, 0);
}

#[test]
fn retries_then_lost_and_progress_continues() {
    let mut h = Harness::new(config()); // max_retries 2: three requests
    hole_10_to_14(&mut h);
    assert_eq!(h.poll(DELAY), request(10, 5));
    assert_eq!(h.poll(DELAY + TIMEOUT - 1), None);
    assert_eq!(h.poll(DELAY + TIMEOUT), request(10, 5));
    assert_eq!(h.poll(DELAY + 2 * TIMEOUT), request(10, 5));
    assert_eq!(h.poll(DELAY + 3 * TIMEOUT - 1), None);
    assert!(h.take().is_empty());
    assert_eq!(h.poll(DELAY + 3 * TIMEOUT), None);
    let mut expected = vec![Ev::Lost(10, 5)];
    expected.extend(msgs(15..=20));
    assert_eq!(h.take(), expected);
    assert!(!h.arb.has_gap());
    assert_eq!(h.arb.next_deadline(), None);
    let c = *h.arb.counters();
    assert_eq!((c.lost, c.lost_runs, c.rerequests_sent), (5, 1, 3));
    // The stream goes on; a late reply is only a duplicate.
    h.feed(Line::A, &data(21, 5), DELAY + 3 * TIMEOUT + 1);
    h.feed(Line::Recovery, &data(10, 5), DELAY + 3 * TIMEOUT + 2);
    assert_eq!(h.take(), msgs(21..=25));
    assert_eq!(h.arb.counters().duplicates.recovery, 5);
}

#[test]
fn next_hole_after_lost_is_requested_at_once() {
    let mut h = Harness::new(ArbiterConfig {
        max_retries: 0,
        ..config()
    });
    for seq in (1..=9).chain(12..=14).chain(17..=18) {
        h.feed(Line::A, &data(seq, 1), 0);
    }
    assert_eq!(h.take(), msgs(1..=9));
    assert_eq!(h.poll(DELAY), request(10, 2));
    // One request only; at its timeout the hole is lost and the next one asked for right away.
    assert_eq!(h.poll(DELAY + TIMEOUT), request(15, 2));
    let mut expected = vec![Ev::Lost(10, 2)];
    expected.extend(msgs(12..=14));
    assert_eq!(h.take(), expected);
    assert_eq!(h.poll(DELAY + 2 * TIMEOUT), None);
    let mut expected = vec![Ev::Lost(15, 2)];
    expected.extend(msgs(17..=18));
    assert_eq!(h.take(), expected);
    assert_eq!(h.arb.counters().lost_runs, 2);
    assert_eq!(h.arb.counters().gaps_detected, 1);
}

#[test]
fn a_dead_server_costs_one_run_then_the_whole_hole() {
    // A 500-message tail lost on both lines, requests of at most 100, no reply ever.
    let mut h = Harness::new(ArbiterConfig {
        max_retries: 0,
        ..config()
    });
    h.feed(Line::A, &data(1, 10), 0);
    h.feed(Line::A, &heartbeat(511), 0);
    assert_eq!(h.poll(DELAY), request(11, 100));
    // The first give-up only skips what was asked for, and the next run is asked for at once.
    assert_eq!(h.poll(DELAY + TIMEOUT), request(111, 100));
    // Still no reply since the last loss: the server looks dead, skip to the head.
    assert_eq!(h.poll(DELAY + 2 * TIMEOUT), None);
    let mut expected = msgs(1..=10);
    expected.extend([Ev::Lost(11, 100), Ev::Lost(111, 400)]);
    assert_eq!(h.take(), expected);
    assert!(!h.arb.has_gap());
    assert_eq!(h.arb.counters().lost, 500);

    // Once it answers again, a give-up costs one run only.
    h.feed(Line::A, &heartbeat(811), DELAY + 3 * TIMEOUT);
    let t = DELAY + 3 * TIMEOUT + DELAY;
    assert_eq!(h.poll(t), request(511, 100));
    h.feed(Line::Recovery, &data(511, 10), t + 1);
    assert_eq!(h.poll(t + 1), request(521, 100));
    assert_eq!(h.poll(t + 1 + TIMEOUT), request(621, 100));
    let mut expected = msgs(511..=520);
    expected.push(Ev::Lost(521, 100));
    assert_eq!(h.take(), expected);
}

#[test]
fn lines_filling_part_of_a_request_do_not_trigger_another() {
    let mut h = Harness::new(config());
    h.feed(Line::A, &data(1, 9), 0);
    h.feed(Line::A, &data(20, 1), 0);
    assert_eq!(h.poll(DELAY), request(10, 10));
    // A very late copy on B fills the start; the outstanding request still covers the rest.
    h.feed(Line::B, &data(10, 3), DELAY + 10);
    assert_eq!(h.arb.next_deadline(), Some(DELAY + TIMEOUT));
    assert_eq!(h.poll(DELAY + 10), None);
    h.feed(Line::Recovery, &data(10, 10), DELAY + 20);
    assert_eq!(h.take(), msgs(1..=20));
    assert_eq!(h.arb.counters().rerequests_sent, 1);
    assert_eq!(h.arb.counters().duplicates.recovery, 3);
}

#[test]
fn jitter_holes_after_a_recovery_get_the_usual_grace() {
    let mut h = Harness::new(config());
    // 5 lost on both lines; recovered by request.
    h.feed(Line::A, &data(1, 4), 0);
    h.feed(Line::A, &data(6, 4), 0);
    assert_eq!(h.poll(DELAY), request(5, 1));
    h.feed(Line::Recovery, &data(5, 1), DELAY + 100 * US);
    assert!(!h.arb.has_gap());
    // While the gap was open, more traffic: 10 lost on A only, 11 arrives; B brings 10 late.
    let t = 2 * DELAY;
    h.feed(Line::A, &data(11, 2), t);
    assert_eq!(h.arb.next_deadline(), Some(t + DELAY));
    h.feed(Line::B, &data(10, 1), t + DELAY - 1);
    assert!(!h.arb.has_gap());
    // The same within one gap that never closes: 5 recovered while 15 is still missing on A.
    let mut h = Harness::new(config());
    h.feed(Line::A, &data(1, 4), 0);
    h.feed(Line::A, &data(6, 9), 0);
    assert_eq!(h.poll(DELAY), request(5, 1));
    h.feed(Line::A, &data(16, 1), DELAY + 50 * US); // 15 missing on A
    h.feed(Line::Recovery, &data(5, 1), DELAY + 100 * US);
    assert_eq!(h.take(), msgs(1..=14));
    assert_eq!(
        h.arb.next_deadline(),
        Some(DELAY + 50 * US + DELAY),
        "15 visible since 16 arrived, not since the gap opened"
    );
    assert_eq!(h.poll(DELAY + 200 * US), None);
    h.feed(Line::B, &data(15, 1), DELAY + 300 * US);
    assert_eq!(h.take(), msgs(15..=16));
    assert_eq!(h.arb.counters().rerequests_sent, 1);
}

#[test]
fn partial_replies_make_progress_without_retries_running_out() {
    // A 50-message tail loss, a server that answers 4 messages at a time, max_retries 0:
    // every reply is progress, so nothing is ever declared lost.
    let mut h = Harness::new(ArbiterConfig {
        max_retries: 0,
        ..config()
    });
    h.feed(Line::A, &data(1, 10), 0);
    h.feed(Line::A, &heartbeat(61), 0);
    let mut now = DELAY;
    let mut requests = 0;
    while let Some(r) = h.poll(now) {
        requests += 1;
        assert_eq!(r.sequence, h.arb.expected().unwrap());
        assert_eq!(u64::from(r.count), (61 - r.sequence).min(100));
        h.feed(
            Line::Recovery,
            &data(r.sequence, u64::from(r.count).min(4)),
            now + MS,
        );
        now += MS;
    }
    assert_eq!(requests, 13);
    assert_eq!(h.take(), msgs(1..=60));
    assert_eq!(h.arb.counters().lost, 0);
    assert!(!h.arb.has_gap());
}

#[test]
fn heartbeats_reveal_tail_loss() {
    let mut h = Harness::new(ArbiterConfig {
        max_request_count: 3,
        ..config()
    });
    h.feed(Line::A, &data(1, 10), 0);
    h.feed(Line::A, &heartbeat(11), 1);
    h.feed(Line::B, &heartbeat(5), 2);
    assert!(
        !h.arb.has_gap(),
        "heartbeats at or below expected change nothing"
    );
    assert_eq!(h.arb.next_deadline(), None);
    // 11..=15 lost on both lines: the next heartbeat tells.
    h.feed(Line::B, &heartbeat(16), 100);
    assert!(h.arb.has_gap());
    assert_eq!(h.arb.high(), Some(16));
    assert_eq!(h.poll(100 + DELAY - 1), None);
    assert_eq!(h.poll(100 + DELAY), request(11, 3));
    h.feed(Line::Recovery, &data(11, 3), 100 + DELAY + 1);
    assert_eq!(h.poll(100 + DELAY + 1), request(14, 2));
    h.feed(Line::Recovery, &data(14, 2), 100 + DELAY + 2);
    assert_eq!(h.take(), msgs(1..=15));
    assert!(!h.arb.has_gap());
    assert_eq!(h.arb.counters().duplicates.total(), 0);
}

#[test]
fn unsynced_start_follows_the_first_packet() {
    let mut h = Harness::new(ArbiterConfig {
        start_sequence: None,
        ..config()
    });
    assert_eq!(h.arb.expected(), None);
    assert_eq!(h.arb.high(), None);
    assert!(!h.arb.has_gap());
    h.feed(Line::B, &data(100, 2), 0);
    assert_eq!(h.arb.expected(), Some(102));
    h.feed(Line::A, &data(99, 3), 1); // 99 predates the start: a duplicate, like 100, 101
    assert_eq!(h.take(), msgs(100..=101));
    assert_eq!(h.arb.counters().duplicates.a, 3);

    // A heartbeat first: start at its next sequence, nothing missing.
    let mut h = Harness::new(ArbiterConfig {
        start_sequence: None,
        ..config()
    });
    h.feed(Line::A, &heartbeat(500), 0);
    assert_eq!(h.arb.expected(), Some(500));
    assert!(!h.arb.has_gap());
    h.feed(Line::A, &data(500, 1), 1);
    assert_eq!(h.take(), msgs(500..=500));

    // A bogus heartbeat with sequence 0 must not create a gap at 0.
    let mut h = Harness::new(ArbiterConfig {
        start_sequence: None,
        ..config()
    });
    h.feed(Line::A, &heartbeat(0), 0);
    h.feed(Line::A, &data(1, 1), 0);
    assert_eq!(h.take(), msgs(1..=1));
    assert!(!h.arb.has_gap());
}

#[test]
fn start_sequence_one_recovers_everything() {
    let mut h = Harness::new(config());
    assert_eq!(h.arb.expected(), Some(1));
    h.feed(Line::A, &data(50, 5), 0);
    assert!(h.take().is_empty());
    assert_eq!(h.arb.buffered(), 5);
    assert_eq!(h.poll(DELAY), request(1, 49));
    h.feed(Line::Recovery, &data(1, 49), DELAY + 1);
    assert_eq!(h.take(), msgs(1..=54));
    assert_eq!(h.arb.counters().recovered, 49);
}

#[test]
fn duplicates_and_stale_packets() {
    let mut h = Harness::new(config());
    h.feed(Line::A, &data(1, 5), 0);
    h.feed(Line::B, &data(1, 5), 1);
    h.feed(Line::A, &data(1, 3), 2); // replay
    h.feed(Line::B, &data(4, 4), 3); // overlaps: 4, 5 old, 6, 7 new
    assert_eq!(h.take(), msgs(1..=7));
    assert_eq!(
        h.arb.counters().duplicates,
        PerLine {
            a: 3,
            b: 7,
            recovery: 0
        }
    );
    // A buffered message's second copy is a duplicate too.
    h.feed(Line::A, &data(9, 1), 4);
    h.feed(Line::B, &data(9, 2), 5);
    h.feed(Line::Recovery, &data(9, 1), 6);
    assert_eq!(h.arb.buffered(), 2);
    assert_eq!(
        h.arb.counters().duplicates,
        PerLine {
            a: 3,
            b: 8,
            recovery: 1
        }
    );
    h.feed(Line::Recovery, &data(8, 1), 7);
    assert_eq!(h.take(), msgs(8..=10));
    assert_eq!(h.arb.counters().recovered, 1);
    // Empty packets and old heartbeats.
    h.feed(Line::A, &heartbeat(3), 8);
    h.feed(Line::A, &data(11, 0), 9); // a data packet with no message is a heartbeat
    assert!(h.take().is_empty());
    assert_eq!(h.arb.counters().duplicates.total(), 12);
    assert_eq!(h.arb.counters().delivered, 10);
    assert_eq!(PerLine::default().get(Line::B), 0);
    assert_eq!(
        Line::ALL.map(|l| h.arb.counters().duplicates.get(l)),
        [3, 8, 1]
    );
}

#[test]
fn reorder_window_overflow_drops_the_highest() {
    let mut h = Harness::new(ArbiterConfig {
        reorder_capacity_messages: 4,
        ..config()
    });
    for seq in 2..=10 {
        h.feed(Line::A, &data(seq, 1), 0);
    }
    // Window: expected 1, buffered 2..=5; 6..=10 dropped.
    assert_eq!(h.arb.buffered(), 4);
    assert_eq!(h.arb.counters().reorder_overflow, 5);
    h.feed(Line::B, &data(1, 1), 10);
    assert_eq!(h.take(), msgs(1..=5));
    assert!(h.arb.has_gap());
    assert_eq!(
        h.arb.next_deadline(),
        Some(DELAY),
        "visible since the overflow at 0"
    );
    assert_eq!(h.poll(DELAY), request(6, 5));
    h.feed(Line::Recovery, &data(6, 5), DELAY + 1);
    assert_eq!(h.take(), msgs(6..=10));
}

#[test]
fn reorder_bytes_overflow_keeps_the_lowest() {
    let mut h = Harness::new(ArbiterConfig {
        reorder_capacity_bytes: 30,
        ..config()
    });
    h.check_bytes = false;
    let m = |seq: u64| -> Vec<u8> { [b'm', seq as u8].repeat(5) };
    let feed = |h: &mut Harness, seq: u64| h.feed(Line::A, &data_with(seq, &[&m(seq)]), 0);
    for seq in 3..=5 {
        feed(&mut h, seq);
    }
    assert_eq!((h.arb.buffered(), h.arb.buffered_bytes()), (3, 30));
    feed(&mut h, 2); // evicts 5
    assert_eq!(h.arb.counters().reorder_overflow, 1);
    feed(&mut h, 6); // nothing higher to evict: 6 is dropped
    assert_eq!(h.arb.counters().reorder_overflow, 2);
    h.feed(Line::A, &data_with(8, &[&[0; 31]]), 0); // can never fit
    assert_eq!(h.arb.counters().reorder_overflow, 3);
    assert_eq!((h.arb.buffered(), h.arb.buffered_bytes()), (3, 30));
    let mut got = Vec::new();
    let packet = data_with(1, &[&m(1)]);
    h.arb
        .on_packet(Line::B, &Packet::parse(&packet).unwrap(), 0, |e| {
            if let Event::Message { seq, bytes } = e {
                got.push((seq, bytes.to_vec()));
            }
        });
    assert_eq!(got, (1..=4).map(|s| (s, m(s))).collect::<Vec<_>>());
    assert_eq!(h.arb.buffered_bytes(), 0);
    assert_eq!(h.arb.expected(), Some(5));
    assert_eq!(
        h.poll(DELAY),
        request(5, 4),
        "5, 6, 8 dropped: recovered by request"
    );
}

#[test]
fn foreign_sessions_are_counted_and_reported_once() {
    let other = Session::new("HZ00000002").unwrap();
    let mut h = Harness::new(ArbiterConfig {
        session: Some(session()),
        ..config()
    });
    h.feed(Line::A, &data_in(other, 1, 2), 0);
    h.feed(Line::B, &data_in(other, 1, 2), 1);
    assert_eq!(h.take(), [Ev::Foreign(other)]);
    assert_eq!(h.arb.counters().foreign_session_packets, 2);
    assert_eq!(h.arb.expected(), Some(1), "foreign packets change nothing");
    assert!(!h.arb.has_gap());
    // The right session, even padded differently, is accepted.
    h.feed(Line::A, &data_in(session(), 1, 2), 2);
    let padded = Session::new("HZ1").unwrap();
    let mut h2 = Harness::new(ArbiterConfig {
        session: Some(Session::from_bytes(*b"       HZ1")),
        ..config()
    });
    h2.feed(Line::A, &data_in(padded, 1, 1), 0);
    assert_eq!(h2.take(), msgs(1..=1));
    // A third session is reported, and the second again after it.
    let third = Session::new("HZ00000003").unwrap();
    h.feed(Line::A, &data_in(third, 3, 1), 3);
    h.feed(Line::A, &data_in(other, 3, 1), 4);
    h.feed(Line::A, &data_in(other, 4, 1), 5);
    assert_eq!(
        h.take(),
        [
            Ev::Msg(1),
            Ev::Msg(2),
            Ev::Foreign(third),
            Ev::Foreign(other)
        ]
    );
    assert_eq!(h.arb.counters().foreign_session_packets, 5);

    // Following the new session is the caller's decision.
    h.arb.reset(Some(other), Some(1));
    h.feed(Line::A, &data_in(other, 1, 1), 6);
    h.feed(Line::A, &data(3, 1), 7);
    assert_eq!(h.take(), [Ev::Msg(1), Ev::Foreign(session())]);
    assert_eq!(h.arb.session(), Some(other));
}

#[test]
fn adopts_the_first_session_seen() {
    let mut h = Harness::new(config());
    assert_eq!(h.arb.session(), None);
    h.feed(Line::B, &data(1, 1), 0);
    assert_eq!(h.arb.session(), Some(session()));
    let other = Session::new("X").unwrap();
    h.feed(Line::A, &data_in(other, 2, 1), 0);
    assert_eq!(h.take(), [Ev::Msg(1), Ev::Foreign(other)]);
}

#[test]
fn end_of_session_reported_once_and_missing_tail_recovered() {
    let mut h = Harness::new(config());
    h.feed(Line::A, &data(1, 9), 0);
    h.feed(Line::A, &end_of_session(12), 1);
    h.feed(Line::B, &end_of_session(12), 2);
    h.feed(Line::A, &end_of_session(12), 3);
    let mut expected = msgs(1..=9);
    expected.push(Ev::End(12));
    assert_eq!(h.take(), expected);
    assert!(h.arb.has_gap());
    assert_eq!(h.poll(1 + DELAY), request(10, 2));
    h.feed(Line::Recovery, &data(10, 2), 1 + DELAY + 1);
    assert_eq!(h.take(), msgs(10..=11));
    assert!(!h.arb.has_gap());
    // A reset re-arms the report.
    h.arb.reset(None, None);
    h.feed(Line::A, &end_of_session(7), 4);
    assert_eq!(h.take(), [Ev::End(7)]);
}

#[test]
fn invalid_configs() {
    let bad = |f: fn(&mut ArbiterConfig)| {
        let mut c = config();
        f(&mut c);
        FeedArbiter::new(c).unwrap_err()
    };
    assert_eq!(bad(|c| c.start_sequence = Some(0)).field, "start_sequence");
    assert_eq!(
        bad(|c| c.reorder_capacity_messages = 0).to_string(),
        "reorder_capacity_messages = 0: must be between 1 and 16777216"
    );
    assert_eq!(
        bad(|c| c.reorder_capacity_bytes = 1 << 31).field,
        "reorder_capacity_bytes"
    );
    assert_eq!(
        bad(|c| c.rerequest_timeout_ns = 0).field,
        "rerequest_timeout_ns"
    );
    assert_eq!(bad(|c| c.max_request_count = 0).field, "max_request_count");
    assert!(ArbiterConfig::default().validate().is_ok());
    let a = FeedArbiter::new(ArbiterConfig::default()).unwrap();
    assert_eq!(a.config(), &ArbiterConfig::default());
}

/// The bitmap scans, including across the end of the ring, against brute force.
#[test]
fn reorder_buffer_scans() {
    let mut rng = Rng(99);
    for _ in 0..200 {
        let window = 1 + rng.next() % 300;
        let mut buf = ReorderBuffer::new(window as usize, 1 << 16);
        let ring = buf.mask + 1;
        // An expected position anywhere, often just below a multiple of the ring size.
        let expected = (rng.next() % 10) * ring + ring - rng.next() % window.min(ring) + 5;
        let mut present = Vec::new();
        for seq in expected + 1..=expected + window {
            if rng.chance(10) {
                assert_eq!(buf.insert(expected, seq, b"x", false, 0), 0);
                present.push(seq);
            }
        }
        for _ in 0..50 {
            // Within expected + 1 ..= expected + window + 1, like the arbiter's scans.
            let a = expected + 1 + rng.next() % (window + 1);
            let b = expected + 1 + rng.next() % (window + 1);
            let (from, to) = (a.min(b), a.max(b));
            let next = present.iter().copied().find(|&s| s >= from && s < to);
            let prev = present.iter().rev().copied().find(|&s| s >= from && s < to);
            assert_eq!(buf.next_at_or_after(from, to), next, "{from}..{to}");
            assert_eq!(buf.prev_before(to, from), prev, "{from}..{to}");
        }
    }
    let buf = ReorderBuffer::new(8, 8);
    assert_eq!(buf.prev_before(0, 0), None);
    assert_eq!(buf.next_at_or_after(u64::MAX - 3, u64::MAX), None);
}

/// Random inserts and deliveries against a model (a sorted map), with tight byte limits so
/// that eviction and arena compaction happen all the time.
#[test]
fn reorder_buffer_against_model() {
    use std::collections::BTreeMap;
    let mut rng = Rng(77);
    let mut compactions = 0;
    for _ in 0..60 {
        let window = 2 + rng.next() % 200;
        let max_bytes = 30 + (rng.next() % 400) as usize;
        let mut buf = ReorderBuffer::new(window as usize, max_bytes);
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut expected = 1 + rng.next() % 1000;
        for step in 0..3000 {
            if rng.chance(65) {
                let seq = expected + 1 + rng.next() % window;
                if model.contains_key(&seq) {
                    assert!(buf.contains(seq));
                    continue;
                }
                assert!(!buf.contains(seq));
                let msg = payload(seq);
                // The model: evict from the top while it does not fit, never below `seq`.
                let mut model_dropped = 0;
                if msg.len() > max_bytes {
                    model_dropped = 1;
                } else {
                    loop {
                        let live: usize = model.values().map(Vec::len).sum();
                        if live + msg.len() <= max_bytes {
                            model.insert(seq, msg.clone());
                            break;
                        }
                        match model.keys().next_back().copied().filter(|&top| top > seq) {
                            Some(top) => {
                                model.remove(&top);
                                model_dropped += 1;
                            }
                            None => {
                                model_dropped += 1;
                                break;
                            }
                        }
                    }
                }
                let dropped = buf.insert(expected, seq, &msg, false, 0);
                assert_eq!(dropped, model_dropped, "{step}");
            } else {
                // Deliver: move `expected` on (a lost run, or the awaited message arriving),
                // then take everything that follows on, like the arbiter does.
                expected += rng.next() % 3;
                for stale in model
                    .range(..=expected)
                    .map(|(&s, _)| s)
                    .collect::<Vec<_>>()
                {
                    let (bytes, _) = buf.get(stale);
                    assert_eq!(bytes, &model.remove(&stale).unwrap()[..]);
                    buf.remove(stale);
                }
                expected += 1;
                while let Some(m) = model.remove(&expected) {
                    assert_eq!(buf.get(expected).0, &m[..]);
                    buf.remove(expected);
                    expected += 1;
                }
            }
            assert_eq!(buf.count, model.len());
            assert_eq!(buf.live_bytes, model.values().map(Vec::len).sum::<usize>());
            assert!(buf.arena.len() <= 2 * max_bytes);
            if step % 97 == 0 {
                for (&seq, m) in &model {
                    assert_eq!(buf.get(seq).0, &m[..]);
                }
            }
        }
        compactions += buf.compactions;
    }
    assert!(compactions > 100, "{compactions}");
}

/// A lossy, reordering A/B feed, a re-request server that answers only sometimes and a bit at a
/// time, a tiny reorder buffer (so that eviction, window overflow and arena compaction all
/// happen): whatever happens, the output covers every sequence number exactly once, in order,
/// with the right bytes, and ends caught up.
#[test]
fn chaos_stream_stays_exact() {
    for seed in 1..=6u64 {
        let mut rng = Rng(0xC4A0_5000 + seed);
        let n = 6_000;
        let config = ArbiterConfig {
            // Odd seeds: a buffer too small for the jitter, so that overflow and eviction are
            // routine and most of the feed comes through re-requests.
            reorder_capacity_messages: if seed % 2 == 1 { 50 } else { 1000 }
                + (rng.next() % 200) as usize,
            reorder_capacity_bytes: if seed % 2 == 1 { 600 } else { 20_000 }
                + (rng.next() % 2400) as usize,
            rerequest_delay_ns: 500 * US,
            rerequest_timeout_ns: 2 * MS,
            max_retries: 2,
            // Odd seeds: also requests too small to catch up quickly.
            max_request_count: if seed % 2 == 1 { 1 } else { 40 } + (rng.next() % 60) as u16,
            ..config()
        };
        let mut h = Harness::new(config);
        let (schedule, _) = ab_schedule(&mut rng, n, 20 * US, 20, 30);
        // Every packet gets extra random delay: real reordering within each line.
        let mut pending: Vec<(u64, u64, Line, Vec<u8>)> = schedule
            .iter()
            .enumerate()
            .map(|(i, &(t, line, first, count))| {
                (
                    t + rng.next() % (150 * US),
                    i as u64,
                    line,
                    data(first, count),
                )
            })
            .collect();
        let end_time = pending.iter().map(|p| p.0).max().unwrap();
        let mut order = n; // tie-breaker for packets added later
        let mut now = 0;
        let mut requests = 0;
        loop {
            now += 20 * US;
            pending.sort_by_key(|p| std::cmp::Reverse((p.0, p.1)));
            while pending.last().is_some_and(|p| p.0 <= now) {
                let (t, _, line, datagram) = pending.pop().unwrap();
                h.feed(line, &datagram, t);
            }
            if now > end_time && now % MS == 0 {
                // The idle feed's heartbeats reveal a tail lost on both lines.
                h.feed(Line::A, &heartbeat(n + 1), now);
            }
            while let Some(r) = h.poll(now) {
                requests += 1;
                assert!(r.count >= 1 && r.count <= config.max_request_count);
                assert_eq!(r.sequence, h.arb.expected().unwrap());
                // A server that loses a fifth of the requests (or replies), and answers with
                // what fits a datagram.
                if rng.chance(80) {
                    let count = u64::from(r.count).min(10 + rng.next() % 30);
                    let count = count.min(n + 1 - r.sequence);
                    let at = now + 20 * US + rng.next() % (130 * US);
                    pending.push((at, order, Line::Recovery, data(r.sequence, count)));
                    order += 1;
                }
            }
            if pending.is_empty() && !h.arb.has_gap() && h.arb.expected() == Some(n + 1) {
                break;
            }
            assert!(
                now < 10_000 * MS,
                "seed {seed}: stuck at {:?}",
                h.arb.expected()
            );
        }
        let events = h.take();
        assert_eq!(check_contiguous(&events, 1), n + 1, "seed {seed}");
        let c = *h.arb.counters();
        assert_eq!(c.delivered + c.lost, n);
        assert!(requests > 0 && c.recovered > 0, "seed {seed}: {c:?}");
        assert_eq!(h.arb.buffered(), 0);
        if seed % 2 == 1 {
            assert!(c.reorder_overflow > 0, "seed {seed}: {c:?}");
        } else {
            assert!(c.recovered < n / 10, "seed {seed}: {c:?}");
            assert!(c.lost < n / 100, "seed {seed}: {c:?}");
        }
    }
}

/// After warm-up, ingest, arbitration, buffering (with compaction), recovery and loss
/// declarations allocate nothing.
#[test]
fn no_allocation_per_message() {
    let mut rng = Rng(4242);
    let n = 20_000;
    let (schedule, lost_both) = ab_schedule(&mut rng, n, 10 * US, 10, 20);
    assert!(!lost_both.is_empty());
    let datagrams: Vec<(u64, Line, Vec<u8>)> = schedule
        .iter()
        .map(|&(t, line, first, count)| (t, line, data(first, count)))
        .collect();
    // Replies for every other double loss; the others end up lost.
    let replies: Vec<(u64, Vec<u8>)> = lost_both
        .iter()
        .step_by(2)
        .map(|&(first, count)| (first, data(first, count)))
        .collect();
    let idle_heartbeat = heartbeat(n + 1);
    let mut arb = FeedArbiter::new(ArbiterConfig {
        reorder_capacity_bytes: 2_000,
        rerequest_delay_ns: 300 * US,
        rerequest_timeout_ns: MS,
        max_retries: 1,
        ..config()
    })
    .unwrap();
    let (next, allocs) = allocations(|| {
        let mut next = 1u64;
        let mut check = |e: Event<'_>| match e {
            Event::Message { seq, bytes } => {
                assert_eq!(seq, next);
                assert_eq!(&bytes[..8], &seq.to_be_bytes());
                next += 1;
            }
            Event::Lost { from, count } => {
                assert_eq!(from, next);
                next += count;
            }
            _ => {}
        };
        let mut now = 0;
        for (t, line, datagram) in &datagrams {
            now = *t;
            arb.on_packet(*line, &Packet::parse(datagram).unwrap(), now, &mut check);
            if let Some(r) = arb.poll_timers(now, &mut check)
                && let Ok(i) = replies.binary_search_by_key(&r.sequence, |r| r.0)
            {
                let p = Packet::parse(&replies[i].1).unwrap();
                arb.on_packet(Line::Recovery, &p, now, &mut check);
            }
        }
        let idle = Packet::parse(&idle_heartbeat).unwrap();
        arb.on_packet(Line::A, &idle, now, &mut check);
        while arb.has_gap() {
            now += MS;
            let _ = arb.poll_timers(now, &mut check);
        }
        next
    });
    assert_eq!(next, n + 1);
    assert_eq!(allocs, 0);
    let c = arb.counters();
    assert!(c.lost > 0 && c.recovered > 0, "{c:?}");
    assert!(arb.buffer.compactions > 0);
}

/// Without a re-request server nothing is asked for: a hole is declared lost once the lines had
/// their grace period, and what was buffered behind it flows at once.
#[test]
fn without_a_server_holes_are_lost_after_the_grace_period() {
    let mut h = Harness::new(ArbiterConfig {
        rerequests: false,
        ..config()
    });
    h.feed(Line::A, &data(1, 2), 0);
    h.feed(Line::A, &data(5, 2), 10 * US);
    assert_eq!(h.take(), msgs(1..=2));
    assert_eq!(h.poll(DELAY), None, "grace period not over");
    assert!(h.take().is_empty());
    assert_eq!(h.poll(10 * US + DELAY), None, "never a request");
    let mut expected = vec![Ev::Lost(3, 2)];
    expected.extend(msgs(5..=6));
    assert_eq!(h.take(), expected);
    // A tail hole revealed by a heartbeat: same grace, then lost.
    h.feed(Line::A, &heartbeat(9), 20 * MS);
    assert_eq!(h.poll(20 * MS + DELAY - 1), None);
    assert!(h.take().is_empty());
    assert_eq!(h.poll(20 * MS + DELAY), None);
    assert_eq!(h.take(), [Ev::Lost(7, 2)]);
    assert_eq!(h.arb.counters().rerequests_sent, 0);
    assert_eq!(h.arb.counters().lost, 4);
    assert_eq!(h.arb.next_deadline(), None);
}

/// One forged heartbeat announcing a far head must not make the feed skip: it is ignored (and
/// reported) until the other line, or enough packets of the same line, confirm the jump.
#[test]
fn a_single_packet_cannot_make_the_feed_jump() {
    let mut h = Harness::new(ArbiterConfig {
        max_jump: Some(100),
        jump_confirmations: 2,
        rerequests: false,
        ..config()
    });
    h.feed(Line::A, &data(1, 5), 0);
    // A forged heartbeat claiming a head a million ahead.
    h.feed(Line::A, &heartbeat(1_000_000), 10 * US);
    assert_eq!(h.take(), {
        let mut v = msgs(1..=5);
        v.push(Ev::Suspicious(1_000_000, 6));
        v
    });
    assert!(!h.arb.has_gap(), "the claim opened no hole");
    // Real traffic goes on undisturbed, nothing skipped, nothing counted as duplicate.
    h.feed(Line::A, &data(6, 5), 20 * US);
    h.feed(Line::B, &data(6, 5), 21 * US);
    assert_eq!(h.poll(1_000 * MS), None);
    assert_eq!(h.take(), msgs(6..=10));
    assert_eq!(h.arb.counters().duplicates.b, 5);
    assert_eq!(h.arb.counters().suspicious_packets, 1);
    // A jump both lines show is real: followed (here, lost after the grace period without a
    // server).
    h.feed(Line::A, &data(500, 1), 30 * US);
    h.feed(Line::B, &data(500, 1), 31 * US);
    assert_eq!(h.arb.counters().jumps_confirmed, 1);
    assert_eq!(h.poll(2_000 * MS), None);
    assert_eq!(
        h.take(),
        [Ev::Suspicious(501, 11), Ev::Lost(11, 489), Ev::Msg(500)]
    );
    // A single-line jump is believed after two more packets from that line agree.
    h.feed(Line::A, &data(20_000, 1), 40 * US);
    h.feed(Line::A, &data(20_001, 1), 41 * US);
    assert!(h.take().iter().all(|e| matches!(e, Ev::Suspicious(..))));
    h.feed(Line::A, &data(20_002, 1), 42 * US);
    assert_eq!(h.arb.counters().jumps_confirmed, 2);
    assert_eq!(h.arb.high(), Some(20_003));
}
