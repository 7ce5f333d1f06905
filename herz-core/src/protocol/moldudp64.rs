//! MoldUDP64 1.00: downstream packets (multicast) and re-request packets (unicast).
//!
//! Downstream packet, all integers big-endian:
//!
//! | Offset | Len | Field           | Notes                                                    |
//! |-------:|----:|-----------------|----------------------------------------------------------|
//! |      0 |  10 | Session         | ASCII                                                    |
//! |     10 |   8 | Sequence Number | u64, sequence of the first message in the packet         |
//! |     18 |   2 | Message Count   | u16; `0` heartbeat, `0xFFFF` end of session              |
//! |     20 |     | Message blocks  | `Count` times: Length (u16, not counting itself) · bytes |
//!
//! For a heartbeat and an end-of-session packet, Sequence Number is the next sequence number
//! the sender will use, and no message blocks follow.
//!
//! Re-request packet (exactly 20 bytes): Session (10) · Sequence Number (u64) · Requested Message
//! Count (u16). The reply is an ordinary downstream packet.
//!
//! [`Packet::parse`] validates a whole datagram so that iterating its messages cannot fail;
//! [`PacketBuilder`] fills a reusable buffer up to a size limit and patches the count at the end.

use core::{fmt, iter::FusedIterator, str::FromStr};

use thiserror::Error;

use super::wire::{array, left_justified, read_u16, read_u64, trim_spaces};

/// Length of the session field.
pub const SESSION_LEN: usize = 10;
/// Length of the downstream packet header.
pub const HEADER_LEN: usize = 20;
/// Length of a message block's length prefix.
pub const BLOCK_HEADER_LEN: usize = 2;
/// Message Count of a heartbeat packet.
pub const HEARTBEAT_COUNT: u16 = 0;
/// Message Count of an end-of-session packet.
pub const END_OF_SESSION_COUNT: u16 = 0xFFFF;
/// The most messages a data packet can carry (`0xFFFF` means end of session).
pub const MAX_MESSAGE_COUNT: u16 = 0xFFFE;
/// Exact length of a re-request packet.
pub const REQUEST_LEN: usize = 20;
/// The usual downstream datagram size limit (header included): fits a 1500-byte MTU.
pub const DEFAULT_MAX_PACKET_LEN: usize = 1400;

/// Errors from MoldUDP64 parsing and building.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum MoldError {
    /// The datagram is shorter than the 20-byte header.
    #[error("packet is {len} bytes, shorter than the {HEADER_LEN}-byte MoldUDP64 header")]
    TooShort {
        /// Datagram length.
        len: usize,
    },
    /// A message block's 2-byte length prefix is cut off.
    #[error(
        "message block {index} of {count}: length field at offset {offset} is cut off \
         (packet is {packet_len} bytes)"
    )]
    TruncatedBlockLength {
        /// Zero-based block index.
        index: u16,
        /// Message Count from the header.
        count: u16,
        /// Offset of the length field in the datagram.
        offset: usize,
        /// Datagram length.
        packet_len: usize,
    },
    /// A message block declares more bytes than the datagram holds.
    #[error(
        "message block {index} of {count} declares {declared} bytes at offset {offset}, \
         but only {available} remain"
    )]
    TruncatedBlock {
        /// Zero-based block index.
        index: u16,
        /// Message Count from the header.
        count: u16,
        /// Offset of the message bytes in the datagram.
        offset: usize,
        /// The block's declared length.
        declared: u16,
        /// Bytes left in the datagram.
        available: usize,
    },
    /// Bytes remain after the last message block.
    #[error("{extra} trailing bytes after the last of {count} message blocks")]
    TrailingBytes {
        /// Message Count from the header.
        count: u16,
        /// Number of extra bytes.
        extra: usize,
    },
    /// A heartbeat or end-of-session packet carries bytes after the header.
    #[error("{kind} packet must have no message blocks, but {extra} bytes follow the header")]
    BlocksInControlPacket {
        /// `"heartbeat"` or `"end-of-session"`.
        kind: &'static str,
        /// Number of bytes after the header.
        extra: usize,
    },
    /// Sequence Number + Message Count does not fit in 64 bits.
    #[error("sequence number {sequence} + message count {count} overflows 64 bits")]
    SequenceOverflow {
        /// Sequence Number from the header.
        sequence: u64,
        /// Message Count from the header.
        count: u16,
    },
    /// A re-request packet is not exactly 20 bytes.
    #[error("re-request packet must be exactly {REQUEST_LEN} bytes, got {len}")]
    RequestLength {
        /// Length received.
        len: usize,
    },
    /// A message can never fit, even into an empty packet of the builder's size.
    #[error(
        "message of {len} bytes can never fit: a packet of at most {max_packet_len} bytes holds \
         messages of at most {max_message_len} bytes"
    )]
    MessageTooLarge {
        /// Message length.
        len: usize,
        /// The builder's packet size limit.
        max_packet_len: usize,
        /// The largest message that fits into an empty packet.
        max_message_len: usize,
    },
    /// A session name is longer than 10 characters.
    #[error("session must be at most {SESSION_LEN} characters, got {len}")]
    SessionLength {
        /// Length given.
        len: usize,
    },
    /// A session name contains a byte that is not printable, non-space ASCII.
    #[error(
        "session byte '{ch}' (0x{byte:02x}) at position {position} is not allowed \
         (printable ASCII except space)",
        ch = core::ascii::escape_default(*.byte)
    )]
    SessionByte {
        /// The offending byte.
        byte: u8,
        /// Its position.
        position: usize,
    },
}

