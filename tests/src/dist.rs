//! Helpers for distributor tests: free ports, configs, deterministic messages, daemon start.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpListener},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use herz_client::soup::{Event, SoupPublisher, SoupSubscriber};
use herz_core::protocol::{
    moldudp64::Session,
    tick::{Quote, Symbol},
};
use herz_user::config::{Config, User};

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

/// The configuration of the test daemons, listening on `ep`, with their state under `dir`: shield and
/// demo off, a journal with room for every test's messages and subscribers allowed to lag that far
/// behind, one subscriber login (demo/demo), one publisher login (feed/feed).
pub fn config(ep: &Endpoints, dir: &Path) -> Config {
    let mut c = Config::default();
    c.shield.enabled = false;
    c.demo.enabled = false;
    c.state.dir = dir.join("state");
    c.journal.session = Some(Session::new("HZTEST0001").unwrap());
    c.journal.max_messages = 2_100_000;
    c.journal.max_bytes = 256 << 20;
    c.subscribers.listen = ep.subscribers;
    c.subscribers.max_lag = 2_100_000;
    c.subscribers.users = vec![user("tester", "t3st3r")];
    c.publishers.listen = ep.publishers;
    c.publishers.users = vec![user("pubber", "pubb3r")];
    c.rerequest.listen = ep.rerequest;
    c.control.listen = ep.control;
    c
}

/// A login with the endpoint's slow-consumer policy.
pub fn user(name: &str, password: &str) -> User {
    User {
        name: name.into(),
        password: password.into(),
        policy: None,
    }
}

/// A daemon started from [`config`] as changed by `edit` (add `channels` and `feeds`, change keys).
pub fn start(ep: &Endpoints, edit: impl FnOnce(&mut Config)) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(ep, dir.path());
    edit(&mut config);
    let path = dir.path().join("herz.toml");
    crate::write_config(&path, &config);
    (serve(&path), dir)
}

/// Starts a daemon on an existing config file and waits until it serves.
pub fn serve(path: &Path) -> Daemon {
    let mut d = Daemon::start(path);
    let log = d.log.clone();
    d.wait_for("the distributor to serve", Duration::from_secs(20), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("distributor serving")
    });
    d
}

/// Like [`start`], with the shield attached to `lo` and pinned at `pin_path`.
pub fn start_with_shield(
    ep: &Endpoints,
    pin_path: impl Into<PathBuf>,
    edit: impl FnOnce(&mut Config),
) -> (Daemon, tempfile::TempDir) {
    let pin_path = pin_path.into();
    start(ep, |c| {
        c.shield.enabled = true;
        c.shield.interfaces = vec!["lo".into()];
        c.shield.pin_path = pin_path;
        edit(c);
    })
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

/// How long a test client waits for a connection and login.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes messages `from..=to` as fast as possible, then logs out.
pub fn publish(addr: SocketAddr, from: u64, to: u64) {
    publish_paced(addr, from, to, None);
}

/// Publishes messages `from..=to`, at `rate` messages per second if given (else as fast as possible).
pub fn publish_paced(addr: SocketAddr, from: u64, to: u64, rate: Option<u64>) {
    let mut p = SoupPublisher::connect(addr, LOGIN_TIMEOUT).expect("publisher connects");
    p.login("pubber", "pubb3r").expect("publisher login");
    let start = Instant::now();
    for i in from..=to {
        p.send(&message(i)).expect("publish");
        if let Some(rate) = rate
            && (i - from) % 1000 == 999
        {
            p.flush().expect("flush");
            let due = Duration::from_secs_f64((i - from + 1) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    p.flush().expect("flush");
    p.logout().expect("logout");
}

/// Receives at least messages `from..=to` and checks each byte for byte; no skips allowed. Returns
/// the next sequence (messages that arrived in the same read past `to` are checked too).
pub fn receive_exact(sub: &mut SoupSubscriber, from: u64, to: u64, deadline: Duration) -> u64 {
    let start = Instant::now();
    let mut next = from;
    while next <= to {
        assert!(
            start.elapsed() < deadline,
            "timed out at seq {next} of {to}"
        );
        sub.poll(Some(Duration::from_millis(200)), |ev| match ev {
            Event::Message { seq, payload } => {
                assert_eq!(seq, next, "out of order or gap");
                assert_eq!(payload, &message(seq)[..], "payload of seq {seq}");
                next += 1;
            }
            Event::Heartbeat | Event::Debug(_) => {}
            other => panic!("unexpected {other:?} at seq {next}"),
        })
        .expect("subscriber poll");
    }
    next
}

#[cfg(test)]
mod tests {
    use herz_user::config::{ChannelConfig, FeedConfig};

    use super::*;

    /// What the tests write is what the daemon reads: the base config and its additions come back equal
    /// through the daemon's own loader.
    #[test]
    fn the_test_config_reads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&Endpoints::on(Ipv4Addr::LOCALHOST), dir.path());
        c.feeds.push(FeedConfig {
            name: "f".into(),
            lines: vec![SocketAddr::from(([127, 0, 0, 1], 7200))],
            ..Default::default()
        });
        c.channels.push(ChannelConfig {
            name: "all".into(),
            group: SocketAddr::from(([239, 18, 0, 1], 7201)),
            ..Default::default()
        });
        let path = dir.path().join("herz.toml");
        crate::write_config(&path, &c);
        assert_eq!(crate::read_config(&path), c);
    }

    /// The `Default` of a feed or a channel is what a file that leaves the optional keys out means.
    #[test]
    fn feed_and_channel_defaults_are_the_omitted_keys() {
        let c = Config::from_toml(
            "[[feeds]]\nname = \"f\"\nlines = [\"127.0.0.1:7200\"]\n\n\
             [[channels]]\nname = \"all\"\ngroup = \"239.18.0.1:7201\"\n",
            "minimal",
        )
        .unwrap();
        assert_eq!(
            c.feeds[0],
            FeedConfig {
                name: "f".into(),
                lines: vec![SocketAddr::from(([127, 0, 0, 1], 7200))],
                ..Default::default()
            }
        );
        assert_eq!(
            c.channels[0],
            ChannelConfig {
                name: "all".into(),
                group: SocketAddr::from(([239, 18, 0, 1], 7201)),
                ..Default::default()
            }
        );
    }
}
