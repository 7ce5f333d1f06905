//! One measured run: start the system under test, connect N subscribers, start the sender, wait for
//! every subscriber to see every message (or give up at the time limit), read the server's CPU time,
//! tear everything down. Everything is measured from the subscriber side.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::{
    msg::{Checker, SubResult},
    pubs::{self, Load, PubCtl, PubMsg, PubStats},
    recv::{self, SubCtl, SubKind},
    servers::{ChannelSpec, DurableJournal, HerzDaemon, HerzOpts, NatsServer},
    sys::{CpuSource, TempDir, free_tcp_port, free_udp_port, fresh_group, mono_ns},
};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// Herz, SoupBinTCP subscribers.
    HerzTcp,
    /// Herz, one MoldUDP64 multicast channel.
    HerzMcast,
    /// nats-server core pub/sub.
    Nats,
    /// ZeroMQ XPUB → SUB (no broker).
    Zmq,
    /// The raw TCP ceiling: pre-framed SoupBinTCP bytes written to N sockets.
    RawTcp,
    /// The raw multicast ceiling: pre-built MoldUDP64 packets through sendmmsg.
    RawMcast,
    /// Herz, SoupBinTCP subscribers, durable journal (segment files) at `durability = "none"`.
    HerzTcpNone,
    /// The same at `durability = "batch"` (Herz's default level).
    HerzTcpBatch,
    /// The same at `durability = "every"`.
    HerzTcpEvery,
}

impl System {
    /// Every system, in table order.
    pub const ALL: [System; 9] = [
        System::HerzTcp,
        System::HerzMcast,
        System::Nats,
        System::Zmq,
        System::RawTcp,
        System::RawMcast,
        System::HerzTcpNone,
        System::HerzTcpBatch,
        System::HerzTcpEvery,
    ];

    /// Short name used in tables, JSON and plots.
    pub fn label(self) -> &'static str {
        match self {
            System::HerzTcp => "herz-tcp",
            System::HerzMcast => "herz-mcast",
            System::Nats => "nats",
            System::Zmq => "zmq",
            System::RawTcp => "raw-tcp",
            System::RawMcast => "raw-mcast",
            System::HerzTcpNone => "herz-tcp-none",
            System::HerzTcpBatch => "herz-tcp-batch",
            System::HerzTcpEvery => "herz-tcp-every",
        }
    }

    /// The `journal.durability` of a Herz system with a durable journal; `None`: the memory
    /// journal (or not Herz).
    pub fn durability(self) -> Option<&'static str> {
        match self {
            System::HerzTcpNone => Some("none"),
            System::HerzTcpBatch => Some("batch"),
            System::HerzTcpEvery => Some("every"),
            _ => None,
        }
    }

    /// Whether delivery is multicast (loss is possible by design and reported, not recovered).
    pub fn multicast(self) -> bool {
        matches!(self, System::HerzMcast | System::RawMcast)
    }

    /// What "server CPU" means for this system.
    pub fn server_note(self) -> &'static str {
        match self {
            System::HerzTcp | System::HerzMcast => {
                "the herz daemon process (ingest from the publisher + fan-out)"
            }
            System::HerzTcpNone | System::HerzTcpBatch | System::HerzTcpEvery => {
                "the herz daemon process (ingest from the publisher + journal files + fan-out)"
            }
            System::Nats => "the nats-server process (ingest from the publisher + fan-out)",
            System::Zmq => {
                "no broker: the bench's publisher thread plus its libzmq context's I/O threads"
            }
            System::RawTcp => "the bench's raw server thread (writes only, no ingest)",
            System::RawMcast => "the bench's raw sender thread (sendmmsg only, no ingest)",
        }
    }
}