/// A 10-byte session identifier, shared by MoldUDP64 and SoupBinTCP.
///
/// Built from text with [`Session::new`]: 0 to 10 printable non-space ASCII characters,
/// left-justified and padded on the right with spaces (all spaces = blank). Taken from the wire
/// with [`Session::from_bytes`], it keeps the 10 bytes exactly as received, so it can be echoed
/// back byte for byte; use [`Session::matches`] to compare sessions regardless of padding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Session([u8; SESSION_LEN]);

impl Session {
    /// The blank session (10 spaces): in a SoupBinTCP Login Request, "the current session".
    pub const BLANK: Session = Session([b' '; SESSION_LEN]);

    /// Builds a session from its text, e.g. `"HZ20261126"`; `""` is the blank session.
    pub fn new(text: &str) -> Result<Self, MoldError> {
        let text = text.as_bytes();
        if text.len() > SESSION_LEN {
            return Err(MoldError::SessionLength { len: text.len() });
        }
        if let Some(position) = text.iter().position(|b| !b.is_ascii_graphic()) {
            return Err(MoldError::SessionByte {
                byte: text[position],
                position,
            });
        }
        Ok(Session(left_justified(text)))
    }

    /// The session exactly as received on the wire (no validation).
    #[inline]
    pub const fn from_bytes(raw: [u8; SESSION_LEN]) -> Self {
        Session(raw)
    }

    /// The 10 wire bytes.
    #[inline]
    pub const fn as_bytes(&self) -> &[u8; SESSION_LEN] {
        &self.0
    }

    /// The session without leading or trailing spaces.
    #[inline]
    pub fn trimmed(&self) -> &[u8] {
        trim_spaces(&self.0)
    }

    /// Whether the session is all spaces.
    #[inline]
    pub fn is_blank(&self) -> bool {
        self.0 == [b' '; SESSION_LEN]
    }

    /// Whether both sessions name the same session, ignoring padding on either side
    /// (some peers left-justify, others right-justify).
    #[inline]
    pub fn matches(&self, other: &Session) -> bool {
        self.trimmed() == other.trimmed()
    }
}

impl Default for Session {
    fn default() -> Self {
        Session::BLANK
    }
}

impl fmt::Display for Session {
    /// The trimmed session, non-printable bytes escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.trimmed().escape_ascii())
    }
}

/// A session name in configuration files: its text (`"HZPROD0001"`), validated as [`Session::new`] does.
impl<'de> serde::Deserialize<'de> for Session {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Session::new(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a session name: {e}")))
    }
}

impl serde::Serialize for Session {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Session(\"{}\")", self.0.escape_ascii())
    }
}

impl FromStr for Session {
    type Err = MoldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Session::new(s)
    }
}

impl TryFrom<&str> for Session {
    type Error = MoldError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Session::new(s)
    }
}

