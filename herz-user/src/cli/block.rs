//! `herz block | unblock | blocked | allow | disallow | allowed`: the shield's lists, edited in the
//! pinned maps directly. They work whether or not the daemon runs (as long as its maps are pinned), and
//! take effect on the next packet.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::Args;

use crate::shield::{Cidr, format_duration, parse_duration, pinned};

/// Where the maps are: `--pin-path`, or shield.pin_path of the configuration.
#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    /// Pin directory (defaults to shield.pin_path of the configuration).
    #[arg(long)]
    pub pin_path: Option<PathBuf>,
}

impl PinArgs {
    fn resolve(&self, default: &Path) -> PathBuf {
        self.pin_path.clone().unwrap_or_else(|| default.into())
    }
}

/// `herz block`.
#[derive(Debug, Clone, Args)]
pub struct BlockArgs {
    /// Network or address to block on Herz's ports, e.g. 198.18.4.0/24 or 2001:db8::7.
    #[arg(value_parser = parse_cidr)]
    pub cidr: Cidr,
    /// Lift the block after this long (30s, 5m, 1h, 2d); permanent without it.
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: Option<Duration>,
    /// Where the shield\'s maps are pinned.
    #[command(flatten)]
    pub pin: PinArgs,
}

/// `herz unblock` / `herz disallow`.
#[derive(Debug, Clone, Args)]
pub struct CidrArgs {
    /// The network exactly as listed (a longer or shorter prefix is a different entry).
    #[arg(value_parser = parse_cidr)]
    pub cidr: Cidr,
    /// Where the shield\'s maps are pinned.
    #[command(flatten)]
    pub pin: PinArgs,
}

/// `herz allow`.
#[derive(Debug, Clone, Args)]
pub struct AllowArgs {
    /// Network or address whose traffic always passes (no limit or block applies to it).
    #[arg(value_parser = parse_cidr)]
    pub cidr: Cidr,
    /// Remove the entry instead (same as `herz disallow`).
    #[arg(long)]
    pub remove: bool,
    /// Where the shield\'s maps are pinned.
    #[command(flatten)]
    pub pin: PinArgs,
}

/// `herz blocked` / `herz allowed`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// Where the shield\'s maps are pinned.
    #[command(flatten)]
    pub pin: PinArgs,
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    s.parse()
        .map_err(|e: crate::shield::cidr::ParseError| e.to_string())
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn loaded(pin_path: &Path) -> anyhow::Result<()> {
    if !pinned::is_pinned(pin_path) {
        anyhow::bail!(
            "no shield loaded at {}: start `herz run` with the shield on, or pass --pin-path",
            pin_path.display()
        );
    }
    Ok(())
}

/// `herz block CIDR [--ttl D]`.
pub fn block(a: &BlockArgs, default_pin: &Path) -> anyhow::Result<()> {
    let pin = a.pin.resolve(default_pin);
    loaded(&pin)?;
    let row = pinned::block(&pin, a.cidr, a.ttl).with_context(|| format!("blocking {}", a.cidr))?;
    match a.ttl {
        Some(t) => println!("blocked {} for {}", row.cidr, format_duration(t)),
        None => println!("blocked {} (permanent)", row.cidr),
    }
    Ok(())
}

/// `herz unblock CIDR`.
pub fn unblock(a: &CidrArgs, default_pin: &Path) -> anyhow::Result<()> {
    let pin = a.pin.resolve(default_pin);
    loaded(&pin)?;
    if !pinned::unblock(&pin, a.cidr).with_context(|| format!("unblocking {}", a.cidr))? {
        anyhow::bail!("{} is not on the blocklist (see `herz blocked`)", a.cidr);
    }
    println!("unblocked {}", a.cidr);
    Ok(())
}

/// `herz blocked [--json]`.
pub fn blocked(a: &ListArgs, default_pin: &Path) -> anyhow::Result<()> {
    let pin = a.pin.resolve(default_pin);
    loaded(&pin)?;
    let rows = pinned::read_blocked(&pin)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::json!({ "blocked": rows }))?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "blocklist empty")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<44} {:<8} {:<14} {:>12}",
        "network", "origin", "reason", "expires in"
    )?;
    for r in &rows {
        let expires = match (r.expired, r.expires_in_ms) {
            (true, _) => "expired".to_string(),
            (false, None) => "never".to_string(),
            (false, Some(ms)) => format_duration(Duration::from_millis(ms)),
        };
        writeln!(
            out,
            "{:<44} {:<8} {:<14} {:>12}",
            r.cidr.to_string(),
            r.origin,
            r.reason.unwrap_or("-"),
            expires
        )?;
    }
    out.flush().context("writing to stdout")
}

/// `herz allow CIDR` / `herz allow --remove CIDR`.
pub fn allow(a: &AllowArgs, default_pin: &Path) -> anyhow::Result<()> {
    if a.remove {
        return disallow(
            &CidrArgs {
                cidr: a.cidr,
                pin: a.pin.clone(),
            },
            default_pin,
        );
    }
    let pin = a.pin.resolve(default_pin);
    loaded(&pin)?;
    pinned::allow(&pin, a.cidr).with_context(|| format!("allowing {}", a.cidr))?;
    println!("allowed {}", a.cidr);
    Ok(())
}

/// `herz disallow CIDR`.
pub fn disallow(a: &CidrArgs, default_pin: &Path) -> anyhow::Result<()> {
    let pin = a.pin.resolve(default_pin);
    loaded(&pin)?;
    if !pinned::disallow(&pin, a.cidr)
        .with_context(|| format!("removing {} from the allowlist", a.cidr))?
    {
        anyhow::bail!("{} is not on the allowlist (see `herz allowed`)", a.cidr);
    }
    println!("removed {} from the allowlist", a.cidr);
    Ok(())
}

/// `herz allowed [--json]`.
pub fn allowed(a: &ListArgs, default_pin: &Path) -> anyhow::Result<()> {
    let pin = a.pin.resolve(default_pin);
    loaded(&pin)?;
    let rows = pinned::read_allowed(&pin)?;
    let feed = pinned::read_feed_sources(&pin)?;
    let trusted = pinned::read_trusted(&pin)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "allowed": rows, "feed_sources": feed, "trusted": trusted })
        )?;
        return Ok(());
    }
    writeln!(out, "allowlist ({} entries)", rows.len())?;
    for r in &rows {
        writeln!(out, "  {:<44} {}", r.cidr.to_string(), r.origin)?;
    }
    if feed.is_empty() {
        writeln!(out, "feed sources: any")?;
    } else {
        writeln!(out, "feed sources ({})", feed.len())?;
        for c in &feed {
            writeln!(out, "  {c}")?;
        }
    }
    writeln!(
        out,
        "trusted sources (logged-in subscribers): {}",
        trusted.len()
    )?;
    for t in &trusted {
        writeln!(out, "  {t}")?;
    }
    out.flush().context("writing to stdout")
}
