//! One segment of the durable journal, over plain bytes: its layout, appending, reading and
//! recovery after a crash. The daemon maps the bytes from a file; tests use a `Vec<u8>`.
//!
//! A segment holds the messages `first_seq ..` of one session, in three areas:
//!
//! ```text
//! [0, 4096)                 header: magic, version, session, first_seq, capacities, creation
//!                           time, sealed count, CRC-32C of the header
//! [4096, data_start)        index: one u32 per message, the end offset (in the data area) of
//!                           its record; 0 = not written. Entries only ever increase.
//! [data_start, file_len)    records: CRC-32C of (sequence number, payload) as u32, then the
//!                           payload. A record starts where the previous one ended.
//! ```
//!
//! All integers are little-endian. An append writes the record first and its index entry last:
//! a process killed mid-append leaves the entry 0 and the message does not exist. A power cut
//! can leave pages written in any order; the CRC tells a complete record from a torn one.
//! Recovery walks the index from the start and keeps every message whose entry is non-zero,
//! increasing, inside the file and whose CRC matches; every index entry after the first one
//! that fails is zeroed. A sealed segment (the writer moved on to the next one) records its
//! message count in the header; recovery then checks its whole index (so that no read can go
//! out of bounds) but the checksum of its last record only (opening stays fast).

use std::{io, ops::Range};

use crate::protocol::moldudp64::Session;

/// Size of the header area (one page).
pub const HEADER_LEN: usize = 4096;
const PAGE: usize = 4096;
const MAGIC: &[u8; 8] = b"HERZJNL\0";
const VERSION: u32 = 1;
/// Header bytes covered by the header CRC (the CRC follows them).
const HEADER_FIELDS: usize = 64;
/// Bytes in front of each payload (its CRC).
pub const RECORD_OVERHEAD: usize = 4;

/// Why a segment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The header is not a Herz journal segment header, or is damaged.
    #[error("not a Herz journal segment: {0}")]
    BadHeader(&'static str),
    /// Written by an incompatible version.
    #[error(
        "journal segment format version {0} is not supported (this Herz writes version {VERSION})"
    )]
    Version(u32),
    /// The bytes are shorter than the header says.
    #[error("segment is {have} bytes, its header describes {want}")]
    Short {
        /// Bytes present.
        have: usize,
        /// Bytes the layout needs.
        want: usize,
    },
}

/// Sizes of a segment's areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Most messages in the segment.
    pub index_capacity: u32,
    /// Bytes of the record area (records are at least `RECORD_OVERHEAD + 1` bytes).
    pub data_capacity: u32,
}

impl Layout {
    /// A layout whose record area is `data_capacity` bytes (rounded up to whole pages, at least
    /// one, at most 2^31), with one index entry per 16 bytes of records: segments of messages
    /// of 12 bytes and more fill their record area before their index.
    pub fn for_data(data_capacity: usize) -> Self {
        let data = data_capacity.clamp(PAGE, 1 << 31).next_multiple_of(PAGE);
        Layout {
            index_capacity: (data / 16) as u32,
            data_capacity: data as u32,
        }
    }

    /// Where the record area starts (page-aligned).
    pub const fn data_start(&self) -> usize {
        (HEADER_LEN + 4 * self.index_capacity as usize).next_multiple_of(PAGE)
    }

    /// Bytes of the whole segment.
    pub const fn file_len(&self) -> usize {
        self.data_start() + self.data_capacity as usize
    }
}

