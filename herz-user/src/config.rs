//! The daemon's TOML configuration: defaults that serve a first local run, strict validation, and errors
//! that name the key at fault.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use serde::Deserialize;

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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter: a level, or per-target directives such as `info,herz::shield=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Deserialize)]
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
}

impl Default for ShieldConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            required: false,
            interfaces: vec!["lo".into()],
            pin_path: PathBuf::from(crate::shield::DEFAULT_PIN_PATH),
            xdp_mode: XdpAttachMode::Auto,
            extra_tcp_ports: Vec::new(),
            extra_udp_ports: Vec::new(),
        }
    }
}

/// Where Herz accepts subscribers (SoupBinTCP).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriberConfig {
    /// TCP listen address.
    pub listen: SocketAddr,
}

impl Default for SubscriberConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 7100)) }
    }
}

/// Where Herz accepts publishers (SoupBinTCP `U` packets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublisherConfig {
    /// TCP listen address.
    pub listen: SocketAddr,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 7101)) }
    }
}

/// Runtime state files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory for the daemon's status file (read by `herz stats`).
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("/run/herz") }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
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
    /// State files.
    pub state: StateConfig,
}

impl Config {
    /// Loads `path`, or the defaults when `path` is `None`, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            None => {
                let config = Config::default();
                config.validate("defaults")?;
                Ok(config)
            }
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.into(), source })?;
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
                key: if key == "." { "(top level)".into() } else { key },
                message,
            }
        })?;
        config.validate(origin)?;
        Ok(config)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.into(),
            key: key.into(),
            message,
        };
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("not a valid level or filter: {e}")))?;
        if self.shield.enabled && self.shield.interfaces.is_empty() {
            return Err(invalid("shield.interfaces", "must name at least one interface".into()));
        }
        let mut seen = BTreeSet::new();
        for (i, name) in self.shield.interfaces.iter().enumerate() {
            let key = format!("shield.interfaces[{i}]");
            if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
                return Err(invalid(&key, format!("`{name}` is not a valid interface name")));
            }
            if !seen.insert(name) {
                return Err(invalid(&key, format!("interface `{name}` is listed twice")));
            }
        }
        if !self.shield.pin_path.is_absolute() {
            return Err(invalid("shield.pin_path", "must be an absolute path under a bpffs mount".into()));
        }
        for (key, addr) in [
            ("subscribers.listen", self.subscribers.listen),
            ("publishers.listen", self.publishers.listen),
        ] {
            if addr.port() == 0 {
                return Err(invalid(key, format!("{addr}: port 0 is not allowed, name a fixed port")));
            }
            if let IpAddr::V4(v4) = addr.ip() {
                if v4.is_multicast() || v4.is_broadcast() {
                    return Err(invalid(key, format!("{addr}: not a unicast address")));
                }
            }
        }
        if self.subscribers.listen == self.publishers.listen {
            return Err(invalid(
                "publishers.listen",
                format!("{} is already subscribers.listen", self.publishers.listen),
            ));
        }
        for (key, ports) in [
            ("shield.extra_tcp_ports", &self.shield.extra_tcp_ports),
            ("shield.extra_udp_ports", &self.shield.extra_udp_ports),
        ] {
            if let Some(i) = ports.iter().position(|p| *p == 0) {
                return Err(invalid(&format!("{key}[{i}]"), "port 0 is not a port".into()));
            }
        }
        Ok(())
    }

    /// The TCP ports the shield polices: Herz's listeners plus the configured extras.
    pub fn shield_tcp_ports(&self) -> BTreeSet<u16> {
        let mut ports: BTreeSet<u16> = self.shield.extra_tcp_ports.iter().copied().collect();
        ports.insert(self.subscribers.listen.port());
        ports.insert(self.publishers.listen.port());
        ports
    }

    /// The UDP ports the shield polices.
    pub fn shield_udp_ports(&self) -> BTreeSet<u16> {
        self.shield.extra_udp_ports.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn defaults_validate() {
        let c = Config::load(None).unwrap();
        assert_eq!(c.shield.interfaces, vec!["lo".to_string()]);
        assert!(c.shield_tcp_ports().contains(&7100));
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_toml("", "empty").unwrap();
        assert_eq!(c.subscribers.listen, Config::default().subscribers.listen);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = err("[shield]\ninterfacez = [\"lo\"]\n");
        assert!(e.contains("shield.interfacez"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
        let e = err("[shieldd]\n");
        assert!(e.contains("shieldd"), "{e}");
    }

    #[test]
    fn bad_address_is_named() {
        let e = err("[subscribers]\nlisten = \"300.1.1.1:7100\"\n");
        assert!(e.contains("subscribers.listen"), "{e}");
        let e = err("[publishers]\nlisten = \"127.0.0.1:0\"\n");
        assert!(e.contains("publishers.listen") && e.contains("port 0"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = err("[shield]\ninterfaces = [\"lo\", \"lo\"]\n");
        assert!(e.contains("shield.interfaces[1]") && e.contains("twice"), "{e}");
        let e = err("[shield]\npin_path = \"relative\"\n");
        assert!(e.contains("shield.pin_path"), "{e}");
        let e = err("[shield]\nxdp_mode = \"turbo\"\n");
        assert!(e.contains("shield.xdp_mode"), "{e}");
        let e = err("[log]\nlevel = \"info,=[\"\n");
        assert!(e.contains("log.level"), "{e}");
        let e = err("[shield]\nextra_udp_ports = [7102, 0]\n");
        assert!(e.contains("shield.extra_udp_ports[1]"), "{e}");
        let e = err("[shield]\nenabled = \"yes\"\n");
        assert!(e.contains("shield.enabled"), "{e}");
    }
}
