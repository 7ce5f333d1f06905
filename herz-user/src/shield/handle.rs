//! Marking logged-in subscribers as trusted, from the distributor's hot loop.
//!
//! A trusted source is exempt from the flood rules (SYN and UDP token buckets, half-open and connection
//! limits, the global SYN guard, auto-blocking) while at least one of its sessions lives; the allowlist
//! and blocklist still apply. Several sessions may share an address, so trust is reference-counted here,
//! in the process: the first login costs one map update syscall, the last logout one delete, and every
//! other login or logout none.

use std::{collections::HashMap, net::IpAddr, path::Path};

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
