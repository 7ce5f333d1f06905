//! Tests of the segment run: rollover, retention, crash and reopen, refusals.

use std::sync::{Arc, Mutex};

use super::*;

/// Segments in memory; the test keeps a handle on what was created and removed.
#[derive(Debug, Default, Clone)]
struct MemStore(Arc<Mutex<Log>>);

#[derive(Debug, Default)]
struct Log {
    created: Vec<u64>,
    removed: Vec<u64>,
}

impl SegmentStore for MemStore {
    fn create(&mut self, first_seq: u64, len: usize) -> io::Result<Box<dyn SegmentMemory>> {
        self.0.lock().unwrap().created.push(first_seq);
        Ok(Box::new(vec![0u8; len]))
    }

    fn remove(&mut self, first_seq: u64) -> io::Result<()> {
        self.0.lock().unwrap().removed.push(first_seq);
        Ok(())
    }
}

const UNIX: u64 = 1_700_000_000_000_000_000;

fn session() -> Session {
    Session::new("HZTEST0001").unwrap()
}

fn config() -> DurableConfig {
    DurableConfig {
        segment_bytes: 4096,
        max_bytes: u64::MAX,
        max_messages: u64::MAX,
        max_message_len: 100,
    }
}

fn payload(seq: u64) -> Vec<u8> {
    let mut m = seq.to_le_bytes().to_vec();
    m.extend((0..seq % 40).map(|i| (seq + i) as u8 | 1));
    m
}

fn open_as(
    config: DurableConfig,
    existing: Vec<(u64, Vec<u8>)>,
    session: Session,
) -> Result<(Segments, OpenReport, MemStore), OpenError> {
    let store = MemStore::default();
    let existing = existing
        .into_iter()
        .map(|(s, b)| (s, Box::new(b) as Box<dyn SegmentMemory>))
        .collect();
    let (j, r) = Segments::open(config, Box::new(store.clone()), existing, session, UNIX)?;
    Ok((j, r, store))
}

fn open(config: DurableConfig, existing: Vec<(u64, Vec<u8>)>) -> (Segments, OpenReport, MemStore) {
    open_as(config, existing, session()).unwrap()
}

/// What the segment files would hold if the process died now.
fn crash(j: &Segments) -> Vec<(u64, Vec<u8>)> {
    j.segments
        .iter()
        .map(|s| (s.first_seq(), s.bytes().to_vec()))
        .collect()
}

fn assert_holds(j: &Segments, from: u64, to: u64) {
    assert_eq!((j.tail(), j.head()), (from, to));
    for seq in from..to {
        assert_eq!(j.get(seq), Some(&payload(seq)[..]), "message {seq}");
    }
    assert_eq!(j.get(to), None);
    assert_eq!(j.get(from - 1), None);
}

#[test]
fn a_new_journal_starts_session_at_one_and_rolls_over_segments() {
    let (mut j, report, store) = open(config(), Vec::new());
    assert_eq!(report, OpenReport::default());
    assert_eq!(j.session(), session());
    assert_eq!((j.tail(), j.head(), j.segment_count()), (1, 1, 1));
    for seq in 1..=1000 {
        assert_eq!(j.append(&payload(seq)).unwrap(), seq);
    }
    assert!(j.segment_count() > 5, "{} segments", j.segment_count());
    assert_holds(&j, 1, 1001);
    let created = store.0.lock().unwrap().created.clone();
    assert_eq!(created[0], 1);
    // Each segment starts where the previous one ended.
    for (w, s) in created.windows(2).zip(j.segments.iter()) {
        assert_eq!(w[1], s.next_seq());
    }
    assert_eq!(
        j.append(&[]).unwrap_err(),
        JournalError::Empty,
        "empty messages are refused"
    );
    assert!(matches!(
        j.append(&[1; 101]),
        Err(JournalError::TooLarge { len: 101, max: 100 })
    ));
    assert_eq!(j.head(), 1001);
}

#[test]
fn retention_removes_whole_old_segments_by_bytes_and_by_messages() {
    let one = Layout::for_data(4096).file_len() as u64;
    let (mut j, _, store) = open(
        DurableConfig {
            max_bytes: 3 * one,
            ..config()
        },
        Vec::new(),
    );
    for seq in 1..=2000 {
        j.append(&payload(seq)).unwrap();
        assert!(j.segment_count() <= 3);
        assert!(j.retained_bytes() <= 3 * one);
    }
    let tail = j.tail();
    assert!(tail > 1);
    assert_eq!(j.evicted(), tail - 1);
    assert_holds(&j, tail, 2001);
    let log = store.0.lock().unwrap();
    assert_eq!(log.removed, log.created[..log.removed.len()]);

    let (mut j, _, _) = open(
        DurableConfig {
            max_messages: 300,
            ..config()
        },
        Vec::new(),
    );
    for seq in 1..=2000 {
        j.append(&payload(seq)).unwrap();
        // Whole segments: at most one segment's worth above the bound.
        assert!(
            j.head() - j.tail() <= 300 + 200,
            "{}..{}",
            j.tail(),
            j.head()
        );
    }
    // Checked as each segment starts: the old ones held more than 300 without the newest.
    assert!(j.tail() > 1);
    assert!(j.segments[0].first_seq() == j.tail());
}

