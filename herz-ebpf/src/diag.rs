//! Rare diagnostic log lines through aya-log (user space: target `herz_ebpf`): a full table, a path that
//! should never run. Each call site may log once a second, so a condition that persists under load
//! writes one line a second, never one per packet.

use aya_ebpf::{macros::map, maps::Array};
use herz_common::NS_PER_SEC;

/// The places that write a diagnostic log line: each may log once a second (see [`may_log`]).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum LogSite {
    /// An established connection could not be recorded: `HERZ_ESTABLISHED` is full.
    ConnTableFull = 0,
    /// An auto-block could not be stored: `HERZ_BLOCK` is full.
    BlockTableFull = 1,
    /// The configuration slot is missing (cannot happen with a one-slot array).
    NoConfig = 2,
}

const LOG_SITES: u32 = 3;

/// When each [`LogSite`] last logged (ns, monotonic), so that a condition that persists under load
/// writes one line a second, not one per packet.
#[map(name = "HERZ_LOG_BUDGET")]
static LOG_BUDGET: Array<u64> = Array::with_max_entries(LOG_SITES, 0);

/// True at most once a second per site (per CPU race: at worst one extra line).
#[inline(always)]
pub fn may_log(site: LogSite, now: u64) -> bool {
    let Some(last) = LOG_BUDGET.get_ptr_mut(site as u32) else {
        return false;
    };
    // SAFETY: map value shared by all CPUs; a racing store only lets one more line through.
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < NS_PER_SEC {
            return false;
        }
        *last = now;
    }
    true
}

/// A diagnostic log line through aya-log (user space: target `herz_ebpf`), compiled out without the
/// `diagnostics` feature. Only for rare events behind [`may_log`], never on a packet's normal path.
macro_rules! diag {
    ($level:ident, $ctx:expr, $($arg:tt)+) => {{
        #[cfg(feature = "diagnostics")]
        aya_log_ebpf::$level!($ctx, $($arg)+);
        #[cfg(not(feature = "diagnostics"))]
        let _ = ($ctx, $($arg)+);
    }};
}

pub(crate) use diag;
