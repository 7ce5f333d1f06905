//! The daemon's TOML configuration: defaults that serve a first local run, strict validation, and errors
//! that name the key at fault.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use herz_core::protocol::{moldudp64::Session, tick::Symbol};
use serde::{Deserialize, Serialize};

/// Why a configuration was refused. Each message names the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type or an unknown key is present.
    #[error("config {origin}: key `{key}`: {message}")]
    Parse {
        /// The file, or "defaults".
        origin: String,
        /// Dotted path of the key at fault.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value parsed but makes no sense.
    #[error("config {origin}: key `{key}`: {message}")]
    Invalid {
        /// The file, or "defaults".
        origin: String,
        /// Dotted path of the key at fault.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter: a level, or per-target directives such as `info,herz::shield=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpAttachMode {
    /// Driver (native) mode, falling back to generic (skb) mode when the driver has no XDP support.
    Auto,
    /// Driver mode only.
    Driver,
    /// Generic (skb) mode only.
    Generic,
}

/// The kernel shield.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShieldConfig {
    /// Load and attach the kernel programs at all.
    pub enabled: bool,
    /// Refuse to start when the shield cannot be loaded (otherwise Herz runs unprotected and says so).
    pub required: bool,
    /// Interfaces to attach XDP and tc programs to.
    pub interfaces: Vec<String>,
    /// bpffs directory where the maps are pinned for `herz stats` and friends.
    pub pin_path: PathBuf,
    /// XDP attach mode.
    pub xdp_mode: XdpAttachMode,
    /// Extra TCP ports to police besides the ones Herz listens on.
    pub extra_tcp_ports: Vec<u16>,
    /// Extra UDP ports to police besides the ones Herz listens on.
    pub extra_udp_ports: Vec<u16>,
    /// SYNs per second per source to Herz's TCP ports (0: no limit).
    pub syn_rate: u64,
    /// SYN burst per source.
    pub syn_burst: u64,
    /// Most handshakes in progress per source (0: no limit).
    pub max_half_open: u64,
    /// Most established connections per source (0: no limit).
    pub max_established: u64,
    /// A handshake without its final ACK stops counting as half-open after this long, milliseconds.
    pub half_open_timeout_ms: u64,
    /// Flood drops within `autoblock_window_ms` after which a source is blocked (0: never).
    pub autoblock_after: u64,
    /// Window for `autoblock_after`, milliseconds.
    pub autoblock_window_ms: u64,
    /// How long an auto-block lasts, seconds.
    pub autoblock_ttl_secs: u64,
    /// SYNs per second from all untrusted sources without a connection together (0: no guard).
    pub global_syn_rate: u64,
    /// Burst of the global SYN guard.
    pub global_syn_burst: u64,
    /// Sources allowed to send to feed ports (CIDRs; empty: any).
    pub feed_sources: Vec<Cidr>,
    /// UDP datagrams per second per source to Herz's UDP ports (0: no limit).
    pub udp_rate: u64,
    /// UDP burst per source.
    pub udp_burst: u64,
    /// Sources that always pass (CIDRs): no limit applies to them.
    pub allow: Vec<Cidr>,
    /// Sources always dropped on Herz's ports (CIDRs).
    pub block: Vec<Cidr>,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            required: false,
            interfaces: vec!["lo".into()],
            pin_path: PathBuf::from(DEFAULT_PIN_PATH),
            xdp_mode: XdpAttachMode::Auto,
            extra_tcp_ports: Vec::new(),
            extra_udp_ports: Vec::new(),
            // Generous for subscribers that reconnect, far below what a flood sends.
            syn_rate: 100,
            syn_burst: 200,
            max_half_open: 64,
            max_established: 64,
            half_open_timeout_ms: 3000,
            autoblock_after: 500,
            autoblock_window_ms: 10_000,
            autoblock_ttl_secs: 300,
            global_syn_rate: 20_000,
            global_syn_burst: 40_000,
            feed_sources: Vec::new(),
            // Feeds are legitimately fast: no UDP limit unless configured.
            udp_rate: 0,
            udp_burst: 0,
            allow: Vec::new(),
            block: Vec::new(),
        }
    }
}