/// A segment's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The session every message of the segment belongs to.
    pub session: Session,
    /// The sequence number of the segment's first message.
    pub first_seq: u64,
    /// Area sizes.
    pub layout: Layout,
    /// Wall-clock time the segment was started (ns since the Unix epoch): the age of its
    /// predecessor's newest message, for retention by age.
    pub created_unix_ns: u64,
    /// Messages in a sealed segment; 0 while it is written.
    pub sealed_count: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) {
        let h = &mut out[..HEADER_LEN];
        h.fill(0);
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..22].copy_from_slice(self.session.as_bytes());
        h[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        h[32..36].copy_from_slice(&self.layout.index_capacity.to_le_bytes());
        h[36..40].copy_from_slice(&self.layout.data_capacity.to_le_bytes());
        h[40..48].copy_from_slice(&self.created_unix_ns.to_le_bytes());
        h[48..56].copy_from_slice(&self.sealed_count.to_le_bytes());
        let crc = crc32c::crc32c(&h[..HEADER_FIELDS]);
        h[HEADER_FIELDS..HEADER_FIELDS + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads and checks a header.
    pub fn decode(bytes: &[u8]) -> Result<Header, SegmentError> {
        if bytes.len() < HEADER_LEN {
            return Err(SegmentError::Short {
                have: bytes.len(),
                want: HEADER_LEN,
            });
        }
        if &bytes[0..8] != MAGIC {
            return Err(SegmentError::BadHeader("wrong magic"));
        }
        let version = u32_at(bytes, 8);
        if version != VERSION {
            return Err(SegmentError::Version(version));
        }
        if crc32c::crc32c(&bytes[..HEADER_FIELDS]) != u32_at(bytes, HEADER_FIELDS) {
            return Err(SegmentError::BadHeader("header checksum mismatch"));
        }
        let mut session = [0u8; 10];
        session.copy_from_slice(&bytes[12..22]);
        let layout = Layout {
            index_capacity: u32_at(bytes, 32),
            data_capacity: u32_at(bytes, 36),
        };
        let first_seq = u64_at(bytes, 24);
        if first_seq == 0
            || layout.index_capacity == 0
            || !(layout.data_capacity as usize).is_multiple_of(PAGE)
            || layout.data_capacity == 0
        {
            return Err(SegmentError::BadHeader("impossible sizes or sequence"));
        }
        Ok(Header {
            session: Session::from_bytes(session),
            first_seq,
            layout,
            created_unix_ns: u64_at(bytes, 40),
            sealed_count: u64_at(bytes, 48),
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn record_crc(seq: u64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&seq.to_le_bytes()), payload)
}

/// The bytes of one segment: plain memory in tests, a shared file mapping in the daemon.
pub trait SegmentMemory: Send {
    /// The segment's bytes ([`Layout::file_len`] of them).
    fn bytes(&self) -> &[u8];
    /// The same, writable.
    fn bytes_mut(&mut self) -> &mut [u8];
    /// Makes `range` durable (written to stable storage) before returning.
    fn sync(&self, range: Range<usize>) -> io::Result<()>;
}

impl SegmentMemory for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }

    fn sync(&self, _: Range<usize>) -> io::Result<()> {
        Ok(())
    }
}

/// What recovery found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recovery {
    /// Complete messages kept.
    pub kept: u64,
    /// Index entries past the last complete message that were cleared (torn or partial appends).
    pub discarded: u64,
}

/// A segment being written or read.
pub struct Segment {
    mem: Box<dyn SegmentMemory>,
    header: Header,
    /// Messages in it.
    count: u32,
    /// End of the last record in the data area.
    data_end: u32,
    /// What [`sync`](Self::sync) already made durable: messages and record bytes.
    synced_count: u32,
    synced_end: u32,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("header", &self.header)
            .field("count", &self.count)
            .field("data_end", &self.data_end)
            .finish_non_exhaustive()
    }
}

