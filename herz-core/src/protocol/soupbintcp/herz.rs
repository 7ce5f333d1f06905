//! The Herz control extension: machine-readable text in SoupBinTCP Debug (`+`) packets.
//!
//! A standard SoupBinTCP peer ignores Debug packets, so the extension never breaks one. Commands
//! (ASCII, tokens separated by spaces):
//!
//! - Client → server, before the Login Request, any number of times (lists accumulate):
//!   `HERZ FILTER symbols=AAPL,MSFT prefixes=BR,ES` — subscribe only to messages whose symbol is
//!   in `symbols` or starts with one of `prefixes`. Either list may be absent, not both.
//! - Server → client: `HERZ SKIP <n> <reason>` — the next `n` sequence numbers are not sent to
//!   this client. Reasons: `filtered` (not matching the filter), `dropped` (skipped by the
//!   drop-oldest slow-consumer policy), `conflated` (superseded by a newer message for the same
//!   symbol). A Herz client adds `n` to its implicit sequence counter, for any reason, known or
//!   not, so the counter always equals the journal sequence and a Login Request with it resumes
//!   exactly.
//! - Server → client: `HERZ ERROR <text>` — why the server is about to reject or close
//!   (e.g. a malformed filter).
//! - Client → server, before the Login Request: `HERZ SNAPSHOT` — start with the latest
//!   retained message per symbol (of the filter), then the live stream, with no gap and no
//!   duplicate between them: the older messages in the window are skipped as `conflated`.
//! - Server → client: `HERZ LIVE <seq>` — the snapshot is complete; from sequence `seq` on, the
//!   stream is live (every message, subject to the filter and the slow-consumer policy).
//!
//! See `docs/PROTOCOL.md` for the complete rules.

use core::fmt;

use super::{HEADER_LEN, MAX_PAYLOAD_LEN, PacketType, SoupError, packet_header};
use crate::protocol::{
    Snippet,
    tick::{SYMBOL_LEN, Symbol, is_symbol_byte, unpadded},
    wire::{decimal_right_justified, parse_digits},
};

/// The most entries (symbols + prefixes) one subscription may hold, over all its FILTER
/// packets; also the most one FILTER packet may carry.
pub const MAX_FILTER_ENTRIES: usize = 1024;

/// The word every Herz control text starts with.
pub const HERZ_TAG: &[u8] = b"HERZ";

const FILTER: &str = "FILTER";
const SKIP: &str = "SKIP";
const ERROR: &str = "ERROR";
const SNAPSHOT: &str = "SNAPSHOT";
const LIVE: &str = "LIVE";
const SYMBOLS_KEY: &[u8] = b"symbols";
const PREFIXES_KEY: &[u8] = b"prefixes";

/// Why sequence numbers were skipped for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// `filtered`: the messages do not match the client's filter.
    Filtered,
    /// `dropped`: the drop-oldest slow-consumer policy skipped them.
    Dropped,
    /// `conflated`: superseded by a newer message for the same symbol.
    Conflated,
    /// Any other lowercase word (sent by a newer server); encoded as `other`. The skip count
    /// still applies.
    Other,
}

impl SkipReason {
    /// The reason word.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkipReason::Filtered => "filtered",
            SkipReason::Dropped => "dropped",
            SkipReason::Conflated => "conflated",
            SkipReason::Other => "other",
        }
    }

    fn parse(word: &[u8]) -> Option<Self> {
        Some(match word {
            b"filtered" => SkipReason::Filtered,
            b"dropped" => SkipReason::Dropped,
            b"conflated" => SkipReason::Conflated,
            w if !w.is_empty()
                && w.iter()
                    .all(|&b| b.is_ascii_lowercase() || b == b'-' || b == b'_') =>
            {
                SkipReason::Other
            }
            _ => return None,
        })
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscription filter: validated comma-separated lists of symbols and symbol prefixes,
/// borrowed from the control text (or from the caller's strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter<'a> {
    symbols: &'a [u8],
    prefixes: &'a [u8],
    entries: usize,
}

/// The entries of a validated list (none for an empty list).
fn entries(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == b',').filter(|entry| !entry.is_empty())
}

/// Validates a non-empty comma-separated list of symbols; returns the number of entries.
fn check_list(list: &[u8], what: &'static str) -> Result<usize, SoupError> {
    let mut entries = 0;
    for entry in list.split(|&b| b == b',') {
        if entry.is_empty() || entry.len() > SYMBOL_LEN || !entry.iter().all(|&b| is_symbol_byte(b))
        {
            return Err(SoupError::HerzSyntax {
                command: FILTER,
                reason: what,
                token: Snippet::new(entry),
            });
        }
        entries += 1;
    }
    Ok(entries)
}

