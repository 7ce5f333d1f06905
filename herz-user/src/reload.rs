//! SIGHUP: re-read the configuration and apply what can change live, saying what changed and what needs
//! a restart. Runs on its own thread, started by `herz run` whether or not the control plane is on.
//!
//! Live: `log.level` (the tracing filter), `[shield]` thresholds, ports and lists (written to the pinned
//! maps), and `subscribers.users`, `publishers.users` and `subscribers.policy` (sent to the hot loop,
//! for logins from then on). Everything else needs a restart and is named as such.

use std::path::PathBuf;

use signal_hook::{consts::SIGHUP, iterator::Signals};

use crate::{
    config::Config,
    logging::LogReload,
    net::commands::{Command, LoopHandle},
};

/// What a reload needs: where the configuration comes from, what is in force, and who applies it.
#[derive(Debug)]
pub struct Reloader {
    /// The configuration file (None: the built-in defaults).
    pub config_path: Option<PathBuf>,
    /// The configuration in force.
    pub config: Config,
    /// The tracing filter.
    pub log_reload: LogReload,
    /// Where the shield's maps are pinned (None: shield not loaded).
    pub pin_path: Option<PathBuf>,
    /// The hot loop.
    pub dist: LoopHandle,
}

/// What one reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Settings now in force.
    pub changed: Vec<String>,
    /// Sections that differ but need a restart.
    pub needs_restart: Vec<&'static str>,
}

impl Reloader {
    /// Handles SIGHUP on a new thread from now on.
    pub fn spawn(mut self) -> std::io::Result<()> {
        let mut signals = Signals::new([SIGHUP])?;
        std::thread::Builder::new()
            .name("herz-reload".into())
            .spawn(move || {
                crate::privilege::sync_thread();
                for _ in signals.forever() {
                    self.reload();
                }
            })?;
        Ok(())
    }

    /// Re-reads the configuration and applies it; a configuration that does not load changes nothing.
    pub fn reload(&mut self) -> Option<Outcome> {
        let new = match Config::load(self.config_path.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("reload refused, keeping the running configuration: {e}");
                return None;
            }
        };
        let outcome = self.apply(new);
        if outcome == Outcome::default() {
            tracing::info!("reload: configuration unchanged");
        } else {
            tracing::info!(changed = ?outcome.changed, needs_restart = ?outcome.needs_restart, "reload applied");
        }
        Some(outcome)
    }

    fn apply(&mut self, new: Config) -> Outcome {
        let mut out = Outcome::default();
        let old = &mut self.config;
        if new.log.level != old.log.level {
            match self.log_reload.set(&new.log.level) {
                Ok(()) => {
                    out.changed
                        .push(format!("log.level: {} -> {}", old.log.level, new.log.level));
                    old.log.level = new.log.level.clone();
                }
                Err(e) => tracing::error!("log.level `{}` not applied: {e}", new.log.level),
            }
        }
        // The shield polices the ports in use: listeners and sockets keep their addresses until a
        // restart, whatever the new file says.
        let policed = new.with_endpoints_of(old);
        if policed.shield_tcp_ports() != old.shield_tcp_ports()
            || policed.shield_udp_ports() != old.shield_udp_ports()
            || policed.shield != old.shield
        {
            match &self.pin_path {
                Some(pin) => match crate::shield::apply::apply_config(pin, &policed) {
                    Ok(_) => {
                        out.changed
                            .push("shield thresholds, ports and lists".to_string());
                        old.shield = new.shield.clone();
                    }
                    Err(e) => tracing::error!("shield settings not applied: {e}"),
                },
                None => tracing::warn!("shield settings changed but the shield is not loaded"),
            }
        }
        let logins_changed = new.subscribers.users != old.subscribers.users
            || new.publishers.users != old.publishers.users
            || new.subscribers.policy != old.subscribers.policy;
        if logins_changed {
            let command = Command::Logins {
                subscribers: new.subscribers.users.clone(),
                publishers: new.publishers.users.clone(),
                policy: new.subscribers.policy,
            };
            match self.dist.send(command) {
                Ok(()) => {
                    out.changed
                        .push("subscribers and publishers: users, default policy".to_string());
                    old.subscribers.users = new.subscribers.users.clone();
                    old.publishers.users = new.publishers.users.clone();
                    old.subscribers.policy = new.subscribers.policy;
                }
                Err(e) => tracing::error!("logins not applied: {e}"),
            }
        }
        let restart = [
            ("subscribers", new.subscribers != old.subscribers),
            ("publishers", new.publishers != old.publishers),
            ("journal", new.journal != old.journal),
            ("feeds", new.feeds != old.feeds),
            ("channels", new.channels != old.channels),
            ("rerequest", new.rerequest != old.rerequest),
            ("control", new.control != old.control),
            ("demo", new.demo != old.demo),
            ("state", new.state != old.state),
            ("log.format", new.log.format != old.log.format),
        ];
        out.needs_restart = restart
            .into_iter()
            .filter_map(|(k, differs)| differs.then_some(k))
            .collect();
        out
    }
}
