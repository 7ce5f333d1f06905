//! The `journal` scenario: what the durable journal costs on the live path, and how fast history
//! that is on disk only is replayed.
//!
//! - **Live**: Herz over TCP with the memory journal (`herz-tcp`) against the same daemon with
//!   the file journal at each durability level (`herz-tcp-none`, `-batch`, `-every`): fan-out
//!   throughput to 1 and 16 subscribers (unpaced) and latency at a fixed rate, the systems
//!   interleaved run by run on the grid every scenario uses.
//! - **Replay**: a daemon with a file journal (`batch`) takes N messages while one subscriber
//!   reads them live (the live rate), and is stopped with SIGTERM; the page cache is dropped
//!   (`sync`, then `vm.drop_caches = 1`; needs root); a new daemon on the same directory recovers
//!   the journal (its start-up log line says how long that took), and one subscriber logs in at
//!   sequence 1 and reads all N back from the files: the replay rate.

use std::{
    fmt::Write as _,
    fs,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{
    msg::Checker,
    pubs::Load,
    recv::{self, SubCtl, SubKind},
    report::{flagged, mps, ratio},
    run::{Env, RunOpts, System, run_once_with},
    scenarios::{self, Grid, Plan, Point, ScenarioResult, median},
    servers::{DurableJournal, HerzDaemon, HerzOpts},
    sys::{CpuSource, TempDir, mono_ns},
};

/// The systems of the live part, memory first (the ratios' denominator).
pub const SYSTEMS: [System; 4] = [
    System::HerzTcp,
    System::HerzTcpNone,
    System::HerzTcpBatch,
    System::HerzTcpEvery,
];

/// Offered rate of the latency cell, msgs/s.
pub const LATENCY_RATE: u64 = 100_000;

/// Message size of every cell, bytes.
const SIZE: usize = 64;

/// Record bytes per segment file of the live part's file journals.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Record bytes per segment file of the replay's journal. Smaller than the live part's, so that
/// nearly all of the replayed messages are in sealed segments, which recovery does not read (it
/// scans the newest segment in full and so brings it into the page cache): the replay then reads
/// from the disk, not from what recovery just read.
pub const REPLAY_SEGMENT_BYTES: u64 = 16 << 20;

/// The durability level of the replay's journal (Herz's default).
const REPLAY_DURABILITY: &str = "batch";

/// The log line a daemon writes after reopening a journal directory.
const RECOVERED: &str = "journal recovered: continuing the session";

/// Messages published, then replayed, per replay run.
pub fn replay_n(quick: bool) -> u64 {
    if quick { 500_000 } else { 2_000_000 }
}

/// One replay run: the live phase, the restart, the replay.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ReplayRun {
    /// Messages published and replayed.
    pub n: u64,
    /// The live phase and the replay delivered every message, in order, intact.
    pub valid: bool,
    /// Why not.
    pub invalid_reason: Option<String>,
    /// Live phase: msgs/s delivered to the one subscriber while the messages were published.
    pub live_msgs_per_s: f64,
    /// The first daemon exited on SIGTERM (not killed after the grace period).
    pub clean_stop: bool,
    /// The page cache was dropped before the restart (root only).
    pub cache_dropped: bool,
    /// Why it was not.
    pub cache_note: Option<String>,
    /// Segment files in the directory at the restart.
    pub journal_files: u64,
    /// Their size, bytes.
    pub journal_bytes: u64,
    /// From spawning the second daemon to its "distributor serving" log line, ms (polled every
    /// 10 ms): process start, journal recovery, listeners.
    pub start_ms: f64,
    /// `took_ms` of the daemon's "journal recovered" line.
    pub recovery_ms: Option<f64>,
    /// Segments the daemon reported recovered.
    pub recovered_segments: Option<u64>,
    /// Messages the daemon reported recovered.
    pub recovered_messages: Option<u64>,
    /// Of those, in the newest segment (the one recovery scans, so its pages are cached when
    /// the replay starts); the rest are read from the disk by the replay.
    pub newest_segment_messages: Option<u64>,
    /// Replay: messages received in order.
    pub received: u64,
    /// From the subscriber's connect to its last message, seconds.
    pub elapsed_s: f64,
    /// Replay: received / elapsed.
    pub replay_msgs_per_s: f64,
    /// The second daemon's CPU time over the replay, seconds.
    pub server_cpu_s: f64,
    /// The same per million messages replayed.
    pub cpu_s_per_million: f64,
}