/// The segment has no room for the message: start the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Segment {
    /// Starts an empty segment in `mem`, which must be zeroed and [`Layout::file_len`] bytes.
    pub fn create(mut mem: Box<dyn SegmentMemory>, header: Header) -> Result<Self, SegmentError> {
        let want = header.layout.file_len();
        if mem.bytes().len() < want {
            return Err(SegmentError::Short {
                have: mem.bytes().len(),
                want,
            });
        }
        header.encode(mem.bytes_mut());
        Ok(Segment {
            mem,
            header: Header {
                sealed_count: 0,
                ..header
            },
            count: 0,
            data_end: 0,
            synced_count: 0,
            synced_end: 0,
        })
    }

    /// Opens a segment written earlier: checks the header, keeps every complete message and
    /// clears what follows the last one (see the [module docs](self)). `mem` may be shorter
    /// than the layout (a truncated file); the missing bytes count as zero and are never
    /// written to (the caller extends the file before appending).
    pub fn open(mut mem: Box<dyn SegmentMemory>) -> Result<(Self, Recovery), SegmentError> {
        let header = Header::decode(mem.bytes())?;
        let layout = header.layout;
        let bytes = mem.bytes();
        let sealed = header.sealed_count;
        // A sealed segment's count is trusted when its index is well-formed and its last record
        // checks out (the other records' checksums are not read: opening stays fast).
        let trusted = (sealed > 0 && sealed <= u64::from(layout.index_capacity))
            .then_some(sealed as u32)
            .filter(|&n| index_well_formed(bytes, &header, n))
            .filter(|&n| record_at(bytes, &header, n - 1, prev_end(bytes, n - 1)).is_some());
        let (count, data_end) = match trusted {
            Some(n) => (n, entry(bytes, n - 1).unwrap_or(0)),
            None => scan(bytes, &header),
        };
        // Clear every index entry after the last good one. After a power cut, pages of the
        // index can reach the disk out of order: a stale entry further on could otherwise look
        // like a message once the appends reach it again. The record area needs no clearing:
        // only index entries make records exist. A sealed segment is never appended to.
        let mut discarded = 0;
        if trusted.is_none() {
            let index_end = (HEADER_LEN + 4 * layout.index_capacity as usize).min(bytes.len());
            let raw = mem.bytes_mut();
            let mut at = HEADER_LEN + 4 * count as usize;
            while at + 4 <= index_end {
                if raw[at..at + 4] != [0; 4] {
                    raw[at..at + 4].fill(0);
                    discarded += 1;
                }
                at += 4;
            }
        }
        let segment = Segment {
            mem,
            header: Header {
                sealed_count: if trusted.is_some() { sealed } else { 0 },
                ..header
            },
            count,
            data_end,
            synced_count: count,
            synced_end: data_end,
        };
        Ok((
            segment,
            Recovery {
                kept: u64::from(count),
                discarded,
            },
        ))
    }

    /// Appends `payload` as sequence `first_seq + count`. Allocates nothing.
    #[inline]
    pub fn append(&mut self, payload: &[u8]) -> Result<(), Full> {
        let layout = self.header.layout;
        let end = self.data_end as usize + RECORD_OVERHEAD + payload.len();
        if self.count >= layout.index_capacity || end > layout.data_capacity as usize {
            return Err(Full);
        }
        let seq = self.header.first_seq + u64::from(self.count);
        let base = layout.data_start() + self.data_end as usize;
        let bytes = self.mem.bytes_mut();
        bytes[base..base + RECORD_OVERHEAD]
            .copy_from_slice(&record_crc(seq, payload).to_le_bytes());
        bytes[base + RECORD_OVERHEAD..layout.data_start() + end].copy_from_slice(payload);
        // The record before its index entry: a crash in between leaves no message, never a
        // message with missing bytes.
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::Release);
        let at = HEADER_LEN + 4 * self.count as usize;
        bytes[at..at + 4].copy_from_slice(&(end as u32).to_le_bytes());
        self.count += 1;
        self.data_end = end as u32;
        Ok(())
    }

    /// The payload of message `seq`, if the segment holds it.
    #[inline]
    pub fn get(&self, seq: u64) -> Option<&[u8]> {
        let k = seq.checked_sub(self.header.first_seq)?;
        if k >= u64::from(self.count) {
            return None;
        }
        let k = k as u32;
        let bytes = self.mem.bytes();
        let start = prev_end(bytes, k) as usize;
        let end = entry(bytes, k)? as usize;
        let data = self.header.layout.data_start();
        // Checked at open; `get` (not indexing) keeps a damaged file from ever panicking here.
        bytes.get(data + start + RECORD_OVERHEAD..data + end)
    }

    /// Records the message count in the header: the segment is complete.
    pub fn seal(&mut self) {
        self.header.sealed_count = u64::from(self.count);
        let header = self.header;
        header.encode(self.mem.bytes_mut());
    }

    /// Makes everything appended so far durable (records, then their index entries, then the
    /// header if sealed); returns whether there was anything to write.
    pub fn sync(&mut self) -> io::Result<bool> {
        if self.synced_count == self.count && self.synced_end == self.data_end {
            return Ok(false);
        }
        let layout = self.header.layout;
        let data = layout.data_start();
        self.mem
            .sync(data + self.synced_end as usize..data + self.data_end as usize)?;
        self.mem.sync(
            HEADER_LEN + 4 * self.synced_count as usize..HEADER_LEN + 4 * self.count as usize,
        )?;
        if self.header.sealed_count > 0 {
            self.mem.sync(0..HEADER_LEN)?;
        }
        self.synced_count = self.count;
        self.synced_end = self.data_end;
        Ok(true)
    }

    /// The header.
    pub const fn header(&self) -> &Header {
        &self.header
    }

    /// The sequence number of its first message.
    pub const fn first_seq(&self) -> u64 {
        self.header.first_seq
    }

    /// One past its last message.
    pub const fn next_seq(&self) -> u64 {
        self.header.first_seq + self.count as u64
    }

    /// Messages in it.
    pub const fn count(&self) -> u64 {
        self.count as u64
    }

    /// Record bytes written (payloads and their CRCs).
    pub const fn data_bytes(&self) -> u64 {
        self.data_end as u64
    }

    /// Bytes of the whole segment.
    pub const fn file_len(&self) -> usize {
        self.header.layout.file_len()
    }

    /// The segment's bytes, as its file holds them.
    pub fn bytes(&self) -> &[u8] {
        self.mem.bytes()
    }
}

