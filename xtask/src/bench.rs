//! `cargo xtask bench [SCENARIO...] [--quick]`: installs the peers the benchmarks compare against,
//! builds herz and herz-bench in release mode, and runs herz-bench, which writes report.json,
//! report.md and PNG plots under target/bench/. See docs/PERFORMANCE.md.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{root, run_cmd};

/// Debian packages the benchmarks need: the peers (nats-server; libzmq for the `zmq` crate, found
/// through pkg-config; nftables for the shield scenario's peer ruleset), ethtool (the shield
/// scenario turns on GRO, hence NAPI, on a veth), procps (`sysctl`) and a TTF font for the plots' text (optional: plots
/// are drawn without text when it is missing).
const PACKAGES: &[&str] = &[
    "nats-server",
    "libzmq3-dev",
    "pkg-config",
    "nftables",
    "ethtool",
    "iproute2",
    "procps",
    "fonts-dejavu-core",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs whatever of [`PACKAGES`] is missing (apt-get, as root); quick when all is present.
fn ensure_prerequisites() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let install = |missing: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_cmd(&mut cmd)
    };
    if install(&missing).is_err() {
        // A fresh machine may have no package lists yet.
        run_cmd(Command::new("apt-get").arg("update")).context(
            "apt-get update (the benchmarks need root to install nats-server and libzmq3-dev)",
        )?;
        install(&missing)?;
    }
    let still: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p) && *p != "fonts-dejavu-core")
        .collect();
    if !still.is_empty() {
        bail!("still missing after apt-get: {}", still.join(" "));
    }
    Ok(())
}

/// Builds the `herz` binary in release mode. With the shield scenario, as `cargo xtask build
/// --release` does (setup, then the eBPF object, embedded). Without it the eBPF object is optional:
/// the other scenarios run with the shield off, so an object built earlier is embedded when present
/// and none is built (no nightly toolchain needed).
fn build_herz_release(shield: bool) -> anyhow::Result<PathBuf> {
    if shield {
        let channel = crate::setup::ensure()?;
        crate::build_ebpf(&channel)?;
    }
    eprintln!("xtask: building herz (release)");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .args(["build", "--release", "--package", "herz-user", "--bins"]);
    let object = crate::ebpf_object();
    if object.exists() {
        cmd.env("HERZ_EBPF_OBJECT", &object);
    }
    run_cmd(&mut cmd)?;
    Ok(root().join("target/release/herz"))
}

fn build_bench_release() -> anyhow::Result<PathBuf> {
    eprintln!("xtask: building herz-bench (release)");
    run_cmd(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "herz-bench",
    ]))?;
    Ok(root().join("target/release/herz-bench"))
}

/// The XDP program's cost per packet with its diagnostic log lines compiled in (level on, level off)
/// against compiled out, in one run (tests/examples/xdp_cost.rs); the table goes to
/// target/bench/xdp-cost.md.
fn xdp_cost() -> anyhow::Result<()> {
    let channel = crate::setup::ensure()?;
    let with = crate::build_ebpf(&channel)?;
    eprintln!("xtask: building the eBPF object without the `diagnostics` feature");
    let without_dir = root().join("herz-ebpf/target/no-diagnostics");
    run_cmd(
        crate::ebpf_cargo(&channel)
            .args([
                "build",
                "--release",
                "--no-default-features",
                "--target-dir",
            ])
            .arg(&without_dir),
    )?;
    let without = without_dir.join("bpfel-unknown-none/release/herz-ebpf");
    run_cmd(
        Command::new("cargo")
            .current_dir(root())
            .args([
                "build",
                "--release",
                "--package",
                "herz-tests",
                "--example",
                "xdp_cost",
            ])
            .env("HERZ_EBPF_OBJECT", &with),
    )?;
    let out = Command::new(root().join("target/release/examples/xdp_cost"))
        .arg(format!("without diagnostics={}", without.display()))
        .arg(format!("diagnostics, AYA_LOG_LEVEL 0={}@0", with.display()))
        .arg(format!("diagnostics (as shipped)={}", with.display()))
        .output()
        .context("running xdp_cost")?;
    if !out.status.success() {
        bail!("xdp_cost failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let table = String::from_utf8_lossy(&out.stdout);
    print!("{table}");
    let dir = root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("xdp-cost.md"), table.as_bytes())?;
    Ok(())
}

/// Gigabytes of messages `journal-recovery` writes: `HERZ_JOURNAL_RECOVERY_GB`, else 1 with
/// `--quick`, else 10.
fn journal_recovery_gb(quick: bool) -> anyhow::Result<String> {
    match std::env::var("HERZ_JOURNAL_RECOVERY_GB") {
        Ok(v) => {
            let gb: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("HERZ_JOURNAL_RECOVERY_GB={v}"))?;
            if gb <= 0.0 {
                bail!("HERZ_JOURNAL_RECOVERY_GB must be positive");
            }
            Ok(v.trim().to_string())
        }
        Err(_) => Ok(if quick { "1" } else { "10" }.into()),
    }
}

