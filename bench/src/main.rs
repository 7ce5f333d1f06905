//! `herz-bench`: Herz's benchmark suite. Normally run through `cargo xtask bench [SCENARIO...]
//! [--quick]`, which installs the peers (nats-server, libzmq), builds herz and this bench in release
//! mode, and writes report.json, report.md and PNG plots under target/bench/.
//!
//! Scenarios (every figure measured from the subscriber side, every message checked):
//! - `fanout`: msgs/s delivered to 1, 4, 16 subscribers over TCP and multicast, Herz vs raw sockets.
//! - `peers`: the same shape across Herz, nats-server, ZeroMQ and the raw ceilings.
//! - `latency`: one-way latency percentiles at fixed offered rates.
//! - `shield`: the kernel shield under a SYN flood, against no defence and nftables (needs root and
//!   a herz built with its eBPF object).
//! - `journal`: the memory journal against the file journal at each durability level (fan-out,
//!   latency), and the replay of history that is on disk only.
//!
//! See docs/PERFORMANCE.md for the method and the results.

mod journal;
mod msg;
mod plot;
mod pubs;
mod recv;
mod report;
mod run;
mod scenarios;
mod servers;
mod shield;
mod sys;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use self::{
    report::{Meta, Report, Versions},
    run::Env,
    scenarios::Plan,
};

const USAGE: &str = "\
usage: herz-bench [SCENARIO...] [--quick] [--runs N] [--latency-subs N] [--latency-secs S]
                  [--systems LIST] [--herz-flush-us US] [--herz PATH] [--nats-server PATH] [--out DIR] [--verbose]

SCENARIO: fanout | peers | latency | shield | journal (default: all five)
  --quick            1 run per point, fewer points, shorter runs (the whole suite in minutes)
  --runs N           runs per point (default 3, or 1 with --quick); figures are medians
  --latency-subs N   subscribers in latency runs (default 1)
  --latency-secs S   seconds per latency run (default 5, or 2 with --quick)
  --systems LIST     only these systems, comma-separated (herz-tcp, herz-mcast, nats, zmq,
                     raw-tcp, raw-mcast, herz-tcp-none, herz-tcp-batch, herz-tcp-every); ratios
                     need the pairs they compare
  --shield-filter S  shield: only the flood cells whose method/sources/defence contains S
                     (methods xdp, af_packet; sources random, one; defences none, nft, herz),
                     e.g. `xdp/random` or `/herz`
  --herz-flush-us US flush_us of Herz's multicast channel (default 200, Herz's default)
  --herz PATH        the herz binary (default: target/release/herz)
  --nats-server PATH nats-server binary (default: nats-server on PATH)
  --out DIR          where report.json, report.md and the plots go (default: target/bench)
  --verbose          print each run's publisher and per-subscriber figures
  --from-json FILE   run nothing: rewrite report.md and the plots in --out from a report.json
";

/// The scenarios run when none is named.
const DEFAULT_SCENARIOS: [&str; 5] = ["fanout", "peers", "latency", "shield", "journal"];

struct Args {
    scenarios: Vec<String>,
    quick: bool,
    runs: Option<usize>,
    latency_subs: usize,
    latency_secs: Option<u64>,
    herz_flush_us: u64,
    systems: Option<Vec<run::System>>,
    shield_filter: Option<String>,
    from_json: Option<PathBuf>,
    herz: PathBuf,
    nats: String,
    out: PathBuf,
    verbose: bool,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ is inside the workspace")
        .to_path_buf()
}

