//! A subscriber's `HERZ FILTER` compiled for fast per-message matching.
//!
//! [`Filter::matches`] scans its lists linearly, which is fine once but not for every message
//! times every filtered subscriber. [`SubscriptionFilter`] turns the (accumulated) FILTER packets
//! of one subscription into sorted arrays of 8-byte keys:
//!
//! - exact symbols: one sorted `Vec<u64>` (the space-padded symbol read as a big-endian integer),
//!   looked up by binary search;
//! - prefixes: one sorted `Vec<u64>` per prefix length (1 to 8), each prefix read as a big-endian
//!   integer with zero bytes after it, looked up with the message symbol masked to that length.
//!
//! A match costs at most 1 + 8 binary searches over at most [`MAX_FILTER_ENTRIES`] keys, with no
//! hashing and no allocation.
//!
//! Semantics are exactly those of [`Filter::matches`] (tested against it): the symbol is the
//! message's 8-byte field at bytes `1..9` up to its first space; it passes if it equals one of
//! the symbols or starts with one of the prefixes. **A message shorter than 9 bytes has no symbol
//! and never matches** a filter: the distributor cannot route what it cannot name. (Publishers'
//! messages are validated at ingest, so this only concerns foreign feeds.)

use crate::protocol::{
    soupbintcp::{Filter, MAX_FILTER_ENTRIES, SoupError},
    tick::{SYMBOL_LEN, Symbol, symbol_of, unpadded},
};

/// The compiled symbol and prefix lists of one subscription.
///
/// Empty (matches nothing) until [`add`](Self::add)ed to; a subscriber that sent no FILTER is
/// not filtered at all and needs no `SubscriptionFilter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriptionFilter {
    /// Exact symbols, space-padded, as big-endian `u64`; sorted, no duplicates.
    symbols: Vec<u64>,
    /// `prefixes[l - 1]`: prefixes of length `l`, followed by zero bytes, as big-endian `u64`;
    /// sorted, no duplicates.
    prefixes: [Vec<u64>; SYMBOL_LEN],
    /// Bit `l - 1` set when `prefixes[l - 1]` is not empty, so a match only visits lengths in use.
    prefix_lengths: u8,
    /// Entries added, counted as the client sent them (duplicates included), against the
    /// per-subscription limit.
    entries: usize,
}

/// The key of a symbol's `len` first bytes: those bytes followed by zero bytes, big-endian.
#[inline]
fn prefix_key(symbol_key: u64, len: usize) -> u64 {
    debug_assert!((1..=SYMBOL_LEN).contains(&len));
    symbol_key & (u64::MAX << (8 * (SYMBOL_LEN - len)))
}

/// Inserts into a sorted vector unless present.
fn insert_sorted(keys: &mut Vec<u64>, key: u64) {
    if let Err(at) = keys.binary_search(&key) {
        keys.insert(at, key);
    }
}

impl SubscriptionFilter {
    /// An empty filter (matches nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles one FILTER.
    pub fn from_filter(filter: &Filter<'_>) -> Self {
        let mut compiled = Self::new();
        // A single Filter holds at most MAX_FILTER_ENTRIES entries, so this cannot fail.
        let _ = compiled.add(filter);
        compiled
    }

    /// Compiles symbol and prefix lists given as symbols (a channel's configuration: bounded by the
    /// configuration, not by the per-subscription limit of [`add`](Self::add)).
    pub fn from_lists(symbols: &[Symbol], prefixes: &[Symbol]) -> Self {
        let mut compiled = Self::new();
        for symbol in symbols {
            insert_sorted(
                &mut compiled.symbols,
                u64::from_be_bytes(*symbol.as_padded()),
            );
        }
        for prefix in prefixes {
            compiled.add_prefix(prefix);
        }
        compiled.entries = symbols.len() + prefixes.len();
        compiled
    }

    /// Adds the lists of one more FILTER packet (FILTER packets of a subscription add up).
    ///
    /// Fails with [`SoupError::HerzFilterTooLarge`] if the subscription would hold more than
    /// [`MAX_FILTER_ENTRIES`] entries in total (counted as sent, duplicates included, as
    /// docs/PROTOCOL.md states the limit); the filter is then left unchanged. Allocates: call it
    /// at login, not per message.
    pub fn add(&mut self, filter: &Filter<'_>) -> Result<(), SoupError> {
        let entries = self.entries + filter.len();
        if entries > MAX_FILTER_ENTRIES {
            return Err(SoupError::HerzFilterTooLarge { entries });
        }
        self.entries = entries;
        for symbol in filter.symbols() {
            insert_sorted(&mut self.symbols, u64::from_be_bytes(*symbol.as_padded()));
        }
        for prefix in filter.prefixes() {
            self.add_prefix(&prefix);
        }
        Ok(())
    }

