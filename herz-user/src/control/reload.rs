//! SIGHUP: re-read the configuration and apply what can change live (log levels; shield thresholds and
//! lists where the shield supports it), saying what changed and what needs a restart.

use super::ControlContext;

pub(super) async fn on_sighup(mut ctx: ControlContext) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler; live reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        let new = match crate::config::Config::load(ctx.config_path.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload refused, keeping the running configuration: {e}");
                continue;
            }
        };
        let mut changed = Vec::new();
        if new.log.level != ctx.config.log.level {
            match ctx.log_reload.set(&new.log.level) {
                Ok(()) => changed.push(format!(
                    "log.level: {} -> {}",
                    ctx.config.log.level, new.log.level
                )),
                Err(e) => tracing::error!("log.level `{}` not applied: {e}", new.log.level),
            }
        }
        if format!("{:?}", new.shield) != format!("{:?}", ctx.config.shield) {
            match &ctx.pin_path {
                Some(pin) => match crate::shield::apply::apply_config(pin, &new) {
                    Ok(_) => changed.push("shield thresholds, ports and lists".to_string()),
                    Err(e) => tracing::error!("shield settings not applied: {e}"),
                },
                None => tracing::warn!("shield settings changed but the shield is not loaded"),
            }
        }
        let needs_restart: Vec<&str> = [
            (
                "subscribers",
                format!("{:?}", new.subscribers) != format!("{:?}", ctx.config.subscribers),
            ),
            (
                "publishers",
                format!("{:?}", new.publishers) != format!("{:?}", ctx.config.publishers),
            ),
            (
                "journal",
                format!("{:?}", new.journal) != format!("{:?}", ctx.config.journal),
            ),
            (
                "feeds",
                format!("{:?}", new.feeds) != format!("{:?}", ctx.config.feeds),
            ),
            (
                "channels",
                format!("{:?}", new.channels) != format!("{:?}", ctx.config.channels),
            ),
        ]
        .into_iter()
        .filter_map(|(k, differs)| differs.then_some(k))
        .collect();
        if changed.is_empty() && needs_restart.is_empty() {
            tracing::info!("reload: configuration unchanged");
        } else {
            tracing::info!(changed = ?changed, needs_restart = ?needs_restart, "reload applied");
        }
        ctx.config.log = new.log;
        ctx.config.shield = new.shield;
    }
}
