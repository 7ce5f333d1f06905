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

pub mod flood;
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

use crate::{
    pubs::Load,
    run::{Env, Latency, RunOpts, RunResult, System, run_once_with},
    scenarios::Plan,
    servers::{HerzDaemon, HerzOpts},
    sys::TempDir,
};
use flood::{Bounds, FrameSpec, Method, Sent};
use topo::Topo;

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

fn shield_toml(p: &Policy) -> String {
    format!(
        r#"[shield]
enabled = true
required = true
interfaces = ["{a}", "{c}"]
pin_path = "{PIN_PATH}"
syn_rate = {}
syn_burst = {}
max_half_open = {}
autoblock_after = {}
autoblock_window_ms = {}
global_syn_rate = {}
global_syn_burst = {}
"#,
        p.syn_rate,
        p.syn_burst,
        p.max_half_open,
        p.autoblock_after,
        p.autoblock_window_ms,
        p.global_syn_rate,
        p.global_syn_burst,
        a = topo::IF_VICTIM_A,
        c = topo::IF_VICTIM_C,
    )
}

fn victim_opts(defense: Defense, policy: &Policy) -> HerzOpts {
    HerzOpts {
        bind: Ipv4Addr::UNSPECIFIED,
        connect: topo::VICTIM_C,
        netns: Some(topo::NS_VICTIM),
        shield: (defense == Defense::Herz).then(|| shield_toml(policy)),
        ports: None,
    }
}

// --- nftables -------------------------------------------------------------------------------------

/// The nftables ruleset of the same intent as the shield's policy: per-source SYN rate (a meter),
/// a global SYN limit, and synproxy answering SYNs with cookies before conntrack or the listener
/// see them. Applied in the victim's namespace only.
fn nft_ruleset(ports: &[u16], p: &Policy) -> String {
    let ports = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"table inet herzbench {{
    chain prerouting {{
        type filter hook prerouting priority raw; policy accept;
        tcp dport {{ {ports} }} tcp flags & (fin|syn|rst|ack) == syn meter herz_syn_src size 65535 {{ ip saddr limit rate over {rate}/second burst {burst} packets }} counter drop
        tcp dport {{ {ports} }} tcp flags & (fin|syn|rst|ack) == syn limit rate over {grate}/second burst {gburst} packets counter drop
        tcp dport {{ {ports} }} tcp flags & (fin|syn|rst|ack) == syn notrack
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        tcp dport {{ {ports} }} ct state invalid,untracked synproxy mss 1460 wscale 7 timestamp sack-perm
        tcp dport {{ {ports} }} ct state invalid counter drop
    }}
}}
"#,
        rate = p.syn_rate,
        burst = p.syn_burst,
        grate = p.global_syn_rate,
        gburst = p.global_syn_burst,
    )
}

