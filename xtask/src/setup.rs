//! `cargo xtask setup`: installs the eBPF toolchain and the tools the tests use, idempotently.

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::run_cmd;

/// Where Debian's LLVM 22 lives (bpf-linker links against it and uses its tools).
pub const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13";

/// Debian packages: what bpf-linker needs to build and link, and what tests and operators use.
const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "bpftool",
    "nftables",
];

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn missing_packages() -> Vec<&'static str> {
    APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

fn has_rust_src() -> bool {
    Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false)
}

fn has_bpf_linker() -> bool {
    Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(&format!("bpf-linker {BPF_LINKER_VERSION}"))
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn has_cargo_fuzz() -> bool {
    quiet(Command::new("cargo").args(["fuzz", "--version"]))
}

/// True when nothing needs installing.
pub fn is_ready() -> bool {
    missing_packages().is_empty() && has_rust_src() && has_bpf_linker() && has_cargo_fuzz()
}

/// Runs setup only when something is missing.
pub fn ensure() -> anyhow::Result<()> {
    if is_ready() { Ok(()) } else { run() }
}

/// Installs whatever is missing, saying what it does.
pub fn run() -> anyhow::Result<()> {
    let missing = missing_packages();
    if missing.is_empty() {
        eprintln!("xtask setup: Debian packages present");
    } else {
        if !is_root() {
            bail!(
                "installing Debian packages {} needs root: run `sudo cargo xtask setup`",
                missing.join(" ")
            );
        }
        if !quiet(Command::new("apt-get").arg("--version")) {
            bail!(
                "apt-get not found: Herz's setup supports Debian 12; install {} by hand",
                missing.join(" ")
            );
        }
        eprintln!(
            "xtask setup: apt-get install {} (this takes a minute)",
            missing.join(" ")
        );
        run_cmd(Command::new("apt-get").args(["update", "-q"])).context(
            "apt-get update failed: is the Debian mirror reachable (and bookworm-security enabled for llvm-22)?",
        )?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("apt-get install failed")?;
    }
    if has_rust_src() {
        eprintln!("xtask setup: nightly rust-src present");
    } else {
        eprintln!("xtask setup: rustup component add rust-src --toolchain nightly");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("installing the nightly toolchain failed")?;
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("adding rust-src to the nightly toolchain failed")?;
    }
    if has_bpf_linker() {
        eprintln!("xtask setup: bpf-linker {BPF_LINKER_VERSION} present");
    } else {
        eprintln!(
            "xtask setup: cargo install bpf-linker {BPF_LINKER_VERSION} on LLVM 22 (about a minute)"
        );
        let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
        run_cmd(
            Command::new("cargo")
                .args([
                    "install",
                    "--locked",
                    "bpf-linker",
                    "--version",
                    &format!("~{BPF_LINKER_VERSION}"),
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .env("PATH", path)
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO_TARGET_DIR"),
        )
        .context("building bpf-linker failed (is crates.io reachable?)")?;
    }
    if has_cargo_fuzz() {
        eprintln!("xtask setup: cargo-fuzz present");
    } else {
        eprintln!("xtask setup: cargo install cargo-fuzz (about a minute)");
        run_cmd(
            Command::new("cargo")
                .args(["install", "--locked", "cargo-fuzz"])
                .env_remove("CARGO_TARGET_DIR"),
        )
        .context("building cargo-fuzz failed (is crates.io reachable?)")?;
    }
    eprintln!("xtask setup: ready");
    Ok(())
}