    fn add_prefix(&mut self, prefix: &Symbol) {
        let len = prefix.as_bytes().len();
        let key = prefix_key(u64::from_be_bytes(*prefix.as_padded()), len);
        insert_sorted(&mut self.prefixes[len - 1], key);
        self.prefix_lengths |= 1 << (len - 1);
    }

    /// Whether the message passes: its symbol (bytes `1..9`, up to the first space) equals one of
    /// the symbols or starts with one of the prefixes. Messages shorter than 9 bytes never pass.
    #[inline]
    pub fn matches(&self, msg: &[u8]) -> bool {
        symbol_of(msg).is_some_and(|field| self.matches_symbol(field))
    }

    /// Whether a message with this 8-byte symbol field passes (see [`matches`](Self::matches)).
    #[inline]
    pub fn matches_symbol(&self, field: &[u8; SYMBOL_LEN]) -> bool {
        // The symbol ends at the first space, as in `Filter::matches`; re-pad it so that a
        // malformed field ("AB CD   ") compares like its symbol ("AB").
        let len = unpadded(field).len();
        if len == 0 {
            return false;
        }
        let mut padded = [b' '; SYMBOL_LEN];
        padded[..len].copy_from_slice(&field[..len]);
        let key = u64::from_be_bytes(padded);
        if self.symbols.binary_search(&key).is_ok() {
            return true;
        }
        // Prefix lengths in use that the symbol is long enough for.
        let mut lengths = self.prefix_lengths & (u8::MAX >> (SYMBOL_LEN - len));
        while lengths != 0 {
            let l = lengths.trailing_zeros() as usize + 1;
            if self.prefixes[l - 1]
                .binary_search(&prefix_key(key, l))
                .is_ok()
            {
                return true;
            }
            lengths &= lengths - 1;
        }
        false
    }

    /// Entries added so far (symbols + prefixes, as sent).
    pub const fn len(&self) -> usize {
        self.entries
    }

    /// Whether nothing was added (the filter matches nothing).
    pub const fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::alloc_count::allocations;

    #[test]
    fn lists_compile_like_the_same_filter_packet() {
        let sym = |s: &str| Symbol::new(s).unwrap();
        let from_lists = SubscriptionFilter::from_lists(&[sym("AAPL"), sym("MSFT")], &[sym("ES")]);
        let from_packet = SubscriptionFilter::from_filter(&Filter::new("AAPL,MSFT", "ES").unwrap());
        assert_eq!(from_lists, from_packet);
    }

    fn msg(symbol: &[u8; 8]) -> Vec<u8> {
        let mut m = vec![b'Q'];
        m.extend_from_slice(symbol);
        m.extend_from_slice(&[0; 32]);
        m
    }

    #[test]
    fn symbols_and_prefixes() {
        let f = SubscriptionFilter::from_filter(&Filter::new("AAPL,MSFT", "BR,ES").unwrap());
        assert_eq!(f.len(), 4);
        assert!(!f.is_empty());
        assert!(f.matches(&msg(b"AAPL    ")));
        assert!(f.matches(&msg(b"MSFT    ")));
        assert!(!f.matches(&msg(b"AAP     ")));
        assert!(!f.matches(&msg(b"AAPLX   ")));
        assert!(f.matches(&msg(b"BRK.B   ")));
        assert!(f.matches(&msg(b"BR      ")), "a prefix matches itself");
        assert!(f.matches(&msg(b"ESZ6    ")));
        assert!(!f.matches(&msg(b"B       ")));
        assert!(!f.matches(&msg(b"XBR     ")));
        // Eight-character symbols and prefixes.
        let f = SubscriptionFilter::from_filter(&Filter::new("ABCDEFGH", "ZYXWVUTS").unwrap());
        assert!(f.matches(&msg(b"ABCDEFGH")));
        assert!(f.matches(&msg(b"ZYXWVUTS")));
        assert!(!f.matches(&msg(b"ZYXWVUT ")));
        assert!(!f.matches(&msg(b"ABCDEFG ")));
    }