/// Settings shared by every run.
#[derive(Debug, Clone)]
pub struct Env {
    /// The `herz` binary.
    pub herz_bin: PathBuf,
    /// The `nats-server` binary.
    pub nats_bin: String,
    /// Scratch space for configs and logs.
    pub tmp: PathBuf,
    /// Time limit of one run's delivery.
    pub time_limit: Duration,
    /// `flush_us` of Herz's multicast channel.
    pub herz_flush_us: u64,
    /// Print progress details.
    pub verbose: bool,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Samples.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// System label.
    pub system: System,
    /// Subscribers.
    pub subscribers: usize,
    /// Message size, bytes.
    pub size: usize,
    /// Messages published.
    pub n: u64,
    /// Offered rate (paced runs).
    pub rate: Option<u64>,
    /// Every subscriber got every message, in order, intact.
    pub valid: bool,
    /// Why not.
    pub invalid_reason: Option<String>,
    /// Messages delivered, all subscribers together.
    pub delivered: u64,
    /// Messages lost, all subscribers together.
    pub lost: u64,
    /// `lost / (n × subscribers)`, percent.
    pub loss_pct: f64,
    /// Integrity errors (order, duplicates, corruption, skips).
    pub errors: u64,
    /// Messages received more than once, all subscribers together (multicast: discarded by sequence
    /// number and not an error; otherwise also counted in `errors`).
    pub duplicates: u64,
    /// From the start signal to the last message seen by the last subscriber, seconds.
    pub elapsed_s: f64,
    /// Delivered messages per second, all subscribers together.
    pub msgs_per_s: f64,
    /// Mean of each subscriber's own rate (its messages / its own elapsed time).
    pub per_sub_msgs_per_s: f64,
    /// The slowest subscriber's rate.
    pub min_sub_msgs_per_s: f64,
    /// CPU time of the server (see `cpu_source`), seconds, over the measured window.
    pub server_cpu_s: f64,
    /// Server CPU seconds per million messages delivered.
    pub cpu_s_per_million: f64,
    /// Whose CPU was counted.
    pub cpu_source: String,
    /// What the sender did.
    pub publisher: PubStats,
    /// Paced runs: achieved publish rate.
    pub publish_rate: f64,
    /// Paced runs: one-way latency over all subscribers.
    pub latency: Option<Latency>,
    /// Per-subscriber results.
    pub subs: Vec<SubResult>,
}

impl RunResult {
    /// A run that failed before it measured anything.
    pub fn failed(sys: System, subs: usize, load: &Load, why: String) -> Self {
        RunResult {
            system: sys,
            subscribers: subs,
            size: load.size,
            n: load.n,
            rate: load.rate,
            valid: false,
            invalid_reason: Some(why),
            delivered: 0,
            lost: 0,
            loss_pct: 0.0,
            errors: 0,
            duplicates: 0,
            elapsed_s: 0.0,
            msgs_per_s: 0.0,
            per_sub_msgs_per_s: 0.0,
            min_sub_msgs_per_s: 0.0,
            server_cpu_s: 0.0,
            cpu_s_per_million: 0.0,
            cpu_source: String::new(),
            publisher: PubStats::default(),
            publish_rate: 0.0,
            latency: None,
            subs: Vec::new(),
        }
    }
}

/// Sets the stop flag when dropped: threads end on every exit path, panics included.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Variations of a run for the shield scenarios.
#[derive(Default)]
pub struct RunOpts<'a> {
    /// Where the Herz daemon runs.
    pub herz: HerzOpts,
    /// Called once every subscriber is connected, just before the publisher starts (e.g. to start
    /// a flood).
    pub before_go: Option<&'a mut dyn FnMut() -> anyhow::Result<()>>,
    /// Called once every subscriber has finished, while the server still runs.
    pub after_subs: Option<&'a mut dyn FnMut()>,
    /// Set at the end of the run to whether the Herz daemon exited on its SIGTERM (rather than
    /// being killed after the grace period).
    pub herz_stopped: Option<&'a std::cell::Cell<bool>>,
}

/// Runs one measurement; never panics, a failure becomes an invalid result with its reason.
pub fn run_once(env: &Env, sys: System, subs: usize, load: Load) -> RunResult {
    run_once_with(env, sys, subs, load, RunOpts::default())
}

/// [`run_once`] with [`RunOpts`].
pub fn run_once_with(
    env: &Env,
    sys: System,
    subs: usize,
    load: Load,
    opts: RunOpts<'_>,
) -> RunResult {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_inner(env, sys, subs, load, opts)
    }));
    match r {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => RunResult::failed(sys, subs, &load, format!("{e:#}")),
        Err(p) => {
            let what = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            RunResult::failed(sys, subs, &load, format!("panic: {what}"))
        }
    }
}

fn wait_msg(
    rx: &Receiver<PubMsg>,
    what: &str,
    timeout: Duration,
    mut accept: impl FnMut(PubMsg) -> Option<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(PubMsg::Failed(e)) => bail!("sender failed while waiting for {what}: {e}"),
            Ok(m) => {
                if let Some(r) = accept(m) {
                    return r;
                }
            }
            Err(RecvTimeoutError::Timeout) => bail!("timed out waiting for {what}"),
            Err(RecvTimeoutError::Disconnected) => bail!("sender thread ended before {what}"),
        }
    }
}

enum Server {
    None,
    Herz(HerzDaemon),
    Nats(NatsServer),
}

