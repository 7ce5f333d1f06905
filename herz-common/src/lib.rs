//! Types shared by Herz's kernel programs (herz-ebpf) and user space (herz-user).
//!
//! Everything here is `#[repr(C)]` with explicit padding so that the kernel and user space agree on every
//! byte. Addresses are stored as 16-byte IPv6 addresses; IPv4 sources use the IPv4-mapped form
//! (`::ffff:a.b.c.d`) so one map serves both families.
#![no_std]
#![deny(missing_docs)]

/// Names of the maps the kernel programs declare; user space pins each under the pin directory by this name.
pub mod maps {
    /// Global counters, `PerCpuArray<u64>` indexed by [`crate::Counter`].
    pub const GLOBAL: &str = "HERZ_GLOBAL";
    /// Per-source counters, `LruPerCpuHashMap<SourceKey, SourceStats>`.
    pub const SOURCES: &str = "HERZ_SOURCES";
    /// Herz's policed ports, `HashMap<PortKey, u32>` (value: [`crate::PortRole`] bits).
    pub const PORTS: &str = "HERZ_PORTS";
    /// Thresholds, `Array<ShieldParams>` with one slot; written from the config, changeable live.
    pub const CONFIG: &str = "HERZ_CONFIG";
    /// Allowlist, `LpmTrie<[u8; 16], u32>` (value: [`crate::Origin`]): matching sources always pass.
    pub const ALLOW: &str = "HERZ_ALLOW";
    /// Blocklist, `LpmTrie<[u8; 16], BlockEntry>`: matching sources are dropped until the entry expires.
    pub const BLOCK: &str = "HERZ_BLOCK";
    /// Allowed publishers of UDP feeds, `LpmTrie<[u8; 16], u32>`; enforced only when
    /// [`crate::ShieldParams::FLAG_FEED_SOURCES`] is set (an empty list means "any source").
    pub const FEED_SOURCES: &str = "HERZ_FEED_SOURCES";
    /// Trusted sources (logged-in subscribers), `HashMap<SourceKey, u64>` (value: ktime they were trusted).
    pub const TRUSTED: &str = "HERZ_TRUSTED";
    /// Per-source token buckets and auto-block windows, `LruHashMap<SourceKey, RateState>`.
    pub const RATE: &str = "HERZ_RATE";
    /// Per-source connection counts, `LruHashMap<SourceKey, PeerState>`.
    pub const PEERS: &str = "HERZ_PEERS";
    /// Half-open handshakes, `LruHashMap<FlowKey, FlowState>`.
    pub const HALF_OPEN: &str = "HERZ_HALF_OPEN";
    /// Established connections, `HashMap<FlowKey, FlowState>` (not LRU: an evicted entry would leave its
    /// source's count too high forever).
    pub const ESTABLISHED: &str = "HERZ_ESTABLISHED";
    /// The global SYN guard's token bucket, `Array<TokenBucket>` with one slot.
    pub const GUARD: &str = "HERZ_GUARD";
    /// Events for user space, a `RingBuf` of [`crate::ShieldEvent`] records.
    pub const EVENTS: &str = "HERZ_EVENTS";
    /// Every map name, in a stable order (for pinning and unpinning).
    pub const ALL: &[&str] = &[
        GLOBAL,
        SOURCES,
        PORTS,
        CONFIG,
        ALLOW,
        BLOCK,
        FEED_SOURCES,
        TRUSTED,
        RATE,
        PEERS,
        HALF_OPEN,
        ESTABLISHED,
        GUARD,
        EVENTS,
    ];
}

