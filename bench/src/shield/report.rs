//! The shield scenario's report: medians per cell, Markdown tables and notes.

use super::*;

/// `method/sources/defence`, as for the flood cells.
pub(super) fn cost_label(p: &CostPoint) -> String {
    label(Some(p.method), p.random_sources, p.defense)
}

// --- Report ---------------------------------------------------------------------------------------

/// `method/sources/defence`, what `--shield-filter` matches.
pub(super) fn cell_label(p: &FloodPoint) -> String {
    label(p.method, p.random_sources, p.defense)
}

pub(super) fn label(method: Option<Method>, random_sources: bool, defense: Defense) -> String {
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

pub(super) fn sources_label(p: &FloodPoint) -> &'static str {
    match (p.method, p.random_sources) {
        (None, _) => "–",
        (Some(_), true) => "random spoofed",
        (Some(_), false) => "one source",
    }
}

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
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

pub(super) fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// Medians of a point's runs.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PointSummary {
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

pub(super) fn summarize(p: &FloodPoint) -> PointSummary {
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
pub(super) struct CostSummary {
    offered: Option<f64>,
    taken: Option<f64>,
    busy: Option<f64>,
    ns: Option<f64>,
    xdp: Option<f64>,
}

pub(super) fn cost_summary(p: &CostPoint) -> CostSummary {
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

pub(super) fn cost_md(out: &mut String, r: &ShieldReport) {
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
