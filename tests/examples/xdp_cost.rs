//! What the XDP program costs per packet, for two or more builds of Herz's eBPF object, measured in the same
//! run: `cargo xtask bench xdp-cost` builds the object with and without its diagnostic log lines
//! (the `diagnostics` feature) and runs this. Alternates the builds round by round and reports medians,
//! from the kernel's own timing (BPF_PROG_TEST_RUN's mean per repeat) and from BPF statistics
//! (`kernel.bpf_stats_enabled`, run_time_ns / run_cnt), for the frames of the normal path.
//!
//! Usage: `xdp_cost LABEL=OBJECT[@LEVEL] ...` (LEVEL: the AYA_LOG_LEVEL the object is loaded with, 0 = off).

use herz_tests::{
    bpf::Programs,
    frames::{flags, tcp4, tcp4_from, udp4},
};

const SUB: u16 = 7100;
const FEED: u16 = 7102;
const REPEAT: u32 = 2_000_000;
const ROUNDS: usize = 7;

struct Build {
    label: String,
    programs: Programs,
}

fn load(spec: &str) -> Build {
    let (label, rest) = spec.split_once('=').expect("LABEL=OBJECT[@LEVEL]");
    let (path, level) = match rest.split_once('@') {
        Some((p, l)) => (p, Some(l.parse::<u8>().expect("a log level 0..=255"))),
        None => (rest, None),
    };
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut loader = aya::EbpfLoader::new();
    if let Some(level) = &level {
        loader.override_global("AYA_LOG_LEVEL", level, true);
    }
    let ebpf = loader
        .load(&bytes)
        .unwrap_or_else(|e| panic!("loading {path}: {e}"));
    let mut programs = Programs::from_ebpf(ebpf, &[SUB], &[FEED]);
    // Herz's default thresholds, as the daemon writes them.
    programs.set_params(&herz_user::shield::apply::params_from(&Default::default()));
    Build {
        label: label.to_string(),
        programs,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let specs: Vec<String> = std::env::args().skip(1).collect();
    assert!(
        specs.len() >= 2,
        "usage: xdp_cost LABEL=OBJECT[@LEVEL] LABEL=OBJECT[@LEVEL] ..."
    );
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(STATS).unwrap_or_default();
    let _ = std::fs::write(STATS, "1");
    let builds: Vec<Build> = specs.iter().map(|s| load(s)).collect();
    let frames: [(&str, Vec<u8>); 4] = [
        ("tcp ack to a Herz port", tcp4(SUB, flags::ACK)),
        ("udp to a feed port", udp4(FEED, 64)),
        (
            "syn flood from one source",
            tcp4_from([198, 18, 7, 7], 40_000, SUB, flags::SYN),
        ),
        ("tcp to another port", tcp4(22, flags::ACK)),
    ];
    println!("| frame | build | test-run ns/packet | BPF stats ns/run | vs first |");
    println!("|---|---|---:|---:|---:|");
    for (name, frame) in &frames {
        let mut test_run = vec![Vec::new(); builds.len()];
        let mut stats = vec![Vec::new(); builds.len()];
        for _ in 0..ROUNDS {
            for (i, b) in builds.iter().enumerate() {
                let (t0, n0) = b.programs.xdp_stats();
                let (mean, _) = b.programs.xdp_repeat(frame, REPEAT);
                let (t1, n1) = b.programs.xdp_stats();
                test_run[i].push(mean.as_nanos() as f64);
                if n1 > n0 {
                    stats[i].push((t1 - t0).as_nanos() as f64 / (n1 - n0) as f64);
                }
            }
        }
        let base = median(test_run[0].clone());
        for (i, b) in builds.iter().enumerate() {
            let t = median(test_run[i].clone());
            let s = if stats[i].is_empty() {
                f64::NAN
            } else {
                median(stats[i].clone())
            };
            println!(
                "| {name} | {} | {t:.1} | {s:.1} | {:.3} |",
                b.label,
                t / base
            );
        }
    }
    if !stats_before.trim().is_empty() {
        let _ = std::fs::write(STATS, stats_before.trim());
    }
}
