//! The durable journal: a run of [`Segment`]s, oldest first, the newest one written.
//!
//! Appends go to the newest segment; when it is full it is sealed and the next one starts at the
//! following sequence number. Retention removes whole segments from the old end (by bytes, by
//! message count, and by age in [`Segments::expire`]); the newest is never removed. Reading a
//! sequence number finds its segment by binary search (the newest is checked first: live readers
//! are there). What the segments are made of (files, in the daemon) comes from a
//! [`SegmentStore`]; this code does no I/O of its own.

use std::{collections::VecDeque, fmt, io};

use super::{
    JournalError,
    segment::{Full, Header, Layout, Recovery, Segment, SegmentError, SegmentMemory},
};
use crate::protocol::moldudp64::Session;

/// Makes and deletes segment memories: files in a directory, in the daemon.
pub trait SegmentStore: Send {
    /// A new zeroed segment of `len` bytes for the messages from `first_seq` on.
    fn create(&mut self, first_seq: u64, len: usize) -> io::Result<Box<dyn SegmentMemory>>;
    /// Deletes the segment that started at `first_seq` (its memory has been dropped).
    fn remove(&mut self, first_seq: u64) -> io::Result<()>;
}

/// Sizing and retention of a durable journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableConfig {
    /// Record bytes per segment (see [`Layout::for_data`]).
    pub segment_bytes: usize,
    /// Most bytes of segment files kept (whole segments, checked as each segment starts; the
    /// newest is always kept).
    pub max_bytes: u64,
    /// Most messages kept (whole segments, checked as each segment starts; the newest is always
    /// kept).
    pub max_messages: u64,
    /// Largest single message accepted.
    pub max_message_len: usize,
}

/// Why a durable journal cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A segment is unreadable.
    #[error("segment starting at sequence {first_seq}: {source}")]
    Segment {
        /// Its first sequence number (from its name, as the caller passed it).
        first_seq: u64,
        /// Why.
        source: SegmentError,
    },
    /// Segments of two sessions in one journal.
    #[error(
        "the segment from sequence {first_seq} belongs to session {found}, the journal to {session}"
    )]
    MixedSessions {
        /// The journal's session (its oldest segment's).
        session: Session,
        /// The odd one.
        found: Session,
        /// Where.
        first_seq: u64,
    },
    /// Sequence numbers missing between two segments (a segment lost part of its end).
    #[error(
        "messages {from}..{to} are missing: the segment before ends at {from}, the next starts at {to}"
    )]
    Hole {
        /// The first missing sequence number.
        from: u64,
        /// The next present one.
        to: u64,
    },
    /// The first segment could not be created.
    #[error("cannot create the first segment: {0}")]
    Create(#[source] io::Error),
    /// The sizes cannot work.
    #[error("{0}")]
    Config(&'static str),
}

/// What opening found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenReport {
    /// Segments opened.
    pub segments: usize,
    /// Messages retained.
    pub messages: u64,
    /// Index entries of torn appends cleared (see [`Recovery`]).
    pub discarded: u64,
}

/// See the [module docs](self).
pub struct Segments {
    store: Box<dyn SegmentStore>,
    segments: VecDeque<Segment>,
    session: Session,
    layout: Layout,
    config: DurableConfig,
    /// Sum of the segments' file sizes.
    retained_bytes: u64,
    /// Wall clock for new segments' headers, as last given to [`expire`](Self::expire).
    unix_ns: u64,
    evicted: u64,
    appended_bytes: u64,
    /// Segments removed by retention.
    removed_segments: u64,
    /// A failure to remove a segment file, kept for the caller to log.
    last_error: Option<io::Error>,
}

