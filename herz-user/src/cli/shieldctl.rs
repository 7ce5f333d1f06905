//! `herz shield show | reload`: the thresholds in force, and applying the configuration file's
//! `[shield]` section to a running shield without reloading its programs.

use std::path::Path;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use herz_common::{NS_PER_SEC, ShieldParams};

use super::block::PinArgs;
use crate::{
    config::Config,
    shield::{apply, pinned},
};

/// `herz shield`.
#[derive(Debug, Clone, Args)]
pub struct ShieldArgs {
    /// What to do with the running shield.
    #[command(subcommand)]
    pub action: ShieldAction,
}

/// What to do.
#[derive(Debug, Clone, Subcommand)]
pub enum ShieldAction {
    /// Print the thresholds and ports in force (read from the pinned maps).
    Show {
        /// Machine-readable JSON.
        #[arg(long)]
        json: bool,
        /// Where the shield\'s maps are pinned.
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Write the configuration's [shield] thresholds, ports, allow/block lists and feed sources into the
    /// running shield (entries added with `herz block`/`herz allow` and auto-blocks are kept).
    Reload {
        /// Where the shield\'s maps are pinned.
        #[command(flatten)]
        pin: PinArgs,
    },
}

/// Runs `herz shield ...` with the loaded `config`.
pub fn shield(a: &ShieldArgs, config: &Config) -> anyhow::Result<()> {
    match &a.action {
        ShieldAction::Show { json, pin } => {
            let pin = pin
                .pin_path
                .clone()
                .unwrap_or_else(|| config.shield.pin_path.clone());
            loaded(&pin)?;
            let p = pinned::read_params(&pin)?;
            let v = params_json(&p);
            if *json {
                println!("{v}");
            } else {
                for (k, val) in v.as_object().expect("object") {
                    println!("{k:<22} {val}");
                }
            }
            Ok(())
        }
        ShieldAction::Reload { pin } => {
            let pin = pin
                .pin_path
                .clone()
                .unwrap_or_else(|| config.shield.pin_path.clone());
            loaded(&pin)?;
            let applied = apply::apply_config(&pin, config).with_context(|| {
                format!(
                    "applying the configuration to the shield at {}",
                    pin.display()
                )
            })?;
            println!(
                "shield configuration applied: {} ports, {} allow, {} block, {} feed sources, {} stale entries removed",
                applied.ports, applied.allow, applied.block, applied.feed_sources, applied.removed
            );
            Ok(())
        }
    }
}

fn loaded(pin: &Path) -> anyhow::Result<()> {
    if !pinned::is_pinned(pin) {
        anyhow::bail!("no shield loaded at {}", pin.display());
    }
    Ok(())
}

/// The thresholds with the config's key names and units.
pub fn params_json(p: &ShieldParams) -> serde_json::Value {
    serde_json::json!({
        "syn_rate": p.syn_rate,
        "syn_burst": p.syn_burst,
        "max_half_open": p.max_half_open,
        "max_established": p.max_established,
        "half_open_timeout_ms": p.half_open_timeout_ns / 1_000_000,
        "autoblock_after": p.autoblock_after,
        "autoblock_window_ms": p.autoblock_window_ns / 1_000_000,
        "autoblock_ttl_secs": p.autoblock_ttl_ns / NS_PER_SEC,
        "global_syn_rate": p.global_syn_rate,
        "global_syn_burst": p.global_syn_burst,
        "udp_rate": p.udp_rate,
        "udp_burst": p.udp_burst,
        "feed_sources_enforced": p.flags & ShieldParams::FLAG_FEED_SOURCES != 0,
    })
}
