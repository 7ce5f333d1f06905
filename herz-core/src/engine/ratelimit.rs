//! Rate limits for the MoldUDP64 re-request server: a token bucket per requester, and an
//! optional global bucket.
//!
//! A re-request is a 20-byte UDP datagram answered with up to a full-size packet, so an
//! unlimited server is a ~70x traffic amplifier for anyone who can spoof a source address, and a
//! single buggy receiver in a request loop can saturate the uplink. Each requester (source
//! address) therefore gets a bucket of `burst` messages refilled at `per_sec` messages per
//! second; a request is granted as many messages as its bucket, the per-request cap and the
//! global bucket allow, and denied when that is zero.
//!
//! The requester table is bounded and allocated once: when it is full, the least recently seen
//! requester is forgotten (O(1), an intrusive LRU list over a fixed array). A forgotten requester
//! that comes back starts with a full bucket again, which is why rotating source addresses (or
//! ports) can beat the per-requester limit, and why the global bucket exists: it caps what the
//! server sends in total, whoever asks.
//!
//! Buckets are herz-common's [`TokenBucket`], the kernel shield's: they count in nano-messages
//! (1 message = 10^9 units), so refilling `elapsed_ns * per_sec` units is exact integer arithmetic (no
//! drift, no rounding, deterministic), and an idle bucket is credited at most 100 s at a time.

use std::{collections::HashMap, net::SocketAddr};

use herz_common::{MAX_BURST, MAX_RATE, TokenBucket};

use super::ConfigError;

/// A token bucket's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenRate {
    /// Sustained rate, messages per second (1 to 10^7, the token bucket's bound).
    pub per_sec: u64,
    /// Bucket size: the most messages granted at once after an idle period (1 to 10^9).
    pub burst: u64,
}

impl TokenRate {
    fn validate(&self, per_sec: &'static str, burst: &'static str) -> Result<(), ConfigError> {
        ConfigError::check_range(
            per_sec,
            self.per_sec,
            1,
            MAX_RATE,
            "must be between 1 and 10000000 messages per second",
        )?;
        ConfigError::check_range(
            burst,
            self.burst,
            1,
            MAX_BURST,
            "must be between 1 and 1000000000 messages",
        )
    }
}

/// [`RequesterLimits`] configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequesterLimitsConfig {
    /// Each requester's bucket.
    pub per_requester: TokenRate,
    /// A bucket shared by all requesters, capping the server's total output; `None` = no cap.
    pub global: Option<TokenRate>,
    /// The most messages granted to one request (1 to 65535), whatever the buckets hold.
    pub max_per_request: u16,
    /// Requesters remembered at once (1 to 2^24); the least recently seen is forgotten beyond.
    pub max_requesters: usize,
    /// Key requesters by IP address alone, ignoring the port, so that one host cannot multiply
    /// its allowance by using many ports. Off by default: MoldUDP64 replies go to the address
    /// *and* port, and several receivers may share a host (or a NAT).
    pub per_ip: bool,
}

impl Default for RequesterLimitsConfig {
    fn default() -> Self {
        RequesterLimitsConfig {
            per_requester: TokenRate {
                per_sec: 10_000,
                burst: 2_000,
            },
            global: Some(TokenRate {
                per_sec: 200_000,
                burst: 20_000,
            }),
            max_per_request: 1_000,
            max_requesters: 4_096,
            per_ip: false,
        }
    }
}

impl RequesterLimitsConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.per_requester
            .validate("per_requester.per_sec", "per_requester.burst")?;
        if let Some(global) = &self.global {
            global.validate("global.per_sec", "global.burst")?;
        }
        ConfigError::check_range(
            "max_per_request",
            u64::from(self.max_per_request),
            1,
            u64::from(u16::MAX),
            "must be between 1 and 65535",
        )?;
        ConfigError::check_range(
            "max_requesters",
            self.max_requesters as u64,
            1,
            1 << 24,
            "must be between 1 and 16777216",
        )
    }
}

/// The answer to one re-request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Serve at most this many messages (at least 1, at most the count asked for).
    Allow(u16),
    /// Serve nothing (no tokens left, or nothing was asked for).
    Deny,
}

/// Counters, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitCounters {
    /// Requests allowed (fully or partly).
    pub allowed: u64,
    /// Requests allowed fewer messages than asked for.
    pub clipped: u64,
    /// Requests denied.
    pub denied: u64,
    /// Requests denied while the requester's own bucket had tokens: the global bucket was empty.
    pub denied_global: u64,
    /// Messages granted in total.
    pub granted_messages: u64,
    /// Requesters forgotten to make room for new ones.
    pub evictions: u64,
}

