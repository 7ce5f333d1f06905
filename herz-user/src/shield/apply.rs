//! Writing the configuration into the shield's maps: at start, and live (`herz shield reload`) without
//! reloading the programs. Entries an operator or the kernel added (`herz block`, auto-blocks) are kept;
//! only entries that came from the config are replaced.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use herz_common::{
    BlockEntry, IPPROTO_TCP, IPPROTO_UDP, NS_PER_SEC, Origin, PortKey, PortRole, ShieldParams, maps,
};
use serde::Serialize;

use super::{
    Cidr, ShieldError,
    cidr::ktime_now_ns,
    pinned::{self, Trie, map_error, open_hash, open_trie},
};
use crate::config::{Config, ShieldConfig};

/// The kernel's view of the `[shield]` thresholds.
pub fn params_from(s: &ShieldConfig) -> ShieldParams {
    const MS: u64 = 1_000_000;
    ShieldParams {
        syn_rate: s.syn_rate,
        syn_burst: s.syn_burst,
        max_half_open: s.max_half_open,
        max_established: s.max_established,
        half_open_timeout_ns: s.half_open_timeout_ms.saturating_mul(MS),
        autoblock_after: s.autoblock_after,
        autoblock_window_ns: s.autoblock_window_ms.saturating_mul(MS),
        autoblock_ttl_ns: s.autoblock_ttl_secs.saturating_mul(NS_PER_SEC),
        global_syn_rate: s.global_syn_rate,
        global_syn_burst: s.global_syn_burst,
        udp_rate: s.udp_rate,
        udp_burst: s.udp_burst,
        flags: if s.feed_sources.is_empty() {
            0
        } else {
            ShieldParams::FLAG_FEED_SOURCES
        },
    }
}

/// The policed ports and their roles: TCP listeners (subscriber or publisher), UDP feed lines and extra
/// UDP ports (feed: publisher allowlist applies), the re-request server (open to any source).
pub fn port_roles(config: &Config) -> Vec<(PortKey, u32)> {
    let mut out = BTreeMap::<(u8, u16), u32>::new();
    let sub = config.subscribers.listen.port();
    for port in config.shield_tcp_ports() {
        let role = if port == sub {
            PortRole::SUBSCRIBER
        } else {
            PortRole::PUBLISHER
        };
        *out.entry((IPPROTO_TCP, port)).or_default() |= role;
    }
    let rerequest = (!config.channels.is_empty()).then(|| config.rerequest.listen.port());
    let feed_ports: BTreeSet<u16> = config
        .feeds
        .iter()
        .flat_map(|f| f.lines.iter().map(|l| l.port()))
        .chain(config.shield.extra_udp_ports.iter().copied())
        .collect();
    for port in config.shield_udp_ports() {
        let mut role = 0;
        if feed_ports.contains(&port) {
            role |= PortRole::FEED;
        }
        if Some(port) == rerequest {
            role |= PortRole::REREQUEST;
        }
        *out.entry((IPPROTO_UDP, port)).or_default() |=
            if role == 0 { PortRole::FEED } else { role };
    }
    out.into_iter()
        .map(|((proto, port), role)| (PortKey::new(proto, port), role))
        .collect()
}

/// What a config application changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Applied {
    /// Policed ports after the change.
    pub ports: usize,
    /// Config allowlist entries written.
    pub allow: usize,
    /// Config blocklist entries written.
    pub block: usize,
    /// Feed sources written.
    pub feed_sources: usize,
    /// Stale config entries and ports removed.
    pub removed: usize,
}

/// Writes `config`'s ports, thresholds and lists into the maps pinned at `pin_path`. The programs pick
/// the new values up on the next packet.
pub fn apply_config(pin_path: &Path, config: &Config) -> Result<Applied, ShieldError> {
    let mut applied = Applied::default();
    pinned::write_params(pin_path, &params_from(&config.shield))?;

    // Ports: add or update the wanted ones first, then remove the rest, so a port that stays is never
    // briefly unpoliced.
    let wanted = port_roles(config);
    let mut ports: aya::maps::HashMap<_, PortKey, u32> = open_hash(pin_path, maps::PORTS)?;
    for (k, role) in &wanted {
        ports.insert(k, role, 0).map_err(map_error(maps::PORTS))?;
    }
    let stale: Vec<PortKey> = ports
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !wanted.iter().any(|(w, _)| w == k))
        .collect();
    for k in stale {
        ports.remove(&k).map_err(map_error(maps::PORTS))?;
        applied.removed += 1;
    }
    applied.ports = wanted.len();

    // Allowlist: config entries replace config entries; manual ones stay (and win over config ones).
    let mut allow: Trie<u32> = open_trie(pin_path, maps::ALLOW)?;
    let want: BTreeSet<Cidr> = config.shield.allow.iter().copied().collect();
    applied.removed += sync_config_entries(
        &mut allow,
        maps::ALLOW,
        &want,
        |o| *o == Origin::CONFIG,
        Origin::CONFIG,
    )?;
    applied.allow = want.len();

    let mut block: Trie<BlockEntry> = open_trie(pin_path, maps::BLOCK)?;
    let want: BTreeSet<Cidr> = config.shield.block.iter().copied().collect();
    let entry = BlockEntry {
        expires_ns: 0,
        created_ns: ktime_now_ns(),
        origin: Origin::CONFIG,
        reason: 0,
    };
    applied.removed += sync_config_entries(
        &mut block,
        maps::BLOCK,
        &want,
        |e| e.origin == Origin::CONFIG,
        entry,
    )?;
    applied.block = want.len();

    // Feed sources come only from the config: replace them all.
    let mut feed: Trie<u32> = open_trie(pin_path, maps::FEED_SOURCES)?;
    let want: BTreeSet<Cidr> = config.shield.feed_sources.iter().copied().collect();
    applied.removed += sync_config_entries(
        &mut feed,
        maps::FEED_SOURCES,
        &want,
        |_| true,
        Origin::CONFIG,
    )?;
    applied.feed_sources = want.len();
    Ok(applied)
}

/// Makes the entries selected by `is_config` exactly `want` (value `value`), leaving other entries (and
/// wanted networks that already have a non-config entry) alone. Returns how many it removed.
fn sync_config_entries<V: aya::Pod>(
    trie: &mut Trie<V>,
    name: &'static str,
    want: &BTreeSet<Cidr>,
    is_config: impl Fn(&V) -> bool,
    value: V,
) -> Result<usize, ShieldError> {
    let mut existing = BTreeMap::new();
    for item in trie.iter() {
        let (k, v) = item.map_err(map_error(name))?;
        existing.insert(Cidr::from_key(k.prefix_len(), k.data()), is_config(&v));
    }
    let mut removed = 0;
    for (cidr, config_owned) in &existing {
        if *config_owned && !want.contains(cidr) {
            trie.remove(&cidr.aya_key()).map_err(map_error(name))?;
            removed += 1;
        }
    }
    for cidr in want {
        if existing.get(cidr) == Some(&false) {
            continue;
        }
        trie.insert(&cidr.aya_key(), value, 0)
            .map_err(map_error(name))?;
    }
    Ok(removed)
}
