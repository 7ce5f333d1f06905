//! SoupBinTCP 3.00: framing, packet types, login packets, and encoders.
//!
//! Every logical packet is `Length (u16, big-endian) · Type (1 byte) · payload`, where Length
//! counts the type byte and the payload but not itself.
//!
//! | Type | Packet              | Sent by | Payload (bytes)                                            |
//! |------|---------------------|---------|------------------------------------------------------------|
//! | `+`  | Debug               | either  | free text                                                  |
//! | `A`  | Login Accepted      | server  | Session (10, alpha) · Sequence Number (20, numeric) = 30   |
//! | `J`  | Login Rejected      | server  | Reject Reason Code (1): `A` not authorized, `S` no session |
//! | `S`  | Sequenced Data      | server  | one higher-level message                                   |
//! | `H`  | Server Heartbeat    | server  | none                                                       |
//! | `Z`  | End of Session      | server  | none                                                       |
//! | `L`  | Login Request       | client  | Username (6) · Password (10) · Requested Session (10) ·    |
//! |      |                     |         | Requested Sequence Number (20, numeric) = 46               |
//! | `U`  | Unsequenced Data    | client  | one higher-level message                                   |
//! | `R`  | Client Heartbeat    | client  | none                                                       |
//! | `O`  | Logout Request      | client  | none                                                       |
//!
//! Alpha fields are ASCII, left-justified and padded on the right with spaces. Numeric fields are
//! ASCII decimal digits, right-justified and padded on the left with spaces; when parsing, leading
//! spaces or leading zeros are accepted, an all-space field is 0, anything else is an error.
//!
//! Framing is streaming and borrow-only: [`next_packet`] (and its client/server variants) looks at
//! the front of a receive buffer and returns the next complete packet together with the number of
//! bytes it used, or `Ok(None)` when more bytes are needed. Header-level problems (zero or oversized
//! length, unknown or unexpected type, wrong fixed length) are reported as soon as the 3-byte
//! header has arrived, without waiting for the payload.
//!
//! The Herz control extension carried in Debug packets lives in [`herz`].

use core::fmt;

use thiserror::Error;

use super::{
    Snippet,
    moldudp64::{SESSION_LEN, Session},
    wire::{array, decimal_right_justified, left_justified, parse_digits, trim_spaces},
};

pub mod herz;
mod login;

pub use self::{
    herz::{
        Filter, FilterEntries, HERZ_TAG, HerzControl, MAX_FILTER_ENTRIES, SkipReason,
        encode_error_packet, encode_filter_packets, encode_skip_packet,
    },
    login::{LoginAccepted, LoginRequest},
};

/// Length of the packet length field.
pub const LENGTH_FIELD_LEN: usize = 2;
/// Length of the packet header: length field + type byte.
pub const HEADER_LEN: usize = 3;
/// The largest value of the length field the protocol allows (type + payload).
pub const MAX_PACKET_LEN: usize = u16::MAX as usize;
/// The largest payload a packet can carry.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN - 1;
/// A sensible cap for packets a server accepts from subscribers (length field value): room for a
/// Login Request, Herz control text and one Herz message.
pub const DEFAULT_MAX_CLIENT_PACKET_LEN: usize = 1024;
/// Length of the Username field.
pub const USERNAME_LEN: usize = 6;
/// Length of the Password field.
pub const PASSWORD_LEN: usize = 10;
/// Length of the numeric sequence number fields.
pub const SEQUENCE_NUMBER_LEN: usize = 20;
/// Payload length of a Login Request: 6 + 10 + 10 + 20.
pub const LOGIN_REQUEST_PAYLOAD_LEN: usize =
    USERNAME_LEN + PASSWORD_LEN + SESSION_LEN + SEQUENCE_NUMBER_LEN;
/// Payload length of a Login Accepted: 10 + 20.
pub const LOGIN_ACCEPTED_PAYLOAD_LEN: usize = SESSION_LEN + SEQUENCE_NUMBER_LEN;
/// Payload length of a Login Rejected.
pub const LOGIN_REJECTED_PAYLOAD_LEN: usize = 1;

