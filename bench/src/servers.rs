//! The external servers under test: a `herz run` daemon and a `nats-server`, each configured for
//! one run in a scratch directory and stopped (SIGTERM, then SIGKILL) when dropped.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::{
    pubs::{Load, SESSION},
    recv::NatsConn,
    sys::{ChildGuard, free_tcp_port, free_udp_port},
};

/// Herz's multicast channel for a run.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSpec {
    /// Group and port.
    pub group: SocketAddrV4,
    /// `flush_us` of the channel.
    pub flush_us: u64,
}

/// A durable journal for a Herz daemon: segment files in `dir`.
#[derive(Debug, Clone)]
pub struct DurableJournal {
    /// `journal.dir` (created by the daemon; a restart on the same directory continues its
    /// session).
    pub dir: PathBuf,
    /// `journal.durability`: `none`, `batch` or `every`.
    pub durability: &'static str,
    /// `journal.segment_bytes`: record bytes per segment file.
    pub segment_bytes: u64,
}

/// Where and how a Herz daemon runs; the default is the loopback of the bench's namespace, shield
/// off.
#[derive(Debug, Clone)]
pub struct HerzOpts {
    /// Address the listeners bind (0.0.0.0: every interface of the namespace).
    pub bind: Ipv4Addr,
    /// Address clients connect to.
    pub connect: Ipv4Addr,
    /// Network namespace to run in (`/run/netns/NAME`), entered with setns only, so the daemon
    /// shares the bench's mounts (bpffs) and pins land where `herz stats` looks.
    pub netns: Option<&'static str>,
    /// The `[shield]` section; `None`: shield off.
    pub shield: Option<serde_json::Value>,
    /// Subscriber and publisher ports (`None`: free ports of the bench's namespace).
    pub ports: Option<(u16, u16)>,
    /// A durable journal; `None`: the memory journal.
    pub journal: Option<DurableJournal>,
}

impl Default for HerzOpts {
    fn default() -> Self {
        Self {
            bind: Ipv4Addr::LOCALHOST,
            connect: Ipv4Addr::LOCALHOST,
            netns: None,
            shield: None,
            ports: None,
            journal: None,
        }
    }
}

/// A running `herz run`.
#[derive(Debug)]
pub struct HerzDaemon {
    guard: ChildGuard,
    /// Subscriber endpoint.
    pub sub_addr: SocketAddr,
    /// Publisher endpoint.
    pub pub_addr: SocketAddr,
    /// The daemon's log.
    pub log: PathBuf,
}

