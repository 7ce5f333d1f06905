//! Helpers for distributor tests: free ports, configs, deterministic messages, daemon start.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::PathBuf,
    time::Duration,
};

use herz_core::protocol::tick::{Quote, Symbol};

use crate::Daemon;

/// A TCP/UDP port free right now on loopback (the kernel's choice).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Symbols used by test traffic.
pub const SYMBOLS: [&str; 8] = [
    "AAPL", "MSFT", "BRK", "BRKB", "ESZ6", "NVDA", "TSLA", "AMZN",
];

/// The test message with sequence number `i` (1-based): a quote whose fields encode `i`, so any
/// misplaced, duplicated or corrupted byte is caught by comparing with this.
pub fn message(i: u64) -> [u8; herz_core::protocol::tick::QUOTE_LEN] {
    Quote {
        symbol: Symbol::new(SYMBOLS[(i % SYMBOLS.len() as u64) as usize]).unwrap(),
        timestamp_ns: i,
        bid_price: i as i64 * 3,
        bid_size: (i % 1000) as u32,
        ask_price: i as i64 * 3 + 1,
        ask_size: (i % 777) as u32,
    }
    .to_bytes()
}

/// The symbol of message `i`.
pub fn symbol_of(i: u64) -> &'static str {
    SYMBOLS[(i % SYMBOLS.len() as u64) as usize]
}

/// Endpoints of one test daemon.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// Subscriber listen address.
    pub subscribers: SocketAddr,
    /// Publisher listen address.
    pub publishers: SocketAddr,
    /// Re-request server.
    pub rerequest: SocketAddr,
}

impl Endpoints {
    /// Fresh ports on `ip`.
    pub fn on(ip: Ipv4Addr) -> Self {
        Endpoints {
            subscribers: SocketAddr::from((ip, free_port())),
            publishers: SocketAddr::from((ip, free_port())),
            rerequest: SocketAddr::from((ip, free_port())),
        }
    }
}

/// A daemon with the shield off and the demo off, listening on `ep`, plus `extra` TOML appended
/// (sections like `[[channels]]`, `[[feeds]]`, or keys for `[subscribers]` given in `subscribers`).
pub fn start(ep: &Endpoints, subscribers: &str, extra: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herz.toml");
    let toml = format!(
        r#"
[shield]
enabled = false

[demo]
enabled = false

[state]
dir = "{state}"

[journal]
session = "HZTEST0001"
max_messages = 2100000
max_bytes = 268435456

[subscribers]
listen = "{sub}"
{max_lag}
{subscribers}

[[subscribers.users]]
name = "demo"
password = "demo"

[publishers]
listen = "{publ}"

[[publishers.users]]
name = "feed"
password = "feed"

[rerequest]
listen = "{rr}"

{extra}
"#,
        state = dir.path().join("state").display(),
        sub = ep.subscribers,
        publ = ep.publishers,
        rr = ep.rerequest,
        max_lag = if subscribers.contains("max_lag") {
            ""
        } else {
            "max_lag = 2100000"
        },
    );
    std::fs::write(&config, toml).unwrap();
    let mut d = Daemon::start(&config);
    let log = d.log.clone();
    d.wait_for("the distributor to serve", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("distributor serving")
    });
    (d, dir)
}

/// Path of a daemon's config directory (for extra files).
pub fn dir_of(d: &Daemon) -> PathBuf {
    d.config.parent().unwrap().to_path_buf()
}
