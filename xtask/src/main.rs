//! `cargo xtask setup | build | run | test | bench`: everything Herz needs, from a fresh Debian 12 machine.

mod bench;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask", about = "Herz build and test driver")]
struct Args {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Install every prerequisite (idempotent; quick when all is present).
    Setup,
    /// Build the eBPF object and the `herz` binary that embeds it.
    Build {
        /// Optimised user-space build.
        #[arg(long)]
        release: bool,
    },
    /// Setup if needed, build, and start `herz run` (arguments after `--` go to herz).
    Run {
        /// Optimised build.
        #[arg(long)]
        release: bool,
        /// Extra arguments for `herz`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup if needed, build, and run every test (unit, BPF_PROG_TEST_RUN, privileged integration).
    Test {
        /// Extra arguments passed to the test binaries (e.g. a name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Install the peers (nats-server, libzmq, nftables), build herz and herz-bench in release mode, and run
    /// the benchmarks; results in target/bench/ (report.md, report.json, PNG plots).
    Bench {
        /// Scenarios to run (default: all).
        #[arg(value_parser = ["fanout", "peers", "latency", "shield"])]
        scenarios: Vec<String>,
        /// One run per point, fewer points, shorter runs: the whole suite in a few minutes.
        #[arg(long)]
        quick: bool,
        /// Extra arguments for herz-bench (e.g. `-- --runs 5 --verbose`).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() {
    let args = Args::parse();
    let result = match args.verb {
        Verb::Setup => setup::run(),
        Verb::Build { release } => build(release).map(|_| ()),
        Verb::Run { release, args } => run(release, &args),
        Verb::Test { args } => test(&args),
        Verb::Bench {
            scenarios,
            quick,
            args,
        } => bench::run(&scenarios, quick, &args),
    };
    if let Err(e) = result {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a command, failing with its name when it fails.
pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed ({status})");
    }
    Ok(())
}

fn ebpf_object() -> PathBuf {
    root().join("herz-ebpf/target/bpfel-unknown-none/release/herz-ebpf")
}

fn build_ebpf() -> anyhow::Result<PathBuf> {
    eprintln!("xtask: building the eBPF object (nightly, bpfel-unknown-none)");
    let path = format!(
        "{}:{}",
        setup::LLVM_BIN,
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root().join("herz-ebpf"))
        .args(["build", "--release"])
        .env("PATH", path)
        // The outer cargo's settings must not leak into the nightly, cross-target build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    run_cmd(&mut cmd)?;
    Ok(ebpf_object())
}

/// Builds everything; returns the path of the `herz` binary.
fn build(release: bool) -> anyhow::Result<PathBuf> {
    let object = build_ebpf()?;
    eprintln!(
        "xtask: building herz ({})",
        if release { "release" } else { "debug" }
    );
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root())
        .args(["build", "--package", "herz-user", "--bins"])
        .env("HERZ_EBPF_OBJECT", &object);
    if release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("herz"))
}

fn run(release: bool, args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    let herz = build(release)?;
    let mut cmd = Command::new(&herz);
    if args.is_empty() {
        cmd.arg("run");
    } else {
        cmd.args(args);
    }
    eprintln!("xtask: starting {cmd:?} (Ctrl-C stops it)");
    run_cmd(&mut cmd)
}

fn test(args: &[String]) -> anyhow::Result<()> {
    setup::ensure()?;
    let herz = build(false)?;
    let object = ebpf_object();
    eprintln!("xtask: unit tests, BPF_PROG_TEST_RUN tests");
    let mut unit = Command::new("cargo");
    unit.current_dir(root())
        .args([
            "test",
            "--workspace",
            "--exclude",
            "herz-tests",
            "--exclude",
            "xtask",
            // The benchmark harness links libzmq and runs under `cargo xtask bench`, not here.
            "--exclude",
            "herz-bench",
            "--",
        ])
        .args(args)
        .env("HERZ_EBPF_OBJECT", &object);
    run_cmd(&mut unit)?;
    eprintln!("xtask: integration tests (privileged ones run serially)");
    let mut integration = Command::new("cargo");
    integration
        .current_dir(root())
        .args(["test", "--package", "herz-tests", "--", "--test-threads=1"])
        .args(args)
        .env("HERZ_EBPF_OBJECT", &object)
        .env("HERZ_BIN", &herz);
    run_cmd(&mut integration)?;
    if args.is_empty() {
        fuzz(FUZZ_SECONDS)?;
    }
    Ok(())
}

/// Seconds each fuzz target runs in `cargo xtask test`: long enough to catch shallow parser bugs on every
/// change, short enough for CI. Run longer by hand: `cargo +nightly fuzz run soupbintcp`.
const FUZZ_SECONDS: u32 = 30;

fn fuzz(seconds: u32) -> anyhow::Result<()> {
    for target in ["moldudp64", "soupbintcp"] {
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root())
            .args([
                "+nightly",
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={seconds}"),
            ])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("CARGO_TARGET_DIR");
        run_cmd(&mut cmd)?;
    }
    Ok(())
}