/// A requester's (or the global) bucket: herz-common's [`TokenBucket`], the same arithmetic the
/// kernel shield uses. Its time 0 marks "never touched", so this module's times are offset by one ns
/// ([`at`]): a caller's clock may start at 0.
#[derive(Debug, Clone, Copy)]
struct Bucket(TokenBucket);

/// `now` on the buckets' clock.
#[inline]
fn at(now: u64) -> u64 {
    now.saturating_add(1)
}

impl Bucket {
    fn full(rate: &TokenRate, now: u64) -> Self {
        Bucket(TokenBucket::full(at(now), rate.burst))
    }

    /// Whole messages available at `now`, without changing the bucket.
    #[inline]
    fn messages_at(&self, rate: &TokenRate, now: u64) -> u64 {
        self.0.tokens(at(now), rate.per_sec, rate.burst)
    }

    /// Takes `messages` (which [`messages_at`](Self::messages_at) said are there) at `now`.
    #[inline]
    fn take(&mut self, rate: &TokenRate, now: u64, messages: u64) {
        let taken = self.0.take_n(at(now), rate.per_sec, rate.burst, messages);
        debug_assert!(taken, "took more than the bucket held");
    }
}

/// Index into `entries`; `NIL` ends the list.
type Link = u32;
const NIL: Link = Link::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: SocketAddr,
    bucket: Bucket,
    /// Towards the most recently seen entry.
    newer: Link,
    /// Towards the least recently seen entry.
    older: Link,
}

/// Per-requester token buckets with a bounded, least-recently-seen table; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct RequesterLimits {
    config: RequesterLimitsConfig,
    /// Reserved for twice `max_requesters`, so that the table never grows: inserting after a
    /// removal at most rehashes in place (std's table only reallocates when more than half
    /// of its capacity is live).
    index: HashMap<SocketAddr, Link>,
    /// Grows up to `max_requesters` (pre-reserved), then slots are reused.
    entries: Vec<Entry>,
    /// Most recently seen.
    newest: Link,
    /// Least recently seen: the next to be evicted.
    oldest: Link,
    global: Option<Bucket>,
    counters: RateLimitCounters,
}

