//! Tests of one segment: appends read back, sealing, and recovery from every kind of torn write.

use super::*;

fn header(first_seq: u64) -> Header {
    Header {
        session: Session::new("HZTEST0001").unwrap(),
        first_seq,
        layout: Layout::for_data(8192),
        created_unix_ns: 1_700_000_000_000_000_000,
        sealed_count: 0,
    }
}

fn fresh(first_seq: u64) -> Segment {
    let h = header(first_seq);
    Segment::create(Box::new(vec![0u8; h.layout.file_len()]), h).unwrap()
}

/// Message `seq`: its number then filler, 9 to 40 bytes, no zero byte (so a zeroed suffix
/// always changes it).
fn payload(seq: u64) -> Vec<u8> {
    let mut m = seq.to_le_bytes().map(|b| b | 0x80).to_vec();
    m.extend((0..1 + seq % 32).map(|i| 1 + ((seq + i) % 200) as u8));
    m
}

/// The segment's bytes, as a file would hold them.
fn bytes_of(s: &Segment) -> Vec<u8> {
    s.mem.bytes().to_vec()
}

fn reopen(bytes: Vec<u8>) -> (Segment, Recovery) {
    Segment::open(Box::new(bytes)).unwrap()
}

fn assert_holds(s: &Segment, first: u64, next: u64) {
    assert_eq!((s.first_seq(), s.next_seq()), (first, next));
    for seq in first..next {
        assert_eq!(s.get(seq), Some(&payload(seq)[..]), "message {seq}");
    }
    assert_eq!(s.get(next), None);
    assert_eq!(s.get(first.wrapping_sub(1)), None);
}

#[test]
fn appends_read_back_until_full_and_reopen_identically() {
    let mut s = fresh(100);
    let mut seq = 100;
    while s.append(&payload(seq)).is_ok() {
        seq += 1;
    }
    assert!(seq > 250, "8 KiB holds a few hundred short messages: {seq}");
    assert_holds(&s, 100, seq);
    assert!(s.data_bytes() as usize <= s.header().layout.data_capacity as usize);
    let (again, rec) = reopen(bytes_of(&s));
    assert_eq!(
        rec,
        Recovery {
            kept: seq - 100,
            discarded: 0
        }
    );
    assert_holds(&again, 100, seq);
}

#[test]
fn a_header_of_another_kind_is_refused() {
    let s = fresh(1);
    let mut b = bytes_of(&s);
    b[0] = b'X';
    assert!(matches!(
        Segment::open(Box::new(b)),
        Err(SegmentError::BadHeader(_))
    ));
    let mut b = bytes_of(&s);
    b[25] ^= 1; // first_seq: header CRC mismatch
    assert!(matches!(
        Segment::open(Box::new(b)),
        Err(SegmentError::BadHeader(_))
    ));
    let mut b = bytes_of(&s);
    b[8] = 9;
    assert!(matches!(
        Segment::open(Box::new(b)),
        Err(SegmentError::Version(9))
    ));
    assert!(matches!(
        Segment::open(Box::new(vec![0u8; 100])),
        Err(SegmentError::Short { .. })
    ));
}

/// Every way the last append can be cut short: the file truncated at every byte of the last
/// record, the record's bytes missing from every offset on (a write torn mid-copy, index entry
/// already on disk), each byte of it flipped, and the index entry never written. Recovery keeps
/// every earlier message, nothing else, and the next append lands exactly where the torn one was.
#[test]
fn recovery_keeps_every_complete_record_and_nothing_else() {
    let mut s = fresh(1);
    for seq in 1..=20 {
        s.append(&payload(seq)).unwrap();
    }
    let whole = bytes_of(&s);
    let data = s.header().layout.data_start();
    let last_start = data + prev_end(&whole, 19) as usize;
    let last_end = data + entry(&whole, 19).unwrap() as usize;
    let check = |bytes: Vec<u8>, what: &str| {
        let (mut r, rec) = reopen(bytes);
        assert_eq!(rec.kept, 19, "{what}");
        assert_holds(&r, 1, 20);
        // Appending continues at 20, and that reads back after another reopen.
        r.append(&payload(20)).unwrap();
        r.append(&payload(21)).unwrap();
        let (r2, rec2) = reopen(r.mem.bytes().to_vec());
        assert_eq!(rec2.kept, 21, "{what}: after re-append");
        assert_holds(&r2, 1, 22);
    };
    for cut in last_start..last_end {
        let mut b = whole.clone();
        b.truncate(cut);
        // A shorter file is extended with zeroes before writing; the reader sees the cut.
        let (r, rec) = reopen(b.clone());
        assert_eq!(rec.kept, 19, "file cut at {cut}");
        assert_holds(&r, 1, 20);
        b.resize(whole.len(), 0);
        check(b, &format!("file cut at {cut}, extended"));
    }
    for from in last_start..last_end {
        let mut b = whole.clone();
        b[from..last_end].fill(0);
        check(b, &format!("record zero from {from}"));
    }
    for at in last_start..last_end {
        let mut b = whole.clone();
        b[at] ^= 0x55;
        check(b, &format!("byte {at} flipped"));
    }
    let mut b = whole.clone();
    let at = HEADER_LEN + 4 * 19;
    b[at..at + 4].fill(0);
    check(b, "index entry never written");
}

