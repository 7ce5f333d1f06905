//! Tests of the memory journal through the public interface.

use super::*;

fn cfg(max_messages: usize, max_bytes: usize) -> JournalConfig {
    JournalConfig {
        max_messages,
        max_bytes,
        max_message_len: 64,
    }
}

#[test]
fn sequences_start_at_one_and_read_back() {
    let mut j = Journal::new(cfg(16, 1024));
    assert!(j.is_empty());
    assert_eq!((j.tail(), j.head()), (1, 1));
    for i in 0..10u8 {
        assert_eq!(j.append(&[i; 5]).unwrap(), i as u64 + 1);
    }
    assert_eq!((j.tail(), j.head(), j.len()), (1, 11, 10));
    assert_eq!(j.get(3).unwrap(), &[2u8; 5]);
    assert_eq!(j.get(0), None);
    assert_eq!(j.get(11), None);
    let seq = j.append_at(&[9; 3], 12345).unwrap();
    assert_eq!(j.ingest_ns(seq), Some(12345));
    assert_eq!(j.ingest_ns(seq + 1), None);
}

#[test]
fn message_count_bound_evicts_oldest() {
    let mut j = Journal::new(cfg(4, 1024));
    for i in 1..=10u8 {
        j.append(&[i]).unwrap();
    }
    assert_eq!((j.tail(), j.head()), (7, 11));
    assert_eq!(j.get(6), None);
    assert_eq!(j.get(7).unwrap(), &[7]);
    assert_eq!(j.evicted(), 6);
}

#[test]
fn byte_bound_evicts_and_messages_never_wrap() {
    let mut j = Journal::new(cfg(1000, 128));
    // 50-byte messages: at most two fit in 128 bytes (the third would wrap and pads instead).
    for i in 1..=20u8 {
        let seq = j.append(&[i; 50]).unwrap();
        assert_eq!(j.get(seq).unwrap(), &[i; 50][..]);
        assert!(j.bytes_used() <= 128, "used {}", j.bytes_used());
        for s in j.tail()..j.head() {
            assert_eq!(j.get(s).unwrap(), &[s as u8; 50][..], "seq {s}");
        }
    }
    assert!((1..=2).contains(&j.len()));
}

#[test]
fn varied_sizes_always_read_back_exactly() {
    let mut j = Journal::new(JournalConfig {
        max_messages: 37,
        max_bytes: 1000,
        max_message_len: 100,
    });
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut sizes = Vec::new();
    for n in 0..5000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = 1 + (x % 100) as usize;
        let fill = (n % 251) as u8;
        let seq = j.append(&vec![fill; len]).unwrap();
        sizes.push((len, fill));
        assert_eq!(seq, n + 1);
        assert!(j.len() <= 37);
        assert!(j.bytes_used() <= 1000);
        for (s, m) in j.range(0, u64::MAX) {
            let (l, f) = sizes[(s - 1) as usize];
            assert_eq!(m.len(), l);
            assert!(m.iter().all(|b| *b == f));
        }
    }
}

#[test]
fn bad_messages_are_refused_and_change_nothing() {
    let mut j = Journal::new(cfg(4, 1024));
    assert_eq!(j.append(&[]), Err(JournalError::Empty));
    assert_eq!(
        j.append(&[0; 65]),
        Err(JournalError::TooLarge { len: 65, max: 64 })
    );
    assert_eq!(j.head(), 1);
}

#[test]
fn range_is_clamped() {
    let mut j = Journal::new(cfg(4, 1024));
    for i in 1..=6u8 {
        j.append(&[i]).unwrap();
    }
    let seqs: Vec<u64> = j.range(1, 100).map(|(s, _)| s).collect();
    assert_eq!(seqs, vec![3, 4, 5, 6]);
    assert_eq!(j.range(5, 6).count(), 1);
}