/// A complete Server Heartbeat packet.
pub const SERVER_HEARTBEAT_PACKET: [u8; 3] = [0, 1, b'H'];
/// A complete End of Session packet.
pub const END_OF_SESSION_PACKET: [u8; 3] = [0, 1, b'Z'];
/// A complete Client Heartbeat packet.
pub const CLIENT_HEARTBEAT_PACKET: [u8; 3] = [0, 1, b'R'];
/// A complete Logout Request packet.
pub const LOGOUT_REQUEST_PACKET: [u8; 3] = [0, 1, b'O'];

/// Errors from SoupBinTCP framing, parsing and encoding, including the Herz control extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SoupError {
    /// The length field is 0, so there is not even a type byte.
    #[error("packet length field is 0; it must count at least the 1-byte packet type")]
    ZeroLength,
    /// The length field exceeds the receiver's limit.
    #[error("packet length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// The length field's value.
        len: usize,
        /// The limit in force.
        max: usize,
    },
    /// The type byte is not a SoupBinTCP packet type.
    #[error("unknown packet type '{ch}' (0x{byte:02x})", ch = core::ascii::escape_default(*.byte))]
    UnknownType {
        /// The type byte.
        byte: u8,
    },
    /// A valid packet type that the peer's side must not send.
    #[error("a {from} must not send a {packet} packet ('{}')", .packet.as_byte() as char)]
    UnexpectedType {
        /// The packet type received.
        packet: PacketType,
        /// The side it came from.
        from: Side,
    },
    /// A fixed-size packet with the wrong length field.
    #[error(
        "{packet} packet must have length {expected} (type byte + {} payload bytes), got {actual}",
        .expected - 1
    )]
    WrongLength {
        /// The packet type.
        packet: PacketType,
        /// Required value of the length field.
        expected: usize,
        /// Value received.
        actual: usize,
    },
    /// A numeric field holds something else than optional leading spaces/zeros and digits.
    #[error(
        "{field} \"{value}\" is not a right-justified decimal number \
         (leading spaces or zeros, then digits only)"
    )]
    InvalidNumber {
        /// Field name, e.g. `"Requested Sequence Number"`.
        field: &'static str,
        /// The field as received.
        value: Snippet,
    },
    /// A numeric field's value does not fit in 64 bits.
    #[error("{field} \"{value}\" does not fit in 64 bits")]
    NumberOverflow {
        /// Field name.
        field: &'static str,
        /// The field as received.
        value: Snippet,
    },
    /// A Login Rejected reason code other than `A` or `S`.
    #[error(
        "login reject reason '{ch}' (0x{byte:02x}) is not 'A' (not authorized) or \
         'S' (session not available)",
        ch = core::ascii::escape_default(*.byte)
    )]
    InvalidRejectReason {
        /// The reason byte.
        byte: u8,
    },
    /// A payload too large for the 16-bit length field.
    #[error("{packet} payload of {len} bytes exceeds the SoupBinTCP maximum of {MAX_PAYLOAD_LEN}")]
    PayloadTooLarge {
        /// The packet type being encoded.
        packet: PacketType,
        /// The payload length.
        len: usize,
    },
    /// An alpha field value is too long.
    #[error("{field} must be at most {max} characters, got {len}")]
    FieldLength {
        /// Field name.
        field: &'static str,
        /// Field width.
        max: usize,
        /// Length given.
        len: usize,
    },
    /// An alpha field value contains a byte that is not printable, non-space ASCII.
    #[error(
        "{field} byte '{ch}' (0x{byte:02x}) at position {position} is not allowed \
         (printable ASCII except space)",
        ch = core::ascii::escape_default(*.byte)
    )]
    FieldByte {
        /// Field name.
        field: &'static str,
        /// The offending byte.
        byte: u8,
        /// Its position.
        position: usize,
    },
    /// Herz control text with no command after `HERZ`.
    #[error("HERZ control text has no command (expected FILTER, SKIP or ERROR)")]
    HerzMissingCommand,
    /// Herz control text with a command this version does not know.
    #[error("unknown HERZ command \"{command}\" (expected FILTER, SKIP or ERROR)")]
    HerzUnknownCommand {
        /// The command word.
        command: Snippet,
    },
    /// Malformed arguments of a known Herz command.
    #[error("malformed HERZ {command}: {reason}: \"{token}\"")]
    HerzSyntax {
        /// The command (`"FILTER"`, `"SKIP"`, `"ERROR"`).
        command: &'static str,
        /// What is wrong.
        reason: &'static str,
        /// The offending text.
        token: Snippet,
    },
    /// A filter with more entries than [`MAX_FILTER_ENTRIES`].
    #[error("HERZ FILTER has {entries} entries, more than the limit of {MAX_FILTER_ENTRIES}")]
    HerzFilterTooLarge {
        /// Number of entries.
        entries: usize,
    },
    /// A packet size limit too small to carry even one filter entry.
    #[error(
        "a packet limit of {max_packet_len} bytes cannot carry the HERZ FILTER entry \"{entry}\" \
         ({needed} bytes needed)"
    )]
    HerzFilterPacketTooSmall {
        /// The limit given.
        max_packet_len: usize,
        /// Length field value needed for the entry alone.
        needed: usize,
        /// The entry.
        entry: Snippet,
    },
}