impl fmt::Debug for Segments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segments")
            .field("session", &self.session)
            .field("segments", &self.segments.len())
            .field("tail", &self.tail())
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl Segments {
    /// Opens the journal from `existing` segments (any order), or starts session `session` at
    /// sequence 1 when there are none. With segments present, their session is the journal's:
    /// the caller compares it with what it expected ([`session`](Self::session)).
    pub fn open(
        config: DurableConfig,
        store: Box<dyn SegmentStore>,
        existing: Vec<(u64, Box<dyn SegmentMemory>)>,
        session: Session,
        unix_ns: u64,
    ) -> Result<(Self, OpenReport), OpenError> {
        let layout = Layout::for_data(config.segment_bytes);
        if config.max_message_len == 0
            || config.max_message_len + super::segment::RECORD_OVERHEAD
                > layout.data_capacity as usize
        {
            return Err(OpenError::Config(
                "max_message_len must be at least 1 and fit in one segment",
            ));
        }
        let mut report = OpenReport::default();
        let mut opened = Vec::with_capacity(existing.len());
        for (first_seq, mem) in existing {
            let (segment, Recovery { kept, discarded }) =
                Segment::open(mem).map_err(|source| OpenError::Segment { first_seq, source })?;
            report.messages += kept;
            report.discarded += discarded;
            opened.push(segment);
        }
        opened.sort_by_key(Segment::first_seq);
        let session = opened.first().map_or(session, |s| s.header().session);
        for pair in opened.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if b.header().session != session {
                return Err(OpenError::MixedSessions {
                    session,
                    found: b.header().session,
                    first_seq: b.first_seq(),
                });
            }
            if a.next_seq() != b.first_seq() {
                return Err(OpenError::Hole {
                    from: a.next_seq(),
                    to: b.first_seq(),
                });
            }
        }
        report.segments = opened.len();
        let mut journal = Segments {
            store,
            retained_bytes: opened.iter().map(|s| s.file_len() as u64).sum(),
            segments: opened.into(),
            session,
            layout,
            config,
            unix_ns,
            evicted: 0,
            appended_bytes: 0,
            removed_segments: 0,
            last_error: None,
        };
        match journal.segments.back() {
            None => journal.start_segment(1).map_err(OpenError::Create)?,
            // The writer stopped right after sealing: continue in a new segment.
            Some(last) if last.header().sealed_count > 0 => {
                let next = last.next_seq();
                journal.start_segment(next).map_err(OpenError::Create)?;
            }
            Some(_) => {}
        }
        Ok((journal, report))
    }

    fn start_segment(&mut self, first_seq: u64) -> io::Result<()> {
        let header = Header {
            session: self.session,
            first_seq,
            layout: self.layout,
            created_unix_ns: self.unix_ns,
            sealed_count: 0,
        };
        let len = self.layout.file_len();
        let mem = self.store.create(first_seq, len)?;
        let segment = Segment::create(mem, header)
            .map_err(|e| io::Error::other(format!("new segment: {e}")))?;
        self.retained_bytes += len as u64;
        self.segments.push_back(segment);
        self.retain();
        Ok(())
    }

    /// Removes the oldest segments while over the byte or message bounds (never the newest).
    fn retain(&mut self) {
        while self.segments.len() > 1
            && (self.retained_bytes > self.config.max_bytes
                || self.head() - self.tail() > self.config.max_messages)
        {
            self.remove_oldest();
        }
    }

    fn remove_oldest(&mut self) {
        let Some(old) = self.segments.pop_front() else {
            return;
        };
        self.retained_bytes -= old.file_len() as u64;
        self.evicted += old.count();
        self.removed_segments += 1;
        let first = old.first_seq();
        drop(old);
        if let Err(e) = self.store.remove(first) {
            self.last_error = Some(e);
        }
    }

    /// Appends `msg`; returns its sequence number. Starts a new segment when the newest is full
    /// (the only time this does I/O: creating a file and, by retention, deleting old ones).
    pub fn append(&mut self, msg: &[u8]) -> Result<u64, JournalError> {
        let len = msg.len();
        if len == 0 {
            return Err(JournalError::Empty);
        }
        if len > self.config.max_message_len {
            return Err(JournalError::TooLarge {
                len,
                max: self.config.max_message_len,
            });
        }
        let active = self.segments.back_mut().expect("never empty");
        let seq = active.next_seq();
        if active.append(msg) == Err(Full) {
            active.seal();
            self.start_segment(seq).map_err(|e| JournalError::Storage {
                seq,
                message: e.to_string(),
            })?;
            let active = self.segments.back_mut().expect("just added");
            // An empty segment holds any message up to max_message_len (checked at open).
            active.append(msg).map_err(|Full| JournalError::TooLarge {
                len,
                max: self.config.max_message_len,
            })?;
        }
        self.appended_bytes += len as u64;
        Ok(seq)
    }

    /// The message with sequence `seq`, if retained.
    #[inline]
    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        let active = self.segments.back()?;
        if seq >= active.first_seq() {
            return active.get(seq);
        }
        // The segment holding `seq` is the last one starting at or before it.
        let i = self
            .segments
            .partition_point(|s| s.first_seq() <= seq)
            .checked_sub(1)?;
        self.segments[i].get(seq)
    }

    /// Makes every append so far durable; returns whether anything was written.
    pub fn sync(&mut self) -> io::Result<bool> {
        let mut any = false;
        // Newest first; older segments are clean unless a rollover happened since the last sync
        // (or syncing was never asked for).
        for s in self.segments.iter_mut().rev() {
            any |= s.sync()?;
        }
        Ok(any)
    }

    /// Notes the wall clock (for new segments' headers) and removes segments whose newest
    /// message is older than `max_age_ns` (a segment's newest message is no newer than its
    /// successor's creation). Returns how many were removed.
    pub fn expire(&mut self, unix_ns: u64, max_age_ns: Option<u64>) -> usize {
        self.unix_ns = unix_ns;
        let Some(max_age) = max_age_ns else {
            return 0;
        };
        let mut removed = 0;
        while self.segments.len() > 1
            && unix_ns.saturating_sub(self.segments[1].header().created_unix_ns) > max_age
        {
            self.remove_oldest();
            removed += 1;
        }
        removed
    }

    /// The session of every message in the journal.
    pub const fn session(&self) -> Session {
        self.session
    }

    /// The sequence the next append gets.
    pub fn head(&self) -> u64 {
        self.segments.back().map_or(1, Segment::next_seq)
    }

    /// The oldest retained sequence.
    pub fn tail(&self) -> u64 {
        self.segments.front().map_or(1, Segment::first_seq)
    }

    /// Segments retained.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes of the retained segment files.
    pub const fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// Record bytes retained (payloads and their checksums).
    pub fn data_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::data_bytes).sum()
    }

    /// Messages removed by retention since opening.
    pub const fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Message bytes appended since opening.
    pub const fn appended_bytes(&self) -> u64 {
        self.appended_bytes
    }

    /// Segments removed by retention since opening.
    pub const fn removed_segments(&self) -> u64 {
        self.removed_segments
    }

    /// Largest message accepted.
    pub const fn max_message_len(&self) -> usize {
        self.config.max_message_len
    }

    /// The last failure to delete a segment, once (for the caller to log).
    pub fn take_error(&mut self) -> Option<io::Error> {
        self.last_error.take()
    }
}

#[cfg(test)]
mod tests;