/// Maximum number of sources tracked at once; least recently seen sources are evicted first.
pub const MAX_SOURCES: u32 = 65_536;
/// Maximum number of entries in the port map.
pub const MAX_PORTS: u32 = 64;
/// Maximum number of CIDRs in each of the allowlist, blocklist and feed-source list.
pub const MAX_CIDRS: u32 = 16_384;
/// Maximum number of trusted sources.
pub const MAX_TRUSTED: u32 = 16_384;
/// Maximum number of half-open handshakes followed at once (least recently touched evicted first).
pub const MAX_HALF_OPEN: u32 = 131_072;
/// Maximum number of established connections followed at once; beyond it new ones are not counted.
pub const MAX_ESTABLISHED: u32 = 65_536;
/// Size of the event ring buffer, bytes (a power-of-two number of pages).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;
/// Largest `rate` a token bucket accepts (tokens per second): keeps `elapsed * rate` within a u64.
pub const MAX_RATE: u64 = 10_000_000;
/// Largest `burst` a token bucket accepts (tokens): keeps `burst * NS_PER_SEC` within a u64.
pub const MAX_BURST: u64 = 1_000_000_000;
/// Longest refill interval a token bucket credits at once, ns: with [`MAX_RATE`] the product stays
/// below 2^63. Longer idle periods simply refill the bucket completely.
pub const MAX_REFILL_NS: u64 = 100 * NS_PER_SEC;

/// IP protocol numbers used in [`PortKey`].
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number for UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Key of the port map: a destination port of Herz's, with its transport protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    /// Destination port, host byte order.
    pub port: u16,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Explicit padding; always zero.
    pub _pad: u8,
}

impl PortKey {
    /// A key for `proto`/`port`.
    pub const fn new(proto: u8, port: u16) -> Self {
        Self {
            port,
            proto,
            _pad: 0,
        }
    }
}

/// What a policed port is used for (bit flags in the port map's value).
pub struct PortRole;
impl PortRole {
    /// TCP port where subscribers connect (SoupBinTCP egress).
    pub const SUBSCRIBER: u32 = 1;
    /// TCP port where publishers connect (SoupBinTCP ingest).
    pub const PUBLISHER: u32 = 2;
    /// UDP port of an ingested feed (MoldUDP64): only allowed publisher sources, rate-limited.
    pub const FEED: u32 = 4;
    /// UDP port of the re-request server: rate-limited, open to any source.
    pub const REREQUEST: u32 = 8;
}

/// Key of the per-source map: the source address as 16 bytes (IPv4 as `::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// IPv6 address bytes, network order.
    pub addr: [u8; 16],
}

impl SourceKey {
    /// The IPv4-mapped key for an IPv4 address given in network byte order bytes.
    pub const fn from_ipv4(octets: [u8; 4]) -> Self {
        let [a, b, c, d] = octets;
        Self {
            addr: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d],
        }
    }

    /// The IPv4 octets if this is an IPv4-mapped address.
    pub fn as_ipv4(&self) -> Option<[u8; 4]> {
        let a = &self.addr;
        if a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff {
            Some([a[12], a[13], a[14], a[15]])
        } else {
            None
        }
    }
}