/// The 20-byte downstream packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Session.
    pub session: Session,
    /// Sequence number of the first message, or the next sequence number for a heartbeat or
    /// end-of-session packet.
    pub sequence: u64,
    /// Message Count; see [`HEARTBEAT_COUNT`] and [`END_OF_SESSION_COUNT`].
    pub count: u16,
}

impl Header {
    /// The exact wire bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        b[..10].copy_from_slice(self.session.as_bytes());
        b[10..18].copy_from_slice(&self.sequence.to_be_bytes());
        b[18..20].copy_from_slice(&self.count.to_be_bytes());
        b
    }

    /// Appends the wire bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Decodes the first 20 bytes of `buf` (the rest is ignored).
    pub fn decode(buf: &[u8]) -> Result<Self, MoldError> {
        if buf.len() < HEADER_LEN {
            return Err(MoldError::TooShort { len: buf.len() });
        }
        Ok(Header {
            session: Session(array(buf, 0)),
            sequence: read_u64(buf, 10),
            count: read_u16(buf, 18),
        })
    }

    /// Whether this is a heartbeat (count 0).
    #[inline]
    pub const fn is_heartbeat(&self) -> bool {
        self.count == HEARTBEAT_COUNT
    }

    /// Whether this is an end-of-session packet (count 0xFFFF).
    #[inline]
    pub const fn is_end_of_session(&self) -> bool {
        self.count == END_OF_SESSION_COUNT
    }

    /// Number of message blocks that follow: `count`, or 0 for heartbeat and end of session.
    #[inline]
    pub const fn message_count(&self) -> u16 {
        if self.is_end_of_session() {
            0
        } else {
            self.count
        }
    }

    /// The sequence number following this packet: `sequence + message_count()` (saturating;
    /// [`Packet::parse`] rejects overflow).
    #[inline]
    pub const fn next_sequence(&self) -> u64 {
        self.sequence.saturating_add(self.message_count() as u64)
    }
}

/// A validated downstream packet borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    header: Header,
    blocks: &'a [u8],
}

impl<'a> Packet<'a> {
    /// Parses and validates a whole datagram: the header, then exactly `count` message blocks
    /// filling the rest of the datagram. Heartbeat and end-of-session packets must have nothing
    /// after the header.
    pub fn parse(buf: &'a [u8]) -> Result<Self, MoldError> {
        let header = Header::decode(buf)?;
        let blocks = &buf[HEADER_LEN..];
        if header.is_heartbeat() || header.is_end_of_session() {
            if !blocks.is_empty() {
                return Err(MoldError::BlocksInControlPacket {
                    kind: if header.is_heartbeat() {
                        "heartbeat"
                    } else {
                        "end-of-session"
                    },
                    extra: blocks.len(),
                });
            }
            return Ok(Packet { header, blocks });
        }
        let count = header.count;
        if header.sequence.checked_add(u64::from(count)).is_none() {
            return Err(MoldError::SequenceOverflow {
                sequence: header.sequence,
                count,
            });
        }
        let mut offset = HEADER_LEN;
        for index in 0..count {
            if buf.len() - offset < BLOCK_HEADER_LEN {
                return Err(MoldError::TruncatedBlockLength {
                    index,
                    count,
                    offset,
                    packet_len: buf.len(),
                });
            }
            let declared = read_u16(buf, offset);
            offset += BLOCK_HEADER_LEN;
            let available = buf.len() - offset;
            if usize::from(declared) > available {
                return Err(MoldError::TruncatedBlock {
                    index,
                    count,
                    offset,
                    declared,
                    available,
                });
            }
            offset += usize::from(declared);
        }
        if offset != buf.len() {
            return Err(MoldError::TrailingBytes {
                count,
                extra: buf.len() - offset,
            });
        }
        Ok(Packet { header, blocks })
    }

    /// The header.
    #[inline]
    pub const fn header(&self) -> &Header {
        &self.header
    }

    /// The session.
    #[inline]
    pub const fn session(&self) -> Session {
        self.header.session
    }

    /// Sequence number of the first message (or the next sequence number for control packets).
    #[inline]
    pub const fn sequence(&self) -> u64 {
        self.header.sequence
    }

