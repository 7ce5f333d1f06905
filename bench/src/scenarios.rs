//! The scenarios: which systems, subscriber counts, sizes and rates, and how runs of one point are
//! summarised (medians over the valid runs).

use serde::{Deserialize, Serialize};

use crate::{
    pubs::Load,
    run::{Env, Latency, RunResult, System, run_once},
};

/// How big a suite is.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `--quick`.
    pub quick: bool,
    /// Runs per point.
    pub runs: usize,
    /// Subscribers in latency runs.
    pub latency_subs: usize,
    /// Seconds per latency run.
    pub latency_secs: u64,
    /// Only these systems (`--systems`).
    pub systems: Option<Vec<System>>,
    /// Only the shield flood cells whose `method/sources/defence` label contains this.
    pub shield_filter: Option<String>,
}

/// One point: a system at one subscriber count, size and rate, with its runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    /// System.
    pub system: System,
    /// Subscribers.
    pub subscribers: usize,
    /// Message size, bytes.
    pub size: usize,
    /// Messages per run.
    pub n: u64,
    /// Offered rate (latency).
    pub rate: Option<u64>,
    /// Medians.
    pub summary: Summary,
    /// Every run.
    pub runs: Vec<RunResult>,
}

/// Medians of a point's runs: over the valid runs, or over all runs (then `valid` is false).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Summary {
    /// At least one run was valid; the medians are over valid runs only.
    pub valid: bool,
    /// Valid runs / runs.
    pub valid_runs: usize,
    /// Runs.
    pub runs: usize,
    /// Median aggregate delivered msgs/s.
    pub msgs_per_s: f64,
    /// Median per-subscriber msgs/s.
    pub per_sub_msgs_per_s: f64,
    /// Median server CPU seconds per million delivered messages.
    pub cpu_s_per_million: f64,
    /// Highest loss of any run, percent.
    pub max_loss_pct: f64,
    /// Most duplicate messages any run received (all subscribers together).
    pub max_duplicates: u64,
    /// Median of each latency percentile.
    pub latency: Option<Latency>,
    /// Median achieved publish rate (paced runs).
    pub publish_rate: f64,
    /// Reasons runs were invalid.
    pub invalid_reasons: Vec<String>,
}

/// Median of a list (mean of the middle two for even lengths); 0 for an empty list.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Summary {
    fn of(runs: &[RunResult]) -> Self {
        let valid: Vec<&RunResult> = runs.iter().filter(|r| r.valid).collect();
        let basis: Vec<&RunResult> = if valid.is_empty() {
            runs.iter().filter(|r| r.delivered > 0).collect()
        } else {
            valid.clone()
        };
        let m = |f: &dyn Fn(&RunResult) -> f64| median(basis.iter().map(|r| f(r)).collect());
        let lat: Vec<Latency> = basis.iter().filter_map(|r| r.latency).collect();
        let latency = (!lat.is_empty()).then(|| {
            let ml = |f: &dyn Fn(&Latency) -> f64| median(lat.iter().map(f).collect());
            Latency {
                samples: lat.iter().map(|l| l.samples).sum(),
                p50_us: ml(&|l| l.p50_us),
                p99_us: ml(&|l| l.p99_us),
                p999_us: ml(&|l| l.p999_us),
                max_us: ml(&|l| l.max_us),
                mean_us: ml(&|l| l.mean_us),
            }
        });
        let mut reasons: Vec<String> = runs
            .iter()
            .filter_map(|r| r.invalid_reason.clone())
            .collect();
        reasons.dedup();
        Summary {
            valid: !valid.is_empty(),
            valid_runs: valid.len(),
            runs: runs.len(),
            msgs_per_s: m(&|r| r.msgs_per_s),
            per_sub_msgs_per_s: m(&|r| r.per_sub_msgs_per_s),
            cpu_s_per_million: m(&|r| r.cpu_s_per_million),
            max_loss_pct: runs.iter().map(|r| r.loss_pct).fold(0.0, f64::max),
            max_duplicates: runs.iter().map(|r| r.duplicates).max().unwrap_or(0),
            latency,
            publish_rate: m(&|r| r.publish_rate),
            invalid_reasons: reasons,
        }
    }
}

/// A scenario's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// `fanout`, `peers` or `latency`.
    pub name: String,
    /// What it measures.
    pub description: String,
    /// Every point.
    pub points: Vec<Point>,
}

impl ScenarioResult {
    /// The point for a system at (subscribers, size, rate), if measured.
    pub fn point(
        &self,
        sys: System,
        subs: usize,
        size: usize,
        rate: Option<u64>,
    ) -> Option<&Point> {
        self.points
            .iter()
            .find(|p| p.system == sys && p.subscribers == subs && p.size == size && p.rate == rate)
    }
}

/// Messages per throughput run: about `target` deliveries in total, 200k..=2M per subscriber.
pub fn throughput_n(quick: bool, subs: usize) -> u64 {
    let target: u64 = if quick { 8_000_000 } else { 16_000_000 };
    (target / subs as u64).clamp(200_000, 2_000_000)
}

/// The systems and cells of a scenario.
pub(crate) struct Grid {
    /// Systems, interleaved run by run.
    pub systems: Vec<System>,
    /// (subscribers, size, rate, n, warm-up messages)
    pub cells: Vec<(usize, usize, Option<u64>, u64, u64)>,
}

