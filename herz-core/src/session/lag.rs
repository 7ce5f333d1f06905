//! The slow-consumer policies, applied to one subscriber that fell behind: disconnect, skip ahead
//! (drop-oldest), or send only the latest message per symbol (conflate).

use super::{CloseReason, LagAction, Role, ServerSession, SkipReason, SlowConsumerPolicy, State};
use crate::engine::{
    conflate::{Conflator, ConflatorConfig},
    journal::Journal,
};

impl ServerSession {
    /// Applies the slow-consumer policy if the subscriber fell too far behind (or off the journal's
    /// tail). `writable`: whether its socket still takes data — a subscriber whose socket does is not
    /// slow, whatever the burst. The policy fires when the lag passes `max_lag` while its socket is full,
    /// or when it fell off the journal.
    pub fn enforce_lag(&mut self, journal: &Journal, max_lag: u64, writable: bool) -> LagAction {
        if self.state != State::Active || self.role != Role::Subscriber {
            return LagAction::None;
        }
        let fell_off = self.cursor < journal.tail();
        if !fell_off && (writable || self.lag(journal) <= max_lag) {
            return LagAction::None;
        }
        // Nothing was sent yet while a snapshot is planned; its plan owns the conflator.
        if self.snapshot.is_some_and(|s| !s.planned) && !fell_off {
            return LagAction::None;
        }
        match self.policy {
            SlowConsumerPolicy::Disconnect => {
                self.close(CloseReason::SlowConsumer);
                LagAction::Disconnect
            }
            SlowConsumerPolicy::DropOldest => {
                // Keep the newest quarter of the allowance, so the subscriber has a little history.
                let target = journal
                    .head()
                    .saturating_sub(max_lag / 4)
                    .max(journal.tail());
                let skipped = target - self.cursor;
                self.skip(skipped, SkipReason::Dropped);
                self.cursor = target;
                self.conflate_until = 0;
                LagAction::Dropped(skipped)
            }
            // A plan in progress covers the backlog up to `conflate_until`; planning again before the
            // cursor gets there would rescan the same messages on every loop iteration.
            SlowConsumerPolicy::Conflate if !fell_off && self.cursor < self.conflate_until => {
                LagAction::None
            }
            SlowConsumerPolicy::Conflate => {
                let mut dropped = 0;
                if fell_off {
                    dropped = journal.tail() - self.cursor;
                    self.skip(dropped, SkipReason::Dropped);
                    self.cursor = journal.tail();
                }
                let conflator = self.conflator.get_or_insert_with(|| {
                    Box::new(
                        Conflator::new(ConflatorConfig::default())
                            .expect("default conflator config is valid"),
                    )
                });
                let end = journal.head();
                let plan = conflator.plan(journal.range(self.cursor, end));
                self.conflate_until = end;
                LagAction::Conflated {
                    superseded: plan.conflated,
                    dropped,
                }
            }
        }
    }
}