const BAD_SYMBOL: &str = "symbols must be 1 to 8 printable ASCII characters except space and ','";
const BAD_PREFIX: &str = "prefixes must be 1 to 8 printable ASCII characters except space and ','";

impl<'a> Filter<'a> {
    /// Builds a filter from comma-separated lists (`"AAPL,MSFT"`, `"BR,ES"`); an empty string
    /// means the list is absent. At least one entry in total, at most [`MAX_FILTER_ENTRIES`].
    pub fn new(symbols: &'a str, prefixes: &'a str) -> Result<Self, SoupError> {
        Self::from_lists(symbols.as_bytes(), prefixes.as_bytes())
    }

    fn from_lists(symbols: &'a [u8], prefixes: &'a [u8]) -> Result<Self, SoupError> {
        let mut entries = 0;
        if !symbols.is_empty() {
            entries += check_list(symbols, BAD_SYMBOL)?;
        }
        if !prefixes.is_empty() {
            entries += check_list(prefixes, BAD_PREFIX)?;
        }
        if entries == 0 {
            return Err(SoupError::HerzSyntax {
                command: FILTER,
                reason: "needs symbols=... and/or prefixes=...",
                token: Snippet::new(b""),
            });
        }
        if entries > MAX_FILTER_ENTRIES {
            return Err(SoupError::HerzFilterTooLarge { entries });
        }
        Ok(Filter {
            symbols,
            prefixes,
            entries,
        })
    }

    /// The exact symbols.
    pub fn symbols(&self) -> FilterEntries<'a> {
        FilterEntries::new(self.symbols)
    }

    /// The symbol prefixes.
    pub fn prefixes(&self) -> FilterEntries<'a> {
        FilterEntries::new(self.prefixes)
    }

    /// Number of entries (symbols + prefixes); at least 1.
    pub const fn len(&self) -> usize {
        self.entries
    }

    /// Always false: a valid filter has at least one entry.
    pub const fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether a message with this 8-byte symbol field (see
    /// [`symbol_of`](crate::protocol::tick::symbol_of)) passes the filter: its symbol is one of
    /// the symbols or starts with one of the prefixes. A linear scan; a server with many
    /// subscribers builds its own index from [`symbols`](Self::symbols) and
    /// [`prefixes`](Self::prefixes).
    pub fn matches(&self, symbol: &[u8; SYMBOL_LEN]) -> bool {
        let symbol = unpadded(symbol);
        entries(self.symbols).any(|entry| entry == symbol)
            || entries(self.prefixes).any(|prefix| symbol.starts_with(prefix))
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HERZ FILTER");
        if !self.symbols.is_empty() {
            out.extend_from_slice(b" symbols=");
            out.extend_from_slice(self.symbols);
        }
        if !self.prefixes.is_empty() {
            out.extend_from_slice(b" prefixes=");
            out.extend_from_slice(self.prefixes);
        }
    }
}

/// Iterator over the entries of one list of a [`Filter`].
#[derive(Debug, Clone)]
pub struct FilterEntries<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> FilterEntries<'a> {
    fn new(list: &'a [u8]) -> Self {
        FilterEntries {
            rest: (!list.is_empty()).then_some(list),
        }
    }
}

impl Iterator for FilterEntries<'_> {
    type Item = Symbol;

    fn next(&mut self) -> Option<Symbol> {
        loop {
            let rest = self.rest?;
            let (entry, tail) = match rest.iter().position(|&b| b == b',') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            self.rest = tail;
            // Entries were validated when the filter was built, so this always succeeds.
            if let Ok(symbol) = Symbol::from_bytes(entry) {
                return Some(symbol);
            }
        }
    }
}