#[test]
fn expiry_removes_segments_whose_newest_message_is_too_old() {
    let (mut j, _, _) = open(config(), Vec::new());
    let sec = 1_000_000_000;
    for (i, seq) in (1..=600).enumerate() {
        // One message per second of wall clock.
        j.expire(UNIX + i as u64 * sec, None);
        j.append(&payload(seq)).unwrap();
    }
    let before = j.segment_count();
    assert_eq!(j.expire(UNIX + 600 * sec, None), 0);
    // Keep 100 s: every segment whose successor started more than 100 s ago goes.
    let removed = j.expire(UNIX + 600 * sec, Some(100 * sec));
    assert!(removed > 0 && removed < before);
    let oldest_kept_successor = j.segments.get(1).map(|s| s.header().created_unix_ns);
    assert!(oldest_kept_successor.is_none_or(|t| UNIX + 600 * sec - t <= 100 * sec));
    assert_holds(&j, j.tail(), 601);
}

#[test]
fn a_crash_loses_nothing_appended_and_numbering_continues() {
    let (mut j, _, _) = open(config(), Vec::new());
    for seq in 1..=777 {
        j.append(&payload(seq)).unwrap();
    }
    let files = crash(&j);
    drop(j);
    let (mut j, report, store) = open(config(), files);
    assert_eq!(report.messages, 776 + 1);
    assert_eq!(report.discarded, 0);
    assert_holds(&j, 1, 778);
    assert!(
        store.0.lock().unwrap().created.is_empty(),
        "continues the last segment"
    );
    for seq in 778..=900 {
        assert_eq!(j.append(&payload(seq)).unwrap(), seq);
    }
    assert_holds(&j, 1, 901);
}

#[test]
fn a_torn_last_append_is_dropped_and_its_number_reused() {
    let (mut j, _, _) = open(config(), Vec::new());
    for seq in 1..=500 {
        j.append(&payload(seq)).unwrap();
    }
    let mut files = crash(&j);
    // The last message's record lost its last byte (a copy cut short).
    let last = j.segments.back().unwrap();
    let data = last.header().layout.data_start();
    let end = data + last.data_bytes() as usize;
    files.last_mut().unwrap().1[end - 1] ^= 0xff;
    let (mut j, report, _) = open(config(), files);
    assert_eq!(report.discarded, 1);
    assert_holds(&j, 1, 500);
    assert_eq!(j.append(&payload(500)).unwrap(), 500);
    assert_holds(&j, 1, 501);
}

#[test]
fn a_writer_stopped_right_after_sealing_continues_in_a_new_segment() {
    let (mut j, _, _) = open(config(), Vec::new());
    for seq in 1..=50 {
        j.append(&payload(seq)).unwrap();
    }
    j.segments.back_mut().unwrap().seal();
    let (j, _, store) = open(config(), crash(&j));
    assert_eq!(store.0.lock().unwrap().created, [51]);
    assert_eq!(j.segment_count(), 2);
    assert_holds(&j, 1, 51);
}

#[test]
fn holes_and_mixed_sessions_are_refused() {
    let (mut j, _, _) = open(config(), Vec::new());
    for seq in 1..=1000 {
        j.append(&payload(seq)).unwrap();
    }
    let files = crash(&j);
    assert!(files.len() >= 3);
    let mut holed = files.clone();
    let gone = holed.remove(1);
    let err = open_as(config(), holed, session()).unwrap_err();
    assert!(
        matches!(err, OpenError::Hole { from, .. } if from == gone.0),
        "{err}"
    );

    let (mut other, _, _) = open(config(), Vec::new());
    other.session = Session::new("OTHER").unwrap();
    other.segments.clear();
    other
        .start_segment(files.last().unwrap().0 + 10_000)
        .unwrap();
    let mut mixed = files.clone();
    mixed.extend(crash(&other));
    let err = open_as(config(), mixed, session()).unwrap_err();
    assert!(matches!(err, OpenError::MixedSessions { .. }), "{err}");
}

#[test]
fn an_existing_journal_keeps_its_own_session() {
    let (mut j, _, _) = open(config(), Vec::new());
    j.append(b"x").unwrap();
    let files = crash(&j);
    let (j, _, _) = open_as(config(), files, Session::new("ELSE").unwrap()).unwrap();
    assert_eq!(j.session(), session(), "the caller compares and decides");
}
