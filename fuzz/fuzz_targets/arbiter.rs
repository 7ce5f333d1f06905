//! Drives the feed arbiter (herz-core `engine::arbiter`) with arbitrary packets on lines A, B and the
//! re-request line (data, heartbeats, end of session, another session), arbitrary sequence numbers
//! and jumps, and virtual time, under an arbitrary configuration. Checks: nothing panics; what comes
//! out is one contiguous run of messages and lost runs from the first sequence on, each number once,
//! each message with the bytes that were sent for it; a re-request is always for the next missing
//! sequence; `poll_timers` never loops for ever.
#![no_main]

use herz_core::{
    engine::arbiter::{ArbiterConfig, Event, FeedArbiter, Line},
    protocol::moldudp64::{
        Packet, PacketBuilder, Session, encode_end_of_session, encode_heartbeat,
    },
};
use libfuzzer_sys::fuzz_target;

/// The bytes of message `seq` (so a delivered message can be checked against its number).
fn payload(seq: u64) -> [u8; 9] {
    let mut m = [0u8; 9];
    m[0] = b'Q';
    m[1..9].copy_from_slice(&seq.to_le_bytes());
    m
}

fuzz_target!(|data: &[u8]| {
    let Some((head, mut rest)) = data.split_first_chunk::<4>() else { return };
    let config = ArbiterConfig {
        session: (head[0] & 1 == 1).then(|| Session::new("FEED01").unwrap()),
        start_sequence: (head[0] & 2 == 2).then_some(1 + u64::from(head[1] % 8)),
        reorder_capacity_messages: 1 + usize::from(head[1]) * 4,
        reorder_capacity_bytes: 64 + usize::from(head[2]) * 16,
        rerequest_delay_ns: u64::from(head[3] % 4) * 1_000,
        rerequest_timeout_ns: 1 + u64::from(head[3] / 4) * 1_000,
        max_retries: u32::from(head[0] >> 4),
        max_request_count: 1 + u16::from(head[2] % 50),
        max_jump: (head[0] & 4 == 4).then_some(1 + u64::from(head[1])),
        jump_confirmations: 1 + u32::from(head[0] >> 6),
        rerequests: head[0] & 8 == 8,
    };
    let Ok(mut arb) = FeedArbiter::new(config) else { return };
    let session = Session::new("FEED01").unwrap();
    let other = Session::new("OTHER").unwrap();
    let mut now = 0u64;
    let mut next: Option<u64> = None;
    let mut check = |e: Event<'_>, next: &mut Option<u64>| match e {
        Event::Message { seq, bytes } => {
            if let Some(n) = *next {
                assert_eq!(seq, n, "message out of order");
            }
            assert_eq!(bytes, payload(seq), "bytes of message {seq}");
            *next = Some(seq + 1);
        }
        Event::Lost { from, count } => {
            if let Some(n) = *next {
                assert_eq!(from, n, "lost run out of order");
            }
            assert!(count > 0);
            *next = Some(from + count);
        }
        _ => {}
    };
    let mut buf = Vec::new();
    // Each step: an opcode, then its arguments.
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let line = match op % 3 {
            0 => Line::A,
            1 => Line::B,
            _ => Line::Recovery,
        };
        let Some((arg, tail)) = rest.split_first_chunk::<3>() else { break };
        rest = tail;
        // A sequence number near where the feed is, or (rarely) far ahead.
        let base = next.unwrap_or(1);
        let seq = if arg[0] == 0xff {
            base + u64::from(u16::from_le_bytes([arg[1], arg[2]])) * 1000
        } else {
            (base + u64::from(arg[0] % 64)).saturating_sub(16).max(1)
        };
        buf.clear();
        match (op >> 2) % 6 {
            0 | 1 => {
                let mut b = PacketBuilder::new(1400);
                b.start(session, seq);
                for s in seq..seq + 1 + u64::from(arg[1] % 8) {
                    let _ = b.try_push(&payload(s));
                }
                buf.extend_from_slice(b.finish());
            }
            2 => encode_heartbeat(session, seq, &mut buf),
            3 => encode_end_of_session(session, seq, &mut buf),
            4 => {
                let mut b = PacketBuilder::new(1400);
                b.start(other, seq);
                let _ = b.try_push(&payload(seq));
                buf.extend_from_slice(b.finish());
            }
            _ => {
                now += u64::from(arg[1]) * 500 + 1;
                let mut rounds = 0;
                while let Some(req) = arb.poll_timers(now, |e| check(e, &mut next)) {
                    assert_eq!(Some(req.sequence), arb.expected(), "requests start at the hole");
                    assert!(req.count >= 1);
                    rounds += 1;
                    assert!(rounds < 1000, "poll_timers keeps asking at one instant");
                    now += 1;
                }
                continue;
            }
        }
        if let Ok(packet) = Packet::parse(&buf) {
            arb.on_packet(line, &packet, now, |e| check(e, &mut next));
        }
    }
});
