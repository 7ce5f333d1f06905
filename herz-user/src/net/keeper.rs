//! The journal's keeper in the loop: opens the journal (memory, or the durable directory with its
//! session), syncs it at the configured durability level, and expires old segments.
//!
//! Syncing happens between ingest and fan-out: at level `every`, each loop iteration that appended
//! syncs once before anything is sent on, so the cost is one `msync` per batch of messages, not per
//! message.

use std::{fs::File, sync::atomic::Ordering::Relaxed, time::SystemTime};

use herz_core::{
    engine::journal::{Journal, JournalConfig, durable::DurableConfig},
    protocol::moldudp64::Session,
};

use super::{counters::add, stats::Shared};
use crate::{
    config::{Config, Durability},
    ratelog::RateLimitedLog,
};

/// See the [module docs](self).
#[derive(Debug)]
pub struct Keeper {
    durability: Durability,
    interval_ns: u64,
    /// Journal head when it was last synced: anything above waits for a sync.
    synced_head: u64,
    next_sync: u64,
    next_expire: u64,
    max_age_ns: Option<u64>,
    /// How long opening the durable journal took, ns.
    recovery_ns: u64,
    errors: RateLimitedLog,
    /// The durable journal directory's lock, held for the daemon's lifetime.
    _lock: Option<File>,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Keeper {
    /// Opens the journal the configuration asks for and says at start what it found.
    pub fn open(config: &Config) -> anyhow::Result<(Journal, Session, Keeper)> {
        let j = &config.journal;
        let fresh = config.fresh_session_name(time::OffsetDateTime::now_utc());
        let mut keeper = Keeper {
            durability: j.durability,
            interval_ns: j.sync_interval_ms * 1_000_000,
            synced_head: 1,
            next_sync: 0,
            next_expire: 0,
            max_age_ns: j.max_age_secs.map(|s| s.saturating_mul(1_000_000_000)),
            recovery_ns: 0,
            errors: RateLimitedLog::new(5),
            _lock: None,
        };
        let Some(dir) = &j.dir else {
            if j.session.is_some() {
                tracing::warn!(
                    session = %fresh,
                    "journal.session is set without journal.dir: a restart numbers messages from 1 again under the same session name; set journal.dir to keep the journal across restarts"
                );
            } else {
                tracing::info!(
                    session = %fresh,
                    "journal in memory only: messages are lost at exit and a restart starts a new session; set journal.dir to keep them"
                );
            }
            let journal = Journal::new(JournalConfig {
                max_messages: j.max_messages,
                max_bytes: j.max_bytes,
                max_message_len: j.max_message_len,
            });
            return Ok((journal, fresh, keeper));
        };
        let opened = crate::store::open(
            dir,
            DurableConfig {
                segment_bytes: j.segment_bytes,
                max_bytes: j.max_bytes as u64,
                max_messages: j.max_messages as u64,
                max_message_len: j.max_message_len,
            },
            j.session,
            fresh,
            unix_ns(),
        )?;
        let journal = opened.journal;
        let session = journal.session().expect("a durable journal has a session");
        let r = opened.report;
        if opened.resumed {
            tracing::info!(
                dir = %dir.display(),
                %session,
                tail = journal.tail(),
                next = journal.head(),
                segments = r.segments,
                messages = r.messages,
                discarded_torn_appends = r.discarded,
                took_ms = opened.took.as_secs_f64() * 1e3,
                durability = ?j.durability,
                "journal recovered: continuing the session"
            );
        } else {
            tracing::info!(dir = %dir.display(), %session, durability = ?j.durability, "journal started: new session");
        }
        keeper.synced_head = journal.head();
        keeper.recovery_ns = opened.took.as_nanos() as u64;
        keeper._lock = Some(opened.lock);
        Ok((journal, session, keeper))
    }

    /// Between ingest and fan-out: syncs when the durability level says so.
    pub fn after_ingest(&mut self, journal: &mut Journal, now: u64, shared: &Shared) {
        if journal.head() == self.synced_head || journal.segments().is_none() {
            return;
        }
        let due = match self.durability {
            Durability::None => false,
            Durability::Every => true,
            Durability::Batch => now >= self.next_sync,
        };
        if !due {
            return;
        }
        let started = std::time::Instant::now();
        match journal.sync() {
            Ok(_) => {
                shared
                    .journal_sync
                    .record(started.elapsed().as_nanos() as u64);
                self.synced_head = journal.head();
                self.next_sync = now + self.interval_ns;
            }
            Err(e) => {
                add(&shared.counters.journal_sync_errors, 1);
                // Retried at the next interval; the messages stay in the kernel's page cache.
                self.next_sync = now + self.interval_ns.max(100_000_000);
                if let Some(suppressed) = self.errors.allow(now) {
                    tracing::error!(error = %e, suppressed, "journal sync failed: appended messages may not survive a power cut");
                }
            }
        }
    }

    /// When the loop must wake for a pending batch sync.
    pub fn deadline(&self, journal: &Journal) -> Option<u64> {
        (self.durability == Durability::Batch
            && journal.segments().is_some()
            && journal.head() != self.synced_head)
            .then_some(self.next_sync)
    }

    /// Once a second: age retention, deferred errors, and the journal gauges.
    pub fn housekeeping(&mut self, journal: &mut Journal, now: u64, shared: &Shared) {
        if now < self.next_expire {
            return;
        }
        self.next_expire = now + 1_000_000_000;
        let Some(segments) = journal.segments_mut() else {
            return;
        };
        let removed = segments.expire(unix_ns(), self.max_age_ns);
        if removed > 0 {
            tracing::info!(
                removed,
                tail = segments.tail(),
                "journal segments removed by age"
            );
        }
        if let Some(e) = segments.take_error() {
            tracing::warn!(error = %e, "cannot delete an expired journal segment");
        }
        let g = &shared.gauges;
        g.journal_segments
            .store(segments.segment_count() as u64, Relaxed);
        g.journal_disk_bytes
            .store(segments.retained_bytes(), Relaxed);
        g.journal_recovery_ns.store(self.recovery_ns, Relaxed);
    }
}