/// Recovery time of a large durable journal (tests/examples/journal_recovery.rs): writes it under
/// target/ (never /tmp, which may be small or in memory), reopens it clean, cold and after a torn
/// append, and removes it; the table goes to target/bench/journal-recovery.md.
fn journal_recovery(quick: bool) -> anyhow::Result<()> {
    let gb = journal_recovery_gb(quick)?;
    eprintln!("xtask: building the journal_recovery example (release)");
    let mut build = Command::new("cargo");
    build.current_dir(root()).args([
        "build",
        "--release",
        "--package",
        "herz-tests",
        "--example",
        "journal_recovery",
    ]);
    let object = crate::ebpf_object();
    if object.exists() {
        build.env("HERZ_EBPF_OBJECT", &object);
    }
    run_cmd(&mut build)?;
    let dir = root().join("target/bench/journal-recovery");
    eprintln!(
        "xtask: journal_recovery: {gb} GB of messages in {}",
        dir.display()
    );
    let out = Command::new(root().join("target/release/examples/journal_recovery"))
        .arg(&dir)
        .arg(&gb)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("running journal_recovery")?;
    if !out.status.success() {
        bail!("journal_recovery failed ({})", out.status);
    }
    let table = String::from_utf8_lossy(&out.stdout);
    print!("{table}");
    let bench = root().join("target/bench");
    std::fs::create_dir_all(&bench)?;
    std::fs::write(bench.join("journal-recovery.md"), table.as_bytes())?;
    Ok(())
}

/// Prerequisites, builds, then the benchmarks. `extra` goes to herz-bench as is.
pub fn run(scenarios: &[String], quick: bool, extra: &[String]) -> anyhow::Result<()> {
    let all = scenarios.is_empty();
    if all || scenarios.iter().any(|s| s == "xdp-cost") {
        xdp_cost()?;
    }
    // Not part of the default suite: it writes 10 GB and takes minutes.
    if scenarios.iter().any(|s| s == "journal-recovery") {
        journal_recovery(quick)?;
    }
    let scenarios: Vec<String> = scenarios
        .iter()
        .filter(|s| *s != "xdp-cost" && *s != "journal-recovery")
        .cloned()
        .collect();
    if !all && scenarios.is_empty() {
        return Ok(());
    }
    ensure_prerequisites()?;
    let shield = all || scenarios.iter().any(|s| s == "shield");
    let herz = build_herz_release(shield)?;
    let bench = build_bench_release()?;
    let out = root().join("target/bench");
    let mut cmd = Command::new(&bench);
    cmd.current_dir(root())
        .args(&scenarios)
        .arg("--herz")
        .arg(&herz)
        .arg("--out")
        .arg(&out);
    if quick {
        cmd.arg("--quick");
    }
    cmd.args(extra);
    eprintln!("xtask: running {cmd:?}");
    run_cmd(&mut cmd)?;
    eprintln!(
        "xtask: results in {} (report.md, report.json, *.png)",
        out.display()
    );
    Ok(())
}