fn run_inner(
    env: &Env,
    sys: System,
    subs: usize,
    load: Load,
    mut opts: RunOpts<'_>,
) -> anyhow::Result<RunResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let pub_done = Arc::new(AtomicBool::new(false));
    let tmp = TempDir::new(&env.tmp)?;
    let (pub_tx, pub_rx) = mpsc::channel::<PubMsg>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let ctl = PubCtl {
        tx: pub_tx,
        go: go_rx,
        stop: stop.clone(),
        deadline: Instant::now() + env.time_limit + Duration::from_secs(40),
    };
    let group = SocketAddrV4::new(fresh_group(), free_udp_port());
    let paced = load.rate.is_some();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| -> JoinHandle<()> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .expect("spawning the sender thread")
    };

    // The server side and the sender.
    let mut server = Server::None;
    let (kind, sender) = match sys {
        System::HerzTcp
        | System::HerzMcast
        | System::HerzTcpNone
        | System::HerzTcpBatch
        | System::HerzTcpEvery => {
            let channel = (sys == System::HerzMcast).then_some(ChannelSpec {
                group,
                flush_us: env.herz_flush_us,
            });
            let mut herz = opts.herz.clone();
            if let Some(durability) = sys.durability()
                && herz.journal.is_none()
            {
                // In the run's scratch directory: removed with it.
                herz.journal = Some(DurableJournal {
                    dir: tmp.0.join("journal"),
                    durability,
                    segment_bytes: crate::journal::SEGMENT_BYTES,
                });
            }
            let d = HerzDaemon::start(&env.herz_bin, &tmp.0, subs, &load, channel, &herz)?;
            let (sub_addr, pub_addr) = (d.sub_addr, d.pub_addr);
            server = Server::Herz(d);
            let kind = if sys == System::HerzMcast {
                SubKind::Mold(group)
            } else {
                SubKind::Soup(sub_addr)
            };
            (
                kind,
                spawn(
                    "bench-pub",
                    Box::new(move || pubs::herz(pub_addr, load, ctl)),
                ),
            )
        }
        System::Nats => {
            let s = NatsServer::start(&env.nats_bin, &tmp.0)?;
            let addr = s.addr;
            server = Server::Nats(s);
            (
                SubKind::Nats(addr),
                spawn("bench-pub", Box::new(move || pubs::nats(addr, load, ctl))),
            )
        }
        System::Zmq => {
            let port = free_tcp_port();
            (
                SubKind::Zmq(format!("tcp://127.0.0.1:{port}")),
                spawn(
                    "bench-zmq-pub",
                    Box::new(move || pubs::zmq_pub(port, subs, load, ctl)),
                ),
            )
        }
        System::RawTcp => {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
            let addr: SocketAddr = listener.local_addr()?;
            let stream = (!paced).then(|| Arc::new(pubs::soup_stream(&load)));
            (
                SubKind::Soup(addr),
                spawn(
                    "bench-raw-tcp",
                    Box::new(move || pubs::raw_tcp(listener, subs, load, stream, ctl)),
                ),
            )
        }
        System::RawMcast => {
            let packets = (!paced).then(|| Arc::new(pubs::mold_packets(&load)));
            (
                SubKind::Mold(group),
                spawn(
                    "bench-raw-mcast",
                    Box::new(move || pubs::raw_mcast(group, load, packets, ctl)),
                ),
            )
        }
    };

    let setup_timeout = Duration::from_secs(30);
    let mut tids = Vec::new();
    wait_msg(
        &pub_rx,
        "the sender to be ready",
        setup_timeout,
        |m| match m {
            PubMsg::Ready(t) => {
                tids = t;
                Some(Ok(()))
            }
            _ => None,
        },
    )?;
    let cpu = match &server {
        Server::Herz(d) => CpuSource::Process(d.pid()),
        Server::Nats(s) => CpuSource::Process(s.pid()),
        Server::None => CpuSource::Threads(tids),
    };

    // Subscribers.
    let sub_ctl = SubCtl {
        stop: stop.clone(),
        pub_done: pub_done.clone(),
        deadline: Instant::now() + setup_timeout + env.time_limit,
        idle: if sys.multicast() {
            Duration::from_millis(1500)
        } else {
            Duration::from_secs(3)
        },
    };
    let (rtx, rrx) = mpsc::channel();
    let handles: Vec<JoinHandle<SubResult>> = (0..subs)
        .map(|_| {
            recv::spawn(
                kind.clone(),
                sub_ctl.clone(),
                Checker::new(load.n, load.size, paced, load.warmup, sys.multicast()),
                rtx.clone(),
            )
        })
        .collect();
    for i in 0..subs {
        match rrx.recv_timeout(setup_timeout) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!("subscriber {i} of {subs}: {e}"),
            Err(_) => bail!(
                "subscriber {} of {subs} not ready within {setup_timeout:?}",
                i + 1
            ),
        }
    }
    wait_msg(
        &pub_rx,
        "the sender to see every subscriber",
        setup_timeout,
        |m| matches!(m, PubMsg::Armed).then_some(Ok(())),
    )?;
    if sys.multicast() {
        // Group joins are synchronous, but let the first heartbeat or stray packet settle.
        std::thread::sleep(Duration::from_millis(20));
    }

    if let Some(f) = opts.before_go.as_mut() {
        f()?;
    }

    // Measure.
    let cpu0 = cpu.read_ns().context("reading server CPU time")?;
    let t0 = mono_ns();
    go_tx.send(()).ok();
    let mut stats = PubStats::default();
    let mut pub_error = None;
    let pub_wait = wait_msg(
        &pub_rx,
        "the sender to finish",
        env.time_limit + setup_timeout,
        |m| match m {
            PubMsg::Done(s) => {
                stats = s;
                Some(Ok(()))
            }
            _ => None,
        },
    );
    if let Err(e) = pub_wait {
        pub_error = Some(format!("{e:#}"));
    }
    pub_done.store(true, Ordering::Relaxed);
    let results: Vec<SubResult> = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| SubResult {
                stopped: Some("subscriber thread panicked".into()),
                lost: load.n,
                ..SubResult::default()
            })
        })
        .collect();
    let cpu1 = cpu.read_ns().context("reading server CPU time")?;
    if let Some(f) = opts.after_subs.as_mut() {
        f();
    }
    let mut server_error = None;
    match &mut server {
        Server::Herz(d) => server_error = d.check_alive().err().map(|e| format!("{e:#}")),
        Server::Nats(s) => server_error = s.check_alive().err().map(|e| format!("{e:#}")),
        Server::None => {}
    }
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    match server {
        Server::Herz(d) => {
            let clean = d.stop(Duration::from_secs(3));
            if let Some(c) = opts.herz_stopped {
                c.set(clean);
            }
        }
        other => drop(other),
    }

    // Figures.
    let delivered: u64 = results.iter().map(|r| r.received).sum();
    let lost: u64 = results.iter().map(|r| r.lost).sum();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let duplicates: u64 = results.iter().map(|r| r.duplicates).sum();
    let last = results
        .iter()
        .map(|r| r.last_ns)
        .max()
        .unwrap_or(t0)
        .max(t0);
    let elapsed_s = (last - t0) as f64 / 1e9;
    let rates: Vec<f64> = results
        .iter()
        .map(|r| {
            if r.last_ns > t0 {
                r.received as f64 / ((r.last_ns - t0) as f64 / 1e9)
            } else {
                0.0
            }
        })
        .collect();
    let server_cpu_s = cpu1.saturating_sub(cpu0) as f64 / 1e9;
    let mut hist: Option<Histogram<u64>> = None;
    for r in &results {
        if let Some(h) = &r.hist {
            match &mut hist {
                None => hist = Some(h.clone()),
                Some(m) => m.add(h).ok().unwrap_or(()),
            }
        }
    }
    let mut reasons = Vec::new();
    if let Some(e) = pub_error {
        reasons.push(format!("sender: {e}"));
    }
    if let Some(e) = server_error {
        reasons.push(format!("server: {e}"));
    }
    if lost > 0 {
        reasons.push(format!(
            "{lost} of {} messages lost ({:.3}%)",
            load.n * subs as u64,
            100.0 * lost as f64 / (load.n * subs as u64) as f64
        ));
    }
    if errors > 0 {
        let first = results
            .iter()
            .find_map(|r| r.first_error.clone())
            .unwrap_or_default();
        let misnumbered: u64 = results.iter().map(|r| r.misnumbered).sum();
        reasons.push(format!(
            "{errors} integrity errors ({misnumbered} misnumbered; first: {first})"
        ));
    }
    if let Some(s) = results.iter().find_map(|r| r.stopped.clone()) {
        reasons.push(format!("a subscriber stopped early: {s}"));
    }
    let publish_rate = if stats.end_ns > stats.start_ns {
        stats.sent as f64 / ((stats.end_ns - stats.start_ns) as f64 / 1e9)
    } else {
        0.0
    };
    Ok(RunResult {
        system: sys,
        subscribers: subs,
        size: load.size,
        n: load.n,
        rate: load.rate,
        valid: reasons.is_empty(),
        invalid_reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
        delivered,
        lost,
        loss_pct: 100.0 * lost as f64 / (load.n * subs as u64).max(1) as f64,
        errors,
        duplicates,
        elapsed_s,
        msgs_per_s: if elapsed_s > 0.0 {
            delivered as f64 / elapsed_s
        } else {
            0.0
        },
        per_sub_msgs_per_s: rates.iter().sum::<f64>() / rates.len().max(1) as f64,
        min_sub_msgs_per_s: rates
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .min(f64::MAX),
        server_cpu_s,
        cpu_s_per_million: if delivered > 0 {
            server_cpu_s / (delivered as f64 / 1e6)
        } else {
            0.0
        },
        cpu_source: format!("{}: {}", sys.server_note(), cpu.describe()),
        publisher: stats,
        publish_rate,
        latency: hist.as_ref().map(Latency::of),
        subs: results,
    })
}
