//! CIDRs as the shield's LPM tries store them, durations as operators type them, and the kernel clock.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    time::Duration,
};

use herz_common::LpmKey;

/// An IPv4 or IPv6 network, host bits cleared. A bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR or a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not an address, or not `address/prefix`.
    #[error("`{0}` is not a CIDR (expected e.g. 198.18.0.0/15, 2001:db8::/32 or a bare address)")]
    Cidr(String),
    /// The prefix length is too long for the family.
    #[error("`{input}`: prefix /{prefix} is longer than {max} bits")]
    Prefix {
        /// The input.
        input: String,
        /// The prefix given.
        prefix: u32,
        /// The family's maximum.
        max: u32,
    },
    /// Not a duration.
    #[error("`{0}` is not a duration (expected e.g. 30s, 5m, 1h, 2d or 500ms)")]
    Duration(String),
}

impl Cidr {
    /// `addr/prefix` with the host bits cleared; `None` when the prefix is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(v4) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        };
        Some(Self { addr, prefix })
    }

    /// The single address `ip` (/32 or /128). IPv4-mapped IPv6 addresses become IPv4.
    pub fn host(ip: IpAddr) -> Self {
        let ip = ip.to_canonical();
        Self {
            addr: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip.to_canonical(), self.prefix).is_some_and(|c| c.addr == self.addr)
    }

    /// The LPM trie key: IPv4 as `::ffff:a.b.c.d` with 96 added to the prefix.
    pub fn to_key(&self) -> LpmKey {
        match self.addr {
            IpAddr::V4(v4) => LpmKey {
                prefix_len: 96 + u32::from(self.prefix),
                addr: v4.to_ipv6_mapped().octets(),
            },
            IpAddr::V6(v6) => LpmKey {
                prefix_len: u32::from(self.prefix),
                addr: v6.octets(),
            },
        }
    }

    /// The CIDR of an LPM trie key (IPv4-mapped keys with a prefix of at least 96 come back as IPv4).
    pub fn from_key(prefix_len: u32, addr: [u8; 16]) -> Self {
        let v6 = Ipv6Addr::from(addr);
        let prefix_len = prefix_len.min(128);
        match v6.to_ipv4_mapped() {
            Some(v4) if prefix_len >= 96 => Self {
                addr: IpAddr::V4(v4),
                prefix: (prefix_len - 96) as u8,
            },
            _ => Self {
                addr: IpAddr::V6(v6),
                prefix: prefix_len as u8,
            },
        }
    }

    /// aya's key type for the tries.
    pub fn aya_key(&self) -> aya::maps::lpm_trie::Key<[u8; 16]> {
        let k = self.to_key();
        aya::maps::lpm_trie::Key::new(k.prefix_len, k.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (t, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| ParseError::Cidr(s.into()))?;
        let max: u32 = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u32>().map_err(|_| ParseError::Cidr(s.into()))?
            }
            Some(_) => return Err(ParseError::Cidr(s.into())),
        };
        if prefix > max {
            return Err(ParseError::Prefix {
                input: s.into(),
                prefix,
                max,
            });
        }
        Ok(Cidr::new(addr, prefix as u8).expect("prefix checked"))
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses `30s`, `5m`, `1h`, `2d`, `500ms` (one number and one unit; a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| ParseError::Duration(s.into()))?;
    let d = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" | "sec" | "secs" => Duration::from_secs(n),
        "m" | "min" | "mins" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(ParseError::Duration(s.into())),
    };
    if d.is_zero() {
        return Err(ParseError::Duration(s.into()));
    }
    Ok(d)
}

/// Formats a duration for people: `4m59s`, `2h0m`, `850ms`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// The kernel's clock as BPF programs read it: `bpf_ktime_get_ns` is CLOCK_MONOTONIC, so block expiries
/// written from user space compare correctly with the time the XDP program sees.
pub fn ktime_now_ns() -> u64 {
    herz_client::clock::mono_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_normalise_and_map() {
        let c: Cidr = "198.18.7.9/15".parse().unwrap();
        assert_eq!(c.to_string(), "198.18.0.0/15");
        let k = c.to_key();
        assert_eq!(k.prefix_len, 96 + 15);
        assert_eq!(&k.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(Cidr::from_key(k.prefix_len, k.addr), c);
        assert!(c.contains("198.19.255.1".parse().unwrap()));
        assert!(!c.contains("198.20.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:198.18.0.1".parse().unwrap()));
        let h: Cidr = "198.18.0.2".parse().unwrap();
        assert_eq!(h.to_string(), "198.18.0.2/32");
        assert_eq!(h.to_key().prefix_len, 128);
        let v6: Cidr = "2001:db8::1/32".parse().unwrap();
        assert_eq!(v6.to_string(), "2001:db8::/32");
        assert_eq!(v6.to_key().prefix_len, 32);
        assert_eq!(Cidr::from_key(32, v6.to_key().addr), v6);
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.to_key().prefix_len, 96);
        assert_eq!(
            Cidr::host("::ffff:198.18.0.2".parse().unwrap()),
            "198.18.0.2".parse().unwrap()
        );
    }

    #[test]
    fn bad_cidrs_are_refused_with_the_input() {
        for bad in [
            "",
            "198.18.0.0/",
            "198.18.0.0/x",
            "198.18.0/15",
            "/8",
            "1.2.3.4/-1",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.to_string().contains("is not a CIDR"), "{bad}: {e}");
        }
        let e = "198.18.0.0/33".parse::<Cidr>().unwrap_err();
        assert!(e.to_string().contains("/33 is longer than 32"), "{e}");
        assert!("::/129".parse::<Cidr>().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        for bad in ["", "s", "5x", "1.5h", "0s", "-1s", "5 m 3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(299)), "4m59s");
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_secs(7260)), "2h1m");
    }

    #[test]
    fn ktime_is_monotonic_and_nonzero() {
        let a = ktime_now_ns();
        let b = ktime_now_ns();
        assert!(a > 0 && b >= a);
    }
}
