//! `shield`: what Herz's kernel shield buys under a SYN flood, measured against no defence and an
//! nftables ruleset of the same intent.
//!
//! 1. **Detection**: a paced flood from one source; the time from the packet that crosses the
//!    source's limit (kernel timestamps of the attacker's frames, captured as they leave) to the
//!    first drop (the kernel timestamp the XDP program puts in its threshold event), to the
//!    auto-block, and to the daemon's log line.
//! 2. **Service under flood**: a paced stream from a publisher to subscribers (the latency run of the
//!    other scenarios) while a bounded max-rate flood from random spoofed sources hits the
//!    subscriber port: no flood / no defence (the kernel's SYN cookies) / nftables (per-source meter,
//!    global limit, synproxy) / Herz's shield. Delivered msgs/s and latency percentiles.
//! 3. **Kernel cost**: during the same floods, CPU time of the victim's receive thread per flood
//!    frame it took in, for both ways of injecting frames (see [`flood::Method`]).
//!
//! Network: [`topo`]. Every flood is bounded in packets and time.

mod cells;
mod detection;
pub mod flood;
mod nft;
mod report;
pub mod topo;

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

pub use self::report::{markdown, notes};
use self::{
    cells::*,
    detection::*,
    flood::{Bounds, FrameSpec, Method, Sent},
    nft::*,
    report::*,
    topo::Topo,
};
use crate::{
    pubs::Load,
    run::{Env, Latency, RunOpts, RunResult, System, run_once_with},
    scenarios::Plan,
    servers::{HerzDaemon, HerzOpts},
    sys::TempDir,
};

/// Sets a flag when dropped (stops a thread on every exit path).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The shield policy the scenario configures (Herz's defaults), and its nftables twin.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Policy {
    /// SYNs per second per source.
    pub syn_rate: u64,
    /// Per-source burst.
    pub syn_burst: u64,
    /// Most half-open handshakes per source.
    pub max_half_open: u64,
    /// Flood drops after which a source is auto-blocked.
    pub autoblock_after: u64,
    /// Window of `autoblock_after`, ms.
    pub autoblock_window_ms: u64,
    /// SYNs per second from all untrusted sources.
    pub global_syn_rate: u64,
    /// Global burst.
    pub global_syn_burst: u64,
}

const POLICY: Policy = Policy {
    syn_rate: 100,
    syn_burst: 200,
    max_half_open: 64,
    autoblock_after: 500,
    autoblock_window_ms: 10_000,
    global_syn_rate: 20_000,
    global_syn_burst: 40_000,
};

const PIN_PATH: &str = "/sys/fs/bpf/herz-bench";

/// How the victim defends itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Defense {
    /// The kernel alone (SYN cookies when the accept queue fills).
    None,
    /// nftables: per-source meter, global limit, synproxy.
    Nftables,
    /// Herz's shield (XDP + tc).
    Herz,
}

impl Defense {
    fn label(self) -> &'static str {
        match self {
            Defense::None => "no defence",
            Defense::Nftables => "nftables",
            Defense::Herz => "Herz shield",
        }
    }
}

/// One detection trial.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DetectionTrial {
    /// The limits in force.
    #[serde(default)]
    pub limits: String,
    /// The flooding source.
    pub source: String,
    /// SYNs the attacker sent / the capture saw.
    pub sent: u64,
    /// See `sent`.
    pub captured: u64,
    /// Index (0-based) of the first SYN the policy refuses, computed from the capture's timestamps
    /// with the policy's token bucket and half-open limit.
    pub crossing_index: Option<u64>,
    /// The rule the kernel reported.
    pub reason: Option<String>,
    /// Index of the SYN the kernel dropped first (the last captured before its drop timestamp).
    pub first_drop_index: Option<u64>,
    /// Crossing → first drop (kernel timestamps), µs.
    pub crossing_to_drop_us: Option<f64>,
    /// Crossing → auto-block (kernel timestamps), ms.
    pub crossing_to_autoblock_ms: Option<f64>,
    /// Crossing → the daemon's log line about it (wall clock), ms.
    pub crossing_to_log_ms: Option<f64>,
    /// SYNs from this source that passed the shield (its counters).
    pub passed: Option<u64>,
    /// Uncertainty of converting capture timestamps (CLOCK_REALTIME) to kernel time, ns.
    pub clock_uncertainty_ns: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// One run of a flood point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloodRun {
    /// The subscribers' run (delivered rate, latency, validity).
    pub service: RunResult,
    /// What the generator sent.
    pub flood: Sent,
    /// Frames the victim's veth took in during the flood.
    pub victim_rx: u64,
    /// Frames the victim's veth dropped because its receive ring was full.
    pub victim_ring_drops: u64,
    /// CPU time of the victim's receive thread during the flood, s.
    pub rx_cpu_s: f64,
    /// Wall time over which `rx_cpu_s` was counted, s.
    #[serde(default)]
    pub rx_wall_s: f64,
    /// `rx_cpu_s` per frame taken in, ns.
    pub ns_per_frame: Option<f64>,
    /// Frames the defence reports dropping (Herz: XDP drop counters; nftables: its rule counters).
    pub defense_drops: Option<u64>,
    /// Herz: average run time of its XDP program on the flood-facing veth, ns (kernel BPF stats).
    #[serde(default)]
    pub xdp_ns_per_run: Option<f64>,
    /// What went wrong around the run, if anything.
    pub error: Option<String>,
}