macro_rules! drop_reasons {
    ($( $(#[$doc:meta])* $name:ident = $label:literal, )*) => {
        /// Why the XDP program dropped a frame. Indexes [`SourceStats::drops`]; each reason has a global
        /// counter too ([`Counter::drop`]).
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum DropReason { $( $(#[$doc])* $name, )* }

        impl DropReason {
            /// Every reason, in index order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// The stable snake_case name used by `herz stats --json`, events and metrics.
            pub const fn label(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
            /// The reason with index `i`, if any.
            pub fn from_u32(i: u32) -> Option<Self> {
                Self::ALL.get(i as usize).copied()
            }
        }
    };
}

drop_reasons! {
    /// The source matches a blocklist entry from the config or `herz block`.
    Blocked = "blocked",
    /// The source matches a blocklist entry the shield inserted itself (auto-block).
    AutoBlocked = "auto_blocked",
    /// SYNs above the source's token bucket (`syn_rate`, `syn_burst`).
    SynRate = "syn_rate",
    /// The source already has `max_half_open` handshakes in progress.
    HalfOpen = "half_open",
    /// The source already has `max_established` connections.
    ConnLimit = "conn_limit",
    /// SYNs above the global guard (`global_syn_rate`) from a source with no connection and no trust.
    GlobalSyn = "global_syn",
    /// UDP to a feed port from a source not in `feed_sources`.
    FeedSource = "feed_source",
    /// UDP above the source's token bucket (`udp_rate`, `udp_burst`).
    UdpRate = "udp_rate",
}

/// Number of drop reasons (length of [`SourceStats::drops`]).
pub const DROP_REASONS: usize = DropReason::ALL.len();

/// Per-source counters of traffic sent to Herz's ports (one copy per CPU; user space sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Packets sent to a Herz port.
    pub packets: u64,
    /// Bytes of those packets, from the start of the Ethernet header.
    pub bytes: u64,
    /// TCP SYNs (without ACK) sent to a Herz TCP port.
    pub tcp_syn: u64,
    /// UDP datagrams sent to a Herz UDP port.
    pub udp: u64,
    /// Kernel time (ns, `bpf_ktime_get_ns`) of the last packet seen from this source.
    pub last_seen_ns: u64,
    /// Frames dropped, by [`DropReason`] index.
    pub drops: [u64; DROP_REASONS],
}

impl SourceStats {
    /// Adds another CPU's copy into this one (`last_seen_ns` takes the latest).
    pub fn accumulate(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.tcp_syn += other.tcp_syn;
        self.udp += other.udp;
        if other.last_seen_ns > self.last_seen_ns {
            self.last_seen_ns = other.last_seen_ns;
        }
        for (a, b) in self.drops.iter_mut().zip(other.drops.iter()) {
            *a += *b;
        }
    }

    /// Frames dropped for any reason.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// Key of the allowlist, blocklist and feed-source LPM tries, laid out as the kernel's
/// `struct bpf_lpm_trie_key` (prefix length, then 16 address bytes; IPv4 as `::ffff:a.b.c.d` with
/// `prefix_len` = 96 + the IPv4 prefix), so one trie serves both families.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LpmKey {
    /// Significant leading bits of `addr`, 0..=128.
    pub prefix_len: u32,
    /// IPv6 address bytes, network order.
    pub addr: [u8; 16],
}

/// Where a list entry came from.
pub struct Origin;
impl Origin {
    /// The `[shield]` section of the config (replaced on every config reload).
    pub const CONFIG: u32 = 0;
    /// An operator, through `herz block` / `herz allow`.
    pub const MANUAL: u32 = 1;
    /// The XDP program itself (auto-block of a repeat offender).
    pub const AUTO: u32 = 2;
}

/// Value of the blocklist.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    /// Kernel time (`bpf_ktime_get_ns`, i.e. CLOCK_MONOTONIC) at which the entry stops applying; 0 = never.
    /// Expired entries are ignored by the kernel and deleted by the daemon.
    pub expires_ns: u64,
    /// Kernel time the entry was written.
    pub created_ns: u64,
    /// [`Origin`] of the entry.
    pub origin: u32,
    /// The [`DropReason`] that triggered an auto-block (0 otherwise).
    pub reason: u32,
}

impl BlockEntry {
    /// Whether the entry applies at kernel time `now_ns`.
    pub const fn active(&self, now_ns: u64) -> bool {
        self.expires_ns == 0 || self.expires_ns > now_ns
    }
}

/// Shield thresholds, one slot of the config array. A rate or limit of 0 turns that rule off, so a
/// zeroed map (programs loaded but never configured) only counts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShieldParams {
    /// SYNs per second per source (token refill rate); 0 = no per-source SYN limit.
    pub syn_rate: u64,
    /// SYN burst per source (bucket size).
    pub syn_burst: u64,
    /// Most handshakes in progress per source; 0 = unlimited.
    pub max_half_open: u64,
    /// Most established connections per source; 0 = unlimited.
    pub max_established: u64,
    /// A source's half-open count lapses when its last SYN is older than this, ns.
    pub half_open_timeout_ns: u64,
    /// Flood drops within `autoblock_window_ns` after which a source is blocked; 0 = never auto-block.
    pub autoblock_after: u64,
    /// Window over which flood drops are counted, ns (0 is read as one second).
    pub autoblock_window_ns: u64,
    /// How long an auto-block lasts, ns.
    pub autoblock_ttl_ns: u64,
    /// SYNs per second to Herz's ports from all untrusted sources together; 0 = no global guard.
    pub global_syn_rate: u64,
    /// Burst of the global guard.
    pub global_syn_burst: u64,
    /// UDP datagrams per second per source on policed UDP ports; 0 = no limit.
    pub udp_rate: u64,
    /// UDP burst per source.
    pub udp_burst: u64,
    /// `FLAG_*` bits.
    pub flags: u64,
}

impl ShieldParams {
    /// The feed-source list is enforced (it is non-empty in the config).
    pub const FLAG_FEED_SOURCES: u64 = 1;
}

/// A token bucket in fixed point: one token is [`NS_PER_SEC`] units, and `elapsed_ns * rate` units are
/// added per refill, so no division is needed in the kernel. The one token bucket of Herz: the XDP
/// program's per-source and global SYN/UDP limits, and user space's re-request limits (herz-core
/// `ratelimit`), which take several tokens at once. Times are a monotonic clock's ns; time 0 marks a
/// bucket never touched (a zeroed map value), so a clock that can read 0 is offset by its caller.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Units available (tokens × [`NS_PER_SEC`]).
    pub units: u64,
    /// Kernel time of the last refill.
    pub last_ns: u64,
}

impl TokenBucket {
    /// Refills for the time since the last call and takes one token if there is one. `rate` in
    /// tokens/s (≤ [`MAX_RATE`]), `burst` in tokens (≤ [`MAX_BURST`]). A bucket never touched
    /// (`last_ns == 0`) starts full.
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, rate: u64, burst: u64) -> bool {
        self.take_n(now_ns, rate, burst, 1)
    }

    /// A bucket holding `burst` tokens at `now_ns`.
    #[inline(always)]
    pub const fn full(now_ns: u64, burst: u64) -> Self {
        Self {
            units: burst * NS_PER_SEC,
            last_ns: now_ns,
        }
    }

    /// Whole tokens the bucket holds at `now_ns`, refill included, without changing it.
    #[inline(always)]
    pub fn tokens(&self, now_ns: u64, rate: u64, burst: u64) -> u64 {
        self.available(now_ns, rate, burst) / NS_PER_SEC
    }

    /// Refills for the time since the last call, then takes `n` tokens; false (and nothing taken)
    /// when fewer are there. A `now_ns` older than the last refill (another CPU got there first)
    /// refills nothing and leaves the later stamp, so that time is never credited twice.
    #[inline(always)]
    pub fn take_n(&mut self, now_ns: u64, rate: u64, burst: u64, n: u64) -> bool {
        let units = self.available(now_ns, rate, burst);
        if now_ns > self.last_ns || self.last_ns == 0 {
            self.last_ns = now_ns;
        }
        match n.checked_mul(NS_PER_SEC) {
            Some(want) if units >= want => {
                self.units = units - want;
                true
            }
            _ => {
                self.units = units;
                false
            }
        }
    }

    /// Whether [`Self::take`] would succeed now, without taking or refilling anything.
    #[inline(always)]
    pub fn has_token(&self, now_ns: u64, rate: u64, burst: u64) -> bool {
        self.available(now_ns, rate, burst) >= NS_PER_SEC
    }

    /// Units the bucket holds at `now_ns`, refill included.
    #[inline(always)]
    fn available(&self, now_ns: u64, rate: u64, burst: u64) -> u64 {
        let cap = burst * NS_PER_SEC;
        let units = if self.last_ns == 0 {
            cap
        } else {
            let mut elapsed = now_ns.saturating_sub(self.last_ns);
            if elapsed > MAX_REFILL_NS {
                elapsed = MAX_REFILL_NS;
            }
            self.units + elapsed * rate
        };
        if units > cap { cap } else { units }
    }
}

/// Per-source policing state (shared by all CPUs; updates race benignly: a bucket may admit a token
/// or two more under contention).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// SYN bucket.
    pub syn: TokenBucket,
    /// UDP bucket.
    pub udp: TokenBucket,
    /// Start of the current auto-block window, kernel ns.
    pub window_start_ns: u64,
    /// Flood drops in the current window.
    pub window_drops: u32,
    /// `WINDOW_*` bits for the current window.
    pub window_flags: u32,
}

