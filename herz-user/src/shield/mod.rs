//! The kernel shield: loading Herz's eBPF programs, attaching them, pinning their maps, and reading them.
//!
//! Attach order on start: load → pin maps → write the configuration (ports, thresholds, lists) → attach
//! XDP (driver mode, falling back to generic) and tc ingress/egress on every configured interface → start
//! the event thread. The first packet the programs see is already policed by the configuration. Links
//! are owned by this process (bpf_link fds), so the kernel detaches them when the daemon exits, even
//! when it is killed; only the pinned maps outlive it, and the next start removes those before pinning
//! fresh ones.
//!
//! - [`pinned`]: reading and writing the pinned maps from any process (`herz stats`, `herz block`, ...).
//! - [`apply`]: the configuration into the maps, at start and live.
//! - [`ShieldHandle`]: trusting logged-in subscribers from the distributor.
//! - [`events`]: the ring buffer and blocklist sweeps, as rate-limited log lines and counters.
//! - [`kernel_log`]: the programs' own diagnostic lines (aya-log), as tracing events under `herz_ebpf`.

pub mod apply;
mod bpffs;
/// CIDRs, durations and the kernel clock live beside the configuration that reads them; re-exported
/// here, where the maps use them.
pub use crate::cidr;
pub mod events;
mod handle;
pub mod kernel_log;
pub mod pinned;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{ProgramError, SchedClassifier, TcAttachType, Xdp, XdpMode},
};

pub use self::{
    bpffs::{PinDirLock, ensure_mounted},
    cidr::{Cidr, format_duration, parse_duration},
    events::{Event, EventStats},
    handle::{ShieldHandle, TrustCounts, TrustWriter},
};
pub use crate::config::DEFAULT_PIN_PATH;
use crate::config::{Config, XdpAttachMode};

/// The eBPF object built by `cargo xtask build`, or empty when this binary was built without it.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/herz.bpf.o"));

/// Names of the programs in the object.
pub mod programs {
    /// XDP ingress program.
    pub const XDP: &str = "herz_xdp";
    /// tc ingress program.
    pub const TC_INGRESS: &str = "herz_tc_ingress";
    /// tc egress program.
    pub const TC_EGRESS: &str = "herz_tc_egress";
}

/// Why the shield could not start (or could not be read). Causes are kept as sources: render the whole
/// chain with [`error_chain`] (or anyhow's `{:#}`).
#[derive(Debug, thiserror::Error)]
pub enum ShieldError {
    /// The binary has no eBPF object embedded.
    #[error(
        "this herz binary was built without its eBPF object (build it with `cargo xtask build`)"
    )]
    NoObject,
    /// Not permitted to use BPF.
    #[error("{what} needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)")]
    NotPermitted {
        /// What was refused.
        what: String,
        /// The refusal.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object failed to load.
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program was rejected by the verifier or failed to load.
    #[error("loading program {program} failed")]
    Program {
        /// The program (`herz_xdp`, `herz_tc_ingress`, `herz_tc_egress`).
        program: &'static str,
        /// What the kernel or aya reported.
        #[source]
        source: ProgramError,
    },
    /// A program is not in the object (a build of the object that does not match this binary).
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    /// A configured interface does not exist.
    #[error("shield.interfaces: no network interface named `{0}`")]
    NoSuchInterface(String),
    /// Attaching failed.
    #[error("attaching {program} to interface `{interface}` failed")]
    Attach {
        /// The program (`herz_xdp`, `herz_tc_ingress`, `herz_tc_egress`).
        program: &'static str,
        /// The network interface it was being attached to.
        interface: String,
        /// What the kernel or aya reported.
        #[source]
        source: ProgramError,
    },
    /// A map could not be used.
    #[error("map {map}")]
    Map {
        /// The map (`HERZ_…`).
        map: &'static str,
        /// What the kernel or aya reported.
        #[source]
        source: aya::maps::MapError,
    },
    /// A map could not be pinned.
    #[error("pinning map {map}")]
    Pinning {
        /// The map (`HERZ_…`).
        map: &'static str,
        /// What the kernel or aya reported.
        #[source]
        source: aya::pin::PinError,
    },
    /// A map is not in the object.
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    /// A pinned map could not be opened.
    #[error("opening {}", path.display())]
    Pin {
        /// The pin.
        path: PathBuf,
        /// What the kernel or aya reported.
        #[source]
        source: aya::maps::MapError,
    },
    /// The programs' log ring buffer could not be read.
    #[error("the kernel programs' log ring buffer")]
    KernelLog(#[source] aya_log::Error),
    /// The event thread could not start.
    #[error("starting the shield event thread")]
    Thread(#[source] std::io::Error),
    /// The pin path's parent is not a BPF filesystem.
    #[error("shield.pin_path: {0} is not on a BPF filesystem (mount -t bpf bpf {0})")]
    NotBpffs(PathBuf),
    /// bpffs or pin directory operations failed.
    #[error("BPF filesystem at {path}")]
    Bpffs {
        /// The directory or file at fault.
        path: PathBuf,
        /// What the kernel or aya reported.
        source: std::io::Error,
    },
    /// Another daemon holds the pin directory.
    #[error("another herz daemon is running with shield.pin_path = {0}")]
    PinPathInUse(PathBuf),
    /// Nothing is pinned where the maps were looked for.
    #[error(
        "no shield loaded at {0} (is `herz run` up with the shield active, with this shield.pin_path?)"
    )]
    NotLoaded(PathBuf),
}

