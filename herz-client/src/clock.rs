//! Nanosecond clocks, named explicitly so that every timestamp says which clock it came from.
//!
//! - [`realtime_ns`]: `CLOCK_REALTIME`, nanoseconds since the Unix epoch. This is what the Herz
//!   tick layout specifies for `timestamp_ns`; it can jump (NTP, manual changes), so it is wrong
//!   for measuring latency across a clock step.
//! - [`mono_ns`]: `CLOCK_MONOTONIC`, nanoseconds since an arbitrary point (boot). Never jumps and
//!   is shared by every process on the machine, so a benchmark publisher can stamp ticks with it
//!   and a subscriber on the same host can compute one-way latency as `mono_ns() - timestamp_ns`.

/// Reads `clock` with `clock_gettime` (a vDSO call, ~20 ns, no syscall).
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux kernel, so the
    // call cannot fail.
    unsafe {
        libc::clock_gettime(clock, &mut ts);
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// `CLOCK_MONOTONIC` in nanoseconds: for latency and pacing on one host.
#[inline]
pub fn mono_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME` in nanoseconds since the Unix epoch: the Herz tick timestamp convention.
#[inline]
pub fn realtime_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

/// Which clock stamps generated ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampSource {
    /// [`realtime_ns`]: Unix epoch nanoseconds, as the tick layout specifies.
    Realtime,
    /// [`mono_ns`]: for same-host latency measurements.
    Monotonic,
    /// A synthetic clock, `start_ns + i * step_ns` for the `i`-th tick (0-based): fully
    /// deterministic output for tests.
    Synthetic {
        /// Timestamp of the first tick.
        start_ns: u64,
        /// Increment per tick.
        step_ns: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_are_sane() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a);
        // After 2020-01-01 and before 2200.
        let now = realtime_ns();
        assert!(now > 1_577_836_800_000_000_000 && now < 7_258_118_400_000_000_000);
    }
}