impl RateState {
    /// A threshold event was sent in this window.
    pub const WINDOW_EVENT_SENT: u32 = 1;
    /// The source was auto-blocked in this window.
    pub const WINDOW_BLOCKED: u32 = 2;
}

/// Per-source connection counts, maintained by the tc programs (atomic adds: ingress and egress run on
/// any CPU; 64-bit because the BPF target has no 32-bit atomics).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerState {
    /// Handshakes in progress (SYN seen, final ACK not yet). Lapses as a whole when `last_syn_ns` is
    /// older than the half-open timeout: every handshake of the source is then older still.
    pub half_open: u64,
    /// Established connections (final ACK seen, no FIN/RST yet).
    pub established: u64,
    /// Kernel time of the last SYN that opened a handshake.
    pub last_syn_ns: u64,
    /// Bumped whenever `half_open` lapses; a half-open flow from an earlier epoch is no longer counted.
    pub epoch: u32,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

impl PeerState {
    /// The half-open count in effect at `now_ns` given the timeout (the lazy expiry rule).
    pub const fn half_open_at(&self, now_ns: u64, timeout_ns: u64) -> u64 {
        if timeout_ns != 0 && now_ns.saturating_sub(self.last_syn_ns) > timeout_ns {
            0
        } else {
            self.half_open
        }
    }
}