impl ShieldError {
    /// Classifies a load failure: a missing privilege is reported as such.
    fn from_load(e: aya::EbpfError) -> Self {
        if is_permission_error(&e) {
            ShieldError::NotPermitted {
                what: "loading eBPF programs".into(),
                source: Box::new(e),
            }
        } else {
            ShieldError::Load(Box::new(e))
        }
    }

    /// Classifies a program failure: a missing privilege is reported as such.
    fn from_program(program: &'static str, source: ProgramError) -> Self {
        if is_permission_error(&source) {
            ShieldError::NotPermitted {
                what: format!("loading program {program}"),
                source: Box::new(source),
            }
        } else {
            ShieldError::Program { program, source }
        }
    }
}

/// `error: cause: cause...` on one line. Verifier logs are cut to their last lines (the full log is
/// logged at debug level), so that the error stays one readable line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if text.lines().count() > 4 {
            tracing::debug!(log = %text, "full eBPF error");
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
            parts.push(format!("{} ... {tail}", lines[0]));
        } else if !parts
            .last()
            .is_some_and(|last: &String| last.ends_with(&text))
        {
            parts.push(text);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The errno behind an error, wherever in its chain it is. aya keeps some syscall errors in fields that
/// are not sources (a program load's), so those are looked into by type.
pub fn errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        let io = if let Some(io) = err.downcast_ref::<std::io::Error>() {
            Some(io)
        } else if let Some(ProgramError::LoadError { io_error, .. }) =
            err.downcast_ref::<ProgramError>()
        {
            Some(io_error)
        } else {
            None
        };
        if let Some(code) = io.and_then(std::io::Error::raw_os_error) {
            return Some(code);
        }
        cur = err.source();
    }
    None
}

/// True when the kernel refused for lack of privilege (EPERM, EACCES).
pub fn is_permission_error(e: &(dyn std::error::Error + 'static)) -> bool {
    matches!(errno(e), Some(libc::EPERM | libc::EACCES))
}

/// How the XDP program ended up attached on one interface.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Attachment {
    /// Interface name.
    pub interface: String,
    /// `driver` or `generic`.
    pub xdp_mode: &'static str,
}

/// A running shield: programs attached, maps pinned, event thread running. Dropping it stops the
/// thread, detaches and unpins.
pub struct Shield {
    events: Option<events::EventPump>,
    ebpf: Option<Ebpf>,
    lock: PinDirLock,
    pin_path: PathBuf,
    attachments: Vec<Attachment>,
}

impl std::fmt::Debug for Shield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shield")
            .field("pin_path", &self.pin_path)
            .field("attachments", &self.attachments)
            .finish()
    }
}

/// Names of every map that gets pinned.
pub fn pinned_map_names() -> &'static [&'static str] {
    herz_common::maps::ALL
}

