//! Admission of TCP connections per source address: caps on connections awaiting login and on all
//! connections from one IP, and throttling of IPs whose logins keep failing.
//!
//! A handful of addresses must not be able to take every session slot, and a password guesser
//! must not get unlimited tries. [`Admission`] counts, per IP, the connections awaiting login and
//! the connections in total, and keeps a failure level per IP that rises by one per failed login
//! and falls by one every [`forgive_ns`](AdmissionConfig::forgive_ns); at
//! [`max_failures`](AdmissionConfig::max_failures) the IP's new connections are refused until
//! the level falls. The caller asks at accept ([`Admission::admit`]) and reports logins, failures
//! and closes. Memory is bounded: an IP's entry lives while it has connections or a failure
//! level; the table holds at most [`max_tracked`](AdmissionConfig::max_tracked) IPs. When it is
//! full, entries with nothing left are swept; if none can go, a new IP is refused
//! ([`Refusal::TableFull`]) while the IPs already known keep their rights.

use std::{collections::HashMap, net::IpAddr};

/// [`Admission`] settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// Connections from one IP awaiting login at once.
    pub max_pending_per_ip: u32,
    /// Connections from one IP at once, logged in or not.
    pub max_sessions_per_ip: u32,
    /// Failed logins an IP may accumulate before its connections are refused.
    pub max_failures: u32,
    /// One failure is forgiven per this many ns.
    pub forgive_ns: u64,
    /// Most IPs tracked at once.
    pub max_tracked: usize,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The IP has `max_pending_per_ip` connections awaiting login.
    TooManyPending,
    /// The IP has `max_sessions_per_ip` connections.
    TooManySessions,
    /// The IP's failed logins reached `max_failures`.
    Throttled,
    /// `max_tracked` IPs are tracked already.
    TableFull,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    pending: u32,
    total: u32,
    /// Failure level at `failed_at`.
    failures: u32,
    failed_at: u64,
}

impl Entry {
    /// The failure level at `now`, forgiveness applied.
    fn failures_at(&self, now: u64, forgive_ns: u64) -> u32 {
        let forgiven = now.saturating_sub(self.failed_at) / forgive_ns.max(1);
        self.failures
            .saturating_sub(forgiven.min(u64::from(u32::MAX)) as u32)
    }
}

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Admission {
    config: AdmissionConfig,
    ips: HashMap<IpAddr, Entry>,
}

impl Admission {
    /// An empty table.
    pub fn new(config: AdmissionConfig) -> Self {
        Admission {
            config,
            ips: HashMap::new(),
        }
    }

    /// A new connection from `ip` at `now`: admitted (counted as pending) or refused.
    pub fn admit(&mut self, ip: IpAddr, now: u64) -> Result<(), Refusal> {
        let c = self.config;
        if !self.ips.contains_key(&ip) && self.ips.len() >= c.max_tracked {
            self.sweep(now);
            if self.ips.len() >= c.max_tracked {
                return Err(Refusal::TableFull);
            }
        }
        let e = self.ips.entry(ip).or_default();
        if e.failures_at(now, c.forgive_ns) >= c.max_failures {
            return Err(Refusal::Throttled);
        }
        if e.total >= c.max_sessions_per_ip {
            return Err(Refusal::TooManySessions);
        }
        if e.pending >= c.max_pending_per_ip {
            return Err(Refusal::TooManyPending);
        }
        e.pending += 1;
        e.total += 1;
        Ok(())
    }

    /// A connection from `ip` logged in: no longer pending.
    pub fn logged_in(&mut self, ip: IpAddr) {
        if let Some(e) = self.ips.get_mut(&ip) {
            e.pending = e.pending.saturating_sub(1);
        }
    }

    /// A login from `ip` failed at `now` (the connection's close is reported separately).
    pub fn failed(&mut self, ip: IpAddr, now: u64) {
        let forgive = self.config.forgive_ns;
        if let Some(e) = self.ips.get_mut(&ip) {
            e.failures = e.failures_at(now, forgive).saturating_add(1);
            e.failed_at = now;
        }
    }

