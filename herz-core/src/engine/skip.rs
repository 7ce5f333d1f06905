//! Accumulates skipped sequence numbers into `HERZ SKIP <n> <reason>` markers.
//!
//! docs/PROTOCOL.md section 5: a subscriber that is not sent some sequence numbers must be told
//! with `HERZ SKIP n reason`, sent before the next `S` packet (and before a heartbeat or End of
//! Session, so an idle subscriber's counter stays current). Runs may be coalesced, but one marker
//! carries one reason, so a change of reason closes the current run.
//!
//! Usage per subscriber, with one accumulator:
//!
//! ```
//! use herz_core::engine::skip::SkipAccumulator;
//! use herz_core::protocol::soupbintcp::SkipReason;
//!
//! let mut skips = SkipAccumulator::new();
//! let mut sent = Vec::new();
//! // Three filtered messages, then one conflated: the filtered run must go out first.
//! for _ in 0..3 {
//!     assert_eq!(skips.add(1, SkipReason::Filtered), None);
//! }
//! if let Some(marker) = skips.add(1, SkipReason::Conflated) {
//!     sent.push(marker); // encode_skip_packet(marker.0, marker.1, &mut out)
//! }
//! // Before the next S packet (or heartbeat, or End of Session):
//! if let Some(marker) = skips.take() {
//!     sent.push(marker);
//! }
//! assert_eq!(sent, [(3, SkipReason::Filtered), (1, SkipReason::Conflated)]);
//! ```

use crate::protocol::soupbintcp::SkipReason;

/// The pending run of skipped sequence numbers of one subscriber: a count and its reason.
///
/// Fixed size, never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkipAccumulator {
    /// Skipped sequence numbers not yet announced; 0 = nothing pending.
    count: u64,
    /// Reason of the pending run; meaningless while `count` is 0.
    reason: SkipReason,
}

impl Default for SkipAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl SkipAccumulator {
    /// Nothing pending.
    pub const fn new() -> Self {
        SkipAccumulator {
            count: 0,
            reason: SkipReason::Filtered,
        }
    }

    /// Records `n` more skipped sequence numbers (immediately following those already accounted
    /// for) for `reason`.
    ///
    /// Returns a marker that must be sent **now**, before anything else for this subscriber:
    /// the previous run, closed because its reason differs from `reason` (or, in theory, because
    /// the count would overflow 64 bits). `n == 0` records nothing.
    #[must_use = "a returned marker must be sent before the skipped run that follows it"]
    #[inline]
    pub fn add(&mut self, n: u64, reason: SkipReason) -> Option<(u64, SkipReason)> {
        if n == 0 {
            return None;
        }
        if self.count == 0 {
            self.count = n;
            self.reason = reason;
            return None;
        }
        if self.reason == reason
            && let Some(sum) = self.count.checked_add(n)
        {
            self.count = sum;
            return None;
        }
        let closed = (self.count, self.reason);
        self.count = n;
        self.reason = reason;
        Some(closed)
    }

    /// Takes the pending marker, if any: call before sending an `S` packet, a Server Heartbeat
    /// or End of Session, and send what it returns first.
    #[inline]
    pub fn take(&mut self) -> Option<(u64, SkipReason)> {
        let pending = self.pending();
        self.count = 0;
        pending
    }

    /// The pending marker, left in place.
    #[inline]
    pub const fn pending(&self) -> Option<(u64, SkipReason)> {
        if self.count == 0 {
            None
        } else {
            Some((self.count, self.reason))
        }
    }

    /// Whether nothing is pending.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use SkipReason::{Conflated, Dropped, Filtered, Other};

    use super::*;

    #[test]
    fn empty() {
        let mut s = SkipAccumulator::default();
        assert!(s.is_empty());
        assert_eq!(s.pending(), None);
        assert_eq!(s.take(), None);
        assert_eq!(s.add(0, Dropped), None);
        assert_eq!(s.take(), None);
    }

    #[test]
    fn coalesces_same_reason() {
        let mut s = SkipAccumulator::new();
        assert_eq!(s.add(2, Filtered), None);
        assert_eq!(s.add(0, Conflated), None, "zero never closes a run");
        assert_eq!(s.add(5, Filtered), None);
        assert_eq!(s.pending(), Some((7, Filtered)));
        assert!(!s.is_empty());
        assert_eq!(s.take(), Some((7, Filtered)));
        assert_eq!(s.take(), None);
        assert!(s.is_empty());
    }

    #[test]
    fn reason_change_flushes() {
        let mut s = SkipAccumulator::new();
        assert_eq!(s.add(3, Filtered), None);
        assert_eq!(s.add(1, Conflated), Some((3, Filtered)));
        assert_eq!(s.add(2, Conflated), None);
        assert_eq!(s.add(4, Dropped), Some((3, Conflated)));
        assert_eq!(s.add(1, Other), Some((4, Dropped)));
        assert_eq!(s.take(), Some((1, Other)));
        // After take, a new reason starts fresh without a flush.
        assert_eq!(s.add(1, Filtered), None);
        assert_eq!(s.take(), Some((1, Filtered)));
    }

    #[test]
    fn overflow_splits_the_run() {
        let mut s = SkipAccumulator::new();
        assert_eq!(s.add(u64::MAX - 1, Dropped), None);
        assert_eq!(s.add(1, Dropped), None);
        assert_eq!(s.add(1, Dropped), Some((u64::MAX, Dropped)));
        assert_eq!(s.take(), Some((1, Dropped)));
    }

    /// Random skip/send interleavings: the markers and sends account for every sequence number
    /// exactly once, in order, and adjacent markers only share a reason when a send separates
    /// them.
    #[test]
    fn counts_add_up() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let reasons = [Filtered, Dropped, Conflated];
        let mut s = SkipAccumulator::new();
        let mut accounted = 0u64; // client counter
        let mut seq = 0u64; // server position
        let mut last_marker: Option<SkipReason> = None;
        for _ in 0..10_000 {
            let r = next();
            if r % 3 == 0 {
                // Send one message: pending marker first.
                if let Some((n, _)) = s.take() {
                    accounted += n;
                }
                assert_eq!(
                    accounted, seq,
                    "client counter equals the message's sequence"
                );
                accounted += 1;
                seq += 1;
                last_marker = None;
            } else {
                let n = (r >> 8) % 4;
                let reason = reasons[(r >> 16) as usize % 3];
                if let Some((count, closed)) = s.add(n, reason) {
                    assert_ne!(closed, reason);
                    assert_ne!(last_marker, Some(closed), "same reason was coalescible");
                    accounted += count;
                    last_marker = Some(closed);
                }
                seq += n;
            }
        }
        if let Some((n, _)) = s.take() {
            accounted += n;
        }
        assert_eq!(accounted, seq);
    }
}