impl ShieldConfig {
    /// Checks the policy keys; on error returns the key at fault and why.
    pub fn validate_policy(&self) -> Result<(), (String, String)> {
        use herz_common::{MAX_BURST, MAX_RATE};
        let bad = |k: &str, m: String| Err((format!("shield.{k}"), m));
        for (rate_key, rate, burst_key, burst) in [
            ("syn_rate", self.syn_rate, "syn_burst", self.syn_burst),
            (
                "global_syn_rate",
                self.global_syn_rate,
                "global_syn_burst",
                self.global_syn_burst,
            ),
            ("udp_rate", self.udp_rate, "udp_burst", self.udp_burst),
        ] {
            if rate > MAX_RATE {
                return bad(
                    rate_key,
                    format!("{rate} is above the maximum of {MAX_RATE} per second"),
                );
            }
            if rate > 0 && !(1..=MAX_BURST).contains(&burst) {
                return bad(
                    burst_key,
                    format!("must be between 1 and {MAX_BURST} when {rate_key} is set"),
                );
            }
        }
        if self.half_open_timeout_ms == 0 {
            return bad("half_open_timeout_ms", "must be positive".into());
        }
        if self.autoblock_after > 0 {
            if self.autoblock_window_ms == 0 {
                return bad(
                    "autoblock_window_ms",
                    "must be positive when autoblock_after is set".into(),
                );
            }
            if self.autoblock_ttl_secs == 0 {
                return bad(
                    "autoblock_ttl_secs",
                    "must be positive when autoblock_after is set".into(),
                );
            }
        }
        for (key, list) in [
            ("allow", &self.allow),
            ("block", &self.block),
            ("feed_sources", &self.feed_sources),
        ] {
            if list.len() > herz_common::MAX_CIDRS as usize {
                return bad(key, format!("at most {} entries", herz_common::MAX_CIDRS));
            }
        }
        Ok(())
    }
}

pub use herz_core::session::{SlowConsumerPolicy, User};

use crate::cidr::Cidr;

/// Where the shield pins its maps unless `shield.pin_path` says otherwise.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/herz";

/// Where Herz accepts subscribers (SoupBinTCP).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    /// TCP listen address.
    pub listen: SocketAddr,
    /// Accepted logins.
    pub users: Vec<User>,
    /// Default slow-consumer policy.
    pub policy: SlowConsumerPolicy,
    /// Lag (messages behind the journal head) at which the policy fires.
    pub max_lag: u64,
    /// Bytes a subscriber may have queued in Herz before Herz stops filling its buffer (it then waits for
    /// the socket; the lag grows instead).
    pub output_buffer: usize,
    /// Send a heartbeat after this long without sending, milliseconds.
    pub heartbeat_ms: u64,
    /// Close a session that sent nothing for this long, milliseconds.
    pub timeout_ms: u64,
    /// Close a connection (subscriber or publisher) that has not logged in this long after it
    /// connected, milliseconds; heartbeats and Herz control packets do not extend it.
    pub login_timeout_ms: u64,
    /// TCP keepalive idle time, seconds (0 turns keepalive off).
    pub keepalive_secs: u64,
    /// TCP_USER_TIMEOUT, milliseconds: unacknowledged data older than this kills the connection.
    pub user_timeout_ms: u64,
    /// Most subscriber sessions at once; further connections are refused.
    pub max_sessions: usize,
    /// SO_SNDBUF of each session, bytes (0: the kernel's autotuning). Bounds kernel memory per slow
    /// subscriber; the journal holds the rest.
    pub send_buffer: usize,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7100)),
            // No built-in login: a configuration names its users (the first-run defaults, with no
            // configuration file, add the demo's).
            users: Vec::new(),
            policy: SlowConsumerPolicy::Disconnect,
            max_lag: 500_000,
            output_buffer: 256 * 1024,
            heartbeat_ms: 1000,
            timeout_ms: 15_000,
            login_timeout_ms: 5_000,
            keepalive_secs: 5,
            user_timeout_ms: 10_000,
            max_sessions: 1024,
            send_buffer: 0,
        }
    }
}

/// Where Herz accepts publishers (SoupBinTCP `U` packets, one Herz message each).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublisherConfig {
    /// TCP listen address.
    pub listen: SocketAddr,
    /// Accepted logins.
    pub users: Vec<User>,
    /// Most publisher sessions at once.
    pub max_sessions: usize,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7101)),
            users: Vec::new(),
            max_sessions: 64,
        }
    }
}