/// The replay part of the scenario.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct ReplayReport {
    /// Messages per run.
    pub n: u64,
    /// Message size, bytes.
    pub size: usize,
    /// `journal.durability` of the daemons.
    pub durability: String,
    /// Record bytes per segment file.
    pub segment_bytes: u64,
    /// Every run.
    pub runs: Vec<ReplayRun>,
    /// Runs in which every message arrived both times.
    pub valid_runs: usize,
    /// Medians over the valid runs (over all runs when none was valid).
    pub live_msgs_per_s: f64,
    /// See `live_msgs_per_s`.
    pub replay_msgs_per_s: f64,
    /// See `live_msgs_per_s`; 0 when no run logged it.
    pub recovery_ms: f64,
    /// See `live_msgs_per_s`.
    pub start_ms: f64,
    /// See `live_msgs_per_s`.
    pub cpu_s_per_million: f64,
    /// Median of each run's replay rate ÷ its live rate.
    #[serde(default)]
    pub replay_over_live: f64,
}

/// The live grid, then the replay runs.
pub fn run(env: &Env, plan: &Plan) -> (ScenarioResult, Option<ReplayReport>) {
    let cells = vec![
        (1, SIZE, None, scenarios::throughput_n(plan.quick, 1), 0),
        (16, SIZE, None, scenarios::throughput_n(plan.quick, 16), 0),
        (
            plan.latency_subs,
            SIZE,
            Some(LATENCY_RATE),
            LATENCY_RATE * plan.latency_secs,
            LATENCY_RATE / 5,
        ),
    ];
    let description = format!(
        "Herz over TCP with the memory journal (herz-tcp) against the file journal (segment files of \
         {} MiB in {}) at durability none, batch and every: fan-out msgs/s to 1 and 16 subscribers \
         (64-byte messages, unpaced publisher) and one-way latency at {} msgs/s; then the replay of \
         history that is on disk only.",
        SEGMENT_BYTES >> 20,
        env.tmp.display(),
        mps(LATENCY_RATE as f64).trim()
    );
    let live = scenarios::execute(
        env,
        plan,
        "journal",
        &description,
        Grid {
            systems: SYSTEMS.to_vec(),
            cells,
        },
    );
    let replay = plan
        .systems
        .as_ref()
        .is_none_or(|s| s.contains(&System::HerzTcpBatch))
        .then(|| replay(env, plan));
    (live, replay)
}

fn replay(env: &Env, plan: &Plan) -> ReplayReport {
    let n = replay_n(plan.quick);
    let mut runs = Vec::new();
    for i in 0..plan.runs {
        let r = replay_once(env, n).unwrap_or_else(|e| ReplayRun {
            n,
            invalid_reason: Some(format!("{e:#}")),
            ..ReplayRun::default()
        });
        eprintln!(
            "[journal replay {}/{}] n={n}: live {:.3} M msgs/s, replay {:.3} M msgs/s from {} (recovery {}, serving after {:.0} ms) ({})",
            i + 1,
            plan.runs,
            r.live_msgs_per_s / 1e6,
            r.replay_msgs_per_s / 1e6,
            if r.cache_dropped {
                "a dropped page cache"
            } else {
                "the page cache"
            },
            r.recovery_ms
                .map_or("not logged".into(), |ms| format!("{ms:.1} ms")),
            r.start_ms,
            r.invalid_reason.as_deref().unwrap_or("ok")
        );
        runs.push(r);
    }
    let valid: Vec<&ReplayRun> = runs.iter().filter(|r| r.valid).collect();
    let basis: Vec<&ReplayRun> = if valid.is_empty() {
        runs.iter().collect()
    } else {
        valid.clone()
    };
    let m = |f: &dyn Fn(&ReplayRun) -> f64| median(basis.iter().map(|r| f(r)).collect());
    ReplayReport {
        n,
        size: SIZE,
        durability: REPLAY_DURABILITY.into(),
        segment_bytes: REPLAY_SEGMENT_BYTES,
        valid_runs: valid.len(),
        live_msgs_per_s: m(&|r| r.live_msgs_per_s),
        replay_msgs_per_s: m(&|r| r.replay_msgs_per_s),
        recovery_ms: median(basis.iter().filter_map(|r| r.recovery_ms).collect()),
        start_ms: m(&|r| r.start_ms),
        cpu_s_per_million: m(&|r| r.cpu_s_per_million),
        replay_over_live: median(
            basis
                .iter()
                .filter(|r| r.live_msgs_per_s > 0.0)
                .map(|r| r.replay_msgs_per_s / r.live_msgs_per_s)
                .collect(),
        ),
        runs,
    }
}