impl Shield {
    /// Loads, pins, writes the configuration, attaches and starts the event thread, per `config`. On
    /// error nothing stays attached or pinned.
    pub fn start(config: &Config) -> Result<Self, ShieldError> {
        if EBPF_OBJECT.is_empty() {
            return Err(ShieldError::NoObject);
        }
        // Check interfaces before touching anything.
        for name in &config.shield.interfaces {
            if nix_ifindex(name).is_none() {
                return Err(ShieldError::NoSuchInterface(name.clone()));
            }
        }
        let pin_path = config.shield.pin_path.clone();
        // Loading first tells a missing privilege apart from everything else, before bpffs is touched.
        let ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .map_err(ShieldError::from_load)?;
        bpffs::ensure_mounted(&pin_path)?;
        let lock = PinDirLock::acquire(&pin_path)?;
        let stale = lock.clear_stale_pins()?;
        if stale > 0 {
            tracing::warn!(pins = stale, path = %pin_path.display(), "removed pins left by a previous daemon");
        }
        // From here on, a failure must leave nothing behind: `shield` cleans up on drop.
        let mut shield = Shield {
            events: None,
            ebpf: Some(ebpf),
            lock,
            pin_path,
            attachments: Vec::new(),
        };
        shield.pin_maps()?;
        // Configure through the pins, exactly as a live `herz shield reload` does, before any packet
        // reaches the programs.
        let applied = apply::apply_config(&shield.pin_path, config)?;
        tracing::debug!(?applied, "shield configuration written");
        let ebpf = shield.ebpf.as_mut().expect("loaded");
        shield.attachments = attach_all(ebpf, config)?;
        let ring = ebpf
            .take_map(herz_common::maps::EVENTS)
            .ok_or(ShieldError::MissingMap(herz_common::maps::EVENTS))?;
        let ring = RingBuf::<MapData>::try_from(ring)
            .map_err(pinned::map_error(herz_common::maps::EVENTS))?;
        let kernel_log = kernel_log::KernelLog::take(ebpf).map_err(ShieldError::KernelLog)?;
        let tc_ingress = ebpf
            .program(programs::TC_INGRESS)
            .and_then(|p| p.fd().ok())
            .and_then(|fd| {
                use std::os::fd::AsFd as _;
                fd.as_fd().try_clone_to_owned().ok()
            });
        // The thread's own handles on the maps it sweeps, taken from the object (they stay pinned for
        // other processes).
        let block = pinned::Trie::<herz_common::BlockEntry>::try_from(
            ebpf.take_map(herz_common::maps::BLOCK)
                .ok_or(ShieldError::MissingMap(herz_common::maps::BLOCK))?,
        )
        .map_err(pinned::map_error(herz_common::maps::BLOCK))?;
        let established = aya::maps::HashMap::try_from(
            ebpf.take_map(herz_common::maps::ESTABLISHED)
                .ok_or(ShieldError::MissingMap(herz_common::maps::ESTABLISHED))?,
        )
        .map_err(pinned::map_error(herz_common::maps::ESTABLISHED))?;
        shield.events = Some(events::EventPump::spawn(
            ring,
            kernel_log,
            block,
            established,
            tc_ingress,
        )?);
        Ok(shield)
    }

    /// The handle for trusting logged-in subscribers ([`ShieldHandle::trust`] /
    /// [`ShieldHandle::untrust`]), on the loaded object's own trusted-source map. There is one: a
    /// second call fails with [`ShieldError::MissingMap`].
    pub fn take_handle(&mut self) -> Result<ShieldHandle, ShieldError> {
        let map = self
            .ebpf
            .as_mut()
            .and_then(|e| e.take_map(herz_common::maps::TRUSTED))
            .ok_or(ShieldError::MissingMap(herz_common::maps::TRUSTED))?;
        ShieldHandle::from_map(map)
    }

    /// Counters of the events seen so far (for metrics).
    pub fn event_stats(&self) -> Option<Arc<EventStats>> {
        self.events.as_ref().map(|e| e.stats())
    }

    fn pin_maps(&mut self) -> Result<(), ShieldError> {
        let ebpf = self.ebpf.as_ref().expect("loaded");
        for &name in pinned_map_names() {
            let map = ebpf.map(name).ok_or(ShieldError::MissingMap(name))?;
            map.pin(self.pin_path.join(name))
                .map_err(|source| ShieldError::Pinning { map: name, source })?;
        }
        Ok(())
    }

    /// Where the maps are pinned.
    pub fn pin_path(&self) -> &Path {
        &self.pin_path
    }

    /// Where and how the programs are attached.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }
}