/// A Herz control command carried in a Debug packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HerzControl<'a> {
    /// `HERZ FILTER symbols=... prefixes=...` (client → server, before login).
    Filter(Filter<'a>),
    /// `HERZ SKIP <count> <reason>` (server → client).
    Skip {
        /// How many sequence numbers are skipped; at least 1.
        count: u64,
        /// Why.
        reason: SkipReason,
    },
    /// `HERZ ERROR <text>` (server → client): printable ASCII explanation.
    Error(&'a str),
    /// `HERZ SNAPSHOT` (client → server, before login): latest message per symbol first.
    Snapshot,
    /// `HERZ LIVE <seq>` (server → client): the snapshot is complete, live from `seq` on.
    Live {
        /// The first sequence number of the live stream.
        next: u64,
    },
}

fn syntax(command: &'static str, reason: &'static str, token: &[u8]) -> SoupError {
    SoupError::HerzSyntax {
        command,
        reason,
        token: Snippet::new(token),
    }
}

impl<'a> HerzControl<'a> {
    /// Parses a Debug packet payload. `Ok(None)` if it is not Herz control text (does not start
    /// with the word `HERZ`); an error if it is, but malformed.
    pub fn parse(payload: &'a [u8]) -> Result<Option<Self>, SoupError> {
        let Some(rest) = payload.strip_prefix(HERZ_TAG) else {
            return Ok(None);
        };
        if !rest.is_empty() && rest[0] != b' ' {
            return Ok(None); // e.g. "HERZLICH": not ours.
        }
        // Tokens are separated by one or more spaces.
        let command_start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
        let command_end = rest[command_start..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(rest.len(), |i| command_start + i);
        let command = &rest[command_start..command_end];
        let args = &rest[command_end..];
        let mut tokens = args.split(|&b| b == b' ').filter(|t| !t.is_empty());
        match command {
            b"" => Err(SoupError::HerzMissingCommand),
            b"FILTER" => {
                let (mut symbols, mut prefixes): (Option<&[u8]>, Option<&[u8]>) = (None, None);
                for token in tokens {
                    let Some(eq) = token.iter().position(|&b| b == b'=') else {
                        return Err(syntax(FILTER, "expected key=value", token));
                    };
                    let (key, value) = (&token[..eq], &token[eq + 1..]);
                    let slot = match key {
                        SYMBOLS_KEY => &mut symbols,
                        PREFIXES_KEY => &mut prefixes,
                        _ => {
                            return Err(syntax(
                                FILTER,
                                "unknown key (expected symbols or prefixes)",
                                token,
                            ));
                        }
                    };
                    if slot.is_some() {
                        return Err(syntax(FILTER, "duplicate key", token));
                    }
                    if value.is_empty() {
                        return Err(syntax(FILTER, "empty list", token));
                    }
                    *slot = Some(value);
                }
                if symbols.is_none() && prefixes.is_none() {
                    return Err(syntax(
                        FILTER,
                        "needs symbols=... and/or prefixes=...",
                        payload,
                    ));
                }
                let filter =
                    Filter::from_lists(symbols.unwrap_or_default(), prefixes.unwrap_or_default())?;
                Ok(Some(HerzControl::Filter(filter)))
            }
            b"SKIP" => {
                let (Some(count), Some(reason)) = (tokens.next(), tokens.next()) else {
                    return Err(syntax(SKIP, "expected HERZ SKIP <count> <reason>", payload));
                };
                if let Some(extra) = tokens.next() {
                    return Err(syntax(SKIP, "unexpected extra text", extra));
                }
                let count = match parse_digits(count) {
                    Some(0) => return Err(syntax(SKIP, "count must be at least 1", count)),
                    Some(n) => n,
                    None => {
                        return Err(syntax(
                            SKIP,
                            "count is not a decimal number below 2^64",
                            count,
                        ));
                    }
                };
                let Some(reason) = SkipReason::parse(reason) else {
                    return Err(syntax(SKIP, "reason is not a lowercase word", reason));
                };
                Ok(Some(HerzControl::Skip { count, reason }))
            }
            b"ERROR" => {
                // The text is everything after the command and its separating spaces.
                let text_start = args.iter().position(|&b| b != b' ').unwrap_or(args.len());
                let text = &args[text_start..];
                if text.is_empty() {
                    return Err(syntax(ERROR, "missing text", payload));
                }
                if let Some(bad) = text
                    .iter()
                    .position(|&b| !(b == b' ' || b.is_ascii_graphic()))
                {
                    return Err(syntax(ERROR, "text is not printable ASCII", &text[bad..]));
                }
                // Printable ASCII is valid UTF-8.
                let text = core::str::from_utf8(text)
                    .map_err(|_| syntax(ERROR, "text is not printable ASCII", text))?;
                Ok(Some(HerzControl::Error(text)))
            }
            b"SNAPSHOT" => match tokens.next() {
                None => Ok(Some(HerzControl::Snapshot)),
                Some(extra) => Err(syntax(SNAPSHOT, "takes no arguments", extra)),
            },
            b"LIVE" => {
                let Some(next) = tokens.next() else {
                    return Err(syntax(LIVE, "expected HERZ LIVE <seq>", payload));
                };
                if let Some(extra) = tokens.next() {
                    return Err(syntax(LIVE, "unexpected extra text", extra));
                }
                match parse_digits(next) {
                    Some(next) if next >= 1 => Ok(Some(HerzControl::Live { next })),
                    _ => Err(syntax(
                        LIVE,
                        "sequence is not a decimal number from 1 to 2^64 - 1",
                        next,
                    )),
                }
            }
            other => Err(SoupError::HerzUnknownCommand {
                command: Snippet::new(other),
            }),
        }
    }

    /// Appends the control text (the Debug packet payload, no packet header).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            HerzControl::Filter(filter) => filter.encode_payload(out),
            HerzControl::Skip { count, reason } => encode_skip_text(*count, *reason, out),
            HerzControl::Error(text) => {
                out.extend_from_slice(b"HERZ ERROR ");
                out.extend_from_slice(text.as_bytes());
            }
            HerzControl::Snapshot => out.extend_from_slice(b"HERZ SNAPSHOT"),
            HerzControl::Live { next } => {
                let (digits, first) = decimal_right_justified(*next);
                out.extend_from_slice(b"HERZ LIVE ");
                out.extend_from_slice(&digits[first..]);
            }
        }
    }

    /// Appends a complete Debug packet carrying the control text. Fails only if the text is
    /// longer than [`MAX_PAYLOAD_LEN`]; `out` is then left as it was.
    pub fn encode_packet(&self, out: &mut Vec<u8>) -> Result<(), SoupError> {
        let start = out.len();
        out.extend_from_slice(&[0, 0, PacketType::Debug.as_byte()]);
        self.encode(out);
        let payload_len = out.len() - start - HEADER_LEN;
        match packet_header(PacketType::Debug, payload_len) {
            Ok(header) => {
                out[start..start + HEADER_LEN].copy_from_slice(&header);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }
}

fn encode_skip_text(count: u64, reason: SkipReason, out: &mut Vec<u8>) {
    let (digits, first) = decimal_right_justified(count);
    out.extend_from_slice(b"HERZ SKIP ");
    out.extend_from_slice(&digits[first..]);
    out.push(b' ');
    out.extend_from_slice(reason.as_str().as_bytes());
}

/// Appends a complete Debug packet `HERZ SKIP <count> <reason>`: the hot-path marker a server
/// sends before the next message it does send to a filtered or lagging client.
pub fn encode_skip_packet(count: u64, reason: SkipReason, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0, PacketType::Debug.as_byte()]);
    encode_skip_text(count, reason, out);
    // At most 10 + 20 + 1 + 9 bytes: always fits.
    let len = (out.len() - start - 2) as u16;
    out[start..start + 2].copy_from_slice(&len.to_be_bytes());
}

