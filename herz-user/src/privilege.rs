//! Least privilege: once the shield is loaded and attached, every thread of the daemon keeps only
//! the capabilities it still uses.
//!
//! Loading programs and mounting bpffs need CAP_SYS_ADMIN, CAP_BPF and CAP_PERFMON; serving needs
//! much less:
//!
//! - **CAP_BPF**: every `bpf(2)` call when unprivileged BPF is disabled (the default): the trust
//!   writer's and the blocklist sweep's map updates, `herz block`-style edits on reload, the
//!   control plane's reads of the kernel counters;
//! - **CAP_NET_ADMIN**: detaching the XDP and tc programs at shutdown.
//!
//! Without a shield nothing is kept. Capabilities are per thread on Linux, so the main thread drops
//! them after the shield starts ([`drop_after_start`]), and every long-lived thread applies the same
//! set when it starts, or, for a thread already running, at its next loop ([`sync_thread`]). The
//! bounding set is lowered too, so nothing run later (a plugin, an exploit's `execve`) can regain
//! what was dropped. `tests/tests/shield_daemon.rs` checks every thread's `CapEff`, `CapPrm` and
//! `CapBnd` in `/proc/<pid>/task/*/status`.

use std::{cell::Cell, collections::HashSet, sync::OnceLock};

use caps::{CapSet, Capability};

/// What the threads keep, once decided.
static KEEP: OnceLock<HashSet<Capability>> = OnceLock::new();

thread_local! {
    /// Whether this thread has applied [`KEEP`].
    static APPLIED: Cell<bool> = const { Cell::new(false) };
}

/// The capabilities the daemon keeps while serving, with or without a shield.
pub fn runtime_set(shield: bool) -> HashSet<Capability> {
    if shield {
        [Capability::CAP_BPF, Capability::CAP_NET_ADMIN].into()
    } else {
        HashSet::new()
    }
}

/// Decides the runtime set and applies it to the calling (main) thread. Call once, after the
/// shield is attached and before serving.
pub fn drop_after_start(shield: bool) -> Result<HashSet<Capability>, caps::errors::CapsError> {
    let keep = KEEP.get_or_init(|| runtime_set(shield)).clone();
    apply(&keep)?;
    APPLIED.with(|a| a.set(true));
    Ok(keep)
}

/// Applies the runtime set to the calling thread if it has been decided and not yet applied here.
/// Cheap when there is nothing to do (a thread-local flag); long-lived threads call it at start and
/// in their loop.
pub fn sync_thread() {
    if APPLIED.with(Cell::get) {
        return;
    }
    let Some(keep) = KEEP.get() else {
        return;
    };
    match apply(keep) {
        Ok(()) => APPLIED.with(|a| a.set(true)),
        Err(e) => tracing::error!(error = %e, "cannot drop this thread's capabilities"),
    }
}

fn apply(keep: &HashSet<Capability>) -> Result<(), caps::errors::CapsError> {
    // The bounding set first: lowering it needs CAP_SETPCAP, which goes with the rest below.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::all() {
            if !keep.contains(&cap) {
                // Capabilities this kernel does not know cannot be in the set anyway.
                let _ = caps::drop(None, CapSet::Bounding, cap);
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    caps::clear(None, CapSet::Inheritable)?;
    let permitted = caps::read(None, CapSet::Permitted)?;
    let kept: HashSet<Capability> = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    Ok(())
}
