//! Herz message payloads ("ticks").
//!
//! Every Herz message starts with a 1-byte message type and an 8-byte symbol (ASCII, left-justified,
//! padded on the right with spaces) at bytes `1..9`. The distributor routes and filters on these 9
//! bytes alone ([`symbol_of`], [`message_type`]) and never needs to understand the rest, so new
//! message types can be added without touching the distribution path.
//!
//! All integers are big-endian. Prices are signed fixed-point integers in units of 1e-8
//! ([`PRICE_SCALE`]); timestamps are nanoseconds since the Unix epoch (UTC).
//!
//! | Type | Offset | Len | Field          | Encoding                                   |
//! |------|-------:|----:|----------------|--------------------------------------------|
//! | any  |      0 |   1 | message type   | ASCII: `Q` quote, `T` trade                |
//! | any  |      1 |   8 | symbol         | ASCII, left-justified, space-padded        |
//! | `Q`  |      9 |   8 | timestamp_ns   | u64                                        |
//! | `Q`  |     17 |   8 | bid_price      | i64, 1e-8 units                            |
//! | `Q`  |     25 |   4 | bid_size       | u32                                        |
//! | `Q`  |     29 |   8 | ask_price      | i64, 1e-8 units                            |
//! | `Q`  |     37 |   4 | ask_size       | u32                                        |
//! | `Q`  |        |  41 | total length   | [`QUOTE_LEN`]                              |
//! | `T`  |      9 |   8 | timestamp_ns   | u64                                        |
//! | `T`  |     17 |   8 | price          | i64, 1e-8 units                            |
//! | `T`  |     25 |   4 | size           | u32                                        |
//! | `T`  |     29 |   8 | trade_id       | u64                                        |
//! | `T`  |     37 |   1 | aggressor      | ASCII: `B` buyer, `S` seller, ` ` unknown  |
//! | `T`  |        |  38 | total length   | [`TRADE_LEN`]                              |
//!
//! Decoding is strict: a message of a known type must have exactly its documented length and a
//! well-formed symbol.

use core::{fmt, str::FromStr};

use thiserror::Error;

use super::wire::{array, read_i64, read_u32, read_u64};

/// Length of the symbol field.
pub const SYMBOL_LEN: usize = 8;
/// Length of the routing header every Herz message starts with: type (1) + symbol (8).
pub const ROUTING_HEADER_LEN: usize = 1 + SYMBOL_LEN;
/// Prices are integers in units of `1 / PRICE_SCALE` (1e-8).
pub const PRICE_SCALE: i64 = 100_000_000;

/// Message type byte of a [`Quote`].
pub const QUOTE_TYPE: u8 = b'Q';
/// Exact encoded length of a [`Quote`].
pub const QUOTE_LEN: usize = 41;
/// Message type byte of a [`Trade`].
pub const TRADE_TYPE: u8 = b'T';
/// Exact encoded length of a [`Trade`].
pub const TRADE_LEN: usize = 38;

/// Errors from building symbols and decoding tick messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TickError {
    /// The message has no bytes at all.
    #[error("empty message: a Herz message starts with a 1-byte type and an 8-byte symbol")]
    Empty,
    /// The message type byte is not one this codec knows.
    #[error("unknown Herz message type '{ch}' (0x{0:02x})", ch = core::ascii::escape_default(*.0))]
    UnknownType(u8),
    /// A message of a known type has the wrong length.
    #[error("{kind} message must be exactly {expected} bytes, got {actual}")]
    WrongLength {
        /// Message kind (`"quote"`, `"trade"`).
        kind: &'static str,
        /// The layout's exact length.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// A symbol is empty or longer than 8 characters.
    #[error("symbol must be 1 to 8 characters, got {len}")]
    SymbolLength {
        /// The length given.
        len: usize,
    },
    /// A symbol contains a byte outside printable ASCII, a space or a comma.
    #[error(
        "symbol byte '{}' (0x{byte:02x}) at position {position} is not allowed \
         (printable ASCII except space and ',')",
        core::ascii::escape_default(*.byte)
    )]
    SymbolByte {
        /// The offending byte.
        byte: u8,
        /// Its position in the symbol.
        position: usize,
    },
    /// A wire symbol field is blank or not left-justified and space-padded.
    #[error("symbol field \"{}\" is not left-justified and space-padded", .field.escape_ascii())]
    SymbolPadding {
        /// The 8-byte field as received.
        field: [u8; SYMBOL_LEN],
    },
    /// A trade's aggressor byte is not `B`, `S` or space.
    #[error(
        "aggressor '{ch}' (0x{0:02x}) is not 'B', 'S' or ' '",
        ch = core::ascii::escape_default(*.0)
    )]
    InvalidAggressor(u8),
}

