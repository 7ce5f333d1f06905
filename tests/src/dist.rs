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
    /// Control plane (metrics, health, state).
    pub control: SocketAddr,
}

impl Endpoints {
    /// Fresh ports on `ip`.
    pub fn on(ip: Ipv4Addr) -> Self {
        Endpoints {
            subscribers: SocketAddr::from((ip, free_port())),
            publishers: SocketAddr::from((ip, free_port())),
            rerequest: SocketAddr::from((ip, free_port())),
            control: SocketAddr::from(([127, 0, 0, 1], free_port())),
        }
    }
}

/// A daemon with the shield off and the demo off, listening on `ep`, plus `extra` TOML appended
/// (sections like `[[channels]]`, `[[feeds]]`, or keys for `[subscribers]` given in `subscribers`).
pub fn start(ep: &Endpoints, subscribers: &str, extra: &str) -> (Daemon, tempfile::TempDir) {
    start_config(
        ep,
        "[shield]\nenabled = false\n",
        subscribers,
        extra,
        JOURNAL,
    )
}

/// Like [`start`], with `journal` as the `[journal]` section's keys.
pub fn start_with_journal(
    ep: &Endpoints,
    journal: &str,
    extra: &str,
) -> (Daemon, tempfile::TempDir) {
    start_config(ep, "[shield]\nenabled = false\n", "", extra, journal)
}

/// The `[journal]` keys of the test daemons: room for every test's messages.
const JOURNAL: &str = "session = \"HZTEST0001\"\nmax_messages = 2100000\nmax_bytes = 268435456";

/// Like [`start`], with the shield attached to `lo` and pinned at `pin_path`.
pub fn start_with_shield(
    ep: &Endpoints,
    pin_path: &str,
    subscribers: &str,
    extra: &str,
) -> (Daemon, tempfile::TempDir) {
    start_config(
        ep,
        &format!("[shield]\ninterfaces = [\"lo\"]\npin_path = \"{pin_path}\"\n"),
        subscribers,
        extra,
        JOURNAL,
    )
}

fn start_config(
    ep: &Endpoints,
    shield: &str,
    subscribers: &str,
    extra: &str,
    journal: &str,
) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herz.toml");
    let toml = format!(
        r#"
{shield}

[demo]
enabled = false

[state]
dir = "{state}"

[journal]
{journal}

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

[control]
listen = "{control}"

{extra}
"#,
        state = dir.path().join("state").display(),
        sub = ep.subscribers,
        publ = ep.publishers,
        rr = ep.rerequest,
        control = ep.control,
        shield = shield,
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

/// GET `path` from the daemon's control endpoint: (status, body).
pub fn http_get(ep: &Endpoints, path: &str) -> (u16, String) {
    let url = format!("http://{}{path}", ep.control);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(&url).call().expect("control endpoint reachable");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// Scrapes `/metrics` and parses it with an independent Prometheus text parser.
pub fn scrape(ep: &Endpoints) -> prometheus_parse::Scrape {
    let (status, body) = http_get(ep, "/metrics");
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("valid Prometheus text")
}

/// The value of a sample with no labels (or the first with that name).
pub fn sample(s: &prometheus_parse::Scrape, name: &str) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    match sample.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{name} is not a scalar"),
    }
}

/// Path of a daemon's config directory (for extra files).
pub fn dir_of(d: &Daemon) -> PathBuf {
    d.config.parent().unwrap().to_path_buf()
}
