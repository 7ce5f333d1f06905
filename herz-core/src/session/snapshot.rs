//! `HERZ SNAPSHOT`: a late joiner starts with the latest retained message per symbol, then the live
//! stream, with no gap and no duplicate between them.
//!
//! At login the window is the retained journal up to its head (`tail .. head`, or from the
//! requested sequence number when one is given). The window is planned with the conflation code
//! ([`Conflator`]): [`PLAN_BUDGET`] messages per [`plan`](Snapshot::plan) call, so a large journal
//! never stalls the event loop; nothing is sent until the plan is complete. Then the session sends
//! the window as it would a conflated backlog (older messages of a symbol skipped as `conflated`,
//! others as `filtered`), announces `HERZ LIVE <head>` and goes on with the live stream.

use crate::engine::{conflate::Conflator, journal::Journal};

/// Messages observed per [`Snapshot::plan`] call.
pub const PLAN_BUDGET: u64 = 65_536;

/// A snapshot in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Snapshot {
    /// Next message to observe while planning.
    pub next: u64,
    /// End of the window (the journal head at login): the live stream starts here.
    pub end: u64,
    /// The whole window was observed.
    pub planned: bool,
}

impl Snapshot {
    /// A snapshot of `start .. end`; the conflator must have begun a new plan.
    pub fn new(start: u64, end: u64) -> Self {
        Snapshot {
            next: start,
            end,
            planned: start >= end,
        }
    }

    /// Observes up to [`PLAN_BUDGET`] more messages of the window; true once it is planned.
    /// Messages evicted meanwhile are passed over (the session's lag policy deals with them).
    pub fn plan(&mut self, conflator: &mut Conflator, journal: &Journal) -> bool {
        if !self.planned {
            let to = self.end.min(self.next.saturating_add(PLAN_BUDGET));
            for (seq, msg) in journal.range(self.next, to) {
                conflator.observe(seq, msg);
            }
            self.next = to;
            self.planned = to >= self.end;
        }
        self.planned
    }
}
