//! `herz run`: the daemon.

use anyhow::Context as _;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::{
    config::Config,
    net::Distributor,
    shield::{Shield, ShieldError},
    status::{self, ShieldState, Status},
};

/// Binds the distributor's sockets, starts the shield (or reports why it is off), then serves until
/// SIGINT or SIGTERM.
pub fn run(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    log_reload: crate::logging::LogReload,
) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    // Sockets first: a port in use fails the start before anything is attached in the kernel.
    let mut distributor = Distributor::bind(&config)?;
    let (mut shield, state) = start_shield(&config)?;
    // Loaded, attached, pinned: from here on the daemon needs only map access and detaching.
    match crate::privilege::drop_after_start(shield.is_some()) {
        Ok(kept) => {
            let kept: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
            tracing::info!(kept = ?kept, "capabilities dropped")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot drop capabilities; running with those of the start")
        }
    }
    if let Some(sh) = &mut shield {
        match sh.take_handle() {
            Ok(h) => distributor.set_trust(
                crate::shield::TrustWriter::spawn(h)
                    .context("starting the shield's trust thread")?,
            ),
            Err(e) => {
                tracing::warn!(error = %crate::shield::error_chain(&e), "trusted sessions off: cannot open the shield's trusted map")
            }
        }
    }
    let status = Status {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        shield: state,
    };
    let state_dir = config.state.dir.clone();
    if let Err(e) = status::write(&state_dir, &status) {
        tracing::warn!(dir = %state_dir.display(), error = %e, "cannot write the status file; `herz stats` will not see this daemon's state");
    }
    let pin_path = match &status.shield {
        ShieldState::Active { pin_path, .. } => Some(pin_path.clone()),
        _ => None,
    };
    crate::reload::Reloader {
        config_path,
        config: config.clone(),
        log_reload,
        pin_path: pin_path.clone(),
        dist: distributor.handle(),
    }
    .spawn()
    .context("installing the SIGHUP handler")?;
    if config.control.enabled {
        let token = config
            .control
            .token_file
            .as_deref()
            .map(crate::control::read_token)
            .transpose()?;
        crate::control::start(
            config.control.listen,
            crate::control::ControlContext {
                shared: distributor.shared(),
                shield: status.shield.clone(),
                pin_path,
                started: distributor.started(),
                shield_events: shield.as_ref().and_then(|s| s.event_stats()),
            },
            token,
        )?;
    }
    tracing::info!(pid = std::process::id(), "herz running");
    let result = distributor.run(&mut signals);
    drop(shield);
    status::remove(&state_dir);
    result
}

/// Errors that stop the daemon rather than leaving it unprotected: the operator asked for something that
/// cannot be (a missing interface, a pin path another daemon holds).
fn is_fatal(e: &ShieldError) -> bool {
    matches!(
        e,
        ShieldError::NoSuchInterface(_) | ShieldError::PinPathInUse(_) | ShieldError::NotBpffs(_)
    )
}

fn start_shield(config: &Config) -> anyhow::Result<(Option<Shield>, ShieldState)> {
    if !config.shield.enabled {
        tracing::warn!("shield off (shield.enabled = false): Herz's ports are not protected");
        return Ok((None, ShieldState::Off));
    }
    match Shield::start(config) {
        Ok(shield) => {
            let attachments: Vec<String> = shield
                .attachments()
                .iter()
                .map(|a| format!("{}:{}", a.interface, a.xdp_mode))
                .collect();
            tracing::info!(pin_path = %shield.pin_path().display(), attached = ?attachments, "shield active");
            let state = ShieldState::Active {
                pin_path: shield.pin_path().into(),
                attachments,
            };
            Ok((Some(shield), state))
        }
        Err(e) if is_fatal(&e) || config.shield.required => Err(e.into()),
        Err(e) => {
            let reason = crate::shield::error_chain(&e);
            tracing::error!("shield disabled: {reason}");
            Ok((None, ShieldState::Disabled { reason }))
        }
    }
}