/// Whether `byte` may appear in a symbol: printable ASCII except space and `,` (the filter list
/// separator of the Herz control extension).
#[inline]
pub const fn is_symbol_byte(byte: u8) -> bool {
    byte.is_ascii_graphic() && byte != b','
}

/// An instrument symbol: 1 to 8 printable ASCII characters (no space, no comma), stored as the
/// 8-byte wire field, left-justified and padded on the right with spaces.
///
/// `Display` prints the symbol without padding.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol([u8; SYMBOL_LEN]);

impl Symbol {
    /// Builds a symbol from its text, e.g. `"AAPL"`.
    pub fn new(text: &str) -> Result<Self, TickError> {
        Self::from_bytes(text.as_bytes())
    }

    /// Builds a symbol from its unpadded bytes, e.g. `b"AAPL"`.
    pub fn from_bytes(text: &[u8]) -> Result<Self, TickError> {
        if text.is_empty() || text.len() > SYMBOL_LEN {
            return Err(TickError::SymbolLength { len: text.len() });
        }
        if let Some(position) = text.iter().position(|&b| !is_symbol_byte(b)) {
            return Err(TickError::SymbolByte {
                byte: text[position],
                position,
            });
        }
        Ok(Symbol(super::wire::left_justified(text)))
    }

    /// Validates an 8-byte wire field: 1 to 8 symbol bytes, then only spaces.
    pub fn from_padded(field: &[u8; SYMBOL_LEN]) -> Result<Self, TickError> {
        let len = field.iter().position(|&b| b == b' ').unwrap_or(SYMBOL_LEN);
        if len == 0 || field[len..].iter().any(|&b| b != b' ') {
            return Err(TickError::SymbolPadding { field: *field });
        }
        Self::from_bytes(&field[..len])
    }

    /// The 8-byte wire field (space-padded).
    #[inline]
    pub const fn as_padded(&self) -> &[u8; SYMBOL_LEN] {
        &self.0
    }

    /// The symbol bytes without padding.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        unpadded(&self.0)
    }

    /// The symbol text without padding.
    pub fn as_str(&self) -> &str {
        // Always ASCII by construction, so this never takes the fallback.
        core::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// Whether this symbol starts with `prefix` (both compared without padding).
    #[inline]
    pub fn starts_with(&self, prefix: &Symbol) -> bool {
        self.as_bytes().starts_with(prefix.as_bytes())
    }
}

/// The bytes of a space-padded symbol field up to the first space.
#[inline]
pub fn unpadded(field: &[u8; SYMBOL_LEN]) -> &[u8] {
    let len = field.iter().position(|&b| b == b' ').unwrap_or(SYMBOL_LEN);
    &field[..len]
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({:?})", self.as_str())
    }
}

impl FromStr for Symbol {
    type Err = TickError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Symbol::new(s)
    }
}

impl TryFrom<&str> for Symbol {
    type Error = TickError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Symbol::new(s)
    }
}

/// The message type byte of a Herz message, if it has one.
#[inline]
pub fn message_type(msg: &[u8]) -> Option<u8> {
    msg.first().copied()
}

/// The raw 8-byte symbol field (bytes `1..9`) of any Herz message, known type or not, without
/// validating it. `None` if the message is shorter than [`ROUTING_HEADER_LEN`].
#[inline]
pub fn symbol_of(msg: &[u8]) -> Option<&[u8; SYMBOL_LEN]> {
    msg.get(1..ROUTING_HEADER_LEN)?.try_into().ok()
}