    /// Number of messages carried (0 for heartbeat and end of session).
    #[inline]
    pub const fn message_count(&self) -> u16 {
        self.header.message_count()
    }

    /// Whether this is a heartbeat.
    #[inline]
    pub const fn is_heartbeat(&self) -> bool {
        self.header.is_heartbeat()
    }

    /// Whether this is an end-of-session packet.
    #[inline]
    pub const fn is_end_of_session(&self) -> bool {
        self.header.is_end_of_session()
    }

    /// The sequence number the sender will use next.
    #[inline]
    pub const fn next_sequence(&self) -> u64 {
        self.header.next_sequence()
    }

    /// The messages, in order (already validated, so iteration cannot fail).
    #[inline]
    pub fn messages(&self) -> Messages<'a> {
        Messages {
            rest: self.blocks,
            remaining: self.message_count(),
        }
    }

    /// The messages with their sequence numbers.
    pub fn sequenced_messages(&self) -> impl ExactSizeIterator<Item = (u64, &'a [u8])> + use<'a> {
        let first = self.header.sequence;
        self.messages()
            .enumerate()
            .map(move |(i, msg)| (first + i as u64, msg))
    }
}

/// Iterator over the messages of a validated [`Packet`].
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    remaining: u16,
}

impl<'a> Iterator for Messages<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        // Validated by `Packet::parse`; `get` keeps this panic-free regardless.
        let len = usize::from(u16::from_be_bytes(self.rest.get(..2)?.try_into().ok()?));
        let msg = self.rest.get(2..2 + len)?;
        self.rest = &self.rest[2 + len..];
        self.remaining -= 1;
        Some(msg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.remaining);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Messages<'_> {}
impl FusedIterator for Messages<'_> {}

/// Builds downstream packets into a reusable buffer, up to a datagram size limit.
///
/// ```
/// use herz_core::protocol::moldudp64::{Packet, PacketBuilder, Session};
///
/// let mut builder = PacketBuilder::new(1400);
/// builder.start(Session::new("HZ00000001").unwrap(), 41);
/// assert_eq!(builder.try_push(b"first"), Ok(true));
/// assert_eq!(builder.try_push(b"second"), Ok(true));
/// let datagram = builder.finish();
/// let packet = Packet::parse(datagram).unwrap();
/// assert_eq!(packet.sequence(), 41);
/// assert_eq!(packet.messages().collect::<Vec<_>>(), [&b"first"[..], b"second"]);
/// assert_eq!(builder.next_sequence(), 43);
/// ```
#[derive(Debug, Clone)]
pub struct PacketBuilder {
    buf: Vec<u8>,
    max_packet_len: usize,
    session: Session,
    first_sequence: u64,
    count: u16,
}

impl PacketBuilder {
    /// A builder for datagrams of at most `max_packet_len` bytes, header included
    /// (e.g. [`DEFAULT_MAX_PACKET_LEN`]). Allocates its buffer once, here.
    ///
    /// # Panics
    ///
    /// If `max_packet_len` cannot hold the header and one empty message block (22 bytes).
    pub fn new(max_packet_len: usize) -> Self {
        assert!(
            max_packet_len >= HEADER_LEN + BLOCK_HEADER_LEN,
            "MoldUDP64 packet limit {max_packet_len} is below the {} bytes of a header and one \
             block",
            HEADER_LEN + BLOCK_HEADER_LEN
        );
        let mut builder = PacketBuilder {
            buf: Vec::with_capacity(max_packet_len),
            max_packet_len,
            session: Session::BLANK,
            first_sequence: 0,
            count: 0,
        };
        builder.start(Session::BLANK, 0);
        builder
    }

    /// The datagram size limit.
    #[inline]
    pub const fn max_packet_len(&self) -> usize {
        self.max_packet_len
    }

    /// The largest message that fits into an empty packet.
    #[inline]
    pub const fn max_message_len(&self) -> usize {
        let room = self.max_packet_len - HEADER_LEN - BLOCK_HEADER_LEN;
        if room > u16::MAX as usize {
            u16::MAX as usize
        } else {
            room
        }
    }

