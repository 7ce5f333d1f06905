//! Reading the shield's pinned maps from any process (`herz stats`, `herz top`, tests), whether or not the
//! daemon that pinned them still runs.

use std::{net::IpAddr, path::Path};

use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap};
use herz_common::{Counter, SourceKey, SourceStats, maps};
use serde::Serialize;

use super::ShieldError;

/// Global counters summed over CPUs, by [`Counter`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Globals(pub Vec<(&'static str, u64)>);

impl Globals {
    /// The value of one counter.
    pub fn get(&self, c: Counter) -> u64 {
        self.0
            .iter()
            .find(|(l, _)| *l == c.label())
            .map_or(0, |(_, v)| *v)
    }
}

/// One source's counters summed over CPUs.
#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    /// Source address (IPv4 sources shown as IPv4).
    pub source: IpAddr,
    /// Packets to Herz ports.
    pub packets: u64,
    /// Bytes to Herz ports.
    pub bytes: u64,
    /// TCP SYNs to Herz TCP ports.
    pub tcp_syn: u64,
    /// UDP datagrams to Herz UDP ports.
    pub udp: u64,
}

/// Converts a map key to an address.
pub fn key_to_ip(key: &SourceKey) -> IpAddr {
    match key.as_ipv4() {
        Some(v4) => IpAddr::from(v4),
        None => IpAddr::from(key.addr),
    }
}

/// The map key of an address.
pub fn ip_to_key(ip: IpAddr) -> SourceKey {
    match ip {
        IpAddr::V4(v4) => SourceKey::from_ipv4(v4.octets()),
        IpAddr::V6(v6) => SourceKey { addr: v6.octets() },
    }
}

fn open(pin_path: &Path, name: &'static str) -> Result<Map, ShieldError> {
    let path = pin_path.join(name);
    let data = MapData::from_pin(&path).map_err(|e| {
        let msg = format!("{e:#}");
        if msg.contains("Operation not permitted") || msg.contains("Permission denied") {
            ShieldError::NotPermitted(format!("reading {}: {msg}", path.display()))
        } else {
            ShieldError::Map {
                map: name,
                reason: format!("opening {}: {msg}", path.display()),
            }
        }
    })?;
    Map::from_map_data(data).map_err(|e| ShieldError::Map {
        map: name,
        reason: e.to_string(),
    })
}

/// Whether a shield's maps are pinned at `pin_path`.
pub fn is_pinned(pin_path: &Path) -> bool {
    pin_path.join(maps::GLOBAL).exists()
}

/// Reads the global counters.
pub fn read_globals(pin_path: &Path) -> Result<Globals, ShieldError> {
    let map = open(pin_path, maps::GLOBAL)?;
    let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(|e| ShieldError::Map {
        map: maps::GLOBAL,
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(Counter::ALL.len());
    for c in Counter::ALL {
        let values = arr.get(&(*c as u32), 0).map_err(|e| ShieldError::Map {
            map: maps::GLOBAL,
            reason: e.to_string(),
        })?;
        out.push((c.label(), values.iter().sum()));
    }
    Ok(Globals(out))
}

/// Reads every tracked source, sorted by packets, most first.
pub fn read_sources(pin_path: &Path) -> Result<Vec<SourceRow>, ShieldError> {
    let map = open(pin_path, maps::SOURCES)?;
    let hash: PerCpuHashMap<_, SourceKey, SourceStats> =
        PerCpuHashMap::try_from(map).map_err(|e| ShieldError::Map {
            map: maps::SOURCES,
            reason: e.to_string(),
        })?;
    let mut rows = Vec::new();
    for item in hash.iter() {
        let (key, values) = item.map_err(|e| ShieldError::Map {
            map: maps::SOURCES,
            reason: e.to_string(),
        })?;
        let mut sum = SourceStats::default();
        for v in values.iter() {
            sum.accumulate(v);
        }
        rows.push(SourceRow {
            source: key_to_ip(&key),
            packets: sum.packets,
            bytes: sum.bytes,
            tcp_syn: sum.tcp_syn,
            udp: sum.udp,
        });
    }
    rows.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.source.cmp(&b.source)));
    Ok(rows)
}