/// Formats a 1e-8 fixed-point price as a decimal without trailing zeros (`18912.5`, `-0.0001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayPrice(pub i64);

impl fmt::Display for DisplayPrice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = PRICE_SCALE as u64;
        let (int, mut frac) = (abs / scale, abs % scale);
        if frac == 0 {
            return write!(f, "{sign}{int}");
        }
        let mut width = 8;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write!(f, "{sign}{int}.{frac:0width$}")
    }
}

/// Checks the type byte and exact length, and validates the symbol.
fn check(msg: &[u8], kind: &'static str, expected: usize) -> Result<Symbol, TickError> {
    if msg.len() != expected {
        return Err(TickError::WrongLength {
            kind,
            expected,
            actual: msg.len(),
        });
    }
    Symbol::from_padded(&array(msg, 1))
}

/// A top-of-book quote (`Q`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quote {
    /// Instrument.
    pub symbol: Symbol,
    /// Event time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Best bid price in 1e-8 units.
    pub bid_price: i64,
    /// Best bid size.
    pub bid_size: u32,
    /// Best ask price in 1e-8 units.
    pub ask_price: i64,
    /// Best ask size.
    pub ask_size: u32,
}

impl Quote {
    /// The exact wire bytes.
    pub fn to_bytes(&self) -> [u8; QUOTE_LEN] {
        let mut b = [0; QUOTE_LEN];
        b[0] = QUOTE_TYPE;
        b[1..9].copy_from_slice(self.symbol.as_padded());
        b[9..17].copy_from_slice(&self.timestamp_ns.to_be_bytes());
        b[17..25].copy_from_slice(&self.bid_price.to_be_bytes());
        b[25..29].copy_from_slice(&self.bid_size.to_be_bytes());
        b[29..37].copy_from_slice(&self.ask_price.to_be_bytes());
        b[37..41].copy_from_slice(&self.ask_size.to_be_bytes());
        b
    }

    /// Appends the wire bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Decodes a quote; `msg` must be exactly [`QUOTE_LEN`] bytes starting with `Q`.
    pub fn decode(msg: &[u8]) -> Result<Self, TickError> {
        match msg.first() {
            None => return Err(TickError::Empty),
            Some(&t) if t != QUOTE_TYPE => return Err(TickError::UnknownType(t)),
            Some(_) => {}
        }
        let symbol = check(msg, "quote", QUOTE_LEN)?;
        Ok(Quote {
            symbol,
            timestamp_ns: read_u64(msg, 9),
            bid_price: read_i64(msg, 17),
            bid_size: read_u32(msg, 25),
            ask_price: read_i64(msg, 29),
            ask_size: read_u32(msg, 37),
        })
    }
}

/// Which side initiated a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aggressor {
    /// The buyer lifted the offer (`B`).
    Buy,
    /// The seller hit the bid (`S`).
    Sell,
    /// Not known (` `).
    Unknown,
}

impl Aggressor {
    /// The wire byte.
    pub const fn as_byte(self) -> u8 {
        match self {
            Aggressor::Buy => b'B',
            Aggressor::Sell => b'S',
            Aggressor::Unknown => b' ',
        }
    }

    /// Parses the wire byte.
    pub const fn from_byte(byte: u8) -> Result<Self, TickError> {
        match byte {
            b'B' => Ok(Aggressor::Buy),
            b'S' => Ok(Aggressor::Sell),
            b' ' => Ok(Aggressor::Unknown),
            other => Err(TickError::InvalidAggressor(other)),
        }
    }
}

/// A trade print (`T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Trade {
    /// Instrument.
    pub symbol: Symbol,
    /// Event time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// Trade price in 1e-8 units.
    pub price: i64,
    /// Traded quantity.
    pub size: u32,
    /// Venue trade identifier.
    pub trade_id: u64,
    /// Initiating side.
    pub aggressor: Aggressor,
}

impl Trade {
    /// The exact wire bytes.
    pub fn to_bytes(&self) -> [u8; TRADE_LEN] {
        let mut b = [0; TRADE_LEN];
        b[0] = TRADE_TYPE;
        b[1..9].copy_from_slice(self.symbol.as_padded());
        b[9..17].copy_from_slice(&self.timestamp_ns.to_be_bytes());
        b[17..25].copy_from_slice(&self.price.to_be_bytes());
        b[25..29].copy_from_slice(&self.size.to_be_bytes());
        b[29..37].copy_from_slice(&self.trade_id.to_be_bytes());
        b[37] = self.aggressor.as_byte();
        b
    }

