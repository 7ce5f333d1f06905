//! Reading and writing the shield's pinned maps from any process (`herz stats`, `herz block`, `herz top`,
//! tests), whether or not the daemon that pinned them still runs.
//!
//! Writes here take effect on the next packet: the XDP program looks the lists up for every frame to a
//! Herz port.

use std::{collections::BTreeMap, net::IpAddr, path::Path, time::Duration};

use aya::maps::{
    Array, HashMap as BpfHashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap,
};
use herz_common::{
    BlockEntry, Counter, DropReason, Origin, PeerState, ShieldParams, SourceKey, SourceStats, maps,
};
use serde::Serialize;

use super::{Cidr, ShieldError, cidr::ktime_now_ns};

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

    /// Drops by reason, in [`DropReason`] order.
    pub fn drops(&self) -> Drops {
        Drops(
            DropReason::ALL
                .iter()
                .map(|r| (r.label(), self.get(Counter::drop(*r))))
                .collect(),
        )
    }
}

/// Drop counts by reason label (serialised as an object `{ "syn_rate": 3, ... }`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drops(pub Vec<(&'static str, u64)>);

impl Drops {
    fn from_stats(s: &SourceStats) -> Self {
        Drops(
            DropReason::ALL
                .iter()
                .map(|r| (r.label(), s.drops[*r as usize]))
                .collect(),
        )
    }

    /// Drops for one reason.
    pub fn get(&self, r: DropReason) -> u64 {
        self.0
            .iter()
            .find(|(l, _)| *l == r.label())
            .map_or(0, |(_, v)| *v)
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|(_, v)| v).sum()
    }

    /// `reason=n` for the non-zero reasons, comma-separated (`-` when none).
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .0
            .iter()
            .filter(|(_, v)| *v > 0)
            .map(|(l, v)| format!("{l}={v}"))
            .collect();
        if parts.is_empty() {
            "-".into()
        } else {
            parts.join(",")
        }
    }
}

impl Serialize for Drops {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// One source's counters summed over CPUs, with its connection counts.
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
    /// Frames dropped, all reasons.
    pub drops_total: u64,
    /// Frames dropped, by reason.
    pub drops: Drops,
    /// Handshakes in progress (after the half-open timeout rule).
    pub half_open: u64,
    /// Established connections.
    pub established: u64,
    /// Marked trusted by the daemon (a logged-in subscriber).
    pub trusted: bool,
}

/// Converts a map key to an address.
pub fn key_to_ip(key: &SourceKey) -> IpAddr {
    match key.as_ipv4() {
        Some(v4) => IpAddr::from(v4),
        None => IpAddr::from(key.addr),
    }
}

/// The map key of an address (IPv4-mapped IPv6 addresses get the same key as the IPv4 address).
pub fn ip_to_key(ip: IpAddr) -> SourceKey {
    match ip.to_canonical() {
        IpAddr::V4(v4) => SourceKey::from_ipv4(v4.octets()),
        IpAddr::V6(v6) => SourceKey { addr: v6.octets() },
    }
}

pub(crate) fn map_error(name: &'static str) -> impl Fn(MapError) -> ShieldError {
    move |source| ShieldError::Map { map: name, source }
}

/// Opens one pinned map by name.
pub(crate) fn open(pin_path: &Path, name: &'static str) -> Result<Map, ShieldError> {
    let path = pin_path.join(name);
    let data = MapData::from_pin(&path).map_err(|source| {
        if super::is_permission_error(&source) {
            ShieldError::NotPermitted {
                what: format!("reading {}", path.display()),
                source: Box::new(source),
            }
        } else if !path.exists() {
            ShieldError::NotLoaded(pin_path.into())
        } else {
            ShieldError::Pin { path, source }
        }
    })?;
    Map::from_map_data(data).map_err(map_error(name))
}

pub(crate) type Trie<V> = LpmTrie<MapData, [u8; 16], V>;

pub(crate) fn open_trie<V: aya::Pod>(
    pin_path: &Path,
    name: &'static str,
) -> Result<Trie<V>, ShieldError> {
    LpmTrie::try_from(open(pin_path, name)?).map_err(map_error(name))
}

pub(crate) fn open_hash<K: aya::Pod, V: aya::Pod>(
    pin_path: &Path,
    name: &'static str,
) -> Result<BpfHashMap<MapData, K, V>, ShieldError> {
    BpfHashMap::try_from(open(pin_path, name)?).map_err(map_error(name))
}

/// Whether a shield's maps are pinned at `pin_path`.
pub fn is_pinned(pin_path: &Path) -> bool {
    pin_path.join(maps::GLOBAL).exists()
}

/// Reads the global counters.
pub fn read_globals(pin_path: &Path) -> Result<Globals, ShieldError> {
    let map = open(pin_path, maps::GLOBAL)?;
    let arr: PerCpuArray<_, u64> = PerCpuArray::try_from(map).map_err(map_error(maps::GLOBAL))?;
    let mut out = Vec::with_capacity(Counter::ALL.len());
    for c in Counter::ALL {
        let values = arr.get(&(*c as u32), 0).map_err(map_error(maps::GLOBAL))?;
        out.push((c.label(), values.iter().sum()));
    }
    Ok(Globals(out))
}

