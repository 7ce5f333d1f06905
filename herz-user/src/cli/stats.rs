//! `herz stats`: the shield's kernel counters and top sources, read from the pinned maps.

use std::{io::Write, path::Path};

use anyhow::Context as _;
use serde_json::json;

use crate::{
    shield::{ShieldError, pinned},
    status::{self, ShieldState},
};

/// Prints the counters; `json` for machine-readable output, `top` sources at most.
pub fn stats(pin_path: &Path, state_dir: &Path, json: bool, top: usize) -> anyhow::Result<()> {
    let daemon = status::read_live(state_dir);
    if !pinned::is_pinned(pin_path) {
        let why = match &daemon {
            Some(s) => match &s.shield {
                ShieldState::Disabled { reason } => format!(
                    "the daemon (pid {}) runs with the shield disabled: {reason}",
                    s.pid
                ),
                ShieldState::Off => format!(
                    "the daemon (pid {}) runs with shield.enabled = false",
                    s.pid
                ),
                ShieldState::Active { pin_path: p, .. } => {
                    format!(
                        "the daemon (pid {}) pins its maps at {}, not here",
                        s.pid,
                        p.display()
                    )
                }
            },
            None => "no herz daemon is running (start one with `herz run`)".into(),
        };
        if json {
            println!(
                "{}",
                json!({ "shield": "not loaded", "pin_path": pin_path, "reason": why })
            );
            return Ok(());
        }
        anyhow::bail!("no shield loaded at {}: {why}", pin_path.display());
    }
    let globals = pinned::read_globals(pin_path).map_err(not_permitted_hint)?;
    let mut sources = pinned::read_sources(pin_path).map_err(not_permitted_hint)?;
    let tracked = sources.len();
    sources.truncate(top);
    let daemon_pid = daemon.as_ref().map(|s| s.pid);
    if json {
        let globals_obj: serde_json::Map<String, serde_json::Value> = globals
            .0
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let out = json!({
            "shield": "loaded",
            "pin_path": pin_path,
            "daemon_pid": daemon_pid,
            "global": globals_obj,
            "drops": globals.drops(),
            "sources_tracked": tracked,
            "sources": sources,
        });
        println!("{out}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match daemon_pid {
        Some(pid) => writeln!(
            out,
            "shield loaded at {} (daemon pid {pid})",
            pin_path.display()
        )?,
        None => writeln!(
            out,
            "shield maps at {} (no daemon running: counters are from the last run)",
            pin_path.display()
        )?,
    }
    writeln!(out, "\nglobal counters")?;
    for (label, value) in &globals.0 {
        writeln!(out, "  {label:<22} {value:>14}")?;
    }
    let drops = globals.drops();
    writeln!(out, "\ndrops by reason ({} in all)", drops.total())?;
    for (label, value) in &drops.0 {
        writeln!(out, "  {label:<22} {value:>14}")?;
    }
    writeln!(out, "\ntop sources ({tracked} tracked)")?;
    writeln!(
        out,
        "  {:<40} {:>12} {:>14} {:>10} {:>10} {:>10} {:>9} {:>11}  drop reasons",
        "source", "packets", "bytes", "tcp_syn", "udp", "drops", "half_open", "established",
    )?;
    for r in &sources {
        let name = if r.trusted {
            format!("{} (trusted)", r.source)
        } else {
            r.source.to_string()
        };
        writeln!(
            out,
            "  {:<40} {:>12} {:>14} {:>10} {:>10} {:>10} {:>9} {:>11}  {}",
            name,
            r.packets,
            r.bytes,
            r.tcp_syn,
            r.udp,
            r.drops_total,
            r.half_open,
            r.established,
            r.drops.summary()
        )?;
    }
    out.flush().context("writing to stdout")
}

fn not_permitted_hint(e: ShieldError) -> anyhow::Error {
    anyhow::Error::new(e)
}
