//! Fuzzes recovery of a durable journal segment: a segment written with messages taken from the
//! input, then damaged as the input says (bytes flipped anywhere, the file cut short), must open
//! without panicking, keep only messages identical to what was written (a prefix of them), and
//! take new appends that read back after another recovery.
#![no_main]

use herz_core::{
    engine::journal::segment::{Header, Layout, Segment},
    protocol::moldudp64::Session,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let header = Header {
        session: Session::new("HZFUZZ0001").unwrap(),
        first_seq: 1 + u64::from(n),
        layout: Layout::for_data(4096),
        created_unix_ns: 1,
        sealed_count: 0,
    };
    let len = header.layout.file_len();
    let mut segment = Segment::create(Box::new(vec![0u8; len]), header).unwrap();
    // Messages: up to `n % 64` of them, lengths from the input.
    let (msgs, damage) = rest.split_at(rest.len().min(usize::from(n % 64) * 4));
    let mut written: Vec<Vec<u8>> = Vec::new();
    for (i, chunk) in msgs.chunks(4).enumerate() {
        let msg: Vec<u8> = (0..1 + usize::from(chunk[0]) % 90)
            .map(|k| chunk[k % chunk.len()] ^ i as u8)
            .collect();
        if segment.append(&msg).is_err() {
            break;
        }
        written.push(msg);
    }
    if damage.first().is_some_and(|d| d & 1 == 1) {
        segment.seal();
    }
    let mut bytes = segment.bytes().to_vec();
    // Damage: (offset u16, xor u8) triples; a leading 0xFF byte cuts the file at the next u16.
    let mut d = damage.get(1..).unwrap_or_default();
    let mut flipped = false;
    while d.len() >= 3 {
        let at = usize::from(u16::from_le_bytes([d[0], d[1]])) % (len + 1);
        if d[2] == 0xFF {
            bytes.truncate(at);
        } else if at < bytes.len() {
            bytes[at] ^= d[2];
            flipped |= d[2] != 0;
        }
        d = &d[3..];
    }
    let Ok((mut opened, recovery)) = Segment::open(Box::new(bytes.clone())) else {
        return;
    };
    let kept = recovery.kept as usize;
    let first = opened.first_seq();
    for k in 0..kept {
        assert!(opened.get(first + k as u64).is_some(), "message {k} kept but unreadable");
    }
    assert_eq!(opened.get(first + kept as u64), None);
    // A cut file (a crash) keeps exactly a prefix of what was written. Flipped bytes are not a
    // crash: a CRC-32C detects random damage, not a forged checksum (the fuzzer can forge one),
    // so then only the structure is checked.
    if !flipped {
        assert!(kept <= written.len(), "more messages than written");
        for (k, msg) in written.iter().take(kept).enumerate() {
            assert_eq!(opened.get(first + k as u64), Some(&msg[..]), "message {k} changed");
        }
    }
    // A cut file is extended before appending (as the daemon would).
    if bytes.len() < len || opened.header().sealed_count > 0 {
        return;
    }
    let extra = b"appended after recovery";
    if opened.append(extra).is_ok() {
        let (again, r) = Segment::open(Box::new(opened.bytes().to_vec())).unwrap();
        assert_eq!(r.kept as usize, kept + 1);
        assert_eq!(again.get(first + kept as u64), Some(&extra[..]));
    }
});