/// `sync`, then drops clean pages from the page cache (`vm.drop_caches = 1`, root only).
fn drop_page_cache() -> anyhow::Result<()> {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    fs::write("/proc/sys/vm/drop_caches", "1")
        .context("writing /proc/sys/vm/drop_caches (needs root)")
}

/// Segment files in `dir` and their bytes.
fn journal_files(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "hzj") {
            files += 1;
            bytes += e.metadata().map_or(0, |m| m.len());
        }
    }
    (files, bytes)
}

fn replay_once(env: &Env, n: u64) -> anyhow::Result<ReplayRun> {
    // Holds the journal across both daemons; removed at the end, on every path.
    let outer = TempDir::new(&env.tmp)?;
    let journal = DurableJournal {
        dir: outer.0.join("journal"),
        durability: REPLAY_DURABILITY,
        segment_bytes: REPLAY_SEGMENT_BYTES,
    };
    let herz = HerzOpts {
        journal: Some(journal.clone()),
        ..HerzOpts::default()
    };
    let load = Load {
        n,
        size: SIZE,
        rate: None,
        warmup: 0,
    };
    let mut r = ReplayRun {
        n,
        ..ReplayRun::default()
    };

    // Live: publish N with one subscriber reading; the daemon is stopped with SIGTERM at the end.
    let clean = std::cell::Cell::new(false);
    let live = run_once_with(
        env,
        System::HerzTcpBatch,
        1,
        load,
        RunOpts {
            herz: herz.clone(),
            before_go: None,
            after_subs: None,
            herz_stopped: Some(&clean),
        },
    );
    r.clean_stop = clean.get();
    r.live_msgs_per_s = live.msgs_per_s;
    if let Some(why) = live.invalid_reason {
        bail!("live phase: {why}");
    }

    match drop_page_cache() {
        Ok(()) => r.cache_dropped = true,
        Err(e) => r.cache_note = Some(format!("{e:#}")),
    }
    (r.journal_files, r.journal_bytes) = journal_files(&journal.dir);

    // Restart on the same directory.
    let scratch = TempDir::new(&env.tmp)?;
    let started = Instant::now();
    let mut d = HerzDaemon::start(&env.herz_bin, &scratch.0, 1, &load, None, &herz)
        .context("restarting on the journal directory")?;
    r.start_ms = started.elapsed().as_secs_f64() * 1e3;
    if let Some(f) = d.log_event(RECOVERED) {
        let num = |k: &str| f.get(k).and_then(serde_json::Value::as_f64);
        r.recovery_ms = num("took_ms");
        r.recovered_segments = num("segments").map(|v| v as u64);
        r.recovered_messages = num("messages").map(|v| v as u64);
    }
    // Every segment but the newest is full: as many records as fit its record area.
    let per_segment = REPLAY_SEGMENT_BYTES / (SIZE as u64 + 4);
    r.newest_segment_messages = r
        .recovered_segments
        .filter(|&s| s > 0)
        .map(|s| n.saturating_sub((s - 1) * per_segment));

    // Replay: one subscriber from sequence 1.
    let stop = Arc::new(AtomicBool::new(false));
    let ctl = SubCtl {
        stop: stop.clone(),
        // Nothing is published: the subscriber gives up after `idle` without a message.
        pub_done: Arc::new(AtomicBool::new(true)),
        deadline: Instant::now() + env.time_limit,
        idle: Duration::from_secs(3),
    };
    let cpu = CpuSource::Process(d.pid());
    let cpu0 = cpu.read_ns()?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let t0 = mono_ns();
    let sub = recv::spawn(
        SubKind::Soup(d.sub_addr),
        ctl,
        Checker::new(n, SIZE, false, 0, false),
        ready_tx,
    );
    let ready = ready_rx.recv_timeout(Duration::from_secs(30));
    let s = sub
        .join()
        .map_err(|_| anyhow::anyhow!("subscriber panicked"))?;
    let cpu1 = cpu.read_ns()?;
    stop.store(true, Ordering::Relaxed);
    let alive = d.check_alive();
    drop(d);
    match ready {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("replay subscriber: {e}"),
        Err(_) => bail!("replay subscriber not logged in within 30 s"),
    }
    alive?;
    r.received = s.received;
    if s.last_ns > t0 {
        r.elapsed_s = (s.last_ns - t0) as f64 / 1e9;
        r.replay_msgs_per_s = s.received as f64 / r.elapsed_s;
    }
    r.server_cpu_s = cpu1.saturating_sub(cpu0) as f64 / 1e9;
    if s.received > 0 {
        r.cpu_s_per_million = r.server_cpu_s / (s.received as f64 / 1e6);
    }
    let mut reasons = Vec::new();
    if s.lost > 0 {
        reasons.push(format!("{} of {n} messages not replayed", s.lost));
    }
    if s.errors > 0 {
        reasons.push(format!(
            "{} integrity errors (first: {})",
            s.errors,
            s.first_error.unwrap_or_default()
        ));
    }
    if let Some(why) = s.stopped {
        reasons.push(format!("the subscriber stopped early: {why}"));
    }
    if r.recovered_messages.is_some_and(|m| m != n) {
        reasons.push(format!(
            "the daemon recovered {:?} messages, {n} were published",
            r.recovered_messages
        ));
    }
    r.valid = reasons.is_empty();
    r.invalid_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    Ok(r)
}

