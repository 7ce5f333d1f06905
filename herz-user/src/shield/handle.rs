//! Marking logged-in subscribers as trusted. The hot loop only queues the change ([`TrustWriter`]); a
//! thread of its own writes the kernel map, so a login never waits for a bpf(2) syscall.
//!
//! A trusted source is exempt from the flood rules (SYN and UDP token buckets, half-open and connection
//! limits, the global SYN guard, auto-blocking) while at least one of its sessions lives; the allowlist
//! and blocklist still apply. Several sessions may share an address, so trust is reference-counted here,
//! in the process: the first login costs one map update syscall, the last logout one delete, and every
//! other login or logout none.

use std::{collections::HashMap, net::IpAddr, path::Path, sync::mpsc};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use herz_common::{SourceKey, maps};

use super::{
    ShieldError,
    cidr::ktime_now_ns,
    pinned::{ip_to_key, map_error, open_hash},
};

/// Reference counts of trusted addresses: which logins and logouts must touch the kernel map.
#[derive(Debug, Default)]
pub struct TrustCounts {
    sessions: HashMap<IpAddr, u32>,
}

impl TrustCounts {
    /// Counts a session of `ip`; true when it is the first (the address must become trusted).
    pub fn add(&mut self, ip: IpAddr) -> bool {
        let n = self.sessions.entry(ip.to_canonical()).or_default();
        *n += 1;
        *n == 1
    }

    /// Uncounts a session of `ip`; true when it was the last (the address must stop being trusted).
    /// Unknown addresses are ignored.
    pub fn remove(&mut self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match self.sessions.get_mut(&ip) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => {
                self.sessions.remove(&ip);
                true
            }
            None => false,
        }
    }

    /// Live sessions of `ip`.
    pub fn sessions(&self, ip: IpAddr) -> u32 {
        self.sessions.get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Trusted addresses.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// No trusted address.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

/// The daemon's handle on the trusted-source map. Cheap to call on every login and logout.
pub struct ShieldHandle {
    trusted: BpfHashMap<MapData, SourceKey, u64>,
    counts: TrustCounts,
}

impl std::fmt::Debug for ShieldHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShieldHandle")
            .field("trusted", &self.counts.len())
            .finish()
    }
}

impl ShieldHandle {
    /// Opens the trusted-source map pinned at `pin_path` (as `Shield::handle` does for the daemon).
    pub fn open(pin_path: &Path) -> Result<Self, ShieldError> {
        Ok(Self {
            trusted: open_hash(pin_path, maps::TRUSTED)?,
            counts: TrustCounts::default(),
        })
    }

    /// A handle on a trusted-source map the caller already holds (the daemon's, from its loaded object).
    pub fn from_map(map: aya::maps::Map) -> Result<Self, ShieldError> {
        Ok(Self {
            trusted: BpfHashMap::try_from(map).map_err(map_error(maps::TRUSTED))?,
            counts: TrustCounts::default(),
        })
    }

    /// A session from `ip` logged in: trust the address (one syscall for its first session, none after).
    pub fn trust(&mut self, ip: IpAddr) -> Result<(), ShieldError> {
        if !self.counts.add(ip) {
            return Ok(());
        }
        if let Err(e) = self.trusted.insert(ip_to_key(ip), ktime_now_ns(), 0) {
            // Keep the count consistent with the map: the next login retries.
            self.counts.remove(ip);
            return Err(map_error(maps::TRUSTED)(e));
        }
        Ok(())
    }

    /// A session from `ip` closed: stop trusting the address when it was its last session.
    pub fn untrust(&mut self, ip: IpAddr) -> Result<(), ShieldError> {
        if !self.counts.remove(ip) {
            return Ok(());
        }
        match self.trusted.remove(&ip_to_key(ip)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(map_error(maps::TRUSTED)(e)),
        }
    }

    /// Live sessions counted for `ip`.
    pub fn sessions(&self, ip: IpAddr) -> u32 {
        self.counts.sessions(ip)
    }
}

/// A change of trust, queued by the hot loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrustChange {
    Trust(IpAddr),
    Untrust(IpAddr),
}

/// The hot loop's side of trust: queues changes for the `herz-trust` thread, which owns the
/// [`ShieldHandle`] and applies them in order. Dropping it lets the thread finish the queue and end.
#[derive(Debug)]
pub struct TrustWriter {
    tx: mpsc::Sender<TrustChange>,
}

impl TrustWriter {
    /// Starts the thread that writes `handle`'s map.
    pub fn spawn(mut handle: ShieldHandle) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("herz-trust".into())
            .spawn(move || {
                crate::privilege::sync_thread();
                let mut errors = crate::ratelog::RateLimitedLog::new(5);
                for change in rx {
                    let (result, what) = match change {
                        TrustChange::Trust(ip) => (handle.trust(ip), ("trust", ip)),
                        TrustChange::Untrust(ip) => (handle.untrust(ip), ("untrust", ip)),
                    };
                    if let Err(e) = result
                        && let Some(suppressed) = errors.allow(ktime_now_ns())
                    {
                        tracing::warn!(peer = %what.1, action = what.0, error = %super::error_chain(&e), suppressed, "cannot update the shield's trusted sources");
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// A session from `ip` logged in.
    pub fn trust(&self, ip: IpAddr) {
        let _ = self.tx.send(TrustChange::Trust(ip));
    }

    /// A logged-in session from `ip` closed.
    pub fn untrust(&self, ip: IpAddr) {
        let _ = self.tx.send(TrustChange::Untrust(ip));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_is_reference_counted_per_address() {
        let mut c = TrustCounts::default();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:198.18.0.2".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(c.add(a));
        assert!(!c.add(mapped), "the IPv4-mapped form is the same source");
        assert!(c.add(b));
        assert_eq!(c.sessions(a), 2);
        assert!(!c.remove(a));
        assert!(c.remove(mapped));
        assert!(!c.remove(a), "an unknown address is ignored");
        assert_eq!(c.len(), 1);
        assert!(c.remove(b));
        assert!(c.is_empty());
    }
}
