//! Small byte helpers shared by the codecs. Callers check lengths before reading.

/// Copies `N` bytes starting at `at`. Panics if out of bounds: callers check lengths first.
#[inline]
pub(crate) fn array<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

#[inline]
pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array(buf, at))
}

#[inline]
pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(array(buf, at))
}

#[inline]
pub(crate) fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(array(buf, at))
}

#[inline]
pub(crate) fn read_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(array(buf, at))
}

/// Left-justifies `text` in an `N`-byte field padded on the right with spaces.
/// `text` must not be longer than `N` (checked by the callers' validation).
#[inline]
pub(crate) fn left_justified<const N: usize>(text: &[u8]) -> [u8; N] {
    let mut out = [b' '; N];
    out[..text.len()].copy_from_slice(text);
    out
}

/// Strips ASCII spaces (only spaces) from both ends.
#[inline]
pub(crate) fn trim_spaces(mut bytes: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' '] = bytes {
        bytes = rest;
    }
    bytes
}

/// Maximum number of decimal digits of a `u64`.
pub(crate) const U64_DIGITS: usize = 20;

/// Writes `value` in decimal, right-justified in a 20-byte buffer padded on the left with
/// spaces, and returns the buffer together with the index of the first digit.
#[inline]
pub(crate) fn decimal_right_justified(mut value: u64) -> ([u8; U64_DIGITS], usize) {
    let mut buf = [b' '; U64_DIGITS];
    let mut i = U64_DIGITS;
    loop {
        i -= 1;
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    (buf, i)
}

/// Parses a non-empty run of ASCII digits into a `u64`. `None` on any non-digit or overflow.
#[inline]
pub(crate) fn parse_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trip() {
        for v in [0, 1, 9, 10, 12345, u64::MAX] {
            let (buf, start) = decimal_right_justified(v);
            assert!(buf[..start].iter().all(|&b| b == b' '));
            assert_eq!(parse_digits(&buf[start..]), Some(v));
        }
        let (buf, start) = decimal_right_justified(u64::MAX);
        assert_eq!(start, 0);
        assert_eq!(&buf, b"18446744073709551615");
    }

    #[test]
    fn parse_digits_rejects() {
        assert_eq!(parse_digits(b""), None);
        assert_eq!(parse_digits(b"1a"), None);
        assert_eq!(parse_digits(b"-1"), None);
        assert_eq!(parse_digits(b"18446744073709551616"), None);
        assert_eq!(parse_digits(b"007"), Some(7));
    }

    #[test]
    fn trims_only_spaces() {
        assert_eq!(trim_spaces(b"  ab c  "), b"ab c");
        assert_eq!(trim_spaces(b"   "), b"");
        assert_eq!(trim_spaces(b"\tx"), b"\tx");
    }
}