/// Index entry `k`, if it lies inside `bytes`.
fn entry(bytes: &[u8], k: u32) -> Option<u32> {
    let at = HEADER_LEN + 4 * k as usize;
    (at + 4 <= bytes.len()).then(|| u32_at(bytes, at))
}

/// Where record `k` starts: the end of record `k - 1` (0 for the first).
fn prev_end(bytes: &[u8], k: u32) -> u32 {
    if k == 0 {
        0
    } else {
        entry(bytes, k - 1).unwrap_or(0)
    }
}

/// Record `k` starting at `start`, if it is complete: its end, when the entry is past `start`
/// by more than the CRC, inside the record area and the file, and the CRC matches.
fn record_at(bytes: &[u8], header: &Header, k: u32, start: u32) -> Option<u32> {
    let end = entry(bytes, k)?;
    let layout = header.layout;
    if end as usize <= start as usize + RECORD_OVERHEAD || end > layout.data_capacity {
        return None;
    }
    let data = layout.data_start();
    let (from, to) = (data + start as usize, data + end as usize);
    if to > bytes.len() {
        return None;
    }
    let payload = &bytes[from + RECORD_OVERHEAD..to];
    let seq = header.first_seq + u64::from(k);
    (u32_at(bytes, from) == record_crc(seq, payload)).then_some(end)
}

/// Whether entries `0..n` are inside the file, strictly increasing by more than a record's
/// overhead, and end inside the record area and the file.
fn index_well_formed(bytes: &[u8], header: &Header, n: u32) -> bool {
    let layout = header.layout;
    let limit =
        (layout.data_capacity as usize).min(bytes.len().saturating_sub(layout.data_start()));
    let mut prev = 0usize;
    for k in 0..n {
        let Some(end) = entry(bytes, k) else {
            return false;
        };
        let end = end as usize;
        if end <= prev + RECORD_OVERHEAD || end > limit {
            return false;
        }
        prev = end;
    }
    true
}

/// Walks the index: (complete messages, end of the last one).
fn scan(bytes: &[u8], header: &Header) -> (u32, u32) {
    let mut end = 0;
    let mut k = 0;
    while k < header.layout.index_capacity {
        match record_at(bytes, header, k, end) {
            Some(e) => {
                end = e;
                k += 1;
            }
            None => break,
        }
    }
    (k, end)
}

#[cfg(test)]
mod tests;