/// The two ends of a SoupBinTCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The side that connects and logs in (subscribers and publishers, towards Herz).
    Client,
    /// The side that accepts logins and sends sequenced data (Herz).
    Server,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Client => "client",
            Side::Server => "server",
        })
    }
}

/// SoupBinTCP packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `+` Debug, either side.
    Debug,
    /// `A` Login Accepted, server.
    LoginAccepted,
    /// `J` Login Rejected, server.
    LoginRejected,
    /// `S` Sequenced Data, server.
    SequencedData,
    /// `H` Server Heartbeat, server.
    ServerHeartbeat,
    /// `Z` End of Session, server.
    EndOfSession,
    /// `L` Login Request, client.
    LoginRequest,
    /// `U` Unsequenced Data, client.
    UnsequencedData,
    /// `R` Client Heartbeat, client.
    ClientHeartbeat,
    /// `O` Logout Request, client.
    LogoutRequest,
}

impl PacketType {
    /// Every packet type.
    pub const ALL: [PacketType; 10] = [
        PacketType::Debug,
        PacketType::LoginAccepted,
        PacketType::LoginRejected,
        PacketType::SequencedData,
        PacketType::ServerHeartbeat,
        PacketType::EndOfSession,
        PacketType::LoginRequest,
        PacketType::UnsequencedData,
        PacketType::ClientHeartbeat,
        PacketType::LogoutRequest,
    ];

    /// The type byte.
    pub const fn as_byte(self) -> u8 {
        match self {
            PacketType::Debug => b'+',
            PacketType::LoginAccepted => b'A',
            PacketType::LoginRejected => b'J',
            PacketType::SequencedData => b'S',
            PacketType::ServerHeartbeat => b'H',
            PacketType::EndOfSession => b'Z',
            PacketType::LoginRequest => b'L',
            PacketType::UnsequencedData => b'U',
            PacketType::ClientHeartbeat => b'R',
            PacketType::LogoutRequest => b'O',
        }
    }

