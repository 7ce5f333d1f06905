//! report.json (every figure) and report.md (tables with ratios).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::{
    run::System,
    scenarios::{Point, ScenarioResult},
    sys::Machine,
};

/// Everything about the environment of a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// UTC date and time the suite started.
    pub started_utc: String,
    /// Wall time of the suite, seconds.
    pub wall_s: f64,
    /// The command that reruns this suite.
    pub command: String,
    /// `--quick`.
    pub quick: bool,
    /// Runs per point.
    pub runs_per_point: usize,
    /// The machine.
    pub machine: Machine,
    /// Versions of what was measured and built.
    pub versions: Versions,
    /// Method notes.
    pub notes: Vec<String>,
}

/// Versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Versions {
    /// `herz --version`.
    pub herz: String,
    /// `nats-server --version`.
    pub nats_server: String,
    /// libzmq, as reported by the linked library.
    pub libzmq: String,
    /// `rustc --version`.
    pub rustc: String,
    /// This bench.
    pub herz_bench: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Environment.
    pub meta: Meta,
    /// Scenario results, in the order run.
    pub scenarios: Vec<ScenarioResult>,
    /// The shield scenario, when run.
    #[serde(default)]
    pub shield: Option<crate::shield::ShieldReport>,
    /// The journal scenario's replay from disk, when run.
    #[serde(default)]
    pub journal_replay: Option<crate::journal::ReplayReport>,
}

pub(crate) fn mps(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    if a > 0.0 && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

/// A figure with a mark when its runs were not valid (loss or errors), so it is never read as clean.
pub(crate) fn flagged(p: Option<&Point>, f: impl Fn(&Point) -> String) -> String {
    match p {
        None => "–".into(),
        Some(p)
            if p.summary.runs == 0
                || (p.summary.msgs_per_s == 0.0 && p.summary.latency.is_none()) =>
        {
            "failed ✗".into()
        }
        Some(p) if !p.summary.valid => format!("{} ✗{}", f(p), dup_mark(p)),
        Some(p) => format!("{}{}", f(p), dup_mark(p)),
    }
}

/// † marks figures of runs that received duplicate multicast packets (listed under the table).
fn dup_mark(p: &Point) -> &'static str {
    if p.summary.max_duplicates > 0 {
        " †"
    } else {
        ""
    }
}

fn msgs(p: Option<&Point>) -> f64 {
    p.map_or(0.0, |p| p.summary.msgs_per_s)
}

fn cpu(p: Option<&Point>) -> String {
    flagged(p, |p| format!("{:.3}", p.summary.cpu_s_per_million))
}

fn loss(p: Option<&Point>) -> String {
    match p {
        None => "–".into(),
        Some(p) if p.summary.max_loss_pct == 0.0 => "0".into(),
        Some(p) => format!("{:.3}%", p.summary.max_loss_pct),
    }
}

fn point_name(p: &Point) -> String {
    match p.rate {
        Some(r) => format!(
            "{} at {} msgs/s, {} subscriber(s)",
            p.system.label(),
            r,
            p.subscribers
        ),
        None => format!(
            "{}, {} subscriber(s), {} B",
            p.system.label(),
            p.subscribers,
            p.size
        ),
    }
}