/// A (method, defence) point and its runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FloodPoint {
    /// How frames were injected (`None`: no flood).
    pub method: Option<Method>,
    /// Spoofed random sources (true) or one source.
    #[serde(default)]
    pub random_sources: bool,
    /// The defence.
    pub defense: Defense,
    /// Every run.
    pub runs: Vec<FloodRun>,
}

/// One flood with no stream: the victim's receive thread has its core to itself, so a flood it cannot
/// keep up with keeps it busy and its CPU per frame is the cost of the defence's path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CostRun {
    /// What the generator sent.
    pub flood: Sent,
    /// Frames the victim's veth took in.
    pub victim_rx: u64,
    /// CPU time of the victim's receive thread, s.
    pub rx_cpu_s: f64,
    /// Wall time over which `rx_cpu_s` was counted, s.
    #[serde(default)]
    pub rx_wall_s: f64,
    /// `rx_cpu_s` per frame taken in, ns.
    pub ns_per_frame: Option<f64>,
    /// Herz: average run time of its XDP program, ns.
    pub xdp_ns_per_run: Option<f64>,
    /// Frames the defence reports dropping.
    pub defense_drops: Option<u64>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// A (method, sources, defence) cost point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CostPoint {
    /// How frames were injected.
    pub method: Method,
    /// Spoofed random sources (true) or one source.
    pub random_sources: bool,
    /// The defence.
    pub defense: Defense,
    /// Every run.
    pub runs: Vec<CostRun>,
}

/// The scenario's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShieldReport {
    /// The policy.
    pub policy: Policy,
    /// Offered stream, msgs/s, and message size.
    pub stream_rate: u64,
    /// See `stream_rate`.
    pub stream_size: usize,
    /// Subscribers of the stream.
    pub subscribers: usize,
    /// Detection trials.
    pub detection: Vec<DetectionTrial>,
    /// Service under flood.
    pub flood: Vec<FloodPoint>,
    /// Kernel cost per flood frame, no stream.
    #[serde(default)]
    pub cost: Vec<CostPoint>,
    /// How it was measured.
    pub notes: Vec<String>,
    /// A failure that stopped the scenario early.
    pub error: Option<String>,
}