/// Reads the thresholds in force.
pub fn read_params(pin_path: &Path) -> Result<ShieldParams, ShieldError> {
    let arr: Array<_, ShieldParams> =
        Array::try_from(open(pin_path, maps::CONFIG)?).map_err(map_error(maps::CONFIG))?;
    arr.get(&0, 0).map_err(map_error(maps::CONFIG))
}

/// Writes the thresholds; the programs use them from the next packet on.
pub fn write_params(pin_path: &Path, params: &ShieldParams) -> Result<(), ShieldError> {
    let mut arr: Array<_, ShieldParams> =
        Array::try_from(open(pin_path, maps::CONFIG)?).map_err(map_error(maps::CONFIG))?;
    arr.set(0, params, 0).map_err(map_error(maps::CONFIG))
}

/// Connection counts of one source, as the tc programs keep them.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct PeerCounts {
    /// Handshakes in progress (after the half-open timeout rule).
    pub half_open: u64,
    /// Established connections.
    pub established: u64,
}

/// Reads every source's connection counts, with the half-open timeout applied as the kernel applies it.
pub fn read_peers(pin_path: &Path) -> Result<BTreeMap<IpAddr, PeerCounts>, ShieldError> {
    let timeout = read_params(pin_path)?.half_open_timeout_ns;
    let peers: BpfHashMap<_, SourceKey, PeerState> = open_hash(pin_path, maps::PEERS)?;
    let now = ktime_now_ns();
    let mut out = BTreeMap::new();
    for item in peers.iter() {
        let (k, p) = item.map_err(map_error(maps::PEERS))?;
        out.insert(
            key_to_ip(&k),
            PeerCounts {
                half_open: p.half_open_at(now, timeout),
                established: p.established,
            },
        );
    }
    Ok(out)
}

/// The trusted sources (logged-in subscribers, as the daemon marked them).
pub fn read_trusted(pin_path: &Path) -> Result<Vec<IpAddr>, ShieldError> {
    let map: BpfHashMap<_, SourceKey, u64> = open_hash(pin_path, maps::TRUSTED)?;
    let mut out = Vec::new();
    for k in map.keys() {
        out.push(key_to_ip(&k.map_err(map_error(maps::TRUSTED))?));
    }
    out.sort();
    Ok(out)
}

/// Reads every tracked source (traffic counters, drops by reason, connection counts, trust), sorted by
/// packets, most first. This is what `herz stats` and `herz top` show.
pub fn read_sources(pin_path: &Path) -> Result<Vec<SourceRow>, ShieldError> {
    let map = open(pin_path, maps::SOURCES)?;
    let hash: PerCpuHashMap<_, SourceKey, SourceStats> =
        PerCpuHashMap::try_from(map).map_err(map_error(maps::SOURCES))?;
    let mut peers = read_peers(pin_path)?;
    let trusted = read_trusted(pin_path)?;
    let mut rows = Vec::new();
    for item in hash.iter() {
        let (key, values) = item.map_err(map_error(maps::SOURCES))?;
        let mut sum = SourceStats::default();
        for v in values.iter() {
            sum.accumulate(v);
        }
        let source = key_to_ip(&key);
        let p = peers.remove(&source).unwrap_or_default();
        rows.push(SourceRow {
            source,
            packets: sum.packets,
            bytes: sum.bytes,
            tcp_syn: sum.tcp_syn,
            udp: sum.udp,
            drops_total: sum.drops_total(),
            drops: Drops::from_stats(&sum),
            half_open: p.half_open,
            established: p.established,
            trusted: trusted.contains(&source),
        });
    }
    // Sources only the tc programs saw (XDP evicted them, or is not on their interface).
    for (source, p) in peers {
        if p.half_open == 0 && p.established == 0 {
            continue;
        }
        rows.push(SourceRow {
            source,
            packets: 0,
            bytes: 0,
            tcp_syn: 0,
            udp: 0,
            drops_total: 0,
            drops: Drops::from_stats(&SourceStats::default()),
            half_open: p.half_open,
            established: p.established,
            trusted: trusted.contains(&source),
        });
    }
    rows.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.source.cmp(&b.source)));
    Ok(rows)
}

/// The label of an [`Origin`] value.
pub fn origin_label(origin: u32) -> &'static str {
    match origin {
        Origin::CONFIG => "config",
        Origin::MANUAL => "manual",
        Origin::AUTO => "auto",
        _ => "unknown",
    }
}

/// One blocklist entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BlockRow {
    /// The blocked network.
    pub cidr: Cidr,
    /// `config`, `manual` or `auto`.
    pub origin: &'static str,
    /// For auto-blocks, the drop reason that triggered it.
    pub reason: Option<&'static str>,
    /// Milliseconds until the entry expires; `None` for a permanent entry.
    pub expires_in_ms: Option<u64>,
    /// The entry has expired (the kernel ignores it; the daemon deletes it).
    pub expired: bool,
    /// Milliseconds since the entry was written.
    pub age_ms: u64,
}