/// Admission of TCP connections (subscribers and publishers) per source IP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSection {
    /// Connections from one IP awaiting login at once; more are refused.
    pub max_pending_per_ip: u32,
    /// Connections from one IP at once (both endpoints); more are refused.
    pub max_sessions_per_ip: u32,
    /// Failed logins an IP may accumulate before its new connections are refused.
    pub max_failed_logins: u32,
    /// One failed login is forgiven per this many milliseconds.
    pub failed_login_forgive_ms: u64,
    /// Most source IPs tracked at once.
    pub max_tracked_ips: usize,
}

impl Default for AdmissionSection {
    fn default() -> Self {
        Self {
            max_pending_per_ip: 16,
            max_sessions_per_ip: 256,
            max_failed_logins: 5,
            failed_login_forgive_ms: 60_000,
            max_tracked_ips: 65_536,
        }
    }
}

/// The journal every egress reads from.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSection {
    /// Most messages retained (replay and re-request reach this far back). On disk: checked as
    /// each segment starts, whole segments removed.
    pub max_messages: usize,
    /// Most bytes retained: the memory ring, or the segment files on disk.
    pub max_bytes: usize,
    /// Largest message accepted from a publisher or feed.
    pub max_message_len: usize,
    /// Session name (10 characters at most). Unset: the journal directory's session when it
    /// holds one, else `HZ` + today's date (UTC) with a directory, or a name unique to this run
    /// without one (a restart without a directory must not reuse numbers).
    pub session: Option<Session>,
    /// Directory of the durable journal (segment files). Unset: memory only, lost at exit.
    pub dir: Option<PathBuf>,
    /// Record bytes per segment file (the file is about 1.25 times this, with its index).
    pub segment_bytes: usize,
    /// Remove segments whose newest message is older than this (unset: no age limit).
    pub max_age_secs: Option<u64>,
    /// When appended messages reach stable storage (see [`Durability`]).
    pub durability: Durability,
    /// `batch`: the longest time an appended message waits for its sync.
    pub sync_interval_ms: u64,
}

impl Default for JournalSection {
    fn default() -> Self {
        Self {
            max_messages: 4 << 20,
            max_bytes: 256 << 20,
            max_message_len: 1024,
            session: None,
            dir: None,
            segment_bytes: 64 << 20,
            max_age_secs: None,
            durability: Durability::Batch,
            sync_interval_ms: 10,
        }
    }
}

/// When the durable journal's appends reach stable storage. Every level survives a crash of the
/// daemon (the files are shared mappings: the kernel has every byte once it is appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Never synced by Herz: the kernel writes pages back on its own schedule. A power cut or
    /// kernel crash loses what was not yet written back (tens of seconds, typically).
    None,
    /// Synced every `sync_interval_ms`: a power cut loses at most that much.
    Batch,
    /// Synced before any message is sent on: a power cut loses nothing a subscriber saw. One
    /// sync per event-loop iteration that appended.
    Every,
}

/// An upstream MoldUDP64 feed, on one line or two redundant lines (A/B).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Line addresses: a multicast group:port to join, or a local unicast address:port to bind. One or two.
    pub lines: Vec<SocketAddr>,
    /// Local interface address for multicast joins.
    #[serde(default = "unspecified_v4")]
    pub interface: IpAddr,
    /// Upstream re-request server.
    #[serde(default)]
    pub rerequest: Option<SocketAddr>,
    /// Allowed source addresses of the feed's packets. Required unless every line is on loopback:
    /// anyone who can reach a line could otherwise inject packets into it.
    #[serde(default)]
    pub sources: Vec<IpAddr>,
    /// The feed's MoldUDP64 session; unset: adopted from the first packet.
    #[serde(default)]
    pub session: Option<Session>,
    /// The largest forward jump believed on one packet's word (see docs/SECURITY.md); 0: every
    /// jump is believed.
    #[serde(default = "default_max_jump")]
    pub max_jump: u64,
    /// Recover from sequence 1 on start instead of joining at the first packet seen.
    #[serde(default)]
    pub from_start: bool,
    /// Wait this long for the other line before re-requesting a gap, microseconds.
    #[serde(default = "default_rerequest_delay")]
    pub rerequest_delay_us: u64,
}

/// The optional keys at their defaults, as when the file leaves them out; `name` and `lines` are empty
/// and must be set.
impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            lines: Vec::new(),
            interface: unspecified_v4(),
            rerequest: None,
            sources: Vec::new(),
            session: None,
            max_jump: default_max_jump(),
            from_start: false,
            rerequest_delay_us: default_rerequest_delay(),
        }
    }
}