    /// The packet type of a type byte.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'+' => PacketType::Debug,
            b'A' => PacketType::LoginAccepted,
            b'J' => PacketType::LoginRejected,
            b'S' => PacketType::SequencedData,
            b'H' => PacketType::ServerHeartbeat,
            b'Z' => PacketType::EndOfSession,
            b'L' => PacketType::LoginRequest,
            b'U' => PacketType::UnsequencedData,
            b'R' => PacketType::ClientHeartbeat,
            b'O' => PacketType::LogoutRequest,
            _ => return None,
        })
    }

    /// The specification's name, e.g. `"Login Request"`.
    pub const fn name(self) -> &'static str {
        match self {
            PacketType::Debug => "Debug",
            PacketType::LoginAccepted => "Login Accepted",
            PacketType::LoginRejected => "Login Rejected",
            PacketType::SequencedData => "Sequenced Data",
            PacketType::ServerHeartbeat => "Server Heartbeat",
            PacketType::EndOfSession => "End of Session",
            PacketType::LoginRequest => "Login Request",
            PacketType::UnsequencedData => "Unsequenced Data",
            PacketType::ClientHeartbeat => "Client Heartbeat",
            PacketType::LogoutRequest => "Logout Request",
        }
    }

    /// The side that sends this packet type, or `None` if both may (Debug).
    pub const fn sender(self) -> Option<Side> {
        match self {
            PacketType::Debug => None,
            PacketType::LoginAccepted
            | PacketType::LoginRejected
            | PacketType::SequencedData
            | PacketType::ServerHeartbeat
            | PacketType::EndOfSession => Some(Side::Server),
            PacketType::LoginRequest
            | PacketType::UnsequencedData
            | PacketType::ClientHeartbeat
            | PacketType::LogoutRequest => Some(Side::Client),
        }
    }

    /// Whether `side` may send this packet type.
    pub const fn allowed_from(self, side: Side) -> bool {
        match (self.sender(), side) {
            (None, _) => true,
            (Some(Side::Client), Side::Client) | (Some(Side::Server), Side::Server) => true,
            (Some(_), _) => false,
        }
    }

    /// The exact payload length of fixed-size packet types; `None` for variable ones
    /// (Debug, Sequenced Data, Unsequenced Data).
    pub const fn fixed_payload_len(self) -> Option<usize> {
        match self {
            PacketType::Debug | PacketType::SequencedData | PacketType::UnsequencedData => None,
            PacketType::LoginAccepted => Some(LOGIN_ACCEPTED_PAYLOAD_LEN),
            PacketType::LoginRejected => Some(LOGIN_REJECTED_PAYLOAD_LEN),
            PacketType::LoginRequest => Some(LOGIN_REQUEST_PAYLOAD_LEN),
            PacketType::ServerHeartbeat
            | PacketType::EndOfSession
            | PacketType::ClientHeartbeat
            | PacketType::LogoutRequest => Some(0),
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Login Rejected reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// `A`: there was an invalid username and password combination.
    NotAuthorized,
    /// `S`: the requested session is not valid or not available.
    SessionNotAvailable,
}

impl RejectReason {
    /// The reason code byte.
    pub const fn as_byte(self) -> u8 {
        match self {
            RejectReason::NotAuthorized => b'A',
            RejectReason::SessionNotAvailable => b'S',
        }
    }

    /// Parses a reason code byte.
    pub const fn from_byte(byte: u8) -> Result<Self, SoupError> {
        match byte {
            b'A' => Ok(RejectReason::NotAuthorized),
            b'S' => Ok(RejectReason::SessionNotAvailable),
            byte => Err(SoupError::InvalidRejectReason { byte }),
        }
    }
}

/// Parses a numeric field: optional leading spaces, then digits (leading zeros allowed).
/// All spaces means 0.
fn parse_numeric(field: &'static str, raw: &[u8]) -> Result<u64, SoupError> {
    let start = raw.iter().position(|&b| b != b' ').unwrap_or(raw.len());
    let digits = &raw[start..];
    if digits.is_empty() {
        return Ok(0);
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(SoupError::InvalidNumber {
            field,
            value: Snippet::new(raw),
        });
    }
    parse_digits(digits).ok_or(SoupError::NumberOverflow {
        field,
        value: Snippet::new(raw),
    })
}

/// Encodes a numeric field: right-justified, padded on the left with spaces.
fn numeric_field(value: u64) -> [u8; SEQUENCE_NUMBER_LEN] {
    decimal_right_justified(value).0
}

/// Validates an alpha field value and left-justifies it.
fn alpha_field<const N: usize>(field: &'static str, text: &str) -> Result<[u8; N], SoupError> {
    let bytes = text.as_bytes();
    if bytes.len() > N {
        return Err(SoupError::FieldLength {
            field,
            max: N,
            len: bytes.len(),
        });
    }
    if let Some(position) = bytes.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(SoupError::FieldByte {
            field,
            byte: bytes[position],
            position,
        });
    }
    Ok(left_justified(bytes))
}

/// Writes a packet header for a payload of `payload_len` bytes.
pub fn packet_header(packet: PacketType, payload_len: usize) -> Result<[u8; 3], SoupError> {
    if payload_len > MAX_PAYLOAD_LEN {
        return Err(SoupError::PayloadTooLarge {
            packet,
            len: payload_len,
        });
    }
    let [hi, lo] = ((payload_len + 1) as u16).to_be_bytes();
    Ok([hi, lo, packet.as_byte()])
}