/// A TCP connection to one of Herz's ports, seen from Herz: the remote (client) end first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address (IPv4 as `::ffff:a.b.c.d`).
    pub client: [u8; 16],
    /// Herz's address.
    pub server: [u8; 16],
    /// Client port, host order.
    pub client_port: u16,
    /// Herz's port, host order.
    pub server_port: u16,
    /// Explicit padding; always zero.
    pub _pad: u32,
}

/// State of a followed connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// Kernel time of the SYN (half-open) or of the final ACK (established).
    pub since_ns: u64,
    /// The source's [`PeerState::epoch`] when the SYN was counted.
    pub epoch: u32,
    /// `FLOW_*` bits.
    pub flags: u32,
}

impl FlowState {
    /// Herz answered with a SYN-ACK.
    pub const FLOW_SYNACK: u32 = 1;
}

/// What an event reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A source crossed a flood threshold (first drop of its current window).
    Threshold = 1,
    /// The XDP program blocked a repeat offender (`value`: expiry, kernel ns).
    AutoBlocked = 2,
}

impl EventKind {
    /// The kind with value `v`, if any.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Threshold),
            2 => Some(Self::AutoBlocked),
            _ => None,
        }
    }
}

/// A record in the event ring buffer. Sent only on state changes, never per packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShieldEvent {
    /// [`EventKind`] value.
    pub kind: u32,
    /// [`DropReason`] index.
    pub reason: u32,
    /// Source address (IPv4 as `::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Kernel time of the event.
    pub ts_ns: u64,
    /// Threshold: drops in the window so far; auto-block: expiry, kernel ns.
    pub value: u64,
}

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident = $label:literal, )*) => {
        /// Global counters kept by the kernel programs in a per-CPU array, one slot each.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $( $(#[$doc])* $name, )* }

        impl Counter {
            /// Every counter, in slot order.
            pub const ALL: &'static [Counter] = &[$(Counter::$name,)*];
            /// The stable snake_case name used by `herz stats --json` and metrics.
            pub const fn label(self) -> &'static str {
                match self { $(Counter::$name => $label,)* }
            }
        }
    };
}