fn default_max_jump() -> u64 {
    1_000_000
}

fn unspecified_v4() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}

fn default_rerequest_delay() -> u64 {
    2000
}

/// A multicast egress channel: one MoldUDP64 session on a group.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Destination group:port.
    pub group: SocketAddr,
    /// Local interface address to send from.
    #[serde(default = "unspecified_v4")]
    pub interface: IpAddr,
    /// Multicast TTL.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// MoldUDP64 session name; defaults to the journal's (then only one unfiltered channel may use it).
    #[serde(default)]
    pub session: Option<Session>,
    /// Symbols carried (with `prefixes`; both empty: everything).
    #[serde(default)]
    pub symbols: Vec<Symbol>,
    /// Symbol prefixes carried.
    #[serde(default)]
    pub prefixes: Vec<Symbol>,
    /// Largest UDP payload.
    #[serde(default = "default_payload")]
    pub max_payload: usize,
    /// Send a partly filled packet after this long, microseconds.
    #[serde(default = "default_flush")]
    pub flush_us: u64,
}

/// The optional keys at their defaults, as when the file leaves them out; `name` is empty and `group`
/// unspecified: both must be set.
impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            group: SocketAddr::from(([0, 0, 0, 0], 0)),
            interface: unspecified_v4(),
            ttl: default_ttl(),
            session: None,
            symbols: Vec::new(),
            prefixes: Vec::new(),
            max_payload: default_payload(),
            flush_us: default_flush(),
        }
    }
}

fn default_ttl() -> u32 {
    1
}
fn default_payload() -> usize {
    1400
}
fn default_flush() -> u64 {
    200
}

/// The MoldUDP64 re-request server for the channels.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RerequestConfig {
    /// UDP listen address (unicast).
    pub listen: SocketAddr,
    /// Messages per second each requester may be sent.
    pub rate: u64,
    /// Burst per requester, messages.
    pub burst: u64,
    /// Messages per second sent to all requesters together: caps the server's total output
    /// whoever asks, including sources that rotate their addresses.
    pub global_rate: u64,
    /// Burst of the global budget, messages.
    pub global_burst: u64,
    /// A requester is an IP address (all its ports share one budget); `false`: an address and
    /// port (several receivers behind one address each get a budget, and so does every port a
    /// spoofer rotates through).
    pub per_ip: bool,
    /// Sources whose requests are answered (CIDRs). Empty: loopback and the local networks of the
    /// channels' interfaces (every local network for a channel on `0.0.0.0`), found when the
    /// server starts. Requests from other sources are dropped and counted.
    pub allow: Vec<Cidr>,
    /// A reply's size on the wire (IP and UDP headers included) is at most this many times the
    /// request's, except that a reply always carries the first message asked for.
    pub max_amplification: u32,
    /// Most messages answered per request.
    pub max_per_request: u16,
}

impl Default for RerequestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7102)),
            rate: 200_000,
            burst: 20_000,
            global_rate: 2_000_000,
            global_burst: 200_000,
            per_ip: true,
            allow: Vec::new(),
            max_amplification: 4,
            max_per_request: 1000,
        }
    }
}

/// The synthetic demo feed that makes a first run show ticks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Generate synthetic ticks inside the daemon, labelled in the logs. Off unless asked for (on in
    /// the first-run defaults, with no configuration file).
    pub enabled: bool,
    /// Messages per second.
    pub rate: u64,
    /// Number of symbols.
    pub symbols: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            rate: 1000,
            symbols: 50,
        }
    }
}

/// The control plane's HTTP endpoint: `/metrics`, `/healthz`, `/state`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Serve it at all.
    pub enabled: bool,
    /// Listen address; keep it on localhost or a management network.
    pub listen: SocketAddr,
    /// A file holding a bearer token (first line). When set, `/metrics` and `/state` answer only
    /// requests with `Authorization: Bearer <token>`, and `/state` shows peer addresses only to
    /// them; without it, `/state` never shows peer addresses. `/healthz` stays open (probes).
    pub token_file: Option<PathBuf>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
            token_file: None,
        }
    }
}

