//! The shield's events: drained from the kernel's ring buffer and from the blocklist, turned into
//! rate-limited structured log lines and counters, by one small thread the [`super::Shield`] owns.
//!
//! The kernel sends an event only on a state change (a source's first flood drop in its window, an
//! auto-block), never per packet. Blocks and unblocks made by `herz block`/`herz unblock` (other
//! processes writing the pinned map) and expiries are found by the same thread, which compares the
//! blocklist with its previous view once a second and deletes expired entries (the kernel only ignores
//! them: an LPM lookup does not say which prefix matched, so it cannot delete them itself).
//!
//! Once every few seconds the thread also checks the established-connection table against the
//! kernel's socket table: a connection that vanished without a FIN or RST on the wire (a peer that
//! died, TCP_USER_TIMEOUT) would otherwise keep counting against its source's limit forever. It closes
//! such a flow by running the tc ingress program on a synthetic RST (BPF_PROG_TEST_RUN: nothing is sent
//! anywhere), so the count is corrected by the same atomic code that keeps it.
//!
//! The same thread drains the programs' diagnostic log lines ([`super::kernel_log`]).
//!
//! - [`decode`]: events from ring-buffer records, their counters and log lines;
//! - `sweep`: the blocklist comparison and expiry;
//! - `reconcile`: vanished connections and the synthetic RST.

pub mod decode;
mod reconcile;
mod sweep;

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, RingBuf};
use herz_common::{BlockEntry, DropReason, EventKind, FlowKey, FlowState, Origin};
use serde::Serialize;

use self::decode::log_event;
pub use self::{
    decode::{Event, EventStats, decode},
    reconcile::rst_frame,
};
use super::{
    Cidr, ShieldError,
    cidr::{format_duration, ktime_now_ns},
    kernel_log::KernelLog,
    pinned::{Trie, key_to_ip, origin_label},
};
use crate::ratelog::RateLimitedLog;

/// How often the blocklist is swept and compared.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often established flows are checked against the socket table.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);
/// Event log lines per second at most.
pub const LINES_PER_SEC: u32 = 20;

/// The thread that drains events and sweeps; stopped and joined on drop.
pub(crate) struct EventPump {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<EventStats>,
}

impl EventPump {
    /// Starts the thread on the ring buffer and the shield's own handles on its blocklist and
    /// established-connection maps (taken from the loaded object, not re-opened from pins). `tc_ingress`
    /// (a program
    /// fd) lets it close stale connections; without it they are only logged.
    pub(crate) fn spawn(
        ring: RingBuf<MapData>,
        kernel_log: KernelLog,
        block: Trie<BlockEntry>,
        established: BpfHashMap<MapData, FlowKey, FlowState>,
        tc_ingress: Option<OwnedFd>,
    ) -> Result<Self, ShieldError> {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(EventStats::default());
        let mut worker = Worker {
            ring,
            kernel_log,
            block,
            established,
            tc_ingress,
            stats: stats.clone(),
            budget: RateLimitedLog::new(LINES_PER_SEC),
            blocks_seen: BTreeMap::new(),
            suspects: HashSet::new(),
        };
        // Entries present at start (the config's) are the baseline, not news.
        worker.blocks_seen = worker.snapshot_blocks().unwrap_or_default();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("herz-shield".into())
            .spawn(move || worker.run(&stop2))
            .map_err(ShieldError::Thread)?;
        Ok(Self {
            stop,
            thread: Some(thread),
            stats,
        })
    }

    pub(crate) fn stats(&self) -> Arc<EventStats> {
        self.stats.clone()
    }
}

impl Drop for EventPump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    ring: RingBuf<MapData>,
    kernel_log: KernelLog,
    block: Trie<BlockEntry>,
    established: BpfHashMap<MapData, FlowKey, FlowState>,
    tc_ingress: Option<OwnedFd>,
    stats: Arc<EventStats>,
    budget: RateLimitedLog,
    /// The blocklist as last seen: network → (origin, created_ns).
    blocks_seen: BTreeMap<Cidr, (u32, u64)>,
    /// Established flows without a socket at the last check (closed if still so at the next).
    suspects: HashSet<FlowKey>,
}

impl Worker {
    fn run(&mut self, stop: &AtomicBool) {
        let mut last_sweep = Instant::now();
        let mut last_reconcile = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            // Started before the daemon dropped its capabilities: follows it here.
            crate::privilege::sync_thread();
            let readable = |fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let mut pfds = [
                readable(self.ring.as_raw_fd()),
                readable(self.kernel_log.fd()),
            ];
            // SAFETY: two pollfds we own; a short timeout keeps stop and the sweeps responsive.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
            self.drain();
            if pfds[1].revents != 0 {
                self.kernel_log.drain();
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= SWEEP_EVERY {
                last_sweep = now;
                if let Err(e) = self.sweep_blocks() {
                    tracing::debug!(error = %e, "shield: blocklist sweep failed");
                }
            }
            if now.duration_since(last_reconcile) >= RECONCILE_EVERY {
                last_reconcile = now;
                if let Err(e) = self.reconcile_established() {
                    tracing::debug!(error = %e, "shield: established-flow check failed");
                }
            }
            if let Some(n) = self.budget.overdue(ktime_now_ns()) {
                tracing::warn!(
                    suppressed = n,
                    "shield: event log lines suppressed by the rate limit"
                );
            }
        }
        self.drain();
        self.kernel_log.drain();
    }

    fn drain(&mut self) {
        let now = ktime_now_ns();
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(ev) = decode(&item, now) {
                events.push(ev);
            }
        }
        for ev in events {
            self.emit(ev);
        }
    }

    fn emit(&mut self, ev: Event) {
        self.stats.count(&ev);
        match self.budget.allow(ktime_now_ns()) {
            Some(suppressed) => log_event(&ev, suppressed),
            None => {
                self.stats.lines_suppressed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