counters! {
    /// Every frame the XDP program saw.
    XdpFrames = "xdp_frames",
    /// Frames to a Herz port (TCP or UDP).
    HerzPackets = "herz_packets",
    /// Bytes of frames to a Herz port.
    HerzBytes = "herz_bytes",
    /// TCP SYNs (without ACK) to a Herz TCP port.
    HerzTcpSyn = "herz_tcp_syn",
    /// UDP datagrams to a Herz UDP port.
    HerzUdp = "herz_udp",
    /// IP traffic not addressed to a Herz port (passed untouched).
    OtherPorts = "other_ports",
    /// Frames that are not IPv4 or IPv6 (ARP, LLDP, ...), passed untouched.
    NotIp = "not_ip",
    /// Non-first IP fragments: no transport header to inspect, passed.
    Fragments = "fragments",
    /// Frames cut short or with impossible header fields, passed to the kernel (which drops what is bad).
    Malformed = "malformed",
    /// tc ingress: SYN to a Herz TCP port (handshake start).
    HandshakeSynIn = "handshake_syn_in",
    /// tc egress: SYN-ACK from a Herz TCP port.
    HandshakeSynAckOut = "handshake_synack_out",
    /// tc ingress: pure ACK to a Herz TCP port (completes a handshake, or acknowledges data).
    HandshakeAckIn = "handshake_ack_in",
    /// tc ingress: FIN to a Herz TCP port.
    FinIn = "fin_in",
    /// tc ingress: RST to a Herz TCP port.
    RstIn = "rst_in",
    /// Dropped: blocklist (config or `herz block`).
    DropBlocked = "drop_blocked",
    /// Dropped: auto-blocked source.
    DropAutoBlocked = "drop_auto_blocked",
    /// Dropped: per-source SYN rate.
    DropSynRate = "drop_syn_rate",
    /// Dropped: per-source half-open limit.
    DropHalfOpen = "drop_half_open",
    /// Dropped: per-source connection limit.
    DropConnLimit = "drop_conn_limit",
    /// Dropped: global SYN guard.
    DropGlobalSyn = "drop_global_syn",
    /// Dropped: UDP from a source not allowed to publish the feed.
    DropFeedSource = "drop_feed_source",
    /// Dropped: per-source UDP rate.
    DropUdpRate = "drop_udp_rate",
    /// Passed by the allowlist (no further checks).
    Allowlisted = "allowlisted",
    /// SYNs or datagrams exempt from the flood rules because the source is trusted.
    TrustedPass = "trusted_pass",
    /// Blocklist matches ignored because the entry had expired.
    BlockExpired = "block_expired",
    /// Sources auto-blocked by the XDP program.
    AutoBlocks = "auto_blocks",
    /// Events lost because the ring buffer was full.
    EventsLost = "events_lost",
    /// tc: handshakes completed (half-open → established).
    ConnEstablished = "conn_established",
    /// tc: established connections closed (FIN or RST in either direction).
    ConnClosed = "conn_closed",
    /// tc: connections not followed because the established table was full.
    ConnTableFull = "conn_table_full",
}

impl Counter {
    /// The global drop counter of `reason`.
    pub const fn drop(reason: DropReason) -> Counter {
        match reason {
            DropReason::Blocked => Counter::DropBlocked,
            DropReason::AutoBlocked => Counter::DropAutoBlocked,
            DropReason::SynRate => Counter::DropSynRate,
            DropReason::HalfOpen => Counter::DropHalfOpen,
            DropReason::ConnLimit => Counter::DropConnLimit,
            DropReason::GlobalSyn => Counter::DropGlobalSyn,
            DropReason::FeedSource => Counter::DropFeedSource,
            DropReason::UdpRate => Counter::DropUdpRate,
        }
    }
}

/// Number of global counter slots.
pub const COUNTERS: u32 = Counter::ALL.len() as u32;

#[cfg(feature = "user")]
mod pod {
    macro_rules! pod {
        ($($t:ident),+) => {$(
            // SAFETY: `#[repr(C)]`, only plain integers and byte arrays, with explicit padding fields:
            // every bit pattern is a valid value and there are no uninitialised bytes.
            unsafe impl aya::Pod for super::$t {}
        )+};
    }
    pod!(
        PortKey,
        SourceKey,
        SourceStats,
        BlockEntry,
        ShieldParams,
        TokenBucket,
        RateState,
        PeerState,
        FlowKey,
        FlowState,
        ShieldEvent
    );
}

