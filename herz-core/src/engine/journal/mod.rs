//! The journal: every message in sequence-number order, the single source of truth between
//! ingest and egress.
//!
//! Every egress (each TCP subscriber, each multicast channel, the re-request server, a replay) is a
//! cursor, a plain sequence number, reading it. Publishers never wait: when the journal is full the
//! oldest messages are evicted, and a cursor that pointed at them finds out through
//! [`Journal::tail`] and applies its slow-consumer policy.
//!
//! Two storages behind one interface:
//! - **memory** ([`ring`]): two pre-allocated rings, lost when the process ends;
//! - **durable** ([`durable`], [`segment`]): memory-mapped segment files that survive a crash of
//!   the process (and, once [`Journal::sync`] returned, of the machine). A restart reopens them
//!   and continues the same session at the next sequence number.
//!
//! Appending allocates nothing; the durable journal does I/O only when a segment fills up.

pub mod durable;
pub mod ring;
pub mod segment;

use std::io;

use durable::Segments;
use ring::Ring;

use crate::protocol::moldudp64::Session;

/// Sizing of the memory journal.
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
    /// The durable journal could not start its next segment (disk full, I/O error): the message
    /// was not stored and has no sequence number.
    #[error("cannot store message {seq}: {message}")]
    Storage {
        /// The sequence number it would have had.
        seq: u64,
        /// The I/O error.
        message: String,
    },
}

/// Where messages live.
#[derive(Debug)]
enum Store {
    Memory(Ring),
    Durable {
        segments: Segments,
        /// Ingest times of the newest messages (`seq & mask`): latency is measured on live
        /// traffic only, and the files carry no clock readings.
        ingest: Box<[u64]>,
    },
}

/// See the [module docs](self). Sequence numbers start at 1.
#[derive(Debug)]
pub struct Journal {
    store: Store,
}

/// Ingest times kept by a durable journal (a power of two).
const INGEST_TIMES: usize = 1 << 20;

impl Journal {
    /// An empty memory journal whose first message will get sequence 1.
    ///
    /// # Panics
    /// When `max_messages` is 0 or `max_bytes` is smaller than `2 * max_message_len` (a message must
    /// always fit, padding included).
    pub fn new(config: JournalConfig) -> Self {
        Journal {
            store: Store::Memory(Ring::new(config)),
        }
    }

    /// A durable journal over opened segments (see [`Segments::open`]).
    pub fn durable(segments: Segments) -> Self {
        Journal {
            store: Store::Durable {
                segments,
                ingest: vec![0; INGEST_TIMES].into_boxed_slice(),
            },
        }
    }

    /// Appends `msg`; returns its sequence number. Evicts the oldest messages as needed.
    pub fn append(&mut self, msg: &[u8]) -> Result<u64, JournalError> {
        self.append_at(msg, 0)
    }

    /// Appends `msg`, recording `now` (monotonic ns) as its ingest time for latency measurement.
    #[inline]
    pub fn append_at(&mut self, msg: &[u8], now: u64) -> Result<u64, JournalError> {
        match &mut self.store {
            Store::Memory(r) => r.append_at(msg, now),
            Store::Durable { segments, ingest } => {
                let seq = segments.append(msg)?;
                ingest[seq as usize & (INGEST_TIMES - 1)] = now;
                Ok(seq)
            }
        }
    }

    /// The message with sequence `seq`, if still retained.
    #[inline]
    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        match &self.store {
            Store::Memory(r) => r.get(seq),
            Store::Durable { segments, .. } => segments.get(seq),
        }
    }

    /// When message `seq` was appended (as given to [`append_at`](Self::append_at)), if retained
    /// (and, in a durable journal, among the newest million and appended since opening).
    #[inline]
    pub fn ingest_ns(&self, seq: u64) -> Option<u64> {
        match &self.store {
            Store::Memory(r) => r.ingest_ns(seq),
            Store::Durable { segments, ingest } => {
                let head = segments.head();
                (seq < head && head - seq <= INGEST_TIMES as u64 && seq >= segments.tail())
                    .then(|| ingest[seq as usize & (INGEST_TIMES - 1)])
                    .filter(|&t| t != 0)
            }
        }
    }

    /// The sequence the next appended message will get (one past the newest).
    #[inline]
    pub fn head(&self) -> u64 {
        match &self.store {
            Store::Memory(r) => r.head(),
            Store::Durable { segments, .. } => segments.head(),
        }
    }

    /// The oldest retained sequence (equals [`head`](Self::head) when empty).
    #[inline]
    pub fn tail(&self) -> u64 {
        match &self.store {
            Store::Memory(r) => r.tail(),
            Store::Durable { segments, .. } => segments.tail(),
        }
    }

    /// Messages retained.
    pub fn len(&self) -> u64 {
        self.head() - self.tail()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes holding the retained messages: the ring's span (padding included), or the
    /// segments' records (payloads and checksums).
    pub fn bytes_used(&self) -> u64 {
        match &self.store {
            Store::Memory(r) => r.bytes_used(),
            Store::Durable { segments, .. } => segments.data_bytes(),
        }
    }

    /// Message bytes appended since creation (or opening).
    pub fn appended_bytes(&self) -> u64 {
        match &self.store {
            Store::Memory(r) => r.appended_bytes(),
            Store::Durable { segments, .. } => segments.appended_bytes(),
        }
    }

    /// Messages evicted since creation (or opening).
    pub fn evicted(&self) -> u64 {
        match &self.store {
            Store::Memory(r) => r.evicted(),
            Store::Durable { segments, .. } => segments.evicted(),
        }
    }

    /// Largest message accepted.
    pub fn max_message_len(&self) -> usize {
        match &self.store {
            Store::Memory(r) => r.max_message_len(),
            Store::Durable { segments, .. } => segments.max_message_len(),
        }
    }

    /// Retained messages from `from` (clamped to the tail) up to, not including, `to` (clamped to the head).
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let from = from.max(self.tail());
        let to = to.min(self.head());
        (from..to).map(move |s| (s, self.get(s).expect("in range")))
    }

    /// The durable journal's segments, if this is one.
    pub fn segments(&self) -> Option<&Segments> {
        match &self.store {
            Store::Memory(_) => None,
            Store::Durable { segments, .. } => Some(segments),
        }
    }

    /// The durable journal's segments, writable (sync, expiry), if this is one.
    pub fn segments_mut(&mut self) -> Option<&mut Segments> {
        match &mut self.store {
            Store::Memory(_) => None,
            Store::Durable { segments, .. } => Some(segments),
        }
    }

    /// Makes every append so far durable (no-op for the memory journal); returns whether
    /// anything was written.
    pub fn sync(&mut self) -> io::Result<bool> {
        self.segments_mut().map_or(Ok(false), Segments::sync)
    }

    /// The session recorded with the messages, for a durable journal.
    pub fn session(&self) -> Option<Session> {
        self.segments().map(Segments::session)
    }
}

#[cfg(test)]
mod tests;