impl HerzDaemon {
    /// Starts a daemon with the shield and the demo feed off, a journal that holds the whole run (no
    /// subscriber can fall off it: `max_lag` equals the journal size), and optionally one multicast
    /// channel on 127.0.0.1. The journal is in memory, or in segment files with `opts.journal`
    /// (retention then bounds files, not memory: room for the run and two segments more).
    pub fn start(
        bin: &Path,
        dir: &Path,
        subs: usize,
        load: &Load,
        channel: Option<ChannelSpec>,
        opts: &HerzOpts,
    ) -> anyhow::Result<Self> {
        let (sub_port, pub_port) = opts
            .ports
            .unwrap_or_else(|| (free_tcp_port(), free_tcp_port()));
        let sub_addr = SocketAddr::from((opts.connect, sub_port));
        let pub_addr = SocketAddr::from((opts.connect, pub_port));
        let sub_bind = SocketAddr::from((opts.bind, sub_port));
        let pub_bind = SocketAddr::from((opts.bind, pub_port));
        let rr_addr = SocketAddr::from((opts.bind, free_udp_port()));
        let max_messages = (load.n + 1024).max(65_536);
        let mut journal = json!({ "session": SESSION, "max_messages": max_messages });
        match &opts.journal {
            None => {
                journal["max_bytes"] =
                    json!((max_messages * load.size as u64 + (4 << 20)).max(16 << 20));
            }
            Some(j) => {
                // A segment file is about 1.25 × its record bytes; each record is the message and
                // a 4-byte CRC.
                let records = max_messages * (load.size as u64 + 4);
                let segments = records.div_ceil(j.segment_bytes) + 2;
                journal["dir"] = json!(j.dir);
                journal["segment_bytes"] = json!(j.segment_bytes);
                journal["max_bytes"] = json!(segments * j.segment_bytes * 2);
                journal["durability"] = json!(j.durability);
            }
        }
        // Built as data and written by serde, not assembled as text: a key or value cannot be
        // mistyped into another section.
        let mut config = json!({
            "log": { "format": "json" },
            "shield": opts.shield.clone().unwrap_or_else(|| json!({ "enabled": false })),
            "demo": { "enabled": false },
            "state": { "dir": dir.join("state") },
            "journal": journal,
            "subscribers": {
                "listen": sub_bind,
                "max_lag": max_messages,
                "max_sessions": subs + 16,
                "users": [{ "name": "bench", "password": "b3nch" }],
            },
            "publishers": {
                "listen": pub_bind,
                "users": [{ "name": "bpub", "password": "bpub3r" }],
            },
            "rerequest": { "listen": rr_addr },
        });
        if let Some(c) = channel {
            config["channels"] = json!([{
                "name": "bench",
                "group": c.group,
                "interface": "127.0.0.1",
                "flush_us": c.flush_us,
            }]);
        }
        let toml = toml::to_string(&toml::Value::try_from(&config)?)?;
        let config = dir.join("herz.toml");
        fs::write(&config, toml)?;
        let log = dir.join("herz.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--config", config.to_str().unwrap(), "run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?);
        if let Some(ns) = opts.netns {
            let f = fs::File::open(format!("/run/netns/{ns}"))
                .with_context(|| format!("opening namespace {ns}"))?;
            let fd = f.as_raw_fd();
            // SAFETY: setns(2) is async-signal-safe; `f` outlives the spawn (the fd is inherited).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let guard = ChildGuard::spawn(cmd, "herz")?;
            drop(f);
            return Self::wait_serving(guard, sub_addr, pub_addr, log);
        }
        let guard = ChildGuard::spawn(cmd, "herz")?;
        Self::wait_serving(guard, sub_addr, pub_addr, log)
    }

    fn wait_serving(
        mut guard: ChildGuard,
        sub_addr: SocketAddr,
        pub_addr: SocketAddr,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("distributor serving")
            {
                break;
            }
            if let Err(e) = guard.check_alive() {
                bail!(
                    "{e}; log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "herz did not start serving within 20 s; log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(HerzDaemon {
            guard,
            sub_addr,
            pub_addr,
            log,
        })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Stops the daemon: SIGTERM, up to `grace` to exit, then SIGKILL. Returns whether it exited
    /// on the SIGTERM.
    pub fn stop(mut self, grace: Duration) -> bool {
        self.guard.stop(grace)
    }

    /// The fields of the first JSON log line whose message is `message`, once the daemon wrote it.
    pub fn log_event(&self, message: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let log = fs::read_to_string(&self.log).ok()?;
        log.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let fields = v.as_object()?;
            (fields.get("message")?.as_str()? == message).then(|| fields.clone())
        })
    }

    /// Fails (with the end of the log) if the daemon died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.guard.check_alive().map_err(|e| {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            anyhow::anyhow!(
                "{e}; log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
    }
}

/// A running `nats-server` (core NATS, no JetStream).
#[derive(Debug)]
pub struct NatsServer {
    guard: ChildGuard,
    /// Client endpoint.
    pub addr: SocketAddr,
}

impl NatsServer {
    /// Starts nats-server on a free loopback port. Slow-consumer limits are raised so that a
    /// bounded run fits in its per-client buffers, as Herz's journal holds it: `max_pending` 1 GiB,
    /// `write_deadline` 60 s. A run that still trips them is reported with its loss.
    pub fn start(bin: &str, dir: &Path) -> anyhow::Result<Self> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()));
        let conf = dir.join("nats.conf");
        fs::write(
            &conf,
            format!(
                "# herz-bench: one run.\nlisten: \"{addr}\"\nmax_payload: 1048576\nmax_pending: 1073741824\nwrite_deadline: \"60s\"\nmax_connections: 4096\n"
            ),
        )?;
        let log = dir.join("nats.log");
        let mut cmd = Command::new(bin);
        cmd.args(["-c", conf.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?);
        let mut guard = ChildGuard::spawn(cmd, "nats-server")
            .context("is nats-server installed? (`cargo xtask bench` installs it)")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Err(e) = guard.check_alive() {
                bail!(
                    "{e}; log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if NatsConn::connect(addr, "bench-probe").is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server did not accept clients within 20 s; log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(NatsServer { guard, addr })
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Fails if the server died.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        self.guard.check_alive()
    }
}