impl Drop for Shield {
    fn drop(&mut self) {
        // Stop the event thread, detach (dropping the Ebpf closes the link fds), then unpin.
        drop(self.events.take());
        drop(self.ebpf.take());
        self.lock.remove_all();
        tracing::info!(path = %self.pin_path.display(), "shield detached and unpinned");
    }
}

fn nix_ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

fn attach_all(ebpf: &mut Ebpf, config: &Config) -> Result<Vec<Attachment>, ShieldError> {
    let program_err = ShieldError::from_program;
    let mut attachments = Vec::new();
    {
        let xdp: &mut Xdp = ebpf
            .program_mut(programs::XDP)
            .ok_or(ShieldError::MissingProgram(programs::XDP))?
            .try_into()
            .map_err(|e| program_err(programs::XDP, e))?;
        xdp.load().map_err(|e| program_err(programs::XDP, e))?;
        for iface in &config.shield.interfaces {
            let attach = |xdp: &mut Xdp, mode| xdp.attach(iface, mode).map(|_| ());
            let mode = match config.shield.xdp_mode {
                XdpAttachMode::Driver => attach(xdp, XdpMode::Driver).map(|_| "driver"),
                XdpAttachMode::Generic => attach(xdp, XdpMode::Skb).map(|_| "generic"),
                XdpAttachMode::Auto => match attach(xdp, XdpMode::Driver) {
                    Ok(()) => Ok("driver"),
                    Err(e) => {
                        tracing::warn!(interface = %iface, error = %error_chain(&e), "XDP driver mode unavailable, using generic mode");
                        attach(xdp, XdpMode::Skb).map(|_| "generic")
                    }
                },
            }
            .map_err(|source| ShieldError::Attach {
                program: programs::XDP,
                interface: iface.clone(),
                source,
            })?;
            attachments.push(Attachment {
                interface: iface.clone(),
                xdp_mode: mode,
            });
        }
    }
    for (program, attach_type) in [
        (programs::TC_INGRESS, TcAttachType::Ingress),
        (programs::TC_EGRESS, TcAttachType::Egress),
    ] {
        let tc: &mut SchedClassifier = ebpf
            .program_mut(program)
            .ok_or(ShieldError::MissingProgram(program))?
            .try_into()
            .map_err(|e| program_err(program, e))?;
        tc.load().map_err(|e| program_err(program, e))?;
        for iface in &config.shield.interfaces {
            // Kernels >= 6.6 attach through tcx links (no qdisc needed); older ones need clsact.
            if aya::util::KernelVersion::current()
                .map_or(true, |v| v < aya::util::KernelVersion::new(6, 6, 0))
            {
                let _ = aya::programs::tc::qdisc_add_clsact(iface);
            }
            tc.attach(iface, attach_type)
                .map_err(|source| ShieldError::Attach {
                    program,
                    interface: iface.clone(),
                    source,
                })?;
        }
    }
    Ok(attachments)
}

/// Loads the embedded object without attaching anything, for BPF_PROG_TEST_RUN tests.
pub fn load_for_test() -> Result<Ebpf, ShieldError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ShieldError::NoObject);
    }
    EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(ShieldError::from_load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permission_error_is_recognised_by_errno_anywhere_in_the_chain() {
        let denied = |errno| aya::maps::MapError::CreateError {
            name: "HERZ_SOURCES".into(),
            io_error: std::io::Error::from_raw_os_error(errno),
        };
        let wrapped = aya::EbpfError::MapError(denied(libc::EPERM));
        assert!(is_permission_error(&wrapped));
        assert!(is_permission_error(&aya::EbpfError::MapError(denied(
            libc::EACCES
        ))));
        assert!(!is_permission_error(&aya::EbpfError::MapError(denied(
            libc::ENOMEM
        ))));
        let e = ShieldError::from_load(wrapped);
        assert!(matches!(e, ShieldError::NotPermitted { .. }), "{e:?}");
        let chain = error_chain(&e);
        assert!(
            chain.starts_with("loading eBPF programs needs root"),
            "{chain}"
        );
        assert!(
            chain.contains("HERZ_SOURCES") && chain.contains("not permitted"),
            "{chain}"
        );
        let e = ShieldError::from_load(aya::EbpfError::MapError(denied(libc::ENOMEM)));
        assert!(matches!(e, ShieldError::Load(_)), "{e:?}");
        assert!(
            error_chain(&e).contains("Cannot allocate memory"),
            "the cause is kept"
        );
    }
}
