//! The distribution engine: pure state machines between the wire codecs and the event loop.
//!
//! Like [`crate::protocol`], nothing here opens a socket, reads a clock or starts a thread: bytes
//! and the current monotonic time (`now`, nanoseconds, from any fixed origin) are passed in, and
//! results come back as return values or through callbacks. Every component can therefore be
//! driven deterministically, packet by packet and nanosecond by nanosecond, by its tests.
//!
//! - [`admission`]: per-IP caps on pending and total TCP sessions, failed-login throttling.
//! - [`arbiter`]: ingest of one upstream MoldUDP64 feed received on redundant lines A and B, with
//!   a bounded reorder buffer, gap detection and re-request recovery.
//! - [`ratelimit`]: per-requester token buckets for the MoldUDP64 re-request server.
//! - [`conflate`]: decides which messages of a journal range survive the `conflate`
//!   slow-consumer policy.
//! - [`filter`]: a subscription filter compiled for fast per-message matching.
//! - [`skip`]: accumulates skipped sequence numbers into `HERZ SKIP n reason` markers.
//!
//! Hot-path rules followed by every component: all memory is sized from the configuration when
//! the component is built, so handling a message allocates nothing; work per message is O(1) or
//! O(log n); nothing logs (counters are exposed instead, for metrics).

use thiserror::Error;

pub mod admission;
pub mod arbiter;
pub mod conflate;
pub mod filter;
pub mod journal;
pub mod ratelimit;
pub mod skip;

#[cfg(test)]
pub(crate) mod alloc_count;

/// An engine component configuration value that cannot work.
///
/// Names the configuration field and the offending value, so that the config loader can prefix
/// the section (e.g. `feeds[0].arbiter.`) and report it to the operator as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("{field} = {value}: {reason}")]
pub struct ConfigError {
    /// The configuration field, as named in the component's config struct.
    pub field: &'static str,
    /// The value given.
    pub value: u64,
    /// Why it is refused, including the accepted range.
    pub reason: &'static str,
}

impl ConfigError {
    /// Checks `min <= value <= max` for a config field.
    pub(crate) fn check_range(
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
        reason: &'static str,
    ) -> Result<(), ConfigError> {
        if (min..=max).contains(&value) {
            Ok(())
        } else {
            Err(ConfigError {
                field,
                value,
                reason,
            })
        }
    }
}
