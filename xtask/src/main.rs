//! `cargo xtask setup | build | run | test | bench`: everything Herz needs, from a fresh Debian 12 machine.

mod bench;
mod setup;
mod toolchain;

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
    /// Formatting (rustfmt) and lints (clippy, warnings denied) on the workspace and on herz-ebpf.
    Lint,
    /// Formats every crate (the workspace and herz-ebpf) with the pinned nightly's rustfmt.
    Fmt,
    /// Setup if needed, lint, build, and run every test (unit, BPF_PROG_TEST_RUN, privileged integration,
    /// fuzz).
    Test {
        /// Extra arguments passed to the test binaries (e.g. a name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Install the peers (nats-server, libzmq, nftables), build herz and herz-bench in release mode, and run
    /// the benchmarks; results in target/bench/ (report.md, report.json, PNG plots).
    Bench {
        /// Scenarios to run (default: fanout, peers, latency, shield, journal, xdp-cost;
        /// journal-recovery only when named).
        #[arg(value_parser = ["fanout", "peers", "latency", "shield", "journal", "xdp-cost", "journal-recovery"])]
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
        Verb::Setup => setup::run().and_then(|()| setup::ensure().map(|_| ())),
        Verb::Build { release } => {
            setup::ensure().and_then(|channel| build(&channel, release).map(|_| ()))
        }
        Verb::Lint => setup::ensure().and_then(|channel| lint(&channel)),
        Verb::Fmt => setup::ensure().and_then(|channel| fmt(&channel, false)),
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

/// A cargo command for herz-ebpf: the pinned nightly, LLVM's tools first on PATH, and none of the outer
/// cargo's settings (they must not leak into the nightly, cross-target build).
pub fn ebpf_cargo(channel: &str) -> Command {
    let path = format!(
        "{}:{}",
        setup::llvm_bin(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root().join("herz-ebpf"))
        .env("RUSTUP_TOOLCHAIN", channel)
        .env("PATH", path)
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

pub fn build_ebpf(channel: &str) -> anyhow::Result<PathBuf> {
    eprintln!("xtask: building the eBPF object ({channel}, bpfel-unknown-none)");
    run_cmd(ebpf_cargo(channel).args(["build", "--release"]))?;
    Ok(ebpf_object())
}

/// Builds everything; returns the path of the `herz` binary.
fn build(channel: &str, release: bool) -> anyhow::Result<PathBuf> {
    let object = build_ebpf(channel)?;
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

/// rustfmt on the workspace and on herz-ebpf, with the pinned nightly's rustfmt (rustfmt.toml's import
/// grouping is a nightly option); `check` only reports.
fn fmt(channel: &str, check: bool) -> anyhow::Result<()> {
    let mut workspace = Command::new("cargo");
    workspace
        .current_dir(root())
        .args(["fmt", "--all"])
        .env("RUSTUP_TOOLCHAIN", channel);
    let mut ebpf = ebpf_cargo(channel);
    ebpf.arg("fmt");
    if check {
        workspace.arg("--check");
        ebpf.arg("--check");
    }
    run_cmd(&mut workspace)?;
    run_cmd(&mut ebpf)
}

/// rustfmt in check mode and clippy with warnings denied, on the workspace and on herz-ebpf.
fn lint(channel: &str) -> anyhow::Result<()> {
    eprintln!("xtask: lint: rustfmt --check (workspace, herz-ebpf; `cargo xtask fmt` fixes)");
    fmt(channel, true)?;
    eprintln!("xtask: lint: clippy -D warnings (workspace, herz-ebpf)");
    // The embedded object is only read by `include_bytes!` at build time; clippy needs the file to exist.
    let object = build_ebpf(channel)?;
    run_cmd(
        Command::new("cargo")
            .current_dir(root())
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env("HERZ_EBPF_OBJECT", &object),
    )?;
    run_cmd(ebpf_cargo(channel).args(["clippy", "--release", "--", "-D", "warnings"]))?;
    Ok(())
}

fn run(release: bool, args: &[String]) -> anyhow::Result<()> {
    let channel = setup::ensure()?;
    let herz = build(&channel, release)?;
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
    let channel = setup::ensure()?;
    lint(&channel)?;
    let herz = build(&channel, false)?;
    let object = ebpf_object();
    // Privileged tests that skip (not root, HERZ_REQUIRE_PRIVILEGED unset) append a line here; the run ends
    // by counting them, so a skip is never silent.
    let skips = root().join("target/xtask-skipped-tests");
    let _ = std::fs::remove_file(&skips);
    eprintln!("xtask: unit tests (workspace, xtask, bench), BPF_PROG_TEST_RUN tests");
    let mut unit = Command::new("cargo");
    unit.current_dir(root())
        .args(["test", "--workspace", "--exclude", "herz-tests", "--"])
        .args(args)
        .env("HERZ_EBPF_OBJECT", &object)
        .env("HERZ_SKIP_LOG", &skips);
    run_cmd(&mut unit)?;
    eprintln!("xtask: integration tests (privileged ones run serially)");
    let mut integration = Command::new("cargo");
    integration
        .current_dir(root())
        .args(["test", "--package", "herz-tests", "--", "--test-threads=1"])
        .args(args)
        .env("HERZ_EBPF_OBJECT", &object)
        .env("HERZ_BIN", &herz)
        .env("HERZ_SKIP_LOG", &skips);
    run_cmd(&mut integration)?;
    if args.is_empty() {
        fuzz(&channel, FUZZ_SECONDS)?;
    }
    let skipped = std::fs::read_to_string(&skips).unwrap_or_default();
    if let Some(summary) = skip_summary(&skipped) {
        eprintln!("xtask: {summary}");
    }
    Ok(())
}

/// "3 privileged tests skipped: not root" from the skip log's `test<TAB>reason` lines, one clause per reason.
fn skip_summary(log: &str) -> Option<String> {
    let mut by_reason: std::collections::BTreeMap<&str, usize> = Default::default();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let reason = line.split_once('\t').map_or("unknown", |(_, r)| r);
        *by_reason.entry(reason).or_default() += 1;
    }
    if by_reason.is_empty() {
        return None;
    }
    let clauses: Vec<String> = by_reason
        .iter()
        .map(|(reason, n)| {
            format!(
                "{n} privileged test{} skipped: {reason}",
                if *n == 1 { "" } else { "s" }
            )
        })
        .collect();
    Some(clauses.join("; "))
}

/// Seconds each fuzz target runs in `cargo xtask test`: long enough to catch shallow parser bugs on every
/// change, short enough for CI. Run longer by hand, with the pinned nightly:
/// `cargo +nightly-2026-05-20 fuzz run soupbintcp`.
const FUZZ_SECONDS: u32 = 30;

fn fuzz(channel: &str, seconds: u32) -> anyhow::Result<()> {
    for target in ["moldudp64", "soupbintcp", "session", "segment", "arbiter"] {
        eprintln!("xtask: fuzzing {target} for {seconds} s");
        let mut cmd = Command::new("cargo");
        cmd.current_dir(root())
            .args([
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={seconds}"),
            ])
            .env("RUSTUP_TOOLCHAIN", channel)
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .env_remove("CARGO_TARGET_DIR");
        run_cmd(&mut cmd)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::skip_summary;

    #[test]
    fn skipped_tests_are_counted_by_reason() {
        assert_eq!(skip_summary(""), None);
        assert_eq!(
            skip_summary("a\tnot root\nb\tnot root\n"),
            Some("2 privileged tests skipped: not root".into())
        );
        assert_eq!(
            skip_summary("a\tnot root\nb\tno nats-server\n"),
            Some(
                "1 privileged test skipped: no nats-server; 1 privileged test skipped: not root"
                    .into()
            )
        );
    }
}
