//! The in-memory journal: a bounded ring of messages indexed by sequence number.
//!
//! Storage is two pre-allocated rings: bytes (capacity `max_bytes`) and an index of `(position,
//! length, ingest time)` (capacity `max_messages`). A message never wraps around the end of the
//! byte ring: when it would, the rest of the ring is left as padding, so every message is one
//! contiguous slice. When full, the oldest messages are evicted. Appending allocates nothing.

use super::{JournalConfig, JournalError};

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Virtual byte position (monotonic; physical = pos % capacity).
    pos: u64,
    len: u32,
    /// When it was appended (caller's monotonic clock, ns; 0 when not given).
    at: u64,
}

/// See the [module docs](self). Sequence numbers start at 1.
#[derive(Debug)]
pub struct Ring {
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

impl Ring {
    /// An empty ring whose first message will get sequence 1.
    ///
    /// # Panics
    /// When `max_messages` is 0 or `max_bytes` is smaller than `2 * max_message_len` (a message must
    /// always fit, padding included).
    pub fn new(config: JournalConfig) -> Self {
        let first_seq = 1;
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
            first_seq,
            next_seq: first_seq,
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
}
