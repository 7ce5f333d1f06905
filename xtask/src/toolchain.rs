//! The eBPF toolchain pin and the guard that keeps it consistent with bpf-linker.
//!
//! `herz-ebpf/rust-toolchain.toml` is the one place that names the nightly the kernel programs build with.
//! bpf-linker reads the bitcode that nightly's LLVM writes, so both must be on the same LLVM major: an LLVM
//! cannot read a newer major's bitcode ("Invalid record"). [`LLVM_MAJOR`] is the LLVM Herz installs from
//! Debian and builds bpf-linker against; [`check`] stops the build with one line when the pinned nightly's
//! LLVM differs from it.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// The LLVM major bpf-linker is built with (Debian's `llvm-N-dev`, bpf-linker feature `llvm-N`).
/// Moves together with the nightly pin in herz-ebpf/rust-toolchain.toml: see README, "Toolchain".
pub const LLVM_MAJOR: u32 = 22;

/// The bpf-linker release Herz installs, exactly (`cargo install --locked --version =…`).
pub const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(Deserialize)]
struct ToolchainFile {
    toolchain: ToolchainSection,
}

#[derive(Deserialize)]
struct ToolchainSection {
    channel: String,
}

/// Reads the pinned channel from a rust-toolchain.toml text; refuses anything but a dated nightly,
/// because an undated `nightly` moves under the build (that is how LLVM 23 once broke the link).
pub fn parse_channel(text: &str) -> anyhow::Result<String> {
    let file: ToolchainFile = toml::from_str(text)
        .context("rust-toolchain.toml: expected [toolchain] channel = \"…\"")?;
    let channel = file.toolchain.channel;
    let date = channel.strip_prefix("nightly-").unwrap_or("");
    let dated = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !dated {
        bail!(
            "rust-toolchain.toml: channel {channel:?} is not a dated nightly (nightly-YYYY-MM-DD); an undated \
             channel changes LLVM under the build"
        );
    }
    Ok(channel)
}

/// The pinned eBPF toolchain, e.g. `nightly-2026-05-20`, from herz-ebpf/rust-toolchain.toml.
pub fn pinned(root: &Path) -> anyhow::Result<String> {
    let path = root.join("herz-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    parse_channel(&text).with_context(|| path.display().to_string())
}

/// The LLVM major in `rustc -vV` output (`LLVM version: 22.1.4`).
pub fn rustc_llvm_major(verbose_version: &str) -> Option<u32> {
    verbose_version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.trim().split('.').next())
        .and_then(|major| major.parse().ok())
}

/// The LLVM major an installed bpf-linker was built with, from cargo's record of installed crates
/// (`~/.cargo/.crates2.json`: the `llvm-N` feature it was installed with).
pub fn bpf_linker_llvm_major(crates2_json: &str) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_str(crates2_json).ok()?;
    let installs = v.get("installs")?.as_object()?;
    installs
        .iter()
        .filter(|(key, _)| key.starts_with("bpf-linker "))
        .flat_map(|(_, info)| {
            info.get("features")
                .and_then(|f| f.as_array())
                .into_iter()
                .flatten()
        })
        .filter_map(|f| f.as_str()?.strip_prefix("llvm-")?.parse().ok())
        .next()
}

/// The one line shown when the pinned nightly and bpf-linker disagree on LLVM.
pub fn mismatch_message(toolchain: &str, rustc_llvm: u32, linker_llvm: u32) -> String {
    format!(
        "eBPF toolchain mismatch: {toolchain} (herz-ebpf/rust-toolchain.toml) emits LLVM {rustc_llvm} bitcode \
         but bpf-linker {BPF_LINKER_VERSION} is built on LLVM {linker_llvm}; pin a nightly whose `rustc -vV` says \
         LLVM {linker_llvm}, or move LLVM_MAJOR in xtask/src/toolchain.rs to {rustc_llvm} and rerun `cargo xtask \
         setup` (README, \"Toolchain\")"
    )
}