#[cfg(test)]
mod tests {
    extern crate std;
    use core::mem::size_of;

    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<PortKey>(), 4);
        assert_eq!(size_of::<SourceKey>(), 16);
        assert_eq!(size_of::<SourceStats>(), (5 + DROP_REASONS) * 8);
        assert_eq!(size_of::<LpmKey>(), 20);
        assert_eq!(size_of::<BlockEntry>(), 24);
        assert_eq!(size_of::<ShieldParams>(), 13 * 8);
        assert_eq!(size_of::<TokenBucket>(), 16);
        assert_eq!(size_of::<RateState>(), 48);
        assert_eq!(size_of::<PeerState>(), 32);
        assert_eq!(size_of::<FlowKey>(), 40);
        assert_eq!(size_of::<FlowState>(), 16);
        assert_eq!(size_of::<ShieldEvent>(), 40);
    }

    #[test]
    fn drop_reasons_have_counters_and_unique_labels() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(DropReason::from_u32(i as u32), Some(*r));
            assert_eq!(
                Counter::drop(*r).label(),
                &*std::format!("drop_{}", r.label())
            );
        }
        assert_eq!(DropReason::from_u32(DROP_REASONS as u32), None);
    }

    #[test]
    fn token_bucket_refills_without_division() {
        let mut b = TokenBucket::default();
        let t0 = 5 * NS_PER_SEC;
        // Starts full: `burst` tokens, then empty.
        assert!((0..3).all(|_| b.take(t0, 10, 3)));
        assert!(!b.take(t0, 10, 3));
        // 10 tokens/s: 100 ms gives one.
        assert!(b.take(t0 + 100_000_000, 10, 3));
        assert!(!b.take(t0 + 100_000_000, 10, 3));
        // A long idle period fills it to the burst, no more, without overflow at the maxima.
        assert!((0..3).all(|_| b.take(t0 + 1_000 * NS_PER_SEC, 10, 3)));
        assert!(!b.take(t0 + 1_000 * NS_PER_SEC, 10, 3));
        let mut m = TokenBucket::default();
        assert!(m.take(1, MAX_RATE, MAX_BURST));
        assert!(m.take(u64::MAX / 2, MAX_RATE, MAX_BURST));
        // Time going backwards (another CPU wrote a later stamp) refills nothing.
        let mut c = TokenBucket::default();
        assert!(c.take(t0, 1, 1));
        assert!(!c.take(t0 - 1, 1, 1));
    }

    #[test]
    fn has_token_predicts_take_without_changing_the_bucket() {
        let mut b = TokenBucket::default();
        let t0 = 7 * NS_PER_SEC;
        assert!(b.has_token(t0, 10, 2), "a new bucket starts full");
        for step in 0..40u64 {
            let now = t0 + step * 37_000_000;
            let before = b;
            let predicted = b.has_token(now, 10, 2);
            assert_eq!(b, before, "has_token changed the bucket");
            assert_eq!(b.take(now, 10, 2), predicted, "at step {step}");
        }
        let empty = TokenBucket::default();
        assert!(!empty.has_token(t0, 10, 0), "no burst, no token");
    }

    #[test]
    fn several_tokens_are_taken_at_once_or_not_at_all() {
        let t0 = 3 * NS_PER_SEC;
        let mut b = TokenBucket::full(t0, 100);
        assert_eq!(b.tokens(t0, 1_000, 100), 100);
        assert!(b.take_n(t0, 1_000, 100, 60));
        assert!(!b.take_n(t0, 1_000, 100, 41), "only 40 left");
        assert_eq!(b.tokens(t0, 1_000, 100), 40, "a refused take takes nothing");
        assert!(b.take_n(t0, 1_000, 100, 40));
        // 1,000/s: one per millisecond, fractions kept exactly.
        assert_eq!(b.tokens(t0 + 999_999, 1_000, 100), 0);
        assert!(b.take_n(t0 + 1_000_000, 1_000, 100, 1));
        assert!(
            !b.take_n(t0 + 1_000_000, 1_000, 100, u64::MAX),
            "no overflow"
        );
        // Never above the burst.
        assert_eq!(b.tokens(t0 + 1_000 * NS_PER_SEC, 1_000, 100), 100);
    }

    #[test]
    fn half_open_lapses_after_the_timeout() {
        let p = PeerState {
            half_open: 3,
            last_syn_ns: 10 * NS_PER_SEC,
            ..Default::default()
        };
        assert_eq!(p.half_open_at(12 * NS_PER_SEC, 3 * NS_PER_SEC), 3);
        assert_eq!(p.half_open_at(14 * NS_PER_SEC, 3 * NS_PER_SEC), 0);
        assert_eq!(p.half_open_at(99 * NS_PER_SEC, 0), 3);
    }

    #[test]
    fn ipv4_mapping_round_trips() {
        let k = SourceKey::from_ipv4([198, 18, 0, 2]);
        assert_eq!(k.as_ipv4(), Some([198, 18, 0, 2]));
        let v6 = SourceKey {
            addr: [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        };
        assert_eq!(v6.as_ipv4(), None);
    }

    #[test]
    fn counter_labels_are_unique() {
        for (i, a) in Counter::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i);
            for b in &Counter::ALL[i + 1..] {
                assert_ne!(a.label(), b.label());
            }
        }
    }
}