    /// Appends the wire bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// Decodes a trade; `msg` must be exactly [`TRADE_LEN`] bytes starting with `T`.
    pub fn decode(msg: &[u8]) -> Result<Self, TickError> {
        match msg.first() {
            None => return Err(TickError::Empty),
            Some(&t) if t != TRADE_TYPE => return Err(TickError::UnknownType(t)),
            Some(_) => {}
        }
        let symbol = check(msg, "trade", TRADE_LEN)?;
        Ok(Trade {
            symbol,
            timestamp_ns: read_u64(msg, 9),
            price: read_i64(msg, 17),
            size: read_u32(msg, 25),
            trade_id: read_u64(msg, 29),
            aggressor: Aggressor::from_byte(msg[37])?,
        })
    }
}

/// Any tick message Herz knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tick {
    /// A quote (`Q`).
    Quote(Quote),
    /// A trade (`T`).
    Trade(Trade),
}

impl Tick {
    /// Decodes any known tick; unknown type bytes yield [`TickError::UnknownType`].
    pub fn decode(msg: &[u8]) -> Result<Self, TickError> {
        match message_type(msg) {
            None => Err(TickError::Empty),
            Some(QUOTE_TYPE) => Quote::decode(msg).map(Tick::Quote),
            Some(TRADE_TYPE) => Trade::decode(msg).map(Tick::Trade),
            Some(other) => Err(TickError::UnknownType(other)),
        }
    }

    /// Appends the wire bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Tick::Quote(q) => q.encode(out),
            Tick::Trade(t) => t.encode(out),
        }
    }

    /// The encoded length.
    pub const fn encoded_len(&self) -> usize {
        match self {
            Tick::Quote(_) => QUOTE_LEN,
            Tick::Trade(_) => TRADE_LEN,
        }
    }

    /// The message type byte.
    pub const fn message_type(&self) -> u8 {
        match self {
            Tick::Quote(_) => QUOTE_TYPE,
            Tick::Trade(_) => TRADE_TYPE,
        }
    }

    /// The instrument.
    pub const fn symbol(&self) -> Symbol {
        match self {
            Tick::Quote(q) => q.symbol,
            Tick::Trade(t) => t.symbol,
        }
    }

    /// Event time, nanoseconds since the Unix epoch.
    pub const fn timestamp_ns(&self) -> u64 {
        match self {
            Tick::Quote(q) => q.timestamp_ns,
            Tick::Trade(t) => t.timestamp_ns,
        }
    }
}

impl fmt::Display for Tick {
    /// One human-readable line, e.g.
    /// `QUOTE AAPL ts=1700000000000000000 bid=100@189.12 ask=200@189.13`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tick::Quote(q) => write!(
                f,
                "QUOTE {} ts={} bid={}@{} ask={}@{}",
                q.symbol,
                q.timestamp_ns,
                q.bid_size,
                DisplayPrice(q.bid_price),
                q.ask_size,
                DisplayPrice(q.ask_price)
            ),
            Tick::Trade(t) => {
                let aggressor = match t.aggressor {
                    Aggressor::Buy => "buy",
                    Aggressor::Sell => "sell",
                    Aggressor::Unknown => "unknown",
                };
                write!(
                    f,
                    "TRADE {} ts={} {}@{} id={} aggressor={}",
                    t.symbol,
                    t.timestamp_ns,
                    t.size,
                    DisplayPrice(t.price),
                    t.trade_id,
                    aggressor
                )
            }
        }
    }
}

/// A symbol in configuration files: its text (`"AAPL"`), validated as [`Symbol::new`] does.
impl<'de> serde::Deserialize<'de> for Symbol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Symbol::new(&text)
            .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a symbol: {e}")))
    }
}