/// `rustc -vV` of the pinned toolchain.
fn rustc_verbose(toolchain: &str) -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg(format!("+{toolchain}"))
        .arg("-vV")
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .with_context(|| format!("running rustc +{toolchain} -vV"))?;
    if !out.status.success() {
        bail!(
            "rustc +{toolchain} -vV failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Cargo's record of installed binaries.
pub fn crates2_json() -> Option<String> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    std::fs::read_to_string(home.join(".crates2.json")).ok()
}

/// Fails with [`mismatch_message`] when the pinned nightly's LLVM is not bpf-linker's.
pub fn check(toolchain: &str) -> anyhow::Result<()> {
    let verbose = rustc_verbose(toolchain)?;
    let rustc_llvm = rustc_llvm_major(&verbose)
        .with_context(|| format!("no `LLVM version:` line in rustc +{toolchain} -vV"))?;
    let linker_llvm = crates2_json()
        .as_deref()
        .and_then(bpf_linker_llvm_major)
        .unwrap_or(LLVM_MAJOR);
    if rustc_llvm != linker_llvm {
        bail!("{}", mismatch_message(toolchain, rustc_llvm, linker_llvm));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_channel_must_be_a_dated_nightly() {
        let file =
            |c: &str| format!("[toolchain]\nchannel = \"{c}\"\ncomponents = [\"rust-src\"]\n");
        assert_eq!(
            parse_channel(&file("nightly-2026-05-20")).unwrap(),
            "nightly-2026-05-20"
        );
        for bad in [
            "nightly",
            "stable",
            "1.95",
            "nightly-2026-5-20",
            "nightly-2026-05-2x",
            "beta-2026-05-20",
        ] {
            let err = parse_channel(&file(bad)).unwrap_err().to_string();
            assert!(err.contains("not a dated nightly"), "{bad}: {err}");
        }
        assert!(parse_channel("[toolchain]\n").is_err());
    }

    #[test]
    fn the_pin_in_the_tree_is_a_dated_nightly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let channel = pinned(root).unwrap();
        assert!(channel.starts_with("nightly-20"), "{channel}");
    }

    #[test]
    fn reads_the_llvm_major_from_rustc_verbose_version() {
        let v = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\n\
                 release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(rustc_llvm_major(v), Some(22));
        assert_eq!(
            rustc_llvm_major("rustc 1.101.0-nightly\nLLVM version: 23.1.0\n"),
            Some(23)
        );
        assert_eq!(rustc_llvm_major("rustc 1.95.0\n"), None);
        assert_eq!(rustc_llvm_major("LLVM version: x.1\n"), None);
    }

    #[test]
    fn reads_the_llvm_feature_bpf_linker_was_installed_with() {
        let json = r#"{"installs":{
            "cargo-fuzz 0.13.1 (registry+https://github.com/rust-lang/crates.io-index)":{"features":[]},
            "bpf-linker 0.13.0 (registry+https://github.com/rust-lang/crates.io-index)":
                {"features":["llvm-22"],"all_features":false,"no_default_features":true}}}"#;
        assert_eq!(bpf_linker_llvm_major(json), Some(22));
        assert_eq!(bpf_linker_llvm_major(r#"{"installs":{}}"#), None);
        assert_eq!(bpf_linker_llvm_major("not json"), None);
    }

    #[test]
    fn the_mismatch_message_names_both_versions_and_the_fix_on_one_line() {
        let m = mismatch_message("nightly-2026-10-30", 23, 22);
        assert!(!m.contains('\n'));
        for part in [
            "nightly-2026-10-30",
            "LLVM 23",
            "LLVM 22",
            "rust-toolchain.toml",
            "LLVM_MAJOR",
            "cargo xtask setup",
        ] {
            assert!(m.contains(part), "{part} missing from: {m}");
        }
    }
}