/// The 3-byte header of a Sequenced Data packet carrying a message of `msg_len` bytes, for
/// gather I/O (`writev` the header, then the message straight from the journal).
#[inline]
pub fn sequenced_header(msg_len: usize) -> Result<[u8; 3], SoupError> {
    packet_header(PacketType::SequencedData, msg_len)
}

fn encode_with_payload(
    packet: PacketType,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SoupError> {
    out.extend_from_slice(&packet_header(packet, payload.len())?);
    out.extend_from_slice(payload);
    Ok(())
}

/// Appends a Sequenced Data packet (`S`) carrying `msg`.
#[inline]
pub fn encode_sequenced(msg: &[u8], out: &mut Vec<u8>) -> Result<(), SoupError> {
    encode_with_payload(PacketType::SequencedData, msg, out)
}

/// Appends an Unsequenced Data packet (`U`) carrying `msg`.
#[inline]
pub fn encode_unsequenced(msg: &[u8], out: &mut Vec<u8>) -> Result<(), SoupError> {
    encode_with_payload(PacketType::UnsequencedData, msg, out)
}

/// Appends a Debug packet (`+`) carrying `text`.
#[inline]
pub fn encode_debug(text: &[u8], out: &mut Vec<u8>) -> Result<(), SoupError> {
    encode_with_payload(PacketType::Debug, text, out)
}

/// Appends a Login Rejected packet (`J`).
#[inline]
pub fn encode_login_rejected(reason: RejectReason, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0, 2, b'J', reason.as_byte()]);
}

/// Appends a Server Heartbeat packet (`H`).
#[inline]
pub fn encode_server_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&SERVER_HEARTBEAT_PACKET);
}

/// Appends an End of Session packet (`Z`).
#[inline]
pub fn encode_end_of_session(out: &mut Vec<u8>) {
    out.extend_from_slice(&END_OF_SESSION_PACKET);
}

/// Appends a Client Heartbeat packet (`R`).
#[inline]
pub fn encode_client_heartbeat(out: &mut Vec<u8>) {
    out.extend_from_slice(&CLIENT_HEARTBEAT_PACKET);
}

/// Appends a Logout Request packet (`O`).
#[inline]
pub fn encode_logout_request(out: &mut Vec<u8>) {
    out.extend_from_slice(&LOGOUT_REQUEST_PACKET);
}

/// A decoded packet, borrowing variable payloads from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `+` Debug text (see [`HerzControl::parse`] for Herz control text).
    Debug(&'a [u8]),
    /// `A` Login Accepted.
    LoginAccepted(LoginAccepted),
    /// `J` Login Rejected.
    LoginRejected(RejectReason),
    /// `S` Sequenced Data: one message.
    SequencedData(&'a [u8]),
    /// `H` Server Heartbeat.
    ServerHeartbeat,
    /// `Z` End of Session.
    EndOfSession,
    /// `L` Login Request.
    LoginRequest(LoginRequest),
    /// `U` Unsequenced Data: one message.
    UnsequencedData(&'a [u8]),
    /// `R` Client Heartbeat.
    ClientHeartbeat,
    /// `O` Logout Request.
    LogoutRequest,
}

impl Packet<'_> {
    /// The packet type.
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Packet::Debug(_) => PacketType::Debug,
            Packet::LoginAccepted(_) => PacketType::LoginAccepted,
            Packet::LoginRejected(_) => PacketType::LoginRejected,
            Packet::SequencedData(_) => PacketType::SequencedData,
            Packet::ServerHeartbeat => PacketType::ServerHeartbeat,
            Packet::EndOfSession => PacketType::EndOfSession,
            Packet::LoginRequest(_) => PacketType::LoginRequest,
            Packet::UnsequencedData(_) => PacketType::UnsequencedData,
            Packet::ClientHeartbeat => PacketType::ClientHeartbeat,
            Packet::LogoutRequest => PacketType::LogoutRequest,
        }
    }

    /// The encoded length, header included.
    pub const fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Packet::Debug(p) | Packet::SequencedData(p) | Packet::UnsequencedData(p) => p.len(),
                Packet::LoginAccepted(_) => LOGIN_ACCEPTED_PAYLOAD_LEN,
                Packet::LoginRejected(_) => LOGIN_REJECTED_PAYLOAD_LEN,
                Packet::LoginRequest(_) => LOGIN_REQUEST_PAYLOAD_LEN,
                Packet::ServerHeartbeat
                | Packet::EndOfSession
                | Packet::ClientHeartbeat
                | Packet::LogoutRequest => 0,
            }
    }

    /// Appends the complete packet. Fails only for a variable payload over
    /// [`MAX_PAYLOAD_LEN`].
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), SoupError> {
        match self {
            Packet::Debug(text) => encode_debug(text, out)?,
            Packet::LoginAccepted(a) => a.encode(out),
            Packet::LoginRejected(reason) => encode_login_rejected(*reason, out),
            Packet::SequencedData(msg) => encode_sequenced(msg, out)?,
            Packet::ServerHeartbeat => encode_server_heartbeat(out),
            Packet::EndOfSession => encode_end_of_session(out),
            Packet::LoginRequest(l) => l.encode(out),
            Packet::UnsequencedData(msg) => encode_unsequenced(msg, out)?,
            Packet::ClientHeartbeat => encode_client_heartbeat(out),
            Packet::LogoutRequest => encode_logout_request(out),
        }
        Ok(())
    }
}

