//! The journal: an append-only, bounded ring of messages indexed by sequence number.
//!
//! It is the single source of truth between ingest and egress. Every egress (each TCP subscriber, each
//! multicast channel, the re-request server, a replay) is a cursor, a plain sequence number, reading it.
//! Publishers never wait: when the journal is full the oldest messages are evicted, and a cursor that
//! pointed at them finds out through [`Journal::tail`] and applies its slow-consumer policy.
//!
//! Storage is two pre-allocated rings: bytes (capacity `max_bytes`) and an index of `(position, length)`
//! (capacity `max_messages`). A message never wraps around the end of the byte ring: when it would,
//! the rest of the ring is left as padding, so every message is one contiguous slice. Appending
//! allocates nothing.

/// Journal sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    /// Most messages retained.
    pub max_messages: usize,
    /// Most message bytes retained.
    pub max_bytes: usize,
    /// Largest single message accepted.
    pub max_message_len: usize,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Larger than `max_message_len`.
    #[error("message of {len} bytes exceeds the journal's limit of {max} bytes")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Empty messages carry nothing to route and are refused.
    #[error("empty message")]
    Empty,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Virtual byte position (monotonic; physical = pos % capacity).
    pos: u64,
    len: u32,
    /// When it was appended (caller's monotonic clock, ns; 0 when not given).
    at: u64,
}

/// The bounded message journal. Sequence numbers start at 1.
#[derive(Debug)]
pub struct Journal {
    data: Box<[u8]>,
    index: Box<[Entry]>,
    /// Oldest retained sequence (== `next_seq` when empty).
    first_seq: u64,
    /// Sequence the next append gets.
    next_seq: u64,
    /// Virtual position where the next message goes.
    write_pos: u64,
    /// Virtual position of the oldest retained byte.
    tail_pos: u64,
    max_message_len: usize,
    evicted: u64,
    appended_bytes: u64,
}

impl Journal {
    /// An empty journal whose first message will get sequence 1.
    ///
    /// # Panics
    /// When `max_messages` is 0 or `max_bytes` is smaller than `2 * max_message_len` (a message must
    /// always fit, padding included).
    pub fn new(config: JournalConfig) -> Self {
        Self::starting_at(config, 1)
    }

    /// An empty journal whose first message will get `first_seq`.
    pub fn starting_at(config: JournalConfig, first_seq: u64) -> Self {
        assert!(
            config.max_messages > 0,
            "journal needs room for at least one message"
        );
        assert!(
            config.max_message_len > 0,
            "max_message_len must be positive"
        );
        assert!(
            config.max_bytes >= 2 * config.max_message_len,
            "journal max_bytes must be at least twice max_message_len"
        );
        Self {
            data: vec![0u8; config.max_bytes].into_boxed_slice(),
            index: vec![Entry::default(); config.max_messages].into_boxed_slice(),
            first_seq: first_seq.max(1),
            next_seq: first_seq.max(1),
            write_pos: 0,
            tail_pos: 0,
            max_message_len: config.max_message_len,
            evicted: 0,
            appended_bytes: 0,
        }
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.index.len() as u64) as usize
    }

    fn evict_oldest(&mut self) {
        debug_assert!(self.first_seq < self.next_seq);
        self.first_seq += 1;
        self.evicted += 1;
        self.tail_pos = if self.first_seq == self.next_seq {
            self.write_pos
        } else {
            self.index[self.slot(self.first_seq)].pos
        };
    }

    /// Appends `msg`; returns its sequence number. Evicts the oldest messages as needed.
    pub fn append(&mut self, msg: &[u8]) -> Result<u64, JournalError> {
        self.append_at(msg, 0)
    }

    /// Appends `msg`, recording `now` (monotonic ns) as its ingest time for latency measurement.
    pub fn append_at(&mut self, msg: &[u8], now: u64) -> Result<u64, JournalError> {
        let len = msg.len();
        if len == 0 {
            return Err(JournalError::Empty);
        }
        if len > self.max_message_len {
            return Err(JournalError::TooLarge {
                len,
                max: self.max_message_len,
            });
        }
        let cap = self.data.len() as u64;
        let mut start = self.write_pos;
        let phys = (start % cap) as usize;
        if phys + len > self.data.len() {
            // Pad to the end of the ring so the message stays contiguous.
            start += cap - phys as u64;
        }
        let end = start + len as u64;
        while self.first_seq < self.next_seq
            && (self.next_seq - self.first_seq >= self.index.len() as u64
                || end - self.tail_pos > cap)
        {
            self.evict_oldest();
        }
        if self.first_seq == self.next_seq {
            self.tail_pos = start;
        }
        let p = (start % cap) as usize;
        self.data[p..p + len].copy_from_slice(msg);
        let seq = self.next_seq;
        let slot = self.slot(seq);
        self.index[slot] = Entry {
            pos: start,
            len: len as u32,
            at: now,
        };
        self.next_seq += 1;
        self.write_pos = end;
        self.appended_bytes += len as u64;
        Ok(seq)
    }

    /// The message with sequence `seq`, if still retained.
    #[inline]
    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        if seq < self.first_seq || seq >= self.next_seq {
            return None;
        }
        let e = self.index[self.slot(seq)];
        let p = (e.pos % self.data.len() as u64) as usize;
        Some(&self.data[p..p + e.len as usize])
    }

    /// When message `seq` was appended (as given to [`append_at`](Self::append_at)), if retained.
    #[inline]
    pub fn ingest_ns(&self, seq: u64) -> Option<u64> {
        (seq >= self.first_seq && seq < self.next_seq).then(|| self.index[self.slot(seq)].at)
    }

    /// The sequence the next appended message will get (one past the newest).
    #[inline]
    pub fn head(&self) -> u64 {
        self.next_seq
    }

    /// The oldest retained sequence (equals [`head`](Self::head) when empty).
    #[inline]
    pub fn tail(&self) -> u64 {
        self.first_seq
    }

    /// Messages retained.
    pub fn len(&self) -> u64 {
        self.next_seq - self.first_seq
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes spanned by the retained messages (padding included).
    pub fn bytes_used(&self) -> u64 {
        self.write_pos - self.tail_pos
    }

    /// Message bytes appended since creation.
    pub fn appended_bytes(&self) -> u64 {
        self.appended_bytes
    }

    /// Messages evicted since creation.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Largest message accepted.
    pub fn max_message_len(&self) -> usize {
        self.max_message_len
    }

    /// Retained messages from `from` (clamped to the tail) up to, not including, `to` (clamped to the head).
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let from = from.max(self.first_seq);
        let to = to.min(self.next_seq);
        (from..to).map(move |s| (s, self.get(s).expect("in range")))
    }
}

#[cfg(test)]
mod tests {
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
}