fn parse_args() -> anyhow::Result<Args> {
    let root = workspace_root();
    let mut a = Args {
        scenarios: Vec::new(),
        quick: false,
        runs: None,
        latency_subs: 1,
        latency_secs: None,
        herz_flush_us: 200,
        systems: None,
        shield_filter: None,
        from_json: None,
        herz: root.join("target/release/herz"),
        nats: "nats-server".into(),
        out: root.join("target/bench"),
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--quick" => a.quick = true,
            "--verbose" => a.verbose = true,
            "--runs" => a.runs = Some(value("--runs")?.parse().context("--runs")?),
            "--latency-subs" => {
                a.latency_subs = value("--latency-subs")?.parse().context("--latency-subs")?
            }
            "--latency-secs" => {
                a.latency_secs = Some(value("--latency-secs")?.parse().context("--latency-secs")?)
            }
            "--systems" => {
                let list = value("--systems")?;
                let mut v = Vec::new();
                for name in list.split(',') {
                    let sys = run::System::ALL
                        .into_iter()
                        .find(|s| s.label() == name.trim())
                        .with_context(|| format!("--systems: unknown system `{name}`"))?;
                    v.push(sys);
                }
                a.systems = Some(v);
            }
            "--from-json" => a.from_json = Some(value("--from-json")?.into()),
            "--shield-filter" => a.shield_filter = Some(value("--shield-filter")?),
            "--herz-flush-us" => {
                a.herz_flush_us = value("--herz-flush-us")?
                    .parse()
                    .context("--herz-flush-us")?
            }
            "--herz" => a.herz = value("--herz")?.into(),
            "--nats-server" => a.nats = value("--nats-server")?,
            "--out" => a.out = value("--out")?.into(),
            s @ ("fanout" | "peers" | "latency" | "shield" | "journal") => {
                if !a.scenarios.iter().any(|x| x == s) {
                    a.scenarios.push(s.into());
                }
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    if a.scenarios.is_empty() {
        a.scenarios = DEFAULT_SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    if a.runs == Some(0) || a.latency_subs == 0 || a.latency_secs == Some(0) {
        bail!("--runs, --latency-subs and --latency-secs must be positive");
    }
    Ok(a)
}

fn utc_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn notes(env: &Env, plan: &Plan, scenarios: &[String]) -> Vec<String> {
    let mut notes = vec![
        "Everything runs on this one host over loopback (127.0.0.1) and multicast groups in 239.0.0.0/8 \
         on lo; publisher, server and every subscriber share its cores, so a system that needs fewer CPU \
         cycles per message also leaves more for its subscribers."
            .into(),
        "Message: a Herz quote-shaped message (type 'Q', 8-byte symbol), CLOCK_MONOTONIC send time at \
         offset 9, bench sequence number at offset 17, padded to the message size. The same bytes are the \
         SoupBinTCP / MoldUDP64 / NATS / ZeroMQ payload."
            .into(),
        format!(
            "Throughput runs: an unpaced publisher sends N messages (N = {} for 1 subscriber, {} for 4, {} \
             for 16, {} for 64); each server buffers what its subscribers have not read yet (Herz: a \
             journal that holds the run; nats-server: max_pending 1 GiB; ZeroMQ: HWM 50 M with \
             ZMQ_XPUB_NODROP). msgs/s = messages delivered to all subscribers / (last message seen by the \
             last subscriber − start signal).",
            scenarios::throughput_n(plan.quick, 1),
            scenarios::throughput_n(plan.quick, 4),
            scenarios::throughput_n(plan.quick, 16),
            scenarios::throughput_n(plan.quick, 64),
        ),
        "Verification: every subscriber checks every message. SoupBinTCP: implicit sequence numbers \
         contiguous from 1 and equal to the bench number; MoldUDP64: packet sequence numbers equal to the \
         bench number, gaps counted as loss (the bench's multicast receiver does not re-request, so loss is \
         visible); NATS and ZeroMQ: the bench number contiguous. A run with any loss, reordering, \
         duplicate, corruption or skip marker is invalid (except exact MoldUDP64 duplicates: same number, \
         same bytes, discarded as every MoldUDP64 receiver does, counted and marked †); medians are taken \
         over valid runs only, and a figure with no valid run is marked ✗."
            .into(),
        format!(
            "Multicast: receivers join on 127.0.0.1 with a {} MiB receive buffer (SO_RCVBUFFORCE); senders \
             set IP_MULTICAST_IF 127.0.0.1. Herz's channel runs with flush_us = {}{} (a partly filled packet \
             waits up to that long for more messages, which adds up to that much latency at low rates).",
            recv::MCAST_RCVBUF >> 20,
            env.herz_flush_us,
            if env.herz_flush_us == 200 { ", its default" } else { "" }
        ),
        "Server CPU: utime+stime from /proc/PID/stat of the herz daemon and of nats-server (ingest from \
         the publisher plus fan-out); for ZeroMQ there is no broker, so the bench's publisher thread plus \
         its libzmq context's I/O threads are counted (/proc/self/task/TID/stat); for the raw baselines \
         the bench's sending thread. The raw baselines do no ingest at all: they are the ceiling for \
         pushing the same bytes. Resolution: one clock tick (10 ms)."
            .into(),
        "Clients: Herz and the raw TCP baseline are read with herz_client::SoupSubscriber::poll; multicast \
         with a recvmmsg receiver using herz_core's MoldUDP64 parser; ZeroMQ with libzmq SUB sockets (one \
         context per subscriber, as separate processes would have); NATS with a minimal protocol client \
         in the bench (one buffer, no allocation per message) so that client overhead does not decide the \
         server comparison."
            .into(),
        format!(
            "Latency runs: a paced publisher (1 ns timer slack) stamps each batch with CLOCK_MONOTONIC when \
             it hands it to the system; subscribers record receive time − stamp into HDR histograms (3 \
             significant digits) after a 0.2 s warm-up; {} subscriber(s), {} s per run. The raw baselines \
             write straight from the publisher to the subscribers (no broker hop); ZeroMQ has no broker \
             either; Herz and NATS add one hop.",
            plan.latency_subs, plan.latency_secs
        ),
        format!(
            "Runs per point: {}; the systems of a point are interleaved run by run. Each run starts a fresh \
             server.",
            plan.runs
        ),
    ];
    if scenarios.iter().any(|s| s == "journal") {
        notes.push(format!(
            "Journal: the file journal's daemons keep their segment files ({} MiB of records each, \
             max_bytes sized to hold the run) in {}, on the same file system as the workspace; every \
             other setting equals herz-tcp's. Replay: {} messages published with one live subscriber \
             into a `batch` journal with segments of {} MiB, the daemon stopped with SIGTERM, `sync` and vm.drop_caches = 1 \
             (root), a new daemon on the same directory, one subscriber from sequence 1; replay msgs/s \
             = messages / (connect to last message); recovery time from the daemon's \"journal \
             recovered\" log line (took_ms).",
            journal::SEGMENT_BYTES >> 20,
            env.tmp.display(),
            journal::replay_n(plan.quick),
            journal::REPLAY_SEGMENT_BYTES >> 20
        ));
    }
    notes
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("herz-bench: error: {e:#}");
        std::process::exit(1);
    }
}

/// Writes report.json's companions: report.md and the plots.
fn write_md_and_plots(report: &Report, out: &Path) -> anyhow::Result<Vec<String>> {
    let text = plot::init_font();
    let plots = plot::write_all(out, &report.scenarios, text);
    let mut md = report::markdown(report, &plots);
    md.push('\n');
    md.push_str(&plot::legend_md());
    if !text {
        md.push_str(" (No TTF font was found, so the plots carry no text: x = subscribers or offered rate, y = msgs/s or µs.)");
    }
    md.push('\n');
    std::fs::write(out.join("report.md"), &md)?;
    Ok(plots)
}

fn real_main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(json) = &args.from_json {
        let text =
            std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
        let report: Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", json.display()))?;
        std::fs::create_dir_all(&args.out)?;
        let plots = write_md_and_plots(&report, &args.out)?;
        eprintln!(
            "herz-bench: wrote {}/report.md and {} plot(s)",
            args.out.display(),
            plots.len()
        );
        return Ok(());
    }
    if !args.herz.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p herz-user` (or run `cargo xtask bench`)",
            args.herz.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let plan = Plan {
        quick: args.quick,
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }),
        latency_subs: args.latency_subs,
        latency_secs: args.latency_secs.unwrap_or(if args.quick { 2 } else { 5 }),
        systems: args.systems.clone(),
        shield_filter: args.shield_filter.clone(),
    };
    let env = Env {
        herz_bin: args.herz.clone(),
        nats_bin: args.nats.clone(),
        tmp: args.out.join("tmp"),
        time_limit: Duration::from_secs(if args.quick { 40 } else { 90 }),
        herz_flush_us: args.herz_flush_us,
        verbose: args.verbose,
    };
    let started = Instant::now();
    let started_utc = utc_now();
    let machine = sys::Machine::probe();
    let (zmaj, zmin, zpatch) = zmq::version();
    let versions = Versions {
        herz: sys::version_of(args.herz.to_str().unwrap_or("herz"), &["--version"]),
        nats_server: sys::version_of(&args.nats, &["--version"]),
        libzmq: format!("{zmaj}.{zmin}.{zpatch} (system library, linked through the zmq crate)"),
        rustc: sys::version_of("rustc", &["--version"]),
        herz_bench: env!("CARGO_PKG_VERSION").into(),
    };
    eprintln!(
        "herz-bench: {} on {} ({} cores, load {}); herz: {}; nats-server: {}; libzmq {}",
        args.scenarios.join(", "),
        machine.cpu_model,
        machine.cores,
        machine.loadavg_at_start,
        versions.herz,
        versions.nats_server,
        versions.libzmq
    );
    let mut results = Vec::new();
    let mut shield_report = None;
    let mut journal_replay = None;
    for s in &args.scenarios {
        let r = match s.as_str() {
            "fanout" => scenarios::fanout(&env, &plan),
            "peers" => scenarios::peers(&env, &plan),
            "latency" => scenarios::latency(&env, &plan),
            "journal" => {
                let (live, replay) = journal::run(&env, &plan);
                journal_replay = replay;
                live
            }
            "shield" => {
                shield_report = Some(shield::run(&env, &plan));
                continue;
            }
            _ => unreachable!("validated"),
        };
        results.push(r);
    }
    let _ = std::fs::remove_dir_all(&env.tmp);
    let mut command = String::from("cargo xtask bench");
    let default = args.scenarios.len() == DEFAULT_SCENARIOS.len()
        && DEFAULT_SCENARIOS
            .iter()
            .all(|d| args.scenarios.iter().any(|s| s == d));
    for s in &args.scenarios {
        if !default {
            command.push(' ');
            command.push_str(s);
        }
    }
    if args.quick {
        command.push_str(" --quick");
    }
    // herz-bench's own options go after `--` (xtask passes them through).
    let mut extra = String::new();
    if let Some(r) = args.runs {
        extra.push_str(&format!(" --runs {r}"));
    }
    if args.latency_subs != 1 {
        extra.push_str(&format!(" --latency-subs {}", args.latency_subs));
    }
    if let Some(s) = args.latency_secs {
        extra.push_str(&format!(" --latency-secs {s}"));
    }
    if let Some(v) = &args.systems {
        let names: Vec<&str> = v.iter().map(|s| s.label()).collect();
        extra.push_str(&format!(" --systems {}", names.join(",")));
    }
    if let Some(f) = &args.shield_filter {
        extra.push_str(&format!(" --shield-filter {f}"));
    }
    if args.herz_flush_us != 200 {
        extra.push_str(&format!(" --herz-flush-us {}", args.herz_flush_us));
    }
    if !extra.is_empty() {
        command.push_str(" --");
        command.push_str(&extra);
    }
    let report = Report {
        meta: Meta {
            started_utc,
            wall_s: started.elapsed().as_secs_f64(),
            command,
            quick: args.quick,
            runs_per_point: plan.runs,
            machine,
            versions,
            notes: notes(&env, &plan, &args.scenarios),
        },
        scenarios: results,
        shield: shield_report,
        journal_replay,
    };
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.out.join("report.json"), json)?;
    let plots = write_md_and_plots(&report, &args.out)?;
    eprintln!(
        "herz-bench: wrote {}/report.json, report.md{} in {:.0} s",
        args.out.display(),
        plots.iter().map(|p| format!(", {p}")).collect::<String>(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