    /// A connection from `ip` closed; `was_pending`: it never logged in.
    pub fn closed(&mut self, ip: IpAddr, was_pending: bool, now: u64) {
        let forgive = self.config.forgive_ns;
        if let Some(e) = self.ips.get_mut(&ip) {
            e.total = e.total.saturating_sub(1);
            if was_pending {
                e.pending = e.pending.saturating_sub(1);
            }
            if e.total == 0 && e.failures_at(now, forgive) == 0 {
                self.ips.remove(&ip);
            }
        }
    }

    /// Drops entries with no connection and no failure left.
    fn sweep(&mut self, now: u64) {
        let forgive = self.config.forgive_ns;
        self.ips
            .retain(|_, e| e.total > 0 || e.failures_at(now, forgive) > 0);
    }

    /// IPs tracked.
    pub fn tracked(&self) -> usize {
        self.ips.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn config() -> AdmissionConfig {
        AdmissionConfig {
            max_pending_per_ip: 2,
            max_sessions_per_ip: 3,
            max_failures: 3,
            forgive_ns: 10 * S,
            max_tracked: 4,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, n])
    }

    #[test]
    fn pending_and_total_are_capped_per_ip_and_freed_on_close() {
        let mut a = Admission::new(config());
        assert_eq!(a.admit(ip(1), 0), Ok(()));
        assert_eq!(a.admit(ip(1), 0), Ok(()));
        assert_eq!(a.admit(ip(1), 0), Err(Refusal::TooManyPending));
        // Another IP is unaffected.
        assert_eq!(a.admit(ip(2), 0), Ok(()));
        a.logged_in(ip(1));
        assert_eq!(a.admit(ip(1), 0), Ok(()));
        assert_eq!(a.admit(ip(1), 0), Err(Refusal::TooManySessions));
        a.closed(ip(1), true, 0);
        assert_eq!(a.admit(ip(1), 0), Ok(()));
        for pending in [true, true, false] {
            a.closed(ip(1), pending, 0);
        }
        a.closed(ip(2), true, 0);
        assert_eq!(a.tracked(), 0, "entries go with their last connection");
    }

    #[test]
    fn failed_logins_throttle_the_ip_until_forgiven() {
        let mut a = Admission::new(config());
        for t in 0..3 {
            assert_eq!(a.admit(ip(1), t), Ok(()));
            a.failed(ip(1), t);
            a.closed(ip(1), true, t);
        }
        assert_eq!(a.admit(ip(1), 3), Err(Refusal::Throttled));
        assert_eq!(a.admit(ip(2), 3), Ok(()), "only the guesser");
        // One failure forgiven after 10 s: one more try.
        assert_eq!(a.admit(ip(1), 10 * S + 2), Ok(()));
        a.failed(ip(1), 10 * S + 2);
        a.closed(ip(1), true, 10 * S + 2);
        assert_eq!(a.admit(ip(1), 10 * S + 3), Err(Refusal::Throttled));
        // All forgiven: the entry goes at the next close or sweep.
        assert_eq!(a.admit(ip(1), 60 * S), Ok(()));
        a.closed(ip(1), true, 60 * S);
        a.closed(ip(2), true, 60 * S);
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded_and_swept_when_full() {
        let mut a = Admission::new(config());
        for n in 1..=4 {
            assert_eq!(a.admit(ip(n), 0), Ok(()));
            a.failed(ip(n), 0);
            a.closed(ip(n), true, 0);
        }
        assert_eq!(a.tracked(), 4);
        assert_eq!(a.admit(ip(9), 0), Err(Refusal::TableFull));
        // Once the failures are forgiven, the sweep makes room.
        assert_eq!(a.admit(ip(9), 11 * S), Ok(()));
        assert_eq!(a.tracked(), 1);
    }
}
