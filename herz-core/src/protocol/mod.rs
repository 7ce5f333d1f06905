//! Wire codecs: pure, sans-I/O encoders and decoders for everything Herz puts on or reads off the wire.
//!
//! - [`tick`]: the Herz message payloads (quotes, trades), each starting with a 1-byte type and an
//!   8-byte symbol so the distributor routes on bytes `1..9` without understanding the rest.
//! - [`moldudp64`]: MoldUDP64 1.00 downstream packets (multicast) and re-request packets.
//! - [`soupbintcp`]: SoupBinTCP 3.00 framing, login packets, and the Herz control extension carried
//!   in Debug (`+`) packets.
//!
//! Conventions shared by every codec:
//!
//! - All binary integers are big-endian.
//! - Encoders never allocate on their own: they extend a caller-provided `Vec<u8>` (which only
//!   grows when its capacity is exceeded) or return fixed-size arrays for gather I/O.
//! - Decoders borrow from their input and never copy message bytes.
//! - Decoders never panic, whatever the input; every malformed input yields a typed error whose
//!   message says what was wrong and with which value.
//!
//! The byte-level formats are documented in `docs/PROTOCOL.md`.

use core::fmt;

pub mod moldudp64;
pub mod soupbintcp;
pub mod tick;

mod wire;

/// A short copy of offending input bytes, carried by errors without allocating.
///
/// Holds at most [`Snippet::CAPACITY`] bytes; longer input is cut and marked as truncated. Its
/// `Display` escapes non-printable bytes (`\x00`, `\n`, ...) so error messages stay one line.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Snippet {
    bytes: [u8; Snippet::CAPACITY],
    len: u8,
    truncated: bool,
}

impl Snippet {
    /// The most bytes a snippet keeps.
    pub const CAPACITY: usize = 24;

    /// Copies up to [`Snippet::CAPACITY`] bytes of `input`.
    pub fn new(input: &[u8]) -> Self {
        let len = input.len().min(Self::CAPACITY);
        let mut bytes = [0; Self::CAPACITY];
        bytes[..len].copy_from_slice(&input[..len]);
        Snippet {
            bytes,
            len: len as u8,
            truncated: input.len() > Self::CAPACITY,
        }
    }

    /// The bytes kept (possibly a prefix of the original input).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether the original input was longer than what is kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_bytes().escape_ascii())?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_escapes_and_truncates() {
        let s = Snippet::new(b"ab\x00\n");
        assert_eq!(s.to_string(), "ab\\x00\\n");
        assert_eq!(format!("{s:?}"), "\"ab\\x00\\n\"");
        assert!(!s.is_truncated());

        let long = [b'x'; 30];
        let s = Snippet::new(&long);
        assert_eq!(s.as_bytes().len(), Snippet::CAPACITY);
        assert!(s.is_truncated());
        assert!(s.to_string().ends_with("x..."));
    }
}
