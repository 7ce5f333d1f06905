//! Drives the SoupBinTCP server session state machine (herz-core `session`) with arbitrary client bytes,
//! delivered in arbitrary pieces, interleaved with journal appends, fills, partial writes, slow-consumer
//! checks and virtual time. Checks: nothing panics; at most one Close event, and nothing after it; output
//! stays bounded; a subscriber's cursor never passes the journal head nor moves back; only a logged-in
//! publisher appends, and every append is reported.
#![no_main]

use herz_core::{
    engine::journal::{Journal, JournalConfig},
    protocol::moldudp64::Session as SessionName,
    session::{Ctx, Event, Role, ServerSession, SlowConsumerPolicy, State, Timers, User},
};
use libfuzzer_sys::fuzz_target;

const OUT_LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else { return };
    let role = if mode & 1 == 0 { Role::Subscriber } else { Role::Publisher };
    let policy = match (mode >> 1) % 3 {
        0 => SlowConsumerPolicy::Disconnect,
        1 => SlowConsumerPolicy::DropOldest,
        _ => SlowConsumerPolicy::Conflate,
    };
    let users = [User { name: "demo".into(), password: "demo".into(), policy: None }];
    let name = SessionName::new("HZFUZZ").unwrap();
    let mut journal = Journal::new(JournalConfig { max_messages: 64, max_bytes: 8192, max_message_len: 1024 });
    let mut s = ServerSession::new(role, OUT_LIMIT, policy, 0);
    let mut now = 0u64;
    let mut closed = false;
    let mut appended = 0u64;
    let mut last_cursor = 0u64;
    // Each step: an opcode byte, then (for input) a length byte and that many bytes.
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 8 {
            0 | 1 | 2 => {
                let Some((&len, tail)) = rest.split_first() else { break };
                let n = (len as usize).min(tail.len());
                let buf = s.recv_buf();
                let n = n.min(buf.len());
                buf[..n].copy_from_slice(&tail[..n]);
                rest = &tail[n..];
                let ctx = Ctx { session: name, users: &users, policy, now };
                s.on_received(n, &ctx, &mut journal);
            }
            3 => {
                let mut msg = vec![b'Q'; 9 + (op as usize >> 3)];
                msg[1..9].copy_from_slice(if op & 0x80 == 0 { b"AAPL    " } else { b"MSFT    " });
                let _ = journal.append_at(&msg, now);
            }
            4 => {
                s.fill(&journal);
            }
            5 => {
                let n = s.transmit().len().min(op as usize * 8);
                s.on_sent(n, now);
            }
            6 => {
                now += (op as u64) * 50_000_000;
                let timers = Timers { heartbeat_ns: 1_000_000_000, silence_ns: 15_000_000_000, login_ns: 5_000_000_000 };
                s.on_timer(now, &timers);
            }
            _ => {
                let _ = s.enforce_lag(&journal, 8, op & 0x80 != 0);
            }
        }
        assert!(s.queued() <= OUT_LIMIT + 64 * 1024, "output unbounded: {}", s.queued());
        if role == Role::Subscriber && s.state() == State::Active {
            assert!(s.cursor() <= journal.head());
            assert!(s.cursor() >= last_cursor, "cursor moved back");
            last_cursor = s.cursor();
        }
        while let Some(ev) = s.poll_event() {
            assert!(!closed, "event after Close: {ev:?}");
            match ev {
                Event::Close(_) => closed = true,
                Event::Appended { count, .. } => {
                    assert_eq!(role, Role::Publisher);
                    assert!(s.logged_in());
                    appended += count;
                }
                Event::LoginAccepted { .. } => assert!(s.logged_in()),
                Event::LoginRejected(_) | Event::Refused(_) => {}
            }
        }
        assert_eq!(closed, s.is_closed());
    }
    if role == Role::Subscriber {
        assert_eq!(appended, 0);
    }
});