impl RequesterLimits {
    /// Allocates the table for `max_requesters`. `now` starts the global bucket, full.
    ///
    /// The table uses std's randomly keyed hasher on purpose: source addresses are chosen by
    /// whoever sends datagrams, and a fixed hash function would let them build collisions.
    pub fn new(config: RequesterLimitsConfig, now: u64) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(RequesterLimits {
            index: HashMap::with_capacity(config.max_requesters * 2),
            entries: Vec::with_capacity(config.max_requesters),
            newest: NIL,
            oldest: NIL,
            global: config.global.as_ref().map(|g| Bucket::full(g, now)),
            counters: RateLimitCounters::default(),
            config,
        })
    }

    /// The key for an address: the flow label of an IPv6 source is set by the sender and
    /// means nothing here, so it is cleared (otherwise every label value would be a new
    /// requester); with `per_ip`, the port too.
    #[inline]
    fn key(&self, mut addr: SocketAddr) -> SocketAddr {
        if let SocketAddr::V6(v6) = &mut addr {
            v6.set_flowinfo(0);
        }
        if self.config.per_ip {
            addr.set_port(0);
        }
        addr
    }

    /// Decides a request from `addr` for `requested` messages at `now`, and charges the
    /// buckets for what is granted. A request for 0 messages is denied without charging.
    /// O(1), allocates nothing.
    pub fn allow(&mut self, addr: SocketAddr, requested: u16, now: u64) -> Decision {
        if requested == 0 {
            self.counters.denied += 1;
            return Decision::Deny;
        }
        let key = self.key(addr);
        let i = self.touch(key, now) as usize;
        let own = self.entries[i]
            .bucket
            .messages_at(&self.config.per_requester, now);
        let mut granted = u64::from(requested)
            .min(u64::from(self.config.max_per_request))
            .min(own);
        if let (Some(bucket), Some(rate)) = (&mut self.global, &self.config.global) {
            let global = bucket.messages_at(rate, now);
            if granted > 0 && global == 0 {
                self.counters.denied_global += 1;
            }
            granted = granted.min(global);
            bucket.take(rate, now, granted);
        }
        if granted == 0 {
            self.counters.denied += 1;
            return Decision::Deny;
        }
        self.entries[i]
            .bucket
            .take(&self.config.per_requester, now, granted);
        self.counters.allowed += 1;
        self.counters.granted_messages += granted;
        if granted < u64::from(requested) {
            self.counters.clipped += 1;
        }
        // granted <= requested, a u16.
        Decision::Allow(granted as u16)
    }

    /// Messages `addr` could be granted at `now` by its own bucket (ignoring the per-request
    /// cap and the global bucket), or `None` if it is not in the table. Changes nothing, not
    /// even recency.
    pub fn available(&self, addr: SocketAddr, now: u64) -> Option<u64> {
        let &i = self.index.get(&self.key(addr))?;
        let bucket = &self.entries[i as usize].bucket;
        Some(bucket.messages_at(&self.config.per_requester, now))
    }

    /// Messages the global bucket holds at `now`; `None` without a global bucket.
    pub fn global_available(&self, now: u64) -> Option<u64> {
        let (bucket, rate) = (self.global.as_ref()?, self.config.global.as_ref()?);
        Some(bucket.messages_at(rate, now))
    }

    /// Requesters currently remembered.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no requester is remembered.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The configuration.
    pub const fn config(&self) -> &RequesterLimitsConfig {
        &self.config
    }

    /// Counters since creation.
    pub const fn counters(&self) -> &RateLimitCounters {
        &self.counters
    }

    /// Finds or creates the entry for `key` and makes it the most recently seen.
    fn touch(&mut self, key: SocketAddr, now: u64) -> Link {
        if let Some(&i) = self.index.get(&key) {
            self.unlink(i);
            self.push_newest(i);
            return i;
        }
        let entry = Entry {
            addr: key,
            bucket: Bucket::full(&self.config.per_requester, now),
            newer: NIL,
            older: NIL,
        };
        let i = if self.entries.len() < self.config.max_requesters {
            self.entries.push(entry);
            (self.entries.len() - 1) as Link
        } else {
            let i = self.oldest;
            self.unlink(i);
            self.index.remove(&self.entries[i as usize].addr);
            self.entries[i as usize] = entry;
            self.counters.evictions += 1;
            i
        };
        self.index.insert(key, i);
        self.push_newest(i);
        i
    }

    fn unlink(&mut self, i: Link) {
        let Entry { newer, older, .. } = self.entries[i as usize];
        match newer {
            NIL => self.newest = older,
            n => self.entries[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.entries[o as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, i: Link) {
        let previous = self.newest;
        {
            let e = &mut self.entries[i as usize];
            e.newer = NIL;
            e.older = previous;
        }
        match previous {
            NIL => self.oldest = i,
            p => self.entries[p as usize].newer = i,
        }
        self.newest = i;
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

    use super::*;

    /// Bucket units per message.
    const UNITS: u64 = herz_common::NS_PER_SEC;
    use crate::engine::alloc_count::allocations;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    fn v4(last: u8, port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(198, 18, 0, last), port))
    }

    fn config(per_sec: u64, burst: u64) -> RequesterLimitsConfig {
        RequesterLimitsConfig {
            per_requester: TokenRate { per_sec, burst },
            global: None,
            max_per_request: u16::MAX,
            max_requesters: 16,
            per_ip: false,
        }
    }

    #[test]
    fn burst_then_refill() {
        let mut l = RequesterLimits::new(config(1000, 100), 0).unwrap();
        let a = v4(1, 5000);
        assert_eq!(l.available(a, 0), None);
        assert_eq!(l.allow(a, 60, 0), Decision::Allow(60));
        assert_eq!(l.available(a, 0), Some(40));
        assert_eq!(
            l.allow(a, 60, 0),
            Decision::Allow(40),
            "clipped to the bucket"
        );
        assert_eq!(l.allow(a, 1, 0), Decision::Deny);
        // 1000/s = one message per millisecond.
        assert_eq!(l.available(a, MS - 1), Some(0));
        assert_eq!(l.allow(a, 1, MS - 1), Decision::Deny);
        assert_eq!(l.allow(a, 5, MS), Decision::Allow(1));
        assert_eq!(l.allow(a, 50, 11 * MS), Decision::Allow(10));
        // Fractions accumulate exactly: 3 x 1/3 ms.
        assert_eq!(l.allow(a, 1, 11 * MS + MS / 3), Decision::Deny);
        assert_eq!(l.allow(a, 1, 11 * MS + 2 * (MS / 3)), Decision::Deny);
        assert_eq!(l.allow(a, 1, 12 * MS), Decision::Allow(1));
        // The bucket never holds more than the burst.
        assert_eq!(l.available(a, 1000 * S), Some(100));
        assert_eq!(l.allow(a, 500, 1000 * S), Decision::Allow(100));
        assert_eq!(
            *l.counters(),
            RateLimitCounters {
                allowed: 6,
                clipped: 4,
                denied: 4,
                denied_global: 0,
                granted_messages: 60 + 40 + 1 + 10 + 1 + 100,
                evictions: 0,
            }
        );
    }

    #[test]
    fn long_run_rate_is_exact() {
        // 7 messages/s, requests every 10 ms for 100 s: exactly burst + 700 granted.
        let mut l = RequesterLimits::new(config(7, 3), 0).unwrap();
        let a = v4(1, 1);
        let mut granted = 0u64;
        for t in 0..=10_000u64 {
            if let Decision::Allow(n) = l.allow(a, 1000, t * 10 * MS) {
                granted += u64::from(n);
            }
        }
        assert_eq!(granted, 3 + 700);
    }

    #[test]
    fn per_request_cap_and_zero() {
        let mut cfg = config(1000, 1000);
        cfg.max_per_request = 10;
        let mut l = RequesterLimits::new(cfg, 0).unwrap();
        let a = v4(1, 1);
        assert_eq!(l.allow(a, 100, 0), Decision::Allow(10));
        assert_eq!(
            l.available(a, 0),
            Some(990),
            "only granted messages are charged"
        );
        assert_eq!(l.allow(a, 0, 0), Decision::Deny);
        assert_eq!(l.allow(a, 10, 0), Decision::Allow(10));
        assert_eq!(l.counters().clipped, 1);
        assert_eq!(l.counters().denied, 1);
    }

    #[test]
    fn global_bucket_caps_everyone() {
        let mut cfg = config(1000, 100);
        cfg.global = Some(TokenRate {
            per_sec: 1000,
            burst: 150,
        });
        let mut l = RequesterLimits::new(cfg, 0).unwrap();
        assert_eq!(l.global_available(0), Some(150));
        assert_eq!(l.allow(v4(1, 1), 100, 0), Decision::Allow(100));
        assert_eq!(l.allow(v4(2, 1), 100, 0), Decision::Allow(50));
        assert_eq!(l.allow(v4(3, 1), 100, 0), Decision::Deny);
        assert_eq!(l.counters().denied_global, 1);
        // The denied requester kept its own tokens.
        assert_eq!(l.available(v4(3, 1), 0), Some(100));
        assert_eq!(l.allow(v4(3, 1), 100, 5 * MS), Decision::Allow(5));
        assert_eq!(l.global_available(5 * MS), Some(0));
        assert_eq!(
            RequesterLimits::new(config(1, 1), 0)
                .unwrap()
                .global_available(0),
            None
        );
    }

    #[test]
    fn evicts_least_recently_seen() {
        let mut cfg = config(1, 10);
        cfg.max_requesters = 3;
        let mut l = RequesterLimits::new(cfg, 0).unwrap();
        for i in 1..=3 {
            assert_eq!(l.allow(v4(i, 1), 10, 0), Decision::Allow(10));
        }
        assert_eq!(l.len(), 3);
        // Touch 1 so that 2 is the least recently seen.
        assert_eq!(l.allow(v4(1, 1), 1, 0), Decision::Deny);
        assert_eq!(l.allow(v4(4, 1), 1, 0), Decision::Allow(1));
        assert_eq!(l.len(), 3);
        assert_eq!(l.counters().evictions, 1);
        assert_eq!(l.available(v4(2, 1), 0), None, "2 was forgotten");
        assert_eq!(l.available(v4(1, 1), 0), Some(0));
        assert_eq!(l.available(v4(3, 1), 0), Some(0));
        // 2 comes back with a full bucket, evicting 3 (now the oldest).
        assert_eq!(l.allow(v4(2, 1), 10, 0), Decision::Allow(10));
        assert_eq!(l.available(v4(3, 1), 0), None);
        assert_eq!(l.available(v4(1, 1), 0), Some(0));
        // `available` does not refresh recency: 1 is the oldest and goes next.
        assert_eq!(l.allow(v4(5, 1), 1, 0), Decision::Allow(1));
        assert_eq!(l.available(v4(1, 1), 0), None);
        assert!(!l.is_empty());
    }

    #[test]
    fn single_entry_table() {
        let mut cfg = config(1, 2);
        cfg.max_requesters = 1;
        let mut l = RequesterLimits::new(cfg, 0).unwrap();
        assert_eq!(l.allow(v4(1, 1), 2, 0), Decision::Allow(2));
        assert_eq!(l.allow(v4(1, 1), 2, 0), Decision::Deny);
        assert_eq!(l.allow(v4(2, 1), 2, 0), Decision::Allow(2));
        assert_eq!(l.allow(v4(1, 1), 2, 0), Decision::Allow(2));
        assert_eq!(l.len(), 1);
        assert_eq!(l.counters().evictions, 2);
    }

    #[test]
    fn address_keys() {
        let mut l = RequesterLimits::new(config(1, 5), 0).unwrap();
        // Different ports are different requesters.
        assert_eq!(l.allow(v4(1, 1), 5, 0), Decision::Allow(5));
        assert_eq!(l.allow(v4(1, 2), 5, 0), Decision::Allow(5));
        // IPv6: the flow label is ignored, the scope is not.
        let ip = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let v6 = |flow, scope| SocketAddr::V6(SocketAddrV6::new(ip, 9, flow, scope));
        assert_eq!(l.allow(v6(0, 0), 5, 0), Decision::Allow(5));
        assert_eq!(l.allow(v6(12345, 0), 5, 0), Decision::Deny);
        assert_eq!(l.allow(v6(0, 3), 5, 0), Decision::Allow(5));

        let mut cfg = config(1, 5);
        cfg.per_ip = true;
        let mut l = RequesterLimits::new(cfg, 0).unwrap();
        assert_eq!(l.allow(v4(1, 1), 5, 0), Decision::Allow(5));
        assert_eq!(
            l.allow(v4(1, 2), 5, 0),
            Decision::Deny,
            "same host, other port"
        );
        assert_eq!(l.available(v4(1, 999), 0), Some(0));
        assert_eq!(l.len(), 1);
    }

    /// Many requesters churning through a small table against a model (a map of buckets with
    /// explicit last-seen times): same decisions, bounded size, no allocation after warm-up.
    #[test]
    fn many_requesters_against_model() {
        let mut state = 0x0123_4567_89AB_CDEF_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let cap = 64;
        let mut cfg = config(500, 50);
        cfg.max_requesters = cap;
        cfg.max_per_request = 40;
        let mut l = RequesterLimits::new(cfg, 0).unwrap();
        // Model: addr -> (units, updated, last_seen_tick).
        let mut model: HashMap<SocketAddr, (u64, u64, u64)> = HashMap::new();
        let mut now = 0u64;
        let mut warm = false;
        let mut allocs_after_warmup = 0;
        for tick in 0..100_000u64 {
            now += next() % (2 * MS);
            // A skewed population: a few busy requesters, a long tail of rare ones.
            let r = next();
            let host = if r % 4 == 0 { r % 500 } else { r % 20 } as u32;
            let addr = SocketAddr::from((Ipv4Addr::from(0xC612_0000 + host), 7000));
            let requested = (next() % 60) as u16;

            // The model's decision.
            if requested > 0 && !model.contains_key(&addr) && model.len() == cap {
                let victim = *model.iter().min_by_key(|(_, v)| v.2).unwrap().0;
                model.remove(&victim);
            }
            let expected = if requested == 0 {
                Decision::Deny
            } else {
                let e = model.entry(addr).or_insert((50 * UNITS, now, tick));
                let units = (e.0 + (now - e.1) * 500).min(50 * UNITS);
                let granted = u64::from(requested).min(40).min(units / UNITS);
                *e = (units - granted * UNITS, now, tick);
                if granted == 0 {
                    Decision::Deny
                } else {
                    Decision::Allow(granted as u16)
                }
            };

            let (decision, allocs) = allocations(|| l.allow(addr, requested, now));
            assert_eq!(decision, expected, "tick {tick}");
            assert!(l.len() <= cap);
            if warm {
                allocs_after_warmup += allocs;
            }
            warm |= l.len() == cap;
        }
        assert_eq!(l.len(), cap);
        assert!(l.counters().evictions > 1000);
        assert_eq!(allocs_after_warmup, 0);
    }

    #[test]
    fn invalid_config() {
        let mut cfg = RequesterLimitsConfig::default();
        assert!(cfg.validate().is_ok());
        cfg.per_requester.burst = 0;
        assert_eq!(
            RequesterLimits::new(cfg, 0).unwrap_err().to_string(),
            "per_requester.burst = 0: must be between 1 and 1000000000 messages"
        );
        let bad = |cfg: RequesterLimitsConfig| cfg.validate().unwrap_err().field;
        let default = RequesterLimitsConfig::default();
        let global = Some(TokenRate {
            per_sec: 0,
            burst: 1,
        });
        assert_eq!(
            bad(RequesterLimitsConfig { global, ..default }),
            "global.per_sec"
        );
        let cfg = RequesterLimitsConfig {
            max_requesters: 0,
            ..default
        };
        assert_eq!(bad(cfg), "max_requesters");
        let cfg = RequesterLimitsConfig {
            max_per_request: 0,
            ..default
        };
        assert_eq!(bad(cfg), "max_per_request");
    }
}