fn point(s: &ScenarioResult, sys: System, subs: usize, rate: Option<u64>) -> Option<&Point> {
    s.point(sys, subs, SIZE, rate)
}

/// The short name of a system in the journal tables.
fn name(sys: System) -> &'static str {
    match sys {
        System::HerzTcp => "memory",
        System::HerzTcpNone => "file, none",
        System::HerzTcpBatch => "file, batch",
        System::HerzTcpEvery => "file, every",
        other => other.label(),
    }
}

/// The journal scenario's tables (live and replay).
pub fn markdown(out: &mut String, s: &ScenarioResult, replay: Option<&ReplayReport>) {
    let throughput_subs: Vec<usize> = {
        let mut v: Vec<usize> = s
            .points
            .iter()
            .filter(|p| p.rate.is_none())
            .map(|p| p.subscribers)
            .collect();
        v.dedup();
        v
    };
    if !throughput_subs.is_empty() {
        out.push_str(
            "#### Fan-out: delivered msgs/s (all subscribers together), 64 B, unpaced\n\n",
        );
        out.push_str("| subscribers |");
        for sys in SYSTEMS {
            let _ = write!(out, " {} |", name(sys));
        }
        out.push_str(" **none/memory** | **batch/memory** | **every/memory** |\n|---:|");
        out.push_str(&"---:|".repeat(SYSTEMS.len() + 3));
        out.push('\n');
        for &n in &throughput_subs {
            let p = |sys| point(s, sys, n, None);
            let _ = write!(out, "| {n} |");
            for sys in SYSTEMS {
                let _ = write!(out, " {} |", flagged(p(sys), |p| mps(p.summary.msgs_per_s)));
            }
            let mem = p(System::HerzTcp).map_or(0.0, |p| p.summary.msgs_per_s);
            for sys in &SYSTEMS[1..] {
                let v = p(*sys).map_or(0.0, |p| p.summary.msgs_per_s);
                let _ = write!(out, " **{}** |", ratio(v, mem));
            }
            out.push('\n');
        }
        out.push_str(
            "\n#### Fan-out: herz CPU seconds per million messages delivered\n\n| subscribers |",
        );
        for sys in SYSTEMS {
            let _ = write!(out, " {} |", name(sys));
        }
        out.push_str("\n|---:|");
        out.push_str(&"---:|".repeat(SYSTEMS.len()));
        out.push('\n');
        for &n in &throughput_subs {
            let _ = write!(out, "| {n} |");
            for sys in SYSTEMS {
                let _ = write!(
                    out,
                    " {} |",
                    flagged(point(s, sys, n, None), |p| format!(
                        "{:.3}",
                        p.summary.cpu_s_per_million
                    ))
                );
            }
            out.push('\n');
        }
    }
    for rate in s
        .points
        .iter()
        .filter_map(|p| p.rate)
        .fold(Vec::new(), |mut v, r| {
            if !v.contains(&r) {
                v.push(r);
            }
            v
        })
    {
        let subs = s
            .points
            .iter()
            .find(|p| p.rate == Some(rate))
            .map_or(1, |p| p.subscribers);
        let _ = writeln!(
            out,
            "\n#### Latency at {} msgs/s offered, {subs} subscriber(s), 64 B (µs)\n",
            mps(rate as f64).trim()
        );
        out.push_str("| journal | p50 | p99 | p99.9 | max | achieved msgs/s | **p50 ÷ memory p50** | **p99 ÷ memory p99** |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        let mem = point(s, System::HerzTcp, subs, Some(rate)).and_then(|p| p.summary.latency);
        for sys in SYSTEMS {
            let Some(p) = point(s, sys, subs, Some(rate)) else {
                continue;
            };
            let Some(l) = p.summary.latency else {
                let _ = writeln!(out, "| {} ✗ | failed | | | | | | |", name(sys));
                continue;
            };
            let _ = writeln!(
                out,
                "| {}{} | {:.1} | {:.1} | {:.1} | {:.1} | {} | **{}** | **{}** |",
                name(sys),
                if p.summary.valid { "" } else { " ✗" },
                l.p50_us,
                l.p99_us,
                l.p999_us,
                l.max_us,
                mps(p.summary.publish_rate),
                ratio(l.p50_us, mem.map_or(0.0, |m| m.p50_us)),
                ratio(l.p99_us, mem.map_or(0.0, |m| m.p99_us)),
            );
        }
    }
    let Some(r) = replay else {
        return;
    };
    let _ = writeln!(
        out,
        "\n#### Replay from disk: {} messages of {} B, file journal (`{}`, segments of {} MiB)\n",
        r.n,
        r.size,
        r.durability,
        r.segment_bytes >> 20
    );
    out.push_str("A daemon takes the messages while one subscriber reads them live; SIGTERM; page cache dropped; a new daemon on the same directory; one subscriber from sequence 1 reads them all back. Recovery scans the newest segment (its messages are then in the page cache); the others are read from the disk by the replay.\n\n");
    out.push_str("| run | live msgs/s (1 sub) | journal files | in the newest segment | cache dropped | recovery (log, ms) | start → serving (ms) | replay msgs/s | **replay/live** | herz CPU s / M replayed |\n");
    out.push_str("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|\n");
    for (i, run) in r.runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {}{} | {} | {} ({:.0} MiB) | {} | {} | {} | {:.0} | {} | **{}** | {:.3} |",
            i + 1,
            if run.valid { "" } else { " ✗" },
            mps(run.live_msgs_per_s),
            run.journal_files,
            run.journal_bytes as f64 / (1u64 << 20) as f64,
            run.newest_segment_messages
                .map_or("–".into(), |m| format!("{m}")),
            if run.cache_dropped { "yes" } else { "no" },
            run.recovery_ms.map_or("–".into(), |ms| format!("{ms:.1}")),
            run.start_ms,
            mps(run.replay_msgs_per_s),
            ratio(run.replay_msgs_per_s, run.live_msgs_per_s),
            run.cpu_s_per_million,
        );
    }
    let _ = writeln!(
        out,
        "| **median** | {} | | | | {:.1} | {:.0} | {} | **{}** | {:.3} |",
        mps(r.live_msgs_per_s),
        r.recovery_ms,
        r.start_ms,
        mps(r.replay_msgs_per_s),
        if r.replay_over_live > 0.0 {
            format!("{:.2}", r.replay_over_live)
        } else {
            "–".into()
        },
        r.cpu_s_per_million,
    );
    for sys in [System::HerzTcp, System::HerzTcpBatch] {
        if let Some(p) = point(s, sys, 1, None) {
            let _ = writeln!(
                out,
                "\nLive fan-out to 1 subscriber in the fan-out table above ({} journal, {} messages): {} msgs/s; replay ÷ that: **{}**.",
                name(sys),
                p.n,
                mps(p.summary.msgs_per_s),
                ratio(r.replay_msgs_per_s, p.summary.msgs_per_s)
            );
        }
    }
    for (i, run) in r.runs.iter().enumerate() {
        if let Some(why) = &run.invalid_reason {
            let _ = writeln!(out, "\n- run {}: not valid — {why}", i + 1);
        }
        if let Some(note) = &run.cache_note {
            let _ = writeln!(out, "\n- run {}: page cache not dropped — {note}", i + 1);
        }
    }
}