/// After a power cut the index pages may reach the disk out of order: a stale entry past a
/// zeroed one must not come back to life when appends reach it again.
#[test]
fn stale_index_entries_past_the_end_are_cleared() {
    let mut s = fresh(1);
    for seq in 1..=10 {
        s.append(&payload(seq)).unwrap();
    }
    let mut b = bytes_of(&s);
    // Entry 4 lost; 5..=9 (and their records) still there.
    let at = HEADER_LEN + 4 * 4;
    b[at..at + 4].fill(0);
    let (mut r, rec) = reopen(b);
    assert_eq!(
        rec,
        Recovery {
            kept: 4,
            discarded: 5
        }
    );
    // Same-size messages re-appended: the old records are overwritten, index decides.
    for seq in 5..=7 {
        r.append(&payload(seq)).unwrap();
    }
    let (r2, rec2) = reopen(r.mem.bytes().to_vec());
    assert_eq!(rec2.kept, 7);
    assert_holds(&r2, 1, 8);
}

#[test]
fn a_sealed_segment_is_trusted_after_its_last_record_checks_out() {
    let mut s = fresh(50);
    for seq in 50..60 {
        s.append(&payload(seq)).unwrap();
    }
    s.seal();
    assert_eq!(s.header().sealed_count, 10);
    let (r, rec) = reopen(bytes_of(&s));
    assert_eq!(rec.kept, 10);
    assert_eq!(r.header().sealed_count, 10);
    assert_holds(&r, 50, 60);
    // A sealed segment whose last record is damaged is scanned instead.
    let mut b = bytes_of(&s);
    let last = s.header().layout.data_start() + entry(&b, 9).unwrap() as usize - 1;
    b[last] ^= 1;
    let (r, rec) = reopen(b);
    assert_eq!(rec.kept, 9);
    assert_eq!(r.header().sealed_count, 0);
}

#[test]
fn sync_covers_what_was_appended_since_the_last_one() {
    struct Recorder(Vec<u8>, std::sync::Arc<std::sync::Mutex<Vec<Range<usize>>>>);
    impl SegmentMemory for Recorder {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
        fn bytes_mut(&mut self) -> &mut [u8] {
            &mut self.0
        }
        fn sync(&self, range: Range<usize>) -> io::Result<()> {
            self.1.lock().unwrap().push(range);
            Ok(())
        }
    }
    let h = header(1);
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mem = Recorder(vec![0; h.layout.file_len()], log.clone());
    let mut s = Segment::create(Box::new(mem), h).unwrap();
    assert!(!s.sync().unwrap());
    s.append(b"abc").unwrap();
    s.append(b"defg").unwrap();
    assert!(s.sync().unwrap());
    let data = h.layout.data_start();
    assert_eq!(
        *log.lock().unwrap(),
        [data..data + 15, HEADER_LEN..HEADER_LEN + 8]
    );
    log.lock().unwrap().clear();
    assert!(!s.sync().unwrap());
    s.append(b"h").unwrap();
    s.seal();
    assert!(s.sync().unwrap());
    assert_eq!(
        *log.lock().unwrap(),
        [
            data + 15..data + 20,
            HEADER_LEN + 8..HEADER_LEN + 12,
            0..HEADER_LEN
        ]
    );
}

/// Found by the segment fuzz target: a sealed segment whose last record is intact but an earlier
/// index entry is damaged was trusted, and reading the damaged message panicked out of bounds.
/// Now its index is checked in full, and a damaged one is scanned like an open segment.
#[test]
fn a_sealed_segment_with_a_damaged_index_is_scanned_not_trusted() {
    let mut s = fresh(1);
    for seq in 1..=30 {
        s.append(&payload(seq)).unwrap();
    }
    s.seal();
    for (k, value) in [(3u32, u32::MAX), (3, 0), (10, 1), (0, 60_000)] {
        let mut b = bytes_of(&s);
        let at = HEADER_LEN + 4 * k as usize;
        b[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let (r, rec) = reopen(b);
        assert_eq!(rec.kept, u64::from(k), "entry {k} = {value}");
        assert_eq!(r.header().sealed_count, 0);
        for seq in 1..=31 {
            // Never a panic; the kept ones are intact.
            let got = r.get(seq);
            if seq <= u64::from(k) {
                assert_eq!(got, Some(&payload(seq)[..]));
            } else {
                assert_eq!(got, None);
            }
        }
    }
}