/// Appends `filter` as one or more complete `HERZ FILTER` Debug packets, each with a length
/// field of at most `max_packet_len` (the server's client packet cap, e.g.
/// [`DEFAULT_MAX_CLIENT_PACKET_LEN`](super::DEFAULT_MAX_CLIENT_PACKET_LEN)). Returns the number
/// of packets. On error `out` is left as it was.
pub fn encode_filter_packets(
    filter: &Filter<'_>,
    max_packet_len: usize,
    out: &mut Vec<u8>,
) -> Result<usize, SoupError> {
    let original_len = out.len();
    let max_packet_len = max_packet_len.min(MAX_PAYLOAD_LEN + 1);
    let mut packets = 0;
    // (start of the current packet in `out`, key currently open, entries in this packet)
    let mut current: Option<(usize, &[u8], usize)> = None;

    let lists = [
        (SYMBOLS_KEY, filter.symbols),
        (PREFIXES_KEY, filter.prefixes),
    ];
    for (key, list) in lists {
        for entry in entries(list) {
            // Bytes this entry adds when the key is already open, or when it must be opened.
            let continued = 1 + entry.len();
            let opened = 1 + key.len() + 1 + entry.len();
            let fresh = 1 + b"HERZ FILTER".len() + opened; // type byte + text
            if fresh > max_packet_len {
                out.truncate(original_len);
                return Err(SoupError::HerzFilterPacketTooSmall {
                    max_packet_len,
                    needed: fresh,
                    entry: Snippet::new(entry),
                });
            }
            if let Some((start, open_key, n)) = current {
                let len = out.len() - start - 2;
                let needed = if open_key == key { continued } else { opened };
                if len + needed > max_packet_len || n >= MAX_FILTER_ENTRIES {
                    close_packet(out, start);
                    current = None;
                }
            }
            let (start, open_key, n) = match current {
                Some(c) => c,
                None => {
                    let start = out.len();
                    out.extend_from_slice(&[0, 0, PacketType::Debug.as_byte()]);
                    out.extend_from_slice(b"HERZ FILTER");
                    packets += 1;
                    (start, &b""[..], 0)
                }
            };
            if open_key == key {
                out.push(b',');
            } else {
                out.push(b' ');
                out.extend_from_slice(key);
                out.push(b'=');
            }
            out.extend_from_slice(entry);
            current = Some((start, key, n + 1));
        }
    }
    if let Some((start, _, _)) = current {
        close_packet(out, start);
    }
    Ok(packets)
}

fn close_packet(out: &mut [u8], start: usize) {
    let len = (out.len() - start - 2) as u16;
    out[start..start + 2].copy_from_slice(&len.to_be_bytes());
}

/// Appends a complete Debug packet `HERZ ERROR <text>`. Fails only if `text` is too long.
pub fn encode_error_packet(text: &str, out: &mut Vec<u8>) -> Result<(), SoupError> {
    HerzControl::Error(text).encode_packet(out)
}