/// Runs every cell of `grid` on every system, `plan.runs` times, the systems interleaved.
pub(crate) fn execute(
    env: &Env,
    plan: &Plan,
    name: &str,
    description: &str,
    mut grid: Grid,
) -> ScenarioResult {
    if let Some(only) = &plan.systems {
        grid.systems.retain(|s| only.contains(s));
    }
    let total = grid.cells.len() * grid.systems.len() * plan.runs;
    let mut done = 0;
    let mut points = Vec::new();
    for &(subs, size, rate, n, warmup) in &grid.cells {
        let mut runs: Vec<Vec<RunResult>> = vec![Vec::new(); grid.systems.len()];
        // Interleave the systems run by run, so that a noisy moment hits all of them alike.
        for _ in 0..plan.runs {
            for (i, &sys) in grid.systems.iter().enumerate() {
                done += 1;
                let load = Load {
                    n,
                    size,
                    rate,
                    warmup,
                };
                let r = run_once(env, sys, subs, load);
                eprintln!("{}", progress_line(name, done, total, &r));
                if env.verbose {
                    eprintln!(
                        "    publisher: {} sent, {:.0} msgs/s, max {:.0} µs behind schedule; server CPU {:.3} s ({})",
                        r.publisher.sent,
                        r.publish_rate,
                        r.publisher.max_late_ns as f64 / 1e3,
                        r.server_cpu_s,
                        r.cpu_source
                    );
                    for (i, s) in r.subs.iter().enumerate() {
                        eprintln!(
                            "    sub {i}: received {} lost {} errors {} (duplicates {} misnumbered {}) first error {:?} stopped {:?}",
                            s.received,
                            s.lost,
                            s.errors,
                            s.duplicates,
                            s.misnumbered,
                            s.first_error,
                            s.stopped
                        );
                    }
                }
                runs[i].push(r);
            }
        }
        for (i, &sys) in grid.systems.iter().enumerate() {
            let rs = std::mem::take(&mut runs[i]);
            points.push(Point {
                system: sys,
                subscribers: subs,
                size,
                n,
                rate,
                summary: Summary::of(&rs),
                runs: rs,
            });
        }
    }
    ScenarioResult {
        name: name.into(),
        description: description.into(),
        points,
    }
}

fn progress_line(name: &str, done: usize, total: usize, r: &RunResult) -> String {
    let what = match r.rate {
        Some(rate) => format!(
            "{} rate={rate}/s subs={} size={}",
            r.system.label(),
            r.subscribers,
            r.size
        ),
        None => format!(
            "{} subs={} size={} n={}",
            r.system.label(),
            r.subscribers,
            r.size,
            r.n
        ),
    };
    let figures = match &r.latency {
        Some(l) => format!(
            "p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs",
            l.p50_us, l.p99_us, l.p999_us, l.max_us
        ),
        None => format!(
            "{:.3} M msgs/s delivered, {:.3} CPU s/M",
            r.msgs_per_s / 1e6,
            r.cpu_s_per_million
        ),
    };
    let status = match &r.invalid_reason {
        None => "ok".to_string(),
        Some(why) => format!("INVALID: {why}"),
    };
    format!("[{name} {done}/{total}] {what}: {figures} ({status})")
}

/// Scenario 1: fan-out to 1, 4, 16 TCP subscribers and over multicast, Herz against the raw ceiling.
pub fn fanout(env: &Env, plan: &Plan) -> ScenarioResult {
    let cells = [1usize, 4, 16]
        .into_iter()
        .map(|s| (s, 64, None, throughput_n(plan.quick, s), 0))
        .collect();
    execute(
        env,
        plan,
        "fanout",
        "Messages/s delivered to N subscribers (64-byte messages, unpaced publisher), Herz vs a raw-socket \
         baseline that writes the same pre-framed bytes; TCP (SoupBinTCP) and multicast (MoldUDP64).",
        Grid {
            systems: vec![
                System::HerzTcp,
                System::RawTcp,
                System::HerzMcast,
                System::RawMcast,
            ],
            cells,
        },
    )
}

/// Scenario 2: the same fan-out shape across Herz, nats-server, ZeroMQ and the raw ceilings.
pub fn peers(env: &Env, plan: &Plan) -> ScenarioResult {
    let (subs, sizes): (&[usize], &[usize]) = if plan.quick {
        (&[1, 16], &[64])
    } else {
        (&[1, 4, 16, 64], &[40, 64, 256])
    };
    let mut cells = Vec::new();
    for &size in sizes {
        for &s in subs {
            cells.push((s, size, None, throughput_n(plan.quick, s), 0));
        }
    }
    execute(
        env,
        plan,
        "peers",
        "The fan-out shape across systems: Herz (SoupBinTCP and MoldUDP64 multicast), nats-server core \
         pub/sub, ZeroMQ PUB/SUB, and the raw-socket ceilings; unpaced publisher, every subscriber checked.",
        Grid {
            systems: vec![
                System::HerzTcp,
                System::HerzMcast,
                System::Nats,
                System::Zmq,
                System::RawTcp,
                System::RawMcast,
            ],
            cells,
        },
    )
}

/// Scenario 3: one-way latency at fixed offered rates.
pub fn latency(env: &Env, plan: &Plan) -> ScenarioResult {
    let rates: &[u64] = if plan.quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 500_000]
    };
    let cells = rates
        .iter()
        .map(|&r| {
            let n = r * plan.latency_secs;
            // The first 0.2 s warm up connections and caches and are not recorded.
            (plan.latency_subs, 64, Some(r), n, r / 5)
        })
        .collect();
    execute(
        env,
        plan,
        "latency",
        "One-way latency (publisher's CLOCK_MONOTONIC stamp in the message to the subscriber's clock on \
         receipt) at fixed offered rates, HDR histograms; 64-byte messages.",
        Grid {
            systems: vec![
                System::HerzTcp,
                System::HerzMcast,
                System::Nats,
                System::Zmq,
                System::RawTcp,
                System::RawMcast,
            ],
            cells,
        },
    )
}