fn herz_stats(herz: &Path) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(herz)
        .args(["stats", "--json", "--top", "1000", "--pin-path", PIN_PATH])
        .output()
        .context("herz stats")?;
    if !out.status.success() {
        bail!(
            "herz stats: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn shield_config(p: &Policy) -> serde_json::Value {
    serde_json::json!({
        "enabled": true,
        "required": true,
        "interfaces": [topo::IF_VICTIM_A, topo::IF_VICTIM_C],
        "pin_path": PIN_PATH,
        "syn_rate": p.syn_rate,
        "syn_burst": p.syn_burst,
        "max_half_open": p.max_half_open,
        "autoblock_after": p.autoblock_after,
        "autoblock_window_ms": p.autoblock_window_ms,
        "global_syn_rate": p.global_syn_rate,
        "global_syn_burst": p.global_syn_burst,
    })
}

fn victim_opts(defense: Defense, policy: &Policy) -> HerzOpts {
    HerzOpts {
        bind: Ipv4Addr::UNSPECIFIED,
        connect: topo::VICTIM_C,
        netns: Some(topo::NS_VICTIM),
        shield: (defense == Defense::Herz).then(|| shield_config(policy)),
        ports: None,
        journal: None,
    }
}

// --- nftables -------------------------------------------------------------------------------------

// --- Service and cost under flood ---------------------------------------------------------------

/// Runs the scenario.
pub fn run(env: &Env, plan: &Plan) -> ShieldReport {
    let stream_rate = 50_000;
    let stream_size = 64;
    let mut report = ShieldReport {
        policy: POLICY,
        stream_rate,
        stream_size,
        subscribers: plan.latency_subs,
        detection: Vec::new(),
        flood: Vec::new(),
        cost: Vec::new(),
        notes: notes(),
        error: None,
    };
    if let Err(e) = run_inner(env, plan, &mut report) {
        eprintln!("herz-bench: shield: {e:#}");
        report.error = Some(format!("{e:#}"));
    }
    report
}

fn run_inner(env: &Env, plan: &Plan, report: &mut ShieldReport) -> anyhow::Result<()> {
    let topo = Arc::new(Topo::new().context("building the shield network")?);
    let _stats = BpfStats::enable();
    // Two rules: the half-open limit (Herz's default policy; tc keeps the count, XDP enforces it)
    // and the SYN token bucket alone (kept and enforced in XDP).
    let trials = if plan.quick { 2 } else { 5 };
    report.detection = detection(env, &topo, &POLICY, 1, trials)?;
    let bucket_only = Policy {
        max_half_open: 0,
        ..POLICY
    };
    report
        .detection
        .extend(detection(env, &topo, &bucket_only, 101, trials)?);
    let secs = plan.latency_secs;
    let load = Load {
        n: report.stream_rate * secs,
        size: report.stream_size,
        rate: Some(report.stream_rate),
        warmup: report.stream_rate / 5,
    };
    let mut cells = vec![(None, false, Defense::None)];
    // Max-rate floods with both injection methods. (Paced floods were tried: at moderate rates the
    // victim's receive thread wakes for every few frames and its wake-ups, not the defences, decide
    // its CPU, about 8 µs per frame at 50k SYN/s for every defence alike.)
    for m in [Method::XdpRedirect, Method::AfPacket] {
        for random in [true, false] {
            for d in [Defense::None, Defense::Nftables, Defense::Herz] {
                cells.push((Some(m), random, d));
            }
        }
    }
    let mut points: Vec<FloodPoint> = cells
        .iter()
        .map(|&(method, random_sources, defense)| FloodPoint {
            method,
            random_sources,
            defense,
            runs: Vec::new(),
        })
        .collect();
    if let Some(f) = &plan.shield_filter {
        points.retain(|p| cell_label(p).contains(f.as_str()));
    }
    let total = points.len() * plan.runs;
    let mut done = 0;
    for _ in 0..plan.runs {
        for p in points.iter_mut() {
            done += 1;
            let r = flood_run(
                env,
                &topo,
                p.method,
                p.random_sources,
                p.defense,
                report.subscribers,
                load,
                secs,
            );
            eprintln!(
                "  shield flood {done}/{total}: {} / {} / {}: {:.0} msgs/s delivered, p99 {} µs; flood {:.2} Mpps offered, {:.2} M frames in, {} ns/frame{}{}",
                p.method.map_or("no flood", |m| m.label()),
                sources_label(p),
                p.defense.label(),
                r.service.msgs_per_s,
                r.service
                    .latency
                    .map_or("–".into(), |l| format!("{:.0}", l.p99_us)),
                if r.flood.secs > 0.0 {
                    r.flood.packets as f64 / r.flood.secs / 1e6
                } else {
                    0.0
                },
                r.victim_rx as f64 / 1e6,
                r.ns_per_frame.map_or("–".into(), |v| format!("{v:.0}"))
                    + &r.xdp_ns_per_run
                        .map_or(String::new(), |v| format!(" (XDP {v:.0} ns)")),
                r.service
                    .invalid_reason
                    .as_deref()
                    .map(|e| format!("; invalid: {e}"))
                    .unwrap_or_default(),
                r.error
                    .as_deref()
                    .map(|e| format!("; error: {e}"))
                    .unwrap_or_default(),
            );
            p.runs.push(r);
        }
    }
    report.flood = points;

    let mut cost: Vec<CostPoint> = Vec::new();
    for m in [Method::XdpRedirect, Method::AfPacket] {
        for random in [false, true] {
            for d in [Defense::None, Defense::Nftables, Defense::Herz] {
                cost.push(CostPoint {
                    method: m,
                    random_sources: random,
                    defense: d,
                    runs: Vec::new(),
                });
            }
        }
    }
    if let Some(f) = &plan.shield_filter {
        cost.retain(|p| cost_label(p).contains(f.as_str()));
    }
    let cost_secs = if plan.quick { 2 } else { 3 };
    let total = cost.len() * plan.runs;
    let mut done = 0;
    for _ in 0..plan.runs {
        for p in cost.iter_mut() {
            done += 1;
            let r = cost_run(env, &topo, p.method, p.random_sources, p.defense, cost_secs);
            eprintln!(
                "  shield cost {done}/{total}: {}: {:.2} Mpps offered, {:.2} Mpps taken in, receive thread {:.0}% busy, {} ns/frame{}{}",
                cost_label(p),
                if r.flood.secs > 0.0 {
                    r.flood.packets as f64 / r.flood.secs / 1e6
                } else {
                    0.0
                },
                if r.flood.secs > 0.0 {
                    r.victim_rx as f64 / r.flood.secs / 1e6
                } else {
                    0.0
                },
                if r.flood.secs > 0.0 {
                    100.0 * r.rx_cpu_s / r.flood.secs
                } else {
                    0.0
                },
                r.ns_per_frame.map_or("–".into(), |v| format!("{v:.0}")),
                r.xdp_ns_per_run
                    .map_or(String::new(), |v| format!(" (XDP {v:.0} ns)")),
                r.error
                    .as_deref()
                    .map(|e| format!("; error: {e}"))
                    .unwrap_or_default(),
            );
            p.runs.push(r);
        }
    }
    report.cost = cost;
    Ok(())
}
