//! The `conflate` slow-consumer policy: of a journal range, send only the latest message per
//! symbol.
//!
//! Whether a message is the latest for its symbol depends on everything after it in the range, so
//! [`Conflator`] works in two passes over a range the caller can read twice (the journal):
//!
//! 1. [`plan`](Conflator::plan) (or [`begin`](Conflator::begin) +
//!    [`observe`](Conflator::observe) per message) records, per symbol, the highest sequence
//!    number seen;
//! 2. [`keep`](Conflator::keep) then says, for each message of the same range, whether to send
//!    it. The others are skipped with `HERZ SKIP n conflated` (see
//!    [`SkipAccumulator`](super::skip::SkipAccumulator)), so sent messages stay in sequence
//!    order and the subscriber's counter stays exact.
//!
//! ```
//! use herz_core::engine::conflate::{Conflator, ConflatorConfig};
//! use herz_core::engine::skip::SkipAccumulator;
//! use herz_core::protocol::soupbintcp::SkipReason;
//!
//! let range: [(u64, &[u8]); 4] =
//!     [(7, b"QAAPL    "), (8, b"QMSFT    "), (9, b"QAAPL    "), (10, b"QMSFT    ")];
//! let mut conflator = Conflator::new(ConflatorConfig::default()).unwrap();
//! let plan = conflator.plan(range.iter().copied());
//! assert_eq!((plan.kept, plan.conflated), (2, 2));
//! let mut skips = SkipAccumulator::new();
//! let mut out = Vec::new();
//! for &(seq, msg) in &range {
//!     if conflator.keep(seq, msg) {
//!         if let Some((n, reason)) = skips.take() {
//!             out.push(format!("HERZ SKIP {n} {reason}"));
//!         }
//!         out.push(format!("S {seq}"));
//!     } else if let Some((n, reason)) = skips.add(1, SkipReason::Conflated) {
//!         out.push(format!("HERZ SKIP {n} {reason}"));
//!     }
//! }
//! assert_eq!(out, ["HERZ SKIP 2 conflated", "S 9", "S 10"]);
//! ```
//!
//! Bounded memory: an open-addressing table sized once from
//! [`ConflatorConfig::symbol_capacity`]. A message is never conflated away unless its symbol is
//! tracked: messages without a symbol (shorter than 9 bytes), and messages of symbols that did
//! not fit the table, are always kept. Starting a new plan is O(1) (a generation counter
//! invalidates the previous plan's entries), so short ranges are cheap too.

use super::ConfigError;
use crate::protocol::tick::symbol_of;

/// The longest probe sequence in the table. A symbol that would need more (only with adversarial
/// symbol sets; the table is at most half full) is treated like one that does not fit: its
/// messages are kept. This bounds the work per message.
const MAX_PROBES: usize = 32;

/// What makes two messages "the same thing" for conflation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConflationKey {
    /// The 8-byte symbol alone (docs/PROTOCOL.md: "superseded by a newer message for the same
    /// symbol"): the latest message of any type per symbol survives.
    #[default]
    Symbol,
    /// Message type and symbol: the latest quote *and* the latest trade of a symbol survive.
    TypeAndSymbol,
}

/// [`Conflator`] sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflatorConfig {
    /// Most distinct keys (symbols) tracked per plan; messages of further keys are kept.
    /// 1 to 2^24.
    pub symbol_capacity: usize,
    /// What identifies a message's subject.
    pub key: ConflationKey,
}

impl Default for ConflatorConfig {
    fn default() -> Self {
        ConflatorConfig {
            symbol_capacity: 65_536,
            key: ConflationKey::Symbol,
        }
    }
}

impl ConflatorConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::check_range(
            "symbol_capacity",
            self.symbol_capacity as u64,
            1,
            1 << 24,
            "must be between 1 and 16777216",
        )
    }
}

/// Summary of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConflationPlan {
    /// Messages observed.
    pub messages: u64,
    /// Messages to send: the latest per tracked key, plus every unkeyed and untracked message.
    pub kept: u64,
    /// Messages to skip as `conflated` (`messages - kept`).
    pub conflated: u64,
    /// Messages kept because they have no symbol (shorter than 9 bytes).
    pub unkeyed: u64,
    /// Messages kept because their key did not fit the table.
    pub untracked: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// The plan this entry belongs to; older generations are empty slots.
    generation: u32,
    message_type: u8,
    symbol: u64,
    /// Highest sequence number seen for the key.
    seq: u64,
}

