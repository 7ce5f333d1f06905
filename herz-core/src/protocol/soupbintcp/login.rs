//! The login packets' payloads: Login Request (`L`) and Login Accepted (`A`).

use super::*;

/// A Login Request (`L`) payload.
///
/// Fields keep the bytes exactly as received; the username and password are compared
/// case-insensitively and without padding by [`LoginRequest::credentials_match`], as the
/// specification says they are case-insensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginRequest {
    /// Username, left-justified, space-padded.
    pub username: [u8; USERNAME_LEN],
    /// Password, left-justified, space-padded.
    pub password: [u8; PASSWORD_LEN],
    /// Requested session; blank means the current session.
    pub session: Session,
    /// Requested sequence number: the next message the client wants. 0 asks to start with the
    /// next message generated (no replay).
    pub sequence: u64,
}

impl LoginRequest {
    /// Builds a Login Request from text fields (at most 6 and 10 printable non-space ASCII
    /// characters).
    pub fn new(
        username: &str,
        password: &str,
        session: Session,
        sequence: u64,
    ) -> Result<Self, SoupError> {
        Ok(LoginRequest {
            username: alpha_field("Username", username)?,
            password: alpha_field("Password", password)?,
            session,
            sequence,
        })
    }

    /// Parses the 46-byte payload (without the 3-byte packet header).
    pub fn parse(payload: &[u8]) -> Result<Self, SoupError> {
        if payload.len() != LOGIN_REQUEST_PAYLOAD_LEN {
            return Err(SoupError::WrongLength {
                packet: PacketType::LoginRequest,
                expected: LOGIN_REQUEST_PAYLOAD_LEN + 1,
                actual: payload.len() + 1,
            });
        }
        Ok(LoginRequest {
            username: array(payload, 0),
            password: array(payload, 6),
            session: Session::from_bytes(array(payload, 16)),
            sequence: parse_numeric("Requested Sequence Number", &payload[26..46])?,
        })
    }

    /// The 46-byte payload.
    pub fn to_payload(&self) -> [u8; LOGIN_REQUEST_PAYLOAD_LEN] {
        let mut p = [0; LOGIN_REQUEST_PAYLOAD_LEN];
        p[..6].copy_from_slice(&self.username);
        p[6..16].copy_from_slice(&self.password);
        p[16..26].copy_from_slice(self.session.as_bytes());
        p[26..].copy_from_slice(&numeric_field(self.sequence));
        p
    }

    /// Appends the complete packet (49 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, LOGIN_REQUEST_PAYLOAD_LEN as u8 + 1, b'L']);
        out.extend_from_slice(&self.to_payload());
    }

    /// The username without padding.
    pub fn trimmed_username(&self) -> &[u8] {
        trim_spaces(&self.username)
    }

    /// The password without padding.
    pub fn trimmed_password(&self) -> &[u8] {
        trim_spaces(&self.password)
    }

    /// Whether the credentials equal `username` and `password`, ignoring padding and ASCII case
    /// (the specification makes both case-insensitive). Constant time: both whole fields are
    /// compared whatever the first difference, so timing does not tell how much of a guess was
    /// right.
    pub fn credentials_match(&self, username: &str, password: &str) -> bool {
        let user = fields_differ(&self.username, username.as_bytes());
        let pass = fields_differ(&self.password, password.as_bytes());
        (user | pass) == 0
    }
}

/// 0 when `wanted`, space-padded to the field's width, equals `field` ignoring ASCII case; not 0
/// otherwise (also when `wanted` is longer than the field). Touches every byte of the field.
fn fields_differ<const N: usize>(field: &[u8; N], wanted: &[u8]) -> u8 {
    let mut diff = u8::from(wanted.len() > N);
    for (i, &b) in field.iter().enumerate() {
        let w = wanted.get(i).copied().unwrap_or(b' ');
        diff |= b.to_ascii_lowercase() ^ w.to_ascii_lowercase();
    }
    std::hint::black_box(diff)
}

/// A Login Accepted (`A`) payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoginAccepted {
    /// The session now logged into.
    pub session: Session,
    /// Sequence number of the next Sequenced Data message to be sent.
    pub sequence: u64,
}

impl LoginAccepted {
    /// Parses the 30-byte payload (without the 3-byte packet header).
    pub fn parse(payload: &[u8]) -> Result<Self, SoupError> {
        if payload.len() != LOGIN_ACCEPTED_PAYLOAD_LEN {
            return Err(SoupError::WrongLength {
                packet: PacketType::LoginAccepted,
                expected: LOGIN_ACCEPTED_PAYLOAD_LEN + 1,
                actual: payload.len() + 1,
            });
        }
        Ok(LoginAccepted {
            session: Session::from_bytes(array(payload, 0)),
            sequence: parse_numeric("Sequence Number", &payload[10..30])?,
        })
    }

    /// The 30-byte payload.
    pub fn to_payload(&self) -> [u8; LOGIN_ACCEPTED_PAYLOAD_LEN] {
        let mut p = [0; LOGIN_ACCEPTED_PAYLOAD_LEN];
        p[..10].copy_from_slice(self.session.as_bytes());
        p[10..].copy_from_slice(&numeric_field(self.sequence));
        p
    }

    /// Appends the complete packet (33 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, LOGIN_ACCEPTED_PAYLOAD_LEN as u8 + 1, b'A']);
        out.extend_from_slice(&self.to_payload());
    }
}