/// Decodes the next packet of either side, with the protocol's maximum length.
///
/// Returns the packet and the number of bytes it occupies at the front of `buf`, or `Ok(None)`
/// if `buf` does not yet hold a complete packet.
#[inline]
pub fn next_packet(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, SoupError> {
    decode(buf, None, MAX_PACKET_LEN)
}

/// Like [`next_packet`], rejecting length fields above `max_len`.
#[inline]
pub fn next_packet_with_limit(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(Packet<'_>, usize)>, SoupError> {
    decode(buf, None, max_len)
}

/// For a server: decodes the next packet sent by a client, rejecting length fields above
/// `max_len` (e.g. [`DEFAULT_MAX_CLIENT_PACKET_LEN`]) and server-only packet types.
#[inline]
pub fn next_client_packet(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(Packet<'_>, usize)>, SoupError> {
    decode(buf, Some(Side::Client), max_len)
}

/// For a client: decodes the next packet sent by a server, rejecting length fields above
/// `max_len` (usually [`MAX_PACKET_LEN`]) and client-only packet types.
#[inline]
pub fn next_server_packet(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<(Packet<'_>, usize)>, SoupError> {
    decode(buf, Some(Side::Server), max_len)
}

fn decode(
    buf: &[u8],
    from: Option<Side>,
    max_len: usize,
) -> Result<Option<(Packet<'_>, usize)>, SoupError> {
    let [hi, lo, ..] = *buf else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 {
        return Err(SoupError::ZeroLength);
    }
    if len > max_len {
        return Err(SoupError::TooLong { len, max: max_len });
    }
    let Some(&byte) = buf.get(LENGTH_FIELD_LEN) else {
        return Ok(None);
    };
    let packet_type = PacketType::from_byte(byte).ok_or(SoupError::UnknownType { byte })?;
    if let Some(side) = from
        && !packet_type.allowed_from(side)
    {
        return Err(SoupError::UnexpectedType {
            packet: packet_type,
            from: side,
        });
    }
    if let Some(fixed) = packet_type.fixed_payload_len()
        && len != fixed + 1
    {
        return Err(SoupError::WrongLength {
            packet: packet_type,
            expected: fixed + 1,
            actual: len,
        });
    }
    let total = LENGTH_FIELD_LEN + len;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    let packet = match packet_type {
        PacketType::Debug => Packet::Debug(payload),
        PacketType::LoginAccepted => Packet::LoginAccepted(LoginAccepted::parse(payload)?),
        PacketType::LoginRejected => Packet::LoginRejected(RejectReason::from_byte(payload[0])?),
        PacketType::SequencedData => Packet::SequencedData(payload),
        PacketType::ServerHeartbeat => Packet::ServerHeartbeat,
        PacketType::EndOfSession => Packet::EndOfSession,
        PacketType::LoginRequest => Packet::LoginRequest(LoginRequest::parse(payload)?),
        PacketType::UnsequencedData => Packet::UnsequencedData(payload),
        PacketType::ClientHeartbeat => Packet::ClientHeartbeat,
        PacketType::LogoutRequest => Packet::LogoutRequest,
    };
    Ok(Some((packet, total)))
}

#[cfg(test)]
mod tests;