/// Finds the latest message per symbol in a journal range; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Conflator {
    slots: Box<[Slot]>,
    /// `slots.len() - 1` (a power of two minus one).
    mask: usize,
    capacity: usize,
    key: ConflationKey,
    /// Tracked keys in the current plan.
    len: usize,
    generation: u32,
    plan: ConflationPlan,
}

/// Mixes the key into a table position (the splitmix64 finalizer: cheap, and every input bit
/// reaches the low bits used for the index).
#[inline]
fn hash(symbol: u64, message_type: u8) -> u64 {
    let mut z = symbol.wrapping_add(u64::from(message_type).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where a key is, or could go, in the table.
enum Probe {
    /// At this index.
    Found(usize),
    /// Absent; this empty slot would take it.
    Vacant(usize),
    /// Absent, and no slot within [`MAX_PROBES`].
    Exhausted,
}

impl Conflator {
    /// Allocates the table: the next power of two at or above twice `symbol_capacity` slots, so
    /// the table is never more than half full and probe sequences stay short.
    pub fn new(config: ConflatorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let size = (config.symbol_capacity * 2).next_power_of_two();
        Ok(Conflator {
            slots: vec![Slot::default(); size].into_boxed_slice(),
            mask: size - 1,
            capacity: config.symbol_capacity,
            key: config.key,
            len: 0,
            // Slots start at generation 0, so they are all empty for generation 1 and up.
            generation: 1,
            plan: ConflationPlan::default(),
        })
    }

    /// The key of a message, `None` without a symbol.
    #[inline]
    fn key_of(&self, msg: &[u8]) -> Option<(u64, u8)> {
        let symbol = u64::from_be_bytes(*symbol_of(msg)?);
        let message_type = match self.key {
            ConflationKey::Symbol => 0,
            ConflationKey::TypeAndSymbol => msg[0],
        };
        Some((symbol, message_type))
    }

    #[inline]
    fn probe(&self, symbol: u64, message_type: u8) -> Probe {
        let mut i = hash(symbol, message_type) as usize & self.mask;
        for _ in 0..MAX_PROBES.min(self.slots.len()) {
            let slot = &self.slots[i];
            if slot.generation != self.generation {
                return Probe::Vacant(i);
            }
            if slot.symbol == symbol && slot.message_type == message_type {
                return Probe::Found(i);
            }
            i = (i + 1) & self.mask;
        }
        Probe::Exhausted
    }

    /// Starts a new plan, forgetting the previous one. O(1).
    pub fn begin(&mut self) {
        if self.generation == u32::MAX {
            // Once every 4 billion plans: make every slot empty for the restarted numbering.
            self.slots.fill(Slot::default());
            self.generation = 0;
        }
        self.generation += 1;
        self.len = 0;
        self.plan = ConflationPlan::default();
    }

    /// First pass: records one message of the range. O(1), allocates nothing.
    #[inline]
    pub fn observe(&mut self, seq: u64, msg: &[u8]) {
        self.plan.messages += 1;
        let Some((symbol, message_type)) = self.key_of(msg) else {
            self.plan.unkeyed += 1;
            return;
        };
        match self.probe(symbol, message_type) {
            Probe::Found(i) => {
                let slot = &mut self.slots[i];
                // Ranges come in order; max() keeps "latest" right even if they do not.
                slot.seq = slot.seq.max(seq);
            }
            Probe::Vacant(i) if self.len < self.capacity => {
                self.slots[i] = Slot {
                    generation: self.generation,
                    message_type,
                    symbol,
                    seq,
                };
                self.len += 1;
            }
            // The table only fills up within a plan, so this key stays untracked for the whole
            // plan and `keep` finds it absent: all its messages are kept.
            Probe::Vacant(_) | Probe::Exhausted => self.plan.untracked += 1,
        }
    }

    /// The current plan's summary.
    pub fn summary(&self) -> ConflationPlan {
        let kept = self.plan.unkeyed + self.plan.untracked + self.len as u64;
        ConflationPlan {
            kept,
            conflated: self.plan.messages - kept,
            ..self.plan
        }
    }

    /// First pass over a whole range: [`begin`](Self::begin), [`observe`](Self::observe) each
    /// message, and return the [`summary`](Self::summary).
    pub fn plan<'m, I>(&mut self, msgs: I) -> ConflationPlan
    where
        I: IntoIterator<Item = (u64, &'m [u8])>,
    {
        self.begin();
        for (seq, msg) in msgs {
            self.observe(seq, msg);
        }
        self.summary()
    }

    /// Second pass: whether to send this message of the planned range (it is the latest for its
    /// key, or it has no tracked key). Must be given the same messages as the first pass;
    /// a message outside the planned range is only kept if its key is absent or it is
    /// exactly the latest. O(1), allocates nothing.
    #[inline]
    pub fn keep(&self, seq: u64, msg: &[u8]) -> bool {
        let Some((symbol, message_type)) = self.key_of(msg) else {
            return true;
        };
        match self.probe(symbol, message_type) {
            Probe::Found(i) => self.slots[i].seq == seq,
            Probe::Vacant(_) | Probe::Exhausted => true,
        }
    }

    /// Keys tracked by the current plan.
    pub const fn tracked(&self) -> usize {
        self.len
    }

    /// The configured symbol capacity.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        engine::{alloc_count::allocations, skip::SkipAccumulator},
        protocol::soupbintcp::SkipReason,
    };

    fn m(ty: u8, symbol: &str) -> Vec<u8> {
        let mut msg = vec![ty];
        msg.extend_from_slice(format!("{symbol:<8}").as_bytes());
        msg.extend_from_slice(&[0; 8]);
        msg
    }

    fn conflator(symbol_capacity: usize, key: ConflationKey) -> Conflator {
        Conflator::new(ConflatorConfig {
            symbol_capacity,
            key,
        })
        .unwrap()
    }

    /// Runs both passes; returns the kept sequence numbers and the SKIP markers, as the caller
    /// would send them, interleaved: `Ok(seq)` sent, `Err(n)` SKIP n conflated.
    fn run(c: &mut Conflator, range: &[(u64, Vec<u8>)]) -> (ConflationPlan, Vec<Result<u64, u64>>) {
        let plan = c.plan(range.iter().map(|(s, m)| (*s, &m[..])));
        let mut skips = SkipAccumulator::new();
        let mut out = Vec::new();
        for (seq, msg) in range {
            if c.keep(*seq, msg) {
                if let Some((n, reason)) = skips.take() {
                    assert_eq!(reason, SkipReason::Conflated);
                    out.push(Err(n));
                }
                out.push(Ok(*seq));
            } else {
                assert_eq!(skips.add(1, SkipReason::Conflated), None);
            }
        }
        if let Some((n, _)) = skips.take() {
            out.push(Err(n));
        }
        (plan, out)
    }

    #[test]
    fn latest_per_symbol_in_order() {
        let mut c = conflator(16, ConflationKey::Symbol);
        let range = vec![
            (1, m(b'Q', "AAPL")),
            (2, m(b'Q', "MSFT")),
            (3, m(b'T', "AAPL")),
            (4, b"X".to_vec()),
            (5, m(b'Q', "MSFT")),
            (6, m(b'Q', "IBM")),
            (7, m(b'Q', "AAPL")),
        ];
        let (plan, out) = run(&mut c, &range);
        assert_eq!(
            plan,
            ConflationPlan {
                messages: 7,
                kept: 4,
                conflated: 3,
                unkeyed: 1,
                untracked: 0
            }
        );
        assert_eq!(out, [Err(3), Ok(4), Ok(5), Ok(6), Ok(7)]);
        assert_eq!(c.tracked(), 3);
        assert_eq!(c.capacity(), 16);
    }

    #[test]
    fn type_and_symbol_key() {
        let mut c = conflator(16, ConflationKey::TypeAndSymbol);
        let range = vec![
            (10, m(b'Q', "AAPL")),
            (11, m(b'T', "AAPL")),
            (12, m(b'Q', "AAPL")),
            (13, m(b'T', "MSFT")),
        ];
        let (plan, out) = run(&mut c, &range);
        assert_eq!((plan.kept, plan.conflated), (3, 1));
        assert_eq!(out, [Err(1), Ok(11), Ok(12), Ok(13)]);
    }

    #[test]
    fn unseen_symbols_beyond_capacity_are_kept() {
        let mut c = conflator(2, ConflationKey::Symbol);
        let range: Vec<(u64, Vec<u8>)> = ["A", "B", "C", "A", "B", "C", "D", "C"]
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, m(b'Q', s)))
            .collect();
        let (plan, out) = run(&mut c, &range);
        // A and B are tracked (latest 4 and 5); C and D never fit: all kept.
        assert_eq!(plan.untracked, 4);
        assert_eq!((plan.kept, plan.conflated), (6, 2));
        assert_eq!(out, [Err(2), Ok(3), Ok(4), Ok(5), Ok(6), Ok(7), Ok(8)]);
    }

    #[test]
    fn plans_are_independent() {
        let mut c = conflator(4, ConflationKey::Symbol);
        let (_, out) = run(&mut c, &[(1, m(b'Q', "A")), (2, m(b'Q', "A"))]);
        assert_eq!(out, [Err(1), Ok(2)]);
        // A new plan forgets A's latest = 2, and its capacity is free again.
        let range: Vec<(u64, Vec<u8>)> = ["A", "B", "C", "D", "A"]
            .iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 3, m(b'Q', s)))
            .collect();
        let (plan, out) = run(&mut c, &range);
        assert_eq!(plan.untracked, 0);
        assert_eq!(out, [Err(1), Ok(4), Ok(5), Ok(6), Ok(7)]);
        // Before any plan, or for an empty plan, everything is kept.
        let fresh = conflator(4, ConflationKey::Symbol);
        assert!(fresh.keep(1, &m(b'Q', "A")));
        c.begin();
        assert!(c.keep(7, &m(b'Q', "A")) && c.keep(1, &[0u8; 9]));
        assert_eq!(c.summary(), ConflationPlan::default());
    }

    #[test]
    fn generation_wraps() {
        let mut c = conflator(4, ConflationKey::Symbol);
        c.generation = u32::MAX - 1;
        let (_, out) = run(&mut c, &[(1, m(b'Q', "A")), (2, m(b'Q', "A"))]);
        assert_eq!(out, [Err(1), Ok(2)]);
        assert_eq!(c.generation, u32::MAX);
        // Next plan restarts the numbering; the stale entry for A must not survive.
        let (_, out) = run(&mut c, &[(1, m(b'Q', "A")), (3, m(b'Q', "B"))]);
        assert_eq!(c.generation, 1);
        assert_eq!(out, [Ok(1), Ok(3)]);
    }

    #[test]
    fn invalid_config() {
        let err = Conflator::new(ConflatorConfig {
            symbol_capacity: 0,
            key: ConflationKey::Symbol,
        })
        .unwrap_err();
        assert_eq!(err.field, "symbol_capacity");
        assert_eq!(
            err.to_string(),
            "symbol_capacity = 0: must be between 1 and 16777216"
        );
    }

    /// Random ranges against a straightforward model: the first `capacity` distinct symbols are
    /// tracked and only their latest message survives; everything else is kept.
    #[test]
    fn agrees_with_model() {
        let mut state = 0xDEAD_BEEF_CAFE_F00D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut c = conflator(40, ConflationKey::Symbol);
        for round in 0..200 {
            let len = next() % 400;
            let symbols = 1 + next() % 80;
            let first = next() % 1_000_000;
            let range: Vec<(u64, Vec<u8>)> = (0..len)
                .map(|i| {
                    let r = next();
                    let msg = if r % 17 == 0 {
                        b"short".to_vec()
                    } else {
                        m(b'Q', &format!("S{}", (r >> 8) % symbols))
                    };
                    (first + i, msg)
                })
                .collect();
            let mut tracked: HashMap<&[u8], u64> = HashMap::new();
            for (seq, msg) in &range {
                if let Some(sym) = symbol_of(msg)
                    && (tracked.len() < 40 || tracked.contains_key(&sym[..]))
                {
                    tracked.insert(&sym[..], *seq);
                }
            }
            let plan = c.plan(range.iter().map(|(s, m)| (*s, &m[..])));
            let mut kept = 0;
            for (seq, msg) in &range {
                let expected = symbol_of(msg)
                    .and_then(|sym| tracked.get(&sym[..]))
                    .is_none_or(|latest| latest == seq);
                assert_eq!(c.keep(*seq, msg), expected, "round {round}, seq {seq}");
                kept += u64::from(expected);
            }
            assert_eq!(plan.kept, kept);
            assert_eq!(plan.messages, len);
            assert_eq!(plan.kept + plan.conflated, len);
        }
    }

    #[test]
    fn passes_do_not_allocate() {
        let mut c = conflator(1000, ConflationKey::Symbol);
        let range: Vec<(u64, Vec<u8>)> = (0..5000)
            .map(|i| (i + 1, m(b'Q', &format!("S{}", i % 700))))
            .collect();
        let (kept, allocs) = allocations(|| {
            let mut kept = 0;
            for _ in 0..3 {
                c.plan(range.iter().map(|(s, m)| (*s, &m[..])));
                kept = range.iter().filter(|(s, m)| c.keep(*s, m)).count();
            }
            kept
        });
        assert_eq!(kept, 700);
        assert_eq!(allocs, 0);
    }
}