/// Runtime state files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory for the daemon's status file (read by `herz stats`).
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/run/herz"),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// Kernel shield.
    pub shield: ShieldConfig,
    /// Subscriber endpoint.
    pub subscribers: SubscriberConfig,
    /// Publisher endpoint.
    pub publishers: PublisherConfig,
    /// The journal.
    pub journal: JournalSection,
    /// Upstream MoldUDP64 feeds.
    pub feeds: Vec<FeedConfig>,
    /// Multicast egress channels.
    pub channels: Vec<ChannelConfig>,
    /// Re-request server for the channels.
    pub rerequest: RerequestConfig,
    /// Per-IP admission of TCP connections.
    pub admission: AdmissionSection,
    /// Synthetic demo feed.
    pub demo: DemoConfig,
    /// State files.
    pub state: StateConfig,
    /// Metrics and health endpoint.
    pub control: ControlConfig,
}

impl Config {
    /// The configuration of a first local run (`herz run` without `--config`): everything on
    /// loopback, the synthetic demo feed on, and the demo's well-known logins (`demo`/`demo` for
    /// subscribers, `feed`/`feed` for publishers). A configuration file starts from
    /// [`Config::default`] instead: no users, no demo.
    pub fn first_run() -> Self {
        let mut c = Config::default();
        c.demo.enabled = true;
        c.subscribers.users = vec![User {
            name: "demo".into(),
            password: "demo".into(),
            policy: None,
        }];
        c.publishers.users = vec![User {
            name: "feed".into(),
            password: "feed".into(),
            policy: None,
        }];
        c
    }

    /// Loads `path`, or the defaults when `path` is `None`, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => {
                let config = Config::first_run();
                config.validate("defaults")?;
                Ok(config)
            }
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                Self::from_toml(&text, &path.display().to_string())
            }
        }
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let mut message = inner.message().trim().replace('\n', "; ");
            if let Some(span) = inner.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                message = format!("{message} (line {line})");
            }
            ConfigError::Parse {
                origin: origin.into(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message,
            }
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The TCP ports the shield polices: Herz's listeners plus the configured extras.
    pub fn shield_tcp_ports(&self) -> BTreeSet<u16> {
        let mut ports: BTreeSet<u16> = self.shield.extra_tcp_ports.iter().copied().collect();
        ports.insert(self.subscribers.listen.port());
        ports.insert(self.publishers.listen.port());
        ports
    }

    /// This configuration with the network endpoints of `running` (listen addresses, feed lines,
    /// channels, re-request server): what a reload may apply while the sockets keep the addresses
    /// they were opened with.
    pub fn with_endpoints_of(&self, running: &Config) -> Config {
        let mut c = self.clone();
        c.subscribers.listen = running.subscribers.listen;
        c.publishers.listen = running.publishers.listen;
        c.feeds = running.feeds.clone();
        c.channels = running.channels.clone();
        c.rerequest.listen = running.rerequest.listen;
        c
    }

    /// The UDP ports the shield polices: feed lines, the re-request server, and the configured extras.
    pub fn shield_udp_ports(&self) -> BTreeSet<u16> {
        let mut ports: BTreeSet<u16> = self.shield.extra_udp_ports.iter().copied().collect();
        for f in &self.feeds {
            ports.extend(f.lines.iter().map(|l| l.port()));
        }
        if !self.channels.is_empty() {
            ports.insert(self.rerequest.listen.port());
        }
        ports
    }

    /// The session a new journal starts: the configured one; else, with a journal directory,
    /// `HZ` + today's UTC date (the directory then keeps it across restarts); else a name of
    /// this run alone (`H` + the start time in base 36), so that a restart of a memory journal
    /// never hands out the numbers of the previous run under the same name.
    pub fn fresh_session_name(&self, now: time::OffsetDateTime) -> Session {
        if let Some(s) = self.journal.session {
            return s;
        }
        let name = if self.journal.dir.is_some() {
            session_name_for(now.date())
        } else {
            run_session_name(now)
        };
        Session::new(&name).expect("10 ASCII characters make a session name")
    }
}

/// `H` + the time in milliseconds since the Unix epoch, 9 base-36 digits (good until the
/// year 5138): unique per start, ordered by time.
fn run_session_name(now: time::OffsetDateTime) -> String {
    let mut ms = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    let mut digits = [b'0'; 9];
    for d in digits.iter_mut().rev() {
        *d = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(ms % 36) as usize];
        ms /= 36;
    }
    format!("H{}", std::str::from_utf8(&digits).expect("ASCII"))
}

/// `HZ` + the date, e.g. `HZ20261203`.
fn session_name_for(date: time::Date) -> String {
    format!(
        "HZ{:04}{:02}{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

mod validate;

#[cfg(test)]
mod tests;