impl BlockRow {
    fn new(cidr: Cidr, e: &BlockEntry, now: u64) -> Self {
        BlockRow {
            cidr,
            origin: origin_label(e.origin),
            reason: (e.origin == Origin::AUTO)
                .then(|| DropReason::from_u32(e.reason).map(|r| r.label()))
                .flatten(),
            expires_in_ms: (e.expires_ns != 0)
                .then(|| e.expires_ns.saturating_sub(now) / 1_000_000),
            expired: !e.active(now),
            age_ms: now.saturating_sub(e.created_ns) / 1_000_000,
        }
    }
}

/// Every blocklist entry (expired ones included, marked), sorted by network.
pub fn read_blocked(pin_path: &Path) -> Result<Vec<BlockRow>, ShieldError> {
    let trie: Trie<BlockEntry> = open_trie(pin_path, maps::BLOCK)?;
    let now = ktime_now_ns();
    let mut rows = Vec::new();
    for item in trie.iter() {
        let (k, e) = item.map_err(map_error(maps::BLOCK))?;
        rows.push(BlockRow::new(
            Cidr::from_key(k.prefix_len(), k.data()),
            &e,
            now,
        ));
    }
    rows.sort_by_key(|r| r.cidr);
    Ok(rows)
}

/// Blocks `cidr` on Herz's ports, for `ttl` or for good; replaces an existing entry for the same network.
pub fn block(pin_path: &Path, cidr: Cidr, ttl: Option<Duration>) -> Result<BlockRow, ShieldError> {
    let mut trie: Trie<BlockEntry> = open_trie(pin_path, maps::BLOCK)?;
    let now = ktime_now_ns();
    let entry = BlockEntry {
        expires_ns: ttl.map_or(0, |t| {
            now.saturating_add(t.as_nanos().min(u64::MAX as u128) as u64)
        }),
        created_ns: now,
        origin: Origin::MANUAL,
        reason: 0,
    };
    trie.insert(&cidr.aya_key(), entry, 0)
        .map_err(map_error(maps::BLOCK))?;
    Ok(BlockRow::new(cidr, &entry, now))
}

/// Removes the blocklist entry for exactly `cidr`. Returns whether there was one.
pub fn unblock(pin_path: &Path, cidr: Cidr) -> Result<bool, ShieldError> {
    let mut trie: Trie<BlockEntry> = open_trie(pin_path, maps::BLOCK)?;
    remove_exact(&mut trie, cidr, maps::BLOCK)
}

fn remove_exact<V: aya::Pod>(
    trie: &mut Trie<V>,
    cidr: Cidr,
    name: &'static str,
) -> Result<bool, ShieldError> {
    let key = cidr.aya_key();
    // A lookup matches the longest covering prefix; only an entry for exactly this network counts.
    let present = trie
        .keys()
        .filter_map(Result::ok)
        .any(|k| k.prefix_len() == key.prefix_len() && k.data() == key.data());
    if !present {
        return Ok(false);
    }
    match trie.remove(&key) {
        Ok(()) => Ok(true),
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) => Err(map_error(name)(e)),
    }
}

/// One allowlist entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AllowRow {
    /// The allowed network.
    pub cidr: Cidr,
    /// `config` or `manual`.
    pub origin: &'static str,
}

/// Every allowlist entry, sorted by network.
pub fn read_allowed(pin_path: &Path) -> Result<Vec<AllowRow>, ShieldError> {
    let trie: Trie<u32> = open_trie(pin_path, maps::ALLOW)?;
    let mut rows = Vec::new();
    for item in trie.iter() {
        let (k, origin) = item.map_err(map_error(maps::ALLOW))?;
        rows.push(AllowRow {
            cidr: Cidr::from_key(k.prefix_len(), k.data()),
            origin: origin_label(origin),
        });
    }
    rows.sort_by_key(|r| r.cidr);
    Ok(rows)
}

/// Adds `cidr` to the allowlist: its traffic passes every rule, blocks included.
pub fn allow(pin_path: &Path, cidr: Cidr) -> Result<(), ShieldError> {
    let mut trie: Trie<u32> = open_trie(pin_path, maps::ALLOW)?;
    trie.insert(&cidr.aya_key(), Origin::MANUAL, 0)
        .map_err(map_error(maps::ALLOW))
}

/// Removes the allowlist entry for exactly `cidr`. Returns whether there was one.
pub fn disallow(pin_path: &Path, cidr: Cidr) -> Result<bool, ShieldError> {
    let mut trie: Trie<u32> = open_trie(pin_path, maps::ALLOW)?;
    remove_exact(&mut trie, cidr, maps::ALLOW)
}

/// The allowed feed publishers (empty: any source may send to feed ports).
pub fn read_feed_sources(pin_path: &Path) -> Result<Vec<Cidr>, ShieldError> {
    let trie: Trie<u32> = open_trie(pin_path, maps::FEED_SOURCES)?;
    let mut out = Vec::new();
    for k in trie.keys() {
        let k = k.map_err(map_error(maps::FEED_SOURCES))?;
        out.push(Cidr::from_key(k.prefix_len(), k.data()));
    }
    out.sort();
    Ok(out)
}