    #[test]
    fn short_and_odd_messages() {
        let f = SubscriptionFilter::from_filter(&Filter::new("A", "A").unwrap());
        assert!(!f.matches(b""));
        assert!(!f.matches(b"Q"));
        assert!(!f.matches(b"QA      "), "8 bytes: symbol field cut off");
        assert!(f.matches(b"QA       "), "exactly 9 bytes is enough");
        assert!(!f.matches(b"Q        "), "blank symbol");
        assert!(!f.matches(b"Q A      "), "leading space: empty symbol");
        // Inner space: the symbol ends there, as in Filter::matches.
        assert!(f.matches(b"QA BCDEF "));
        let g = Filter::new("AB", "").unwrap();
        assert!(g.matches(b"AB CD   "));
        assert!(SubscriptionFilter::from_filter(&g).matches(b"QAB CD   "));
        // Empty filter matches nothing.
        let empty = SubscriptionFilter::new();
        assert!(empty.is_empty());
        assert!(!empty.matches(&msg(b"AAPL    ")));
    }

    #[test]
    fn filters_add_up_to_the_limit() {
        let mut f = SubscriptionFilter::new();
        f.add(&Filter::new("AAPL", "").unwrap()).unwrap();
        f.add(&Filter::new("", "MS").unwrap()).unwrap();
        f.add(&Filter::new("AAPL", "").unwrap()).unwrap(); // duplicate still counts
        assert_eq!(f.len(), 3);
        assert!(f.matches(&msg(b"AAPL    ")) && f.matches(&msg(b"MSFT    ")));

        let list: Vec<String> = (0..MAX_FILTER_ENTRIES - 3)
            .map(|i| format!("S{i}"))
            .collect();
        let list = list.join(",");
        f.add(&Filter::new(&list, "").unwrap()).unwrap();
        assert_eq!(f.len(), MAX_FILTER_ENTRIES);
        let before = f.clone();
        assert_eq!(
            f.add(&Filter::new("ZZ", "").unwrap()),
            Err(SoupError::HerzFilterTooLarge {
                entries: MAX_FILTER_ENTRIES + 1
            })
        );
        assert_eq!(f, before, "a refused FILTER changes nothing");
        assert!(f.matches(&msg(b"S1000   ")));
        assert!(!f.matches(&msg(b"ZZ      ")));
    }

    /// Random filters and symbols from a small alphabet (so that prefixes and symbols often
    /// collide): the compiled filter agrees with `Filter::matches` every time.
    #[test]
    fn agrees_with_filter_matches() {
        let mut state = 0x1234_5678_9ABC_DEF1_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"ABC.";
        let word = |next: &mut dyn FnMut() -> u64, max: u64| {
            let len = 1 + next() % max;
            (0..len)
                .map(|_| alphabet[next() as usize % alphabet.len()] as char)
                .collect::<String>()
        };
        for _ in 0..300 {
            let n_sym = next() % 6;
            let n_pre = if n_sym == 0 {
                1 + next() % 4
            } else {
                next() % 4
            };
            let symbols: Vec<String> = (0..n_sym).map(|_| word(&mut next, 8)).collect();
            let prefixes: Vec<String> = (0..n_pre).map(|_| word(&mut next, 4)).collect();
            let (symbols, prefixes) = (symbols.join(","), prefixes.join(","));
            let filter = Filter::new(&symbols, &prefixes).unwrap();
            let compiled = SubscriptionFilter::from_filter(&filter);
            for _ in 0..200 {
                let mut field = [b' '; 8];
                let text = word(&mut next, 8);
                field[..text.len()].copy_from_slice(text.as_bytes());
                // Occasionally a malformed field: a space inside, or a stray byte after it.
                if next() % 10 == 0 {
                    field[(next() % 8) as usize] = b' ';
                }
                if next() % 10 == 0 {
                    field[7] = b'C';
                }
                assert_eq!(
                    compiled.matches_symbol(&field),
                    filter.matches(&field),
                    "filter {symbols:?} / {prefixes:?}, field {:?}",
                    field.escape_ascii().to_string()
                );
            }
        }
    }

    #[test]
    fn matching_does_not_allocate() {
        let list: Vec<String> = (0..500).map(|i| format!("S{i}")).collect();
        let prefixes: Vec<String> = (0..500).map(|i| format!("P{i}")).collect();
        let f = SubscriptionFilter::from_filter(
            &Filter::new(&list.join(","), &prefixes.join(",")).unwrap(),
        );
        let msgs: Vec<Vec<u8>> = [b"S499    ", b"P12345  ", b"Q1      ", b"S5000   "]
            .iter()
            .map(|s| msg(s))
            .collect();
        let (hits, allocs) = allocations(|| {
            (0..1000)
                .filter(|i| f.matches(&msgs[i % msgs.len()]))
                .count()
        });
        assert_eq!(hits, 500);
        assert_eq!(allocs, 0);
    }
}