    /// Discards the current contents and begins a packet whose first message gets sequence
    /// number `first_sequence`.
    pub fn start(&mut self, session: Session, first_sequence: u64) {
        self.session = session;
        self.first_sequence = first_sequence;
        self.count = 0;
        self.buf.clear();
        Header {
            session,
            sequence: first_sequence,
            count: 0,
        }
        .encode(&mut self.buf);
    }

    /// Whether a message of `len` bytes fits into the current packet.
    #[inline]
    pub fn fits(&self, len: usize) -> bool {
        self.count < MAX_MESSAGE_COUNT
            && self.buf.len() + BLOCK_HEADER_LEN + len <= self.max_packet_len
    }

    /// Appends a message block. `Ok(true)` if appended; `Ok(false)` if the packet is full (finish
    /// it, send it, start the next one and push again); `Err(MessageTooLarge)` if the message
    /// would not fit even into an empty packet.
    pub fn try_push(&mut self, msg: &[u8]) -> Result<bool, MoldError> {
        let too_large = MoldError::MessageTooLarge {
            len: msg.len(),
            max_packet_len: self.max_packet_len,
            max_message_len: self.max_message_len(),
        };
        // The block length field is 16 bits, which max_message_len() accounts for.
        let Ok(len) = u16::try_from(msg.len()) else {
            return Err(too_large);
        };
        if msg.len() > self.max_message_len() {
            return Err(too_large);
        }
        if !self.fits(msg.len()) {
            return Ok(false);
        }
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(msg);
        self.count += 1;
        Ok(true)
    }

    /// Messages pushed since [`start`](Self::start).
    #[inline]
    pub const fn count(&self) -> u16 {
        self.count
    }

    /// Whether no message was pushed since [`start`](Self::start).
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Current datagram length in bytes (header included).
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The session of the current packet.
    #[inline]
    pub const fn session(&self) -> Session {
        self.session
    }

    /// Sequence number of the current packet's first message.
    #[inline]
    pub const fn first_sequence(&self) -> u64 {
        self.first_sequence
    }

    /// Sequence number the next pushed message would get (`first_sequence + count`); use it to
    /// start the following packet.
    #[inline]
    pub const fn next_sequence(&self) -> u64 {
        self.first_sequence.wrapping_add(self.count as u64)
    }

    /// Patches the Message Count and returns the datagram. The builder keeps the packet until
    /// the next [`start`](Self::start). A packet with no message is a valid heartbeat whose
    /// sequence number is `first_sequence`.
    pub fn finish(&mut self) -> &[u8] {
        self.buf[18..20].copy_from_slice(&self.count.to_be_bytes());
        &self.buf
    }
}

/// Appends a heartbeat: `next_sequence` is the sequence number of the next message to be sent.
pub fn encode_heartbeat(session: Session, next_sequence: u64, out: &mut Vec<u8>) {
    Header {
        session,
        sequence: next_sequence,
        count: HEARTBEAT_COUNT,
    }
    .encode(out);
}

/// Appends an end-of-session packet: `next_sequence` is the sequence number after the last
/// message of the session.
pub fn encode_end_of_session(session: Session, next_sequence: u64, out: &mut Vec<u8>) {
    Header {
        session,
        sequence: next_sequence,
        count: END_OF_SESSION_COUNT,
    }
    .encode(out);
}

/// A re-request: "send me `count` messages starting at `sequence`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestPacket {
    /// Session.
    pub session: Session,
    /// First requested sequence number.
    pub sequence: u64,
    /// Requested Message Count.
    pub count: u16,
}

impl RequestPacket {
    /// The exact wire bytes.
    pub fn to_bytes(&self) -> [u8; REQUEST_LEN] {
        Header {
            session: self.session,
            sequence: self.sequence,
            count: self.count,
        }
        .to_bytes()
    }

    /// Appends the wire bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Decodes a re-request datagram, which must be exactly [`REQUEST_LEN`] bytes. Any count is
    /// accepted here; whether to serve it is the server's policy.
    pub fn decode(buf: &[u8]) -> Result<Self, MoldError> {
        if buf.len() != REQUEST_LEN {
            return Err(MoldError::RequestLength { len: buf.len() });
        }
        let h = Header::decode(buf)?;
        Ok(RequestPacket {
            session: h.session,
            sequence: h.sequence,
            count: h.count,
        })
    }
}

#[cfg(test)]
mod tests;