fn invalid_notes(out: &mut String, s: &ScenarioResult) {
    let dups: Vec<&Point> = s
        .points
        .iter()
        .filter(|p| p.summary.max_duplicates > 0)
        .collect();
    if !dups.is_empty() {
        out.push_str("\n† Duplicate multicast packets were received (same MoldUDP64 sequence number, same bytes): the \
            receiver discards them by sequence number, as every MoldUDP64 receiver does, so the stream is still \
            complete and in order, but the sender spent time and bandwidth re-sending them:\n\n");
        for p in dups {
            let _ = writeln!(
                out,
                "- {}: up to {} duplicate messages in a run (all subscribers together)",
                point_name(p),
                p.summary.max_duplicates
            );
        }
    }
    let bad: Vec<&Point> = s
        .points
        .iter()
        .filter(|p| p.summary.valid_runs < p.summary.runs)
        .collect();
    if bad.is_empty() {
        out.push_str("\nEvery run of this scenario was valid: every subscriber received every message, in order, intact.\n");
        return;
    }
    out.push_str("\nRuns that were not valid (✗ marks a figure with no valid run; its median is over the invalid runs):\n\n");
    for p in bad {
        let what = point_name(p);
        let reasons = p.summary.invalid_reasons.join(" | ");
        let _ = writeln!(
            out,
            "- {what}: {}/{} runs valid — {}",
            p.summary.valid_runs,
            p.summary.runs,
            truncate(&reasons, 400)
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

fn distinct<T: PartialEq + Copy>(it: impl Iterator<Item = T>) -> Vec<T> {
    let mut v = Vec::new();
    for x in it {
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

fn fanout_md(out: &mut String, s: &ScenarioResult) {
    out.push_str("| transport | subscribers | Herz msgs/s (all subs) | Herz msgs/s per sub | raw msgs/s (all subs) | **Herz/raw** | Herz CPU s / M msgs | raw CPU s / M msgs | loss Herz / raw |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let subs = distinct(s.points.iter().map(|p| p.subscribers));
    for (label, herz, raw) in [
        ("TCP (SoupBinTCP)", System::HerzTcp, System::RawTcp),
        ("multicast (MoldUDP64)", System::HerzMcast, System::RawMcast),
    ] {
        for &n in &subs {
            let h = s.point(herz, n, 64, None);
            let r = s.point(raw, n, 64, None);
            if h.is_none() && r.is_none() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {label} | {n} | {} | {} | {} | **{}** | {} | {} | {} / {} |",
                flagged(h, |p| mps(p.summary.msgs_per_s)),
                flagged(h, |p| mps(p.summary.per_sub_msgs_per_s)),
                flagged(r, |p| mps(p.summary.msgs_per_s)),
                ratio(msgs(h), msgs(r)),
                cpu(h),
                cpu(r),
                loss(h),
                loss(r),
            );
        }
    }
}

const PEER_SYSTEMS: [System; 6] = [
    System::HerzTcp,
    System::HerzMcast,
    System::Nats,
    System::Zmq,
    System::RawTcp,
    System::RawMcast,
];

fn peers_md(out: &mut String, s: &ScenarioResult) {
    for size in distinct(s.points.iter().map(|p| p.size)) {
        let subs = distinct(
            s.points
                .iter()
                .filter(|p| p.size == size)
                .map(|p| p.subscribers),
        );
        let _ = writeln!(
            out,
            "\n#### {size}-byte messages: delivered msgs/s (all subscribers together)\n"
        );
        out.push_str("| subscribers |");
        for sys in PEER_SYSTEMS {
            let _ = write!(out, " {} |", sys.label());
        }
        out.push_str(" **herz-tcp/nats** | **herz-tcp/zmq** | **herz-tcp/raw-tcp** | **herz-mcast/raw-mcast** |\n|---:|");
        out.push_str(&"---:|".repeat(PEER_SYSTEMS.len() + 4));
        out.push('\n');
        for &n in &subs {
            let p = |sys| s.point(sys, n, size, None);
            let _ = write!(out, "| {n} |");
            for sys in PEER_SYSTEMS {
                let _ = write!(out, " {} |", flagged(p(sys), |p| mps(p.summary.msgs_per_s)));
            }
            let _ = writeln!(
                out,
                " **{}** | **{}** | **{}** | **{}** |",
                ratio(msgs(p(System::HerzTcp)), msgs(p(System::Nats))),
                ratio(msgs(p(System::HerzTcp)), msgs(p(System::Zmq))),
                ratio(msgs(p(System::HerzTcp)), msgs(p(System::RawTcp))),
                ratio(msgs(p(System::HerzMcast)), msgs(p(System::RawMcast))),
            );
        }
        let _ = writeln!(
            out,
            "\n#### {size}-byte messages: server CPU seconds per million messages delivered (loss %, if any)\n"
        );
        out.push_str("| subscribers |");
        for sys in PEER_SYSTEMS {
            let _ = write!(out, " {} |", sys.label());
        }
        out.push_str("\n|---:|");
        out.push_str(&"---:|".repeat(PEER_SYSTEMS.len()));
        out.push('\n');
        for &n in &subs {
            let _ = write!(out, "| {n} |");
            for sys in PEER_SYSTEMS {
                let p = s.point(sys, n, size, None);
                let l = loss(p);
                if l == "0" || l == "–" {
                    let _ = write!(out, " {} |", cpu(p));
                } else {
                    let _ = write!(out, " {} (loss {l}) |", cpu(p));
                }
            }
            out.push('\n');
        }
    }
}

fn latency_md(out: &mut String, s: &ScenarioResult) {
    for rate in distinct(s.points.iter().filter_map(|p| p.rate)) {
        let subs = s
            .points
            .iter()
            .find(|p| p.rate == Some(rate))
            .map_or(1, |p| p.subscribers);
        let _ = writeln!(
            out,
            "\n#### {} msgs/s offered, {subs} subscriber(s), 64-byte messages (µs)\n",
            mps(rate as f64).trim()
        );
        out.push_str("| system | p50 | p99 | p99.9 | max | mean | achieved msgs/s | loss | Herz-TCP p99 ÷ this p99 |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let herz_p99 = s
            .point(System::HerzTcp, subs, 64, Some(rate))
            .and_then(|p| p.summary.latency)
            .map_or(0.0, |l| l.p99_us);
        for sys in PEER_SYSTEMS {
            let p = s.point(sys, subs, 64, Some(rate));
            let Some(p) = p else { continue };
            match p.summary.latency {
                Some(l) => {
                    let mark =
                        format!("{}{}", if p.summary.valid { "" } else { " ✗" }, dup_mark(p));
                    let _ = writeln!(
                        out,
                        "| {}{mark} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                        sys.label(),
                        l.p50_us,
                        l.p99_us,
                        l.p999_us,
                        l.max_us,
                        l.mean_us,
                        mps(p.summary.publish_rate),
                        loss(Some(p)),
                        ratio(herz_p99, l.p99_us),
                    );
                }
                None => {
                    let _ = writeln!(out, "| {} ✗ | failed | | | | | | | |", sys.label());
                }
            }
        }
    }
}

/// The Markdown report.
pub fn markdown(r: &Report, plots: &[String]) -> String {
    let m = &r.meta;
    let mut out = String::new();
    let _ = writeln!(out, "# Herz benchmark report\n");
    let _ = writeln!(
        out,
        "Started {} UTC, {:.0} s wall time, {} mode, {} run(s) per point (figures are medians of the valid runs).\n",
        m.started_utc,
        m.wall_s,
        if m.quick { "quick" } else { "full" },
        m.runs_per_point
    );
    let _ = writeln!(out, "Rerun: `{}`\n", m.command);
    let _ = writeln!(out, "| machine | |\n|---|---|");
    let _ = writeln!(out, "| CPU | {} |", m.machine.cpu_model);
    let _ = writeln!(out, "| cores | {} |", m.machine.cores);
    let _ = writeln!(out, "| kernel | {} |", m.machine.kernel);
    let _ = writeln!(
        out,
        "| RAM | {:.1} GiB |",
        m.machine.ram_bytes as f64 / (1u64 << 30) as f64
    );
    let _ = writeln!(
        out,
        "| load average at start | {} |",
        m.machine.loadavg_at_start
    );
    let _ = writeln!(out, "| herz | {} |", m.versions.herz);
    let _ = writeln!(out, "| nats-server | {} |", m.versions.nats_server);
    let _ = writeln!(out, "| libzmq | {} |", m.versions.libzmq);
    let _ = writeln!(out, "| rustc | {} |", m.versions.rustc);
    out.push_str("\n**Noise.** This is a small shared VM: absolute numbers move from run to run and with what else runs on the host. Compare systems *within* one report (ratios); every scenario runs all its systems in the same invocation, interleaved run by run.\n");
    for s in &r.scenarios {
        let _ = writeln!(out, "\n## {}\n\n{}\n", s.name, s.description);
        match s.name.as_str() {
            "fanout" => fanout_md(&mut out, s),
            "peers" => peers_md(&mut out, s),
            "latency" => latency_md(&mut out, s),
            "journal" => crate::journal::markdown(&mut out, s, r.journal_replay.as_ref()),
            _ => {}
        }
        invalid_notes(&mut out, s);
    }
    if let Some(sh) = &r.shield {
        crate::shield::markdown(&mut out, sh);
    }
    if !plots.is_empty() {
        out.push_str("\n## Plots\n\n");
        for p in plots {
            let _ = writeln!(out, "![{p}]({p})\n");
        }
    }
    out.push_str("\n## Method\n\n");
    for n in &m.notes {
        let _ = writeln!(out, "- {n}");
    }
    out
}