fn nft_apply(ruleset: &str) -> anyhow::Result<()> {
    topo::ns_exec(
        topo::NS_VICTIM,
        &["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0"],
    )?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", topo::NS_VICTIM, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft")?;
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(ruleset.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f: {}\nruleset:\n{ruleset}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn nft_remove() {
    let _ = topo::ns_exec(
        topo::NS_VICTIM,
        &["nft", "delete", "table", "inet", "herzbench"],
    );
}

/// Packets counted by the ruleset's drop rules.
fn nft_drops() -> anyhow::Result<u64> {
    let j: serde_json::Value = serde_json::from_str(&topo::ns_exec(
        topo::NS_VICTIM,
        &["nft", "-j", "list", "table", "inet", "herzbench"],
    )?)?;
    let mut total = 0;
    for item in j["nftables"].as_array().into_iter().flatten() {
        for e in item["rule"]["expr"].as_array().into_iter().flatten() {
            if let Some(c) = e.get("counter") {
                total += c["packets"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

// --- Detection -----------------------------------------------------------------------------------

/// The policy's first refusal among SYNs sent at `times` (ns): the token bucket (full at the first
/// SYN) or the half-open limit (every passed SYN stays half-open: the attacker never completes).
fn crossing(times: &[u64], p: &Policy) -> Option<usize> {
    const NS: u128 = 1_000_000_000;
    let cap = u128::from(p.syn_burst) * NS;
    let mut units = cap;
    let mut last = *times.first()?;
    // Every SYN before the first refusal passed.
    for (passed, &t) in times.iter().enumerate() {
        units = (units + u128::from(t.saturating_sub(last)) * u128::from(p.syn_rate)).min(cap);
        last = t;
        if units < NS || (p.max_half_open > 0 && passed as u64 >= p.max_half_open) {
            return Some(passed);
        }
        units -= NS;
    }
    None
}

/// Parses the RFC 3339 UTC timestamps of Herz's JSON log (`2026-11-26T08:50:00.123456Z`) into ns
/// since the epoch.
fn parse_utc_ns(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<u64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let digits: String = frac.chars().take(9).collect();
    let ns_frac = digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as u64 * 86_400_000_000_000 + (h * 3600 + mi * 60 + sec) * 1_000_000_000 + ns_frac)
}

/// The daemon's log line for `event` about `source`: (kernel_ns, wall-clock ns, reason).
fn find_event(log: &str, event: &str, source: &str) -> Option<(u64, u64, String)> {
    log.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        // Herz's JSON lines carry the event's fields at the top level.
        let f = if v.get("fields").is_some() {
            &v["fields"]
        } else {
            &v
        };
        if f["event"] != event || f["source"] != source {
            return None;
        }
        Some((
            f["kernel_ns"].as_u64()?,
            parse_utc_ns(v["timestamp"].as_str()?)?,
            f["reason"].as_str().unwrap_or("").to_string(),
        ))
    })
}

#[allow(clippy::too_many_arguments)]
fn detection_trial(
    policy: &Policy,
    topo: &Topo,
    log: &Path,
    herz: &Path,
    dport: u16,
    k: u8,
    rate: u64,
    count: u64,
) -> anyhow::Result<DetectionTrial> {
    let source = Ipv4Addr::new(198, 19, 250, k);
    let spec = FrameSpec {
        dst_mac: topo.victim_mac,
        src_mac: topo.attacker_mac,
        src: source,
        dst: topo::VICTIM_A,
        dport,
        random_source: false,
    };
    let ifindex = topo.attacker_ifindex;
    let gen_cpu = topo.cpus.map(|(_, g)| g);
    let stop = Arc::new(AtomicBool::new(false));
    let (cap_tx, cap_rx) = std::sync::mpsc::channel();
    let cap_stop = stop.clone();
    let capture = topo::spawn_in(topo::NS_ATTACKER, "bench-capture", move || {
        let c = flood::Capture::open(ifindex, dport)?;
        let _ = cap_tx.send(());
        c.collect(cap_stop)
    });
    // Whatever happens below, the capture stops with this trial.
    let _capture_stop = StopOnDrop(stop.clone());
    cap_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow::anyhow!("the capture did not start"))?;
    // Enabling receive timestamps takes effect asynchronously (a static key flipped by a workqueue):
    // give it a moment, so that the first frames carry the time they left.
    std::thread::sleep(Duration::from_millis(50));
    let gen_stop = Arc::new(AtomicBool::new(false));
    let gs = gen_stop.clone();
    let generator = topo::spawn_in(topo::NS_ATTACKER, "bench-syn-gen", move || {
        if let Some(cpu) = gen_cpu {
            topo::pin(0, cpu)?;
        }
        crate::sys::precise_timers();
        flood::af_packet(
            ifindex,
            &spec,
            Bounds {
                max_packets: count,
                max_time: Duration::from_secs(5),
                rate: Some(rate),
            },
            &gs,
        )
    });
    let sent = generator
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    // Let the daemon see the events and the capture drain.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut captured = capture
        .join()
        .map_err(|_| anyhow::anyhow!("capture panicked"))??;
    captured.sort_by_key(|c| c.realtime_ns);
    let (offset, uncertainty) = flood::realtime_offset();
    let to_mono = |rt: u64| (i128::from(rt) - offset) as u64;
    let times: Vec<u64> = captured.iter().map(|c| to_mono(c.realtime_ns)).collect();
    let mut t = DetectionTrial {
        source: source.to_string(),
        sent: sent.packets,
        captured: captured.len() as u64,
        clock_uncertainty_ns: uncertainty,
        ..DetectionTrial::default()
    };
    if t.captured != t.sent {
        t.error = Some(format!(
            "the capture saw {} of {} SYNs: SYN numbers may be off",
            t.captured, t.sent
        ));
    }
    let cross = crossing(&times, policy);
    t.crossing_index = cross.map(|i| u64::from(captured[i].seq));
    let log_text = std::fs::read_to_string(log).unwrap_or_default();
    let src = source.to_string();
    if let Some((kns, wall, reason)) = find_event(&log_text, "threshold", &src) {
        t.reason = Some(reason);
        let idx = times.partition_point(|&x| x <= kns);
        if idx > 0 {
            t.first_drop_index = Some(u64::from(captured[idx - 1].seq));
        }
        if let Some(i) = cross {
            t.crossing_to_drop_us = Some((kns as f64 - times[i] as f64) / 1e3);
            t.crossing_to_log_ms = Some((wall as f64 - captured[i].realtime_ns as f64) / 1e6);
        }
    } else {
        t.error = Some("no threshold event in the daemon's log".into());
    }
    if let (Some((kns, _, _)), Some(i)) = (find_event(&log_text, "auto_block", &src), cross) {
        t.crossing_to_autoblock_ms = Some((kns as f64 - times[i] as f64) / 1e6);
    }
    if let Ok(stats) = herz_stats(herz)
        && let Some(row) = stats["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["source"] == src.as_str()))
    {
        let syn = row["tcp_syn"].as_u64().unwrap_or(0);
        let drops: u64 = row["drops"]
            .as_object()
            .map(|o| o.values().filter_map(|v| v.as_u64()).sum())
            .or_else(|| row["drops"].as_u64())
            .unwrap_or(0);
        t.passed = Some(syn.saturating_sub(drops));
    }
    Ok(t)
}

/// Detection trials under `policy`, with sources 198.19.250.`first`.. (fresh ones: no state yet).
fn detection(
    env: &Env,
    topo: &Topo,
    policy: &Policy,
    first: u8,
    trials: u8,
) -> anyhow::Result<Vec<DetectionTrial>> {
    let tmp = TempDir::new(&env.tmp)?;
    let load = Load {
        n: 1000,
        size: 64,
        rate: None,
        warmup: 0,
    };
    let d = HerzDaemon::start(
        &env.herz_bin,
        &tmp.0,
        1,
        &load,
        None,
        &victim_opts(Defense::Herz, policy),
    )?;
    topo.pin_napi()?;
    let dport = d.sub_addr.port();
    let log = d.log.clone();
    let mut out = Vec::new();
    let limits = if policy.max_half_open > 0 {
        format!(
            "half-open ≤ {}, {} SYN/s burst {}",
            policy.max_half_open, policy.syn_rate, policy.syn_burst
        )
    } else {
        format!("{} SYN/s burst {}", policy.syn_rate, policy.syn_burst)
    };
    for k in first..first + trials {
        let mut t = detection_trial(policy, topo, &d.log, &env.herz_bin, dport, k, 10_000, 2_000)
            .unwrap_or_else(|e| DetectionTrial {
                source: Ipv4Addr::new(198, 19, 250, k).to_string(),
                error: Some(format!("{e:#}")),
                ..DetectionTrial::default()
            });
        t.limits = limits.clone();
        eprintln!(
            "  shield detection {}/{trials} ({limits}): crossing at SYN {:?}, first drop at SYN {:?} ({}), {:?} µs; auto-block {:?} ms; log {:?} ms{}",
            k - first + 1,
            t.crossing_index,
            t.first_drop_index,
            t.reason.as_deref().unwrap_or("?"),
            t.crossing_to_drop_us.map(|v| v.round()),
            t.crossing_to_autoblock_ms
                .map(|v| (v * 10.0).round() / 10.0),
            t.crossing_to_log_ms.map(|v| (v * 10.0).round() / 10.0),
            t.error
                .as_deref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        );
        out.push(t);
    }
    drop(d);
    // Keep the daemon's log next to the report: the events the figures come from.
    if let Some(out_dir) = env.tmp.parent() {
        let _ = std::fs::copy(&log, out_dir.join(format!("shield-detection-{first}.log")));
    }
    Ok(out)
}

// --- Service and cost under flood ---------------------------------------------------------------

struct FloodHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<(Sent, FloodCounters)>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct FloodCounters {
    rx: u64,
    ring_drops: u64,
    rx_cpu_ns: u64,
    /// Wall time between the two readings (filled in for the difference only).
    wall_ns: u64,
}

fn counters(
    topo_rx: &dyn Fn() -> anyhow::Result<(u64, u64)>,
    cpu: &dyn Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<FloodCounters> {
    let (rx, ring_drops) = topo_rx()?;
    Ok(FloodCounters {
        rx,
        ring_drops,
        rx_cpu_ns: cpu()?,
        wall_ns: 0,
    })
}

fn start_flood(
    topo: &Arc<Topo>,
    method: Method,
    random_sources: bool,
    dport: u16,
    max_time: Duration,
) -> FloodHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let spec = FrameSpec {
        dst_mac: topo.victim_mac,
        src_mac: topo.attacker_mac,
        src: if random_sources {
            Ipv4Addr::new(198, 19, 0, 0)
        } else {
            Ipv4Addr::new(198, 19, 251, 1)
        },
        dst: topo::VICTIM_A,
        dport,
        random_source: random_sources,
    };
    let s = stop.clone();
    let t = topo.clone();
    let thread = std::thread::Builder::new()
        .name("bench-flood".into())
        .spawn(move || {
            let rx = || t.victim_rx();
            let cpu = || t.napi_runtime_ns();
            let t0 = std::time::Instant::now();
            let before = counters(&rx, &cpu)?;
            let gen_cpu = t.cpus.map(|(_, g)| g);
            let ifindex = t.attacker_ifindex;
            let sent = topo::spawn_in(topo::NS_ATTACKER, "bench-flood-gen", move || {
                if let Some(cpu) = gen_cpu {
                    topo::pin(0, cpu)?;
                }
                flood::run(
                    method,
                    ifindex,
                    &spec,
                    Bounds {
                        max_packets: 200_000_000,
                        max_time,
                        rate: None,
                    },
                    &s,
                )
            })
            .join()
            .map_err(|_| anyhow::anyhow!("flood generator panicked"))??;
            // Let the receive ring drain before reading the counters.
            std::thread::sleep(Duration::from_millis(100));
            let after = counters(&rx, &cpu)?;
            let wall_ns = t0.elapsed().as_nanos() as u64;
            let diff = |a: u64, b: u64, what: &str| {
                a.checked_sub(b)
                    .with_context(|| format!("{what} went backwards ({b} → {a})"))
            };
            Ok((
                sent,
                FloodCounters {
                    rx: diff(after.rx, before.rx, "veth rx packets")?,
                    ring_drops: diff(after.ring_drops, before.ring_drops, "veth rx drops")?,
                    rx_cpu_ns: diff(after.rx_cpu_ns, before.rx_cpu_ns, "receive thread CPU")?,
                    wall_ns,
                },
            ))
        })
        .expect("spawning the flood thread");
    FloodHandle { stop, thread }
}

/// (run_time_ns, run_cnt) of the XDP program attached to the victim's flood-facing veth.
fn xdp_prog_stats() -> anyhow::Result<(u64, u64)> {
    let net: serde_json::Value = serde_json::from_str(&topo::ns_exec(
        topo::NS_VICTIM,
        &["bpftool", "net", "show", "dev", topo::IF_VICTIM_A, "-j"],
    )?)?;
    let id = net[0]["xdp"][0]["id"]
        .as_u64()
        .context("no XDP program on the victim's veth")?;
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "-j"])
        .output()?;
    let p: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        p["run_time_ns"].as_u64().unwrap_or(0),
        p["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// Drops between two readings of the defence's counters.
fn drops_delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// Average run time between two `(run_time_ns, run_cnt)` readings of a BPF program.
fn ns_per_run(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((t0, n0), (t1, n1)) = (before?, after?);
    (n1 > n0).then(|| t1.saturating_sub(t0) as f64 / (n1 - n0) as f64)
}

/// Turns the kernel's BPF run-time statistics on for its lifetime, to report the run time of Herz's
/// XDP program. They cost two clock reads per BPF program run, and only Herz runs BPF programs on the
/// victim, so Herz's figures carry that cost and the other defences' do not (said in the report).
struct BpfStats(Option<String>);

impl BpfStats {
    fn enable() -> Self {
        let old = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok();
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
        BpfStats(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", old.trim());
        }
    }
}

fn defense_drops(defense: Defense, herz: &Path) -> Option<u64> {
    match defense {
        Defense::None => None,
        Defense::Nftables => nft_drops().ok(),
        // `drops` is an object: reason → count.
        Defense::Herz => herz_stats(herz).ok().map(|s| {
            s["drops"]
                .as_object()
                .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum())
        }),
    }
}

/// The victim's listener ports (its namespace serves nothing else, so they are always free).
const SUB_PORT: u16 = 7001;
const PUB_PORT: u16 = 7002;

#[allow(clippy::too_many_arguments)]
fn flood_run(
    env: &Env,
    topo: &Arc<Topo>,
    method: Option<Method>,
    random_sources: bool,
    defense: Defense,
    subs: usize,
    load: Load,
    secs: u64,
) -> FloodRun {
    let mut opts = victim_opts(defense, &POLICY);
    opts.ports = Some((SUB_PORT, PUB_PORT));
    let flood: Mutex<Option<FloodHandle>> = Mutex::new(None);
    let outcome: Mutex<(Sent, FloodCounters, Option<u64>)> = Mutex::default();
    let prog_after: Mutex<Option<(u64, u64)>> = Mutex::default();
    let mut error = None;
    let mut drops_before = None;
    if defense == Defense::Nftables
        && let Err(e) = nft_apply(&nft_ruleset(&[SUB_PORT, PUB_PORT], &POLICY))
    {
        // Not an nftables run without its ruleset: report the failure and measure nothing.
        nft_remove();
        return FloodRun {
            service: RunResult::failed(System::HerzTcp, subs, &load, format!("nftables: {e:#}")),
            flood: Sent::default(),
            victim_rx: 0,
            victim_ring_drops: 0,
            rx_cpu_s: 0.0,
            ns_per_frame: None,
            defense_drops: None,
            xdp_ns_per_run: None,
            rx_wall_s: 0.0,
            error: Some(format!("nftables: {e:#}")),
        };
    }
    let flood_error: Mutex<Option<String>> = Mutex::default();
    let herz_bin = env.herz_bin.clone();
    let mut prog_before = None;
    let mut go = || -> anyhow::Result<()> {
        topo.pin_napi()?;
        drops_before = defense_drops(defense, &herz_bin);
        if defense == Defense::Herz {
            prog_before = xdp_prog_stats().ok();
        }
        if let Some(m) = method {
            *flood.lock().expect("lock") = Some(start_flood(
                topo,
                m,
                random_sources,
                SUB_PORT,
                Duration::from_secs(secs + 15),
            ));
            // Let the flood build up before the stream starts.
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    };
    // Stop the flood while the daemon (and its shield) still runs.
    let mut after = || {
        let mut o = outcome.lock().expect("lock");
        // The flood stops first: `herz stats` walks every per-source entry, which on a full table
        // takes a core for a while and must not compete with the receive thread being measured.
        if let Some(f) = flood.lock().expect("lock").take() {
            f.stop.store(true, Ordering::Relaxed);
            match f.thread.join() {
                Ok(Ok((sent, c))) => {
                    o.0 = sent;
                    o.1 = c;
                }
                Ok(Err(e)) => *flood_error.lock().expect("lock") = Some(format!("flood: {e:#}")),
                Err(_) => *flood_error.lock().expect("lock") = Some("flood thread panicked".into()),
            }
        }
        o.2 = defense_drops(defense, &herz_bin);
        if defense == Defense::Herz {
            *prog_after.lock().expect("lock") = xdp_prog_stats().ok();
        }
    };
    let service = std::thread::scope(|s| {
        s.spawn(|| {
            if let Err(e) = topo::enter(topo::NS_CLIENTS) {
                return RunResult::failed(System::HerzTcp, subs, &load, format!("{e:#}"));
            }
            run_once_with(
                env,
                System::HerzTcp,
                subs,
                load,
                RunOpts {
                    herz: opts,
                    before_go: Some(&mut go),
                    after_subs: Some(&mut after),
                },
            )
        })
        .join()
        .expect("run thread")
    });
    // A run that failed before `after` ran: stop the flood now.
    if let Some(f) = flood.lock().expect("lock").take() {
        f.stop.store(true, Ordering::Relaxed);
        let _ = f.thread.join();
    }
    if let Some(e) = flood_error.into_inner().expect("lock") {
        error = Some(e);
    }
    let (sent, c, drops_after) = outcome.into_inner().expect("lock");
    if defense == Defense::Nftables {
        nft_remove();
    }
    FloodRun {
        service,
        flood: sent,
        victim_rx: c.rx,
        victim_ring_drops: c.ring_drops,
        rx_cpu_s: c.rx_cpu_ns as f64 / 1e9,
        rx_wall_s: c.wall_ns as f64 / 1e9,
        ns_per_frame: (c.rx > 0).then(|| c.rx_cpu_ns as f64 / c.rx as f64),
        defense_drops: drops_delta(drops_before, drops_after),
        xdp_ns_per_run: ns_per_run(prog_before, prog_after.into_inner().expect("lock")),
        error,
    }
}

/// One flood of `secs` against an idle herz (its listener; with Herz, its shield), no stream.
fn cost_run(
    env: &Env,
    topo: &Arc<Topo>,
    method: Method,
    random_sources: bool,
    defense: Defense,
    secs: u64,
) -> CostRun {
    let mut r = CostRun::default();
    let result = (|| -> anyhow::Result<()> {
        let tmp = TempDir::new(&env.tmp)?;
        let mut opts = victim_opts(defense, &POLICY);
        opts.ports = Some((SUB_PORT, PUB_PORT));
        if defense == Defense::Nftables {
            nft_apply(&nft_ruleset(&[SUB_PORT, PUB_PORT], &POLICY))?;
        }
        let load = Load {
            n: 1000,
            size: 64,
            rate: None,
            warmup: 0,
        };
        let d = HerzDaemon::start(&env.herz_bin, &tmp.0, 1, &load, None, &opts)?;
        topo.pin_napi()?;
        let drops_before = defense_drops(defense, &env.herz_bin);
        let prog_before = (defense == Defense::Herz)
            .then(xdp_prog_stats)
            .and_then(Result::ok);
        let f = start_flood(
            topo,
            method,
            random_sources,
            SUB_PORT,
            Duration::from_secs(secs),
        );
        let joined = f.thread.join();
        let drops_after = defense_drops(defense, &env.herz_bin);
        let prog_after = (defense == Defense::Herz)
            .then(xdp_prog_stats)
            .and_then(Result::ok);
        drop(d);
        let (sent, c) = joined.map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        r.flood = sent;
        r.victim_rx = c.rx;
        r.rx_cpu_s = c.rx_cpu_ns as f64 / 1e9;
        r.rx_wall_s = c.wall_ns as f64 / 1e9;
        r.ns_per_frame = (c.rx > 0).then(|| c.rx_cpu_ns as f64 / c.rx as f64);
        r.defense_drops = drops_delta(drops_before, drops_after);
        r.xdp_ns_per_run = ns_per_run(prog_before, prog_after);
        Ok(())
    })();
    if defense == Defense::Nftables {
        nft_remove();
    }
    if let Err(e) = result {
        r.error = Some(format!("{e:#}"));
    }
    r
}

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

/// `method/sources/defence`, as for the flood cells.
fn cost_label(p: &CostPoint) -> String {
    label(Some(p.method), p.random_sources, p.defense)
}

// --- Report ---------------------------------------------------------------------------------------

/// `method/sources/defence`, what `--shield-filter` matches.
fn cell_label(p: &FloodPoint) -> String {
    label(p.method, p.random_sources, p.defense)
}

fn label(method: Option<Method>, random_sources: bool, defense: Defense) -> String {
    format!(
        "{}/{}/{}",
        method.map_or("none", |m| match m {
            Method::AfPacket => "af_packet",
            Method::XdpRedirect => "xdp",
        }),
        if method.is_none() {
            "none"
        } else if random_sources {
            "random"
        } else {
            "one"
        },
        match defense {
            Defense::None => "none",
            Defense::Nftables => "nft",
            Defense::Herz => "herz",
        }
    )
}

fn sources_label(p: &FloodPoint) -> &'static str {
    match (p.method, p.random_sources) {
        (None, _) => "–",
        (Some(_), true) => "random spoofed",
        (Some(_), false) => "one source",
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// Medians of a point's runs.
#[derive(Debug, Clone, Copy, Default)]
struct PointSummary {
    valid_runs: usize,
    delivered: Option<f64>,
    latency: Option<Latency>,
    offered_mpps: Option<f64>,
    rx_mpps: Option<f64>,
    ns_per_frame: Option<f64>,
    drops_mpps: Option<f64>,
    xdp_ns: Option<f64>,
    rx_core_pct: Option<f64>,
}

fn summarize(p: &FloodPoint) -> PointSummary {
    // Medians over valid runs without errors (a run whose flood or ruleset failed measured
    // something else), as in the other scenarios.
    let runs: Vec<&FloodRun> = p
        .runs
        .iter()
        .filter(|r| r.service.valid && r.error.is_none())
        .collect();
    let runs = &runs;
    let per =
        |f: &dyn Fn(&FloodRun) -> Option<f64>| median(runs.iter().filter_map(|r| f(r)).collect());
    let lat = |f: &dyn Fn(&Latency) -> f64| {
        median(
            runs.iter()
                .filter_map(|r| r.service.latency.as_ref().map(f))
                .collect(),
        )
    };
    let secs = |r: &FloodRun| (r.flood.secs > 0.0).then_some(r.flood.secs);
    PointSummary {
        valid_runs: runs.iter().filter(|r| r.service.valid).count(),
        delivered: per(&|r| Some(r.service.msgs_per_s)),
        latency: runs
            .iter()
            .any(|r| r.service.latency.is_some())
            .then(|| Latency {
                samples: 0,
                p50_us: lat(&|l| l.p50_us).unwrap_or(0.0),
                p99_us: lat(&|l| l.p99_us).unwrap_or(0.0),
                p999_us: lat(&|l| l.p999_us).unwrap_or(0.0),
                max_us: lat(&|l| l.max_us).unwrap_or(0.0),
                mean_us: lat(&|l| l.mean_us).unwrap_or(0.0),
            }),
        offered_mpps: per(&|r| secs(r).map(|s| r.flood.packets as f64 / s / 1e6)),
        rx_mpps: per(&|r| secs(r).map(|s| r.victim_rx as f64 / s / 1e6)),
        ns_per_frame: per(&|r| r.ns_per_frame),
        drops_mpps: per(&|r| secs(r).and_then(|s| r.defense_drops.map(|d| d as f64 / s / 1e6))),
        xdp_ns: per(&|r| r.xdp_ns_per_run),
        rx_core_pct: per(&|r| (r.rx_wall_s > 0.0).then(|| 100.0 * r.rx_cpu_s / r.rx_wall_s)),
    }
}

/// The scenario's Markdown section.
pub fn markdown(out: &mut String, r: &ShieldReport) {
    let p = &r.policy;
    let _ = writeln!(
        out,
        "\n## shield\n\nHerz's kernel shield against a SYN flood, next to no defence and an nftables ruleset of the same intent. Policy (Herz's defaults, the same figures in nftables): {} SYN/s per source, burst {}; at most {} half-open per source; auto-block after {} drops in {} s; global guard {} SYN/s, burst {}.\n",
        p.syn_rate,
        p.syn_burst,
        p.max_half_open,
        p.autoblock_after,
        p.autoblock_window_ms / 1000,
        p.global_syn_rate,
        p.global_syn_burst
    );
    if let Some(e) = &r.error {
        let _ = writeln!(out, "**The scenario stopped early:** {e}\n");
    }
    if !r.detection.is_empty() {
        let _ = writeln!(
            out,
            "### Detection: time from threshold crossing to first drop\n\nOne source sends SYNs at 10,000/s (AF_PACKET, paced). The crossing is the first SYN the policy refuses, computed from the kernel timestamps of the attacker's frames as they leave its veth (SO_TIMESTAMPNS, converted to CLOCK_MONOTONIC); the first drop is the kernel timestamp (bpf_ktime_get_ns) in the XDP program's threshold event; the log line is the daemon's JSON log timestamp.\n"
        );
        let _ = writeln!(
            out,
            "| limits | source | crossing at SYN # | rule that dropped | first drop at SYN # | crossing → first drop | → auto-block | → daemon log line | SYNs passed |\n|---|---|---:|---|---:|---:|---:|---:|---:|"
        );
        for t in &r.detection {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.limits,
                t.source,
                t.crossing_index.map_or("–".into(), |v| v.to_string()),
                t.reason.as_deref().unwrap_or("–"),
                t.first_drop_index.map_or("–".into(), |v| v.to_string()),
                t.crossing_to_drop_us
                    .map_or(t.error.clone().unwrap_or("–".into()), |v| format!(
                        "{v:.1} µs"
                    )),
                fmt_opt(t.crossing_to_autoblock_ms, 1) + " ms",
                fmt_opt(t.crossing_to_log_ms, 2) + " ms",
                t.passed.map_or("–".into(), |v| v.to_string()),
            );
        }
        // Per set of limits: the two rules are enforced at different places.
        let mut sets: Vec<&str> = Vec::new();
        for t in &r.detection {
            if !sets.contains(&t.limits.as_str()) {
                sets.push(&t.limits);
            }
        }
        for set in sets {
            let trials: Vec<&DetectionTrial> =
                r.detection.iter().filter(|t| t.limits == set).collect();
            let med = median(
                trials
                    .iter()
                    .filter_map(|t| t.crossing_to_drop_us)
                    .collect(),
            );
            let exact = trials
                .iter()
                .filter(|t| t.crossing_index.is_some() && t.crossing_index == t.first_drop_index)
                .count();
            let _ = writeln!(
                out,
                "- {set}: median crossing → first drop {} µs; the first SYN dropped was exactly the first one the policy refuses in {exact} of {} trials.",
                fmt_opt(med, 1),
                trials.len()
            );
        }
        let _ = writeln!(
            out,
            "\nClock conversion uncertainty: ≤ {} ns.\n",
            r.detection
                .iter()
                .map(|t| t.clock_uncertainty_ns)
                .max()
                .unwrap_or(0)
        );
    }
    if !r.flood.is_empty() {
        let _ = writeln!(
            out,
            "### Service under a max-rate SYN flood\n\nA publisher streams {} msgs/s of {} B to {} subscriber(s) through Herz while a bounded flood of SYNs hits the subscriber port, as fast as one generator core can send (rate max) or, in full mode, at a fixed rate every defence keeps up with: from random spoofed sources (198.19.0.0/16), or from one source (a new source port per SYN with AF_PACKET; the same frame over and over with XDP redirect). Receive-thread CPU is the victim veth's threaded NAPI (pinned to its own core) per flood frame it took in: all of the victim kernel's work on the flood (XDP, netfilter, TCP, SYN-ACKs).\n",
            r.stream_rate, r.stream_size, r.subscribers
        );
        let _ = writeln!(
            out,
            "| flood injection | sources | defence | delivered msgs/s | p50 µs | p99 µs | p99.9 µs | max µs | flood offered Mpps | taken in Mpps | dropped by defence Mpps | receive CPU ns/frame | receive CPU % of a core | of which Herz XDP ns | valid runs |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for fp in &r.flood {
            let s = summarize(fp);
            let l = s.latency;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |",
                fp.method.map_or("no flood", |m| m.label()),
                sources_label(fp),
                fp.defense.label(),
                fmt_opt(s.delivered, 0),
                fmt_opt(l.map(|l| l.p50_us), 0),
                fmt_opt(l.map(|l| l.p99_us), 0),
                fmt_opt(l.map(|l| l.p999_us), 0),
                fmt_opt(l.map(|l| l.max_us), 0),
                fmt_opt(s.offered_mpps, 2),
                fmt_opt(s.rx_mpps, 2),
                fmt_opt(s.drops_mpps, 2),
                fmt_opt(s.ns_per_frame, 0),
                fmt_opt(s.rx_core_pct, 0),
                fmt_opt(s.xdp_ns, 0),
                s.valid_runs,
                fp.runs.len()
            );
        }
        let _ = writeln!(out);
        let mut invalid = Vec::new();
        for fp in &r.flood {
            for run in &fp.runs {
                if let Some(why) = &run.service.invalid_reason {
                    invalid.push(format!(
                        "{} / {}: {why}",
                        fp.method.map_or("no flood", |m| m.label()),
                        fp.defense.label()
                    ));
                }
                if let Some(e) = &run.error {
                    invalid.push(format!(
                        "{} / {}: {e}",
                        fp.method.map_or("no flood", |m| m.label()),
                        fp.defense.label()
                    ));
                }
            }
        }
        if !invalid.is_empty() {
            let _ = writeln!(out, "\nRuns with loss or errors:\n");
            for i in invalid {
                let _ = writeln!(out, "- {i}");
            }
        }
    }
    if !r.cost.is_empty() {
        cost_md(out, r);
    }
    if !r.notes.is_empty() {
        let _ = writeln!(out);
        for n in &r.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
}

/// Medians of a cost point: offered Mpps, taken in Mpps, receive thread busy %, ns/frame, XDP ns.
struct CostSummary {
    offered: Option<f64>,
    taken: Option<f64>,
    busy: Option<f64>,
    ns: Option<f64>,
    xdp: Option<f64>,
}

fn cost_summary(p: &CostPoint) -> CostSummary {
    let per = |f: &dyn Fn(&CostRun) -> Option<f64>| {
        median(
            p.runs
                .iter()
                .filter(|r| r.error.is_none())
                .filter_map(f)
                .collect(),
        )
    };
    let secs = |r: &CostRun| (r.flood.secs > 0.0).then_some(r.flood.secs);
    CostSummary {
        offered: per(&|r| secs(r).map(|s| r.flood.packets as f64 / s / 1e6)),
        taken: per(&|r| secs(r).map(|s| r.victim_rx as f64 / s / 1e6)),
        busy: per(&|r| (r.rx_wall_s > 0.0).then(|| 100.0 * r.rx_cpu_s / r.rx_wall_s)),
        ns: per(&|r| r.ns_per_frame),
        xdp: per(&|r| r.xdp_ns_per_run),
    }
}

fn cost_md(out: &mut String, r: &ShieldReport) {
    let _ = writeln!(
        out,
        "\n### Kernel CPU per flood frame (no stream)\n\nThe same floods for {} run(s) each against an idle herz (its listener; with Herz, its shield), nothing else running in the victim: its receive thread has core 1 to itself, and the flood keeps it busy. Receive CPU per frame taken in is then what each defence's path costs the kernel.\n",
        r.cost.first().map_or(0, |p| p.runs.len())
    );
    let _ = writeln!(
        out,
        "| injection | sources | defence | offered Mpps | taken in Mpps | receive thread busy | receive CPU ns/frame | of which Herz XDP ns | errors |\n|---|---|---|---:|---:|---:|---:|---:|---|"
    );
    for p in &r.cost {
        let CostSummary {
            offered,
            taken,
            busy,
            ns,
            xdp,
        } = cost_summary(p);
        let errors: Vec<&str> = p.runs.iter().filter_map(|r| r.error.as_deref()).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}% | {} | {} | {} |",
            p.method.label(),
            if p.random_sources {
                "random spoofed"
            } else {
                "one source"
            },
            p.defense.label(),
            fmt_opt(offered, 2),
            fmt_opt(taken, 2),
            fmt_opt(busy, 0),
            fmt_opt(ns, 0),
            fmt_opt(xdp, 0),
            if errors.is_empty() {
                "".to_string()
            } else {
                errors.join("; ")
            }
        );
    }
    let _ = writeln!(out);
    for m in [Method::XdpRedirect, Method::AfPacket] {
        for random in [false, true] {
            let cost = |d: Defense| {
                r.cost
                    .iter()
                    .find(|p| p.method == m && p.random_sources == random && p.defense == d)
                    .and_then(|p| cost_summary(p).ns)
            };
            if let (Some(x), Some(n), Some(none)) = (
                cost(Defense::Herz),
                cost(Defense::Nftables),
                cost(Defense::None),
            ) {
                let _ = writeln!(
                    out,
                    "- {}, {}: victim kernel CPU per flood frame, Herz {x:.0} ns, nftables {n:.0} ns (nftables/Herz {:.2}), no defence {none:.0} ns (no defence/Herz {:.2}).",
                    m.label(),
                    if random {
                        "random spoofed sources"
                    } else {
                        "one source"
                    },
                    n / x,
                    none / x
                );
            }
        }
    }
}

/// How the scenario measures, for the report.
pub fn notes() -> Vec<String> {
    vec![
        "Network: three namespaces (attacker, victim running herz, clients) joined by two veth pairs, addresses in 198.18.0.0/15; spoofed flood sources in 198.19.0.0/16 are routed back to the attacker, where replies die. The victim's flood-facing veth has GRO on and threaded NAPI, its NAPI thread pinned to the last core; flood generators are pinned to core 0; herz, the publisher and the subscribers float.".into(),
        "Injection methods: 'XDP redirect' makes frames in the kernel (BPF_PROG_TEST_RUN live-frames mode running a small XDP program that writes a random source and redirects into the attacker's veth), so the victim receives XDP frames as from a NIC's RX ring. 'AF_PACKET' writes frames from user space (as trafgen and hping3 do); the victim then receives skbs, which native XDP must copy into an XDP buffer before its program runs, so XDP's advantage shrinks. Both are reported; the first is the one that resembles a real NIC.".into(),
        "nftables twin of the policy: in the raw prerouting hook, a per-source meter (limit rate over syn_rate/s burst syn_burst) and a global limit (global_syn_rate, global_syn_burst) drop SYNs to herz's ports, the rest are notrack; in the input hook, synproxy answers untracked SYNs with cookies (mss 1460 wscale 7 timestamp sack-perm) and invalid packets are dropped. No defence: the kernel alone (net.ipv4.tcp_syncookies = 1, the default).".into(),
        "Every flood is bounded (at most 200 M frames and the run's length plus 15 s) and stops with its run.".into(),
        "Herz's XDP program time comes from the kernel's BPF run-time statistics (kernel.bpf_stats_enabled, restored afterwards). They add two clock reads to every BPF program run, and only Herz runs BPF programs on the victim, so Herz's receive-CPU figures carry that cost and the other defences' do not.".into(),
        "The attacker's veth receives the victim's replies in a NAPI thread of its own on the generator's core, so that answering SYNs (no defence, synproxy, SYNs Herz lets through) is charged to the victim only for the victim's own work.".into(),
    ]
}
