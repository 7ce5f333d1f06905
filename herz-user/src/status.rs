//! The daemon's status file: what a separate `herz` process needs to know about the running daemon
//! (is it up, is its shield active, and if not, why).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The shield's state as the daemon reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum ShieldState {
    /// Programs attached, maps pinned.
    Active {
        /// Pin directory.
        pin_path: PathBuf,
        /// `interface:mode` of each XDP attachment.
        attachments: Vec<String>,
    },
    /// The shield could not be loaded; Herz runs unprotected.
    Disabled {
        /// Why.
        reason: String,
    },
    /// Turned off in the configuration.
    Off,
}

/// Contents of the status file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Daemon pid.
    pub pid: u32,
    /// Herz version.
    pub version: String,
    /// Shield state.
    pub shield: ShieldState,
}

/// The status file inside a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// Writes `status` atomically (write + rename).
pub fn write(state_dir: &Path, status: &Status) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!(".status.json.{}", std::process::id()));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(status).expect("status serialises"),
    )?;
    std::fs::rename(&tmp, path(state_dir))
}

/// Reads the status of a live daemon, if one is running (a file whose pid is dead counts as none).
pub fn read_live(state_dir: &Path) -> Option<Status> {
    let bytes = std::fs::read(path(state_dir)).ok()?;
    let status: Status = serde_json::from_slice(&bytes).ok()?;
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(status.pid as i32, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(status)
}

/// Removes the status file if it is ours.
pub fn remove(state_dir: &Path) {
    if let Ok(bytes) = std::fs::read(path(state_dir))
        && let Ok(s) = serde_json::from_slice::<Status>(&bytes)
        && s.pid == std::process::id()
    {
        let _ = std::fs::remove_file(path(state_dir));
    }
}
