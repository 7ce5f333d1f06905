//! `cargo xtask setup`: installs the eBPF toolchain and the tools the tests use, idempotently, and checks
//! that the pinned nightly and bpf-linker agree on LLVM (see [`crate::toolchain`]).

use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

use crate::{
    root, run_cmd,
    toolchain::{self, BPF_LINKER_VERSION, LLVM_MAJOR},
};

/// Where Debian's LLVM lives (bpf-linker links against it and uses its tools).
pub fn llvm_prefix() -> String {
    format!("/usr/lib/llvm-{LLVM_MAJOR}")
}

/// `bin/` of [`llvm_prefix`], put first on PATH for bpf-linker.
pub fn llvm_bin() -> String {
    format!("{}/bin", llvm_prefix())
}

/// Debian packages: what bpf-linker needs to build and link (LLVM [`LLVM_MAJOR`]), what the bench crate's
/// unit tests link (libzmq through pkg-config), and what tests and operators use.
fn apt_packages() -> Vec<String> {
    let mut packages = vec![
        format!("llvm-{LLVM_MAJOR}-dev"),
        format!("libpolly-{LLVM_MAJOR}-dev"),
    ];
    packages.extend(
        [
            "libzstd-dev",
            "zlib1g-dev",
            "libzmq3-dev",
            "pkg-config",
            "iproute2",
            "bpftool",
            "nftables",
        ]
        .map(String::from),
    );
    packages
}

fn quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn missing_packages() -> Vec<String> {
    apt_packages()
        .into_iter()
        .filter(|p| {
            let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", p]).output();
            !matches!(out, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect()
}

/// The pinned toolchain's components that the build and lint need.
const COMPONENTS: &[&str] = &["rust-src", "clippy", "rustfmt"];

/// True when the pinned nightly is installed with [`COMPONENTS`].
fn has_pinned_toolchain(channel: &str) -> bool {
    Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", channel])
        .output()
        .map(|o| {
            let listed = String::from_utf8_lossy(&o.stdout);
            o.status.success()
                && COMPONENTS
                    .iter()
                    .all(|c| listed.lines().any(|l| l.starts_with(c)))
        })
        .unwrap_or(false)
}

/// True when bpf-linker is installed at exactly [`BPF_LINKER_VERSION`], built on LLVM [`LLVM_MAJOR`].
fn has_bpf_linker() -> bool {
    let version_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("bpf-linker {BPF_LINKER_VERSION}")
        })
        .unwrap_or(false);
    let llvm = toolchain::crates2_json()
        .as_deref()
        .and_then(toolchain::bpf_linker_llvm_major);
    version_ok && llvm == Some(LLVM_MAJOR)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The cargo-fuzz release Herz installs, exactly.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn has_cargo_fuzz() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).trim() == format!("cargo-fuzz {CARGO_FUZZ_VERSION}")
        })
        .unwrap_or(false)
}

/// True when nothing needs installing.
fn is_ready(channel: &str) -> bool {
    missing_packages().is_empty()
        && has_pinned_toolchain(channel)
        && has_bpf_linker()
        && has_cargo_fuzz()
}

/// Runs setup only when something is missing, then checks the toolchain pin against bpf-linker.
/// Returns the pinned eBPF toolchain.
pub fn ensure() -> anyhow::Result<String> {
    let channel = toolchain::pinned(&root())?;
    if !is_ready(&channel) {
        run()?;
    }
    toolchain::check(&channel)?;
    Ok(channel)
}

/// Installs whatever is missing, saying what it does.
pub fn run() -> anyhow::Result<()> {
    let channel = toolchain::pinned(&root())?;
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
            "apt-get update failed: is the Debian mirror reachable (and bookworm-security enabled for LLVM)?",
        )?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
        .context("apt-get install failed")?;
    }
    if has_pinned_toolchain(&channel) {
        eprintln!(
            "xtask setup: {channel} with {} present",
            COMPONENTS.join(", ")
        );
    } else {
        eprintln!(
            "xtask setup: rustup toolchain install {channel} (the eBPF toolchain, pinned in herz-ebpf/rust-toolchain.toml)"
        );
        run_cmd(
            Command::new("rustup")
                .args(["toolchain", "install", &channel, "--profile", "minimal"])
                .args(COMPONENTS.iter().flat_map(|c| ["--component", c])),
        )
        .with_context(|| format!("installing the {channel} toolchain failed"))?;
    }
    if has_bpf_linker() {
        eprintln!("xtask setup: bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR}) present");
    } else {
        eprintln!(
            "xtask setup: cargo install bpf-linker {BPF_LINKER_VERSION} on LLVM {LLVM_MAJOR} (about a minute)"
        );
        let path = format!(
            "{}:{}",
            llvm_bin(),
            std::env::var("PATH").unwrap_or_default()
        );
        run_cmd(
            Command::new("cargo")
                .args(["install", "--locked", "--force", "bpf-linker", "--version"])
                .arg(format!("={BPF_LINKER_VERSION}"))
                .args(["--no-default-features", "--features"])
                .arg(format!("llvm-{LLVM_MAJOR}"))
                .env("LLVM_PREFIX", llvm_prefix())
                .env("PATH", path)
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO_TARGET_DIR"),
        )
        .context("building bpf-linker failed (is crates.io reachable?)")?;
    }
    if has_cargo_fuzz() {
        eprintln!("xtask setup: cargo-fuzz present");
    } else {
        eprintln!("xtask setup: cargo install cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
        run_cmd(
            Command::new("cargo")
                .args(["install", "--locked", "cargo-fuzz", "--version"])
                .arg(format!("={CARGO_FUZZ_VERSION}"))
                .env_remove("CARGO_TARGET_DIR"),
        )
        .context("building cargo-fuzz failed (is crates.io reachable?)")?;
    }
    eprintln!("xtask setup: ready");
    Ok(())
}