impl serde::Serialize for Symbol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str) -> Symbol {
        Symbol::new(s).unwrap()
    }

    fn quote() -> Quote {
        Quote {
            symbol: sym("AAPL"),
            timestamp_ns: 0x0102_0304_0506_0708,
            bid_price: 18_912_000_000,
            bid_size: 100,
            ask_price: 18_913_000_000,
            ask_size: 200,
        }
    }

    fn trade() -> Trade {
        Trade {
            symbol: sym("BRK.B"),
            timestamp_ns: 1,
            price: -5,
            size: 7,
            trade_id: u64::MAX,
            aggressor: Aggressor::Sell,
        }
    }

    #[test]
    fn symbol_validation_and_display() {
        let s = sym("AAPL");
        assert_eq!(s.as_padded(), b"AAPL    ");
        assert_eq!(s.as_bytes(), b"AAPL");
        assert_eq!(s.to_string(), "AAPL");
        assert_eq!(format!("{s:?}"), "Symbol(\"AAPL\")");
        assert_eq!(sym("ABCDEFGH").as_padded(), b"ABCDEFGH");
        assert_eq!("ES=F".parse::<Symbol>().unwrap().as_bytes(), b"ES=F");

        assert_eq!(Symbol::new(""), Err(TickError::SymbolLength { len: 0 }));
        assert_eq!(
            Symbol::new("ABCDEFGHI"),
            Err(TickError::SymbolLength { len: 9 })
        );
        assert_eq!(
            Symbol::new("A B"),
            Err(TickError::SymbolByte {
                byte: b' ',
                position: 1
            })
        );
        assert!(Symbol::new("A,B").is_err());
        assert!(Symbol::new("é").is_err());
        let err = Symbol::new("AB\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "symbol byte '\\n' (0x0a) at position 2 is not allowed \
             (printable ASCII except space and ',')"
        );
    }

    #[test]
    fn symbol_from_padded() {
        assert_eq!(Symbol::from_padded(b"MSFT    ").unwrap(), sym("MSFT"));
        assert_eq!(Symbol::from_padded(b"ABCDEFGH").unwrap(), sym("ABCDEFGH"));
        for bad in [b"        ", b" MSFT   ", b"MS FT   "] {
            assert_eq!(
                Symbol::from_padded(bad),
                Err(TickError::SymbolPadding { field: *bad })
            );
        }
        assert!(Symbol::from_padded(b"MS\0T    ").is_err());
        let err = Symbol::from_padded(b" MSFT\0  ").unwrap_err();
        assert_eq!(
            err.to_string(),
            "symbol field \" MSFT\\x00  \" is not left-justified and space-padded"
        );
        assert!(sym("BRK.B").starts_with(&sym("BRK")));
        assert!(!sym("BR").starts_with(&sym("BRK")));
    }

    #[test]
    fn routing_header() {
        let bytes = quote().to_bytes();
        assert_eq!(message_type(&bytes), Some(b'Q'));
        assert_eq!(symbol_of(&bytes), Some(b"AAPL    "));
        assert_eq!(symbol_of(b"X12345678"), Some(b"12345678"));
        assert_eq!(symbol_of(b"X1234567"), None);
        assert_eq!(symbol_of(b""), None);
        assert_eq!(message_type(b""), None);
        assert_eq!(unpadded(b"AB      "), b"AB");
    }

    #[test]
    fn quote_exact_bytes() {
        #[rustfmt::skip]
        let expected: [u8; QUOTE_LEN] = [
            b'Q', b'A', b'A', b'P', b'L', b' ', b' ', b' ', b' ',
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
            0x00, 0x00, 0x00, 0x04, 0x67, 0x3e, 0x38, 0x00, // 18_912_000_000
            0x00, 0x00, 0x00, 0x64,                         // 100
            0x00, 0x00, 0x00, 0x04, 0x67, 0x4d, 0x7a, 0x40, // 18_913_000_000
            0x00, 0x00, 0x00, 0xc8,                         // 200
        ];
        assert_eq!(quote().to_bytes(), expected);
        let mut out = vec![0xAA];
        Tick::Quote(quote()).encode(&mut out);
        assert_eq!(&out[1..], &expected);
        assert_eq!(Tick::decode(&expected), Ok(Tick::Quote(quote())));
    }

    #[test]
    fn trade_exact_bytes() {
        #[rustfmt::skip]
        let expected: [u8; TRADE_LEN] = [
            b'T', b'B', b'R', b'K', b'.', b'B', b' ', b' ', b' ',
            0, 0, 0, 0, 0, 0, 0, 1,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfb, // -5
            0, 0, 0, 7,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            b'S',
        ];
        assert_eq!(trade().to_bytes(), expected);
        assert_eq!(Tick::decode(&expected), Ok(Tick::Trade(trade())));
    }

    #[test]
    fn round_trips() {
        for aggressor in [Aggressor::Buy, Aggressor::Sell, Aggressor::Unknown] {
            let t = Tick::Trade(Trade {
                aggressor,
                ..trade()
            });
            let mut out = Vec::new();
            t.encode(&mut out);
            assert_eq!(out.len(), t.encoded_len());
            assert_eq!(Tick::decode(&out), Ok(t));
            assert_eq!(symbol_of(&out), Some(t.symbol().as_padded()));
        }
        let q = Tick::Quote(quote());
        assert_eq!(q.message_type(), b'Q');
        assert_eq!(q.timestamp_ns(), 0x0102_0304_0506_0708);
    }

    #[test]
    fn malformed() {
        assert_eq!(Tick::decode(b""), Err(TickError::Empty));
        assert_eq!(
            Tick::decode(b"Xabcdefgh"),
            Err(TickError::UnknownType(b'X'))
        );
        assert_eq!(
            Tick::decode(b"\x01").unwrap_err().to_string(),
            "unknown Herz message type '\\x01' (0x01)"
        );
        let q = quote().to_bytes();
        assert_eq!(
            Tick::decode(&q[..40]),
            Err(TickError::WrongLength {
                kind: "quote",
                expected: 41,
                actual: 40
            })
        );
        let mut long = q.to_vec();
        long.push(0);
        assert!(matches!(
            Tick::decode(&long),
            Err(TickError::WrongLength { actual: 42, .. })
        ));
        assert_eq!(
            Tick::decode(b"T").unwrap_err().to_string(),
            "trade message must be exactly 38 bytes, got 1"
        );
        let mut t = trade().to_bytes();
        t[37] = b'X';
        assert_eq!(Tick::decode(&t), Err(TickError::InvalidAggressor(b'X')));
        let mut t = trade().to_bytes();
        t[1] = b' ';
        assert!(matches!(
            Tick::decode(&t),
            Err(TickError::SymbolPadding { .. })
        ));
        assert_eq!(Quote::decode(&t), Err(TickError::UnknownType(b'T')));
        assert_eq!(Trade::decode(&q), Err(TickError::UnknownType(b'Q')));
    }

    #[test]
    fn display() {
        assert_eq!(
            Tick::Quote(quote()).to_string(),
            "QUOTE AAPL ts=72623859790382856 bid=100@189.12 ask=200@189.13"
        );
        assert_eq!(
            Tick::Trade(trade()).to_string(),
            "TRADE BRK.B ts=1 7@-0.00000005 id=18446744073709551615 aggressor=sell"
        );
        assert_eq!(DisplayPrice(0).to_string(), "0");
        assert_eq!(DisplayPrice(100_000_000).to_string(), "1");
        assert_eq!(DisplayPrice(150_000_000).to_string(), "1.5");
        assert_eq!(DisplayPrice(-1).to_string(), "-0.00000001");
        assert_eq!(DisplayPrice(i64::MIN).to_string(), "-92233720368.54775808");
        assert_eq!(format!("[{:>6}]", sym("AB")), "[    AB]");
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut buf = [0u8; 48];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            let len = (state >> 40) as usize % (buf.len() + 1);
            let msg = &mut buf[..len];
            if len > 0 && state & 1 == 0 {
                msg[0] = if state & 2 == 0 { b'Q' } else { b'T' };
            }
            if let Ok(tick) = Tick::decode(msg) {
                let mut out = Vec::new();
                tick.encode(&mut out);
                assert_eq!(out, msg);
                let _ = tick.to_string();
            }
            let _ = symbol_of(msg);
        }
    }
}
