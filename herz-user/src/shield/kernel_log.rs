//! The kernel programs' diagnostic log lines (aya-log records) as tracing events under the `herz_ebpf`
//! target, so that `--log-level herz_ebpf=debug`, `[log] level` and SIGHUP turn them on and off like any
//! other target.
//!
//! The programs write these lines only for rare conditions (a full table, a path that should never run),
//! each at most once a second, never per packet; the shield's event thread drains them (see
//! [`super::events`]).

use std::os::fd::{AsRawFd, RawFd};

use aya::Ebpf;
use aya_log::EbpfLogger;

/// The tracing target of every kernel log line.
pub const TARGET: &str = "herz_ebpf";

/// Forwards aya-log's `log` records to tracing under [`TARGET`], keeping the kernel-side module, file and
/// line as fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        match metadata.level() {
            log::Level::Error => tracing::enabled!(target: TARGET, tracing::Level::ERROR),
            log::Level::Warn => tracing::enabled!(target: TARGET, tracing::Level::WARN),
            log::Level::Info => tracing::enabled!(target: TARGET, tracing::Level::INFO),
            log::Level::Debug => tracing::enabled!(target: TARGET, tracing::Level::DEBUG),
            log::Level::Trace => tracing::enabled!(target: TARGET, tracing::Level::TRACE),
        }
    }

    fn log(&self, record: &log::Record<'_>) {
        // The tracing macros below apply the same filter as `enabled` before formatting anything.
        let program = record.module_path().unwrap_or("");
        let line = record.line().unwrap_or(0);
        let msg = record.args();
        // tracing needs the level at compile time, hence one arm per level.
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, program, line, "{msg}"),
            log::Level::Warn => tracing::warn!(target: TARGET, program, line, "{msg}"),
            log::Level::Info => tracing::info!(target: TARGET, program, line, "{msg}"),
            log::Level::Debug => tracing::debug!(target: TARGET, program, line, "{msg}"),
            log::Level::Trace => tracing::trace!(target: TARGET, program, line, "{msg}"),
        }
    }

    fn flush(&self) {}
}

/// The reader of the programs' log ring buffer (`AYA_LOGS`).
pub struct KernelLog(EbpfLogger<ToTracing>);

impl std::fmt::Debug for KernelLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelLog")
            .field("fd", &self.0.as_raw_fd())
            .finish()
    }
}

impl KernelLog {
    /// Takes the log ring buffer out of a loaded object. The object's programs keep referring to it;
    /// it must live as long as they do (the event thread owns it until the shield stops).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, aya_log::Error> {
        EbpfLogger::init_with_logger(ebpf, ToTracing).map(KernelLog)
    }

    /// Writes every pending record as a tracing event. A record the reader cannot decode (it would
    /// panic inside aya-log) is logged as such instead of taking the shield's thread down.
    pub fn drain(&mut self) {
        let drained = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.0.flush()));
        if drained.is_err() {
            tracing::warn!(target: TARGET, "undecodable kernel log record dropped");
        }
    }

    /// The ring buffer's fd, readable when records are pending.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _};

    use super::*;

    /// Collects formatted lines for assertions.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn record(level: log::Level, text: &str, f: impl FnOnce(&log::Record<'_>)) {
        f(&log::Record::builder()
            .args(format_args!("{text}"))
            .level(level)
            .target("herz_ebpf")
            .module_path(Some("herz_ebpf"))
            .line(Some(42))
            .build());
    }

    fn logged(filter: &str, level: log::Level, text: &str) -> String {
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new(filter))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || sink.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            record(level, text, |r| log::Log::log(&ToTracing, r));
        });
        String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn kernel_records_follow_the_herz_ebpf_target_filter() {
        let out = logged("info", log::Level::Warn, "table full");
        assert!(
            out.contains("WARN") && out.contains("herz_ebpf") && out.contains("table full"),
            "{out}"
        );
        assert!(out.contains("line=42"), "{out}");
        assert_eq!(logged("info", log::Level::Debug, "detail"), "");
        assert!(logged("info,herz_ebpf=debug", log::Level::Debug, "detail").contains("detail"));
        assert_eq!(
            logged("info,herz_ebpf=off", log::Level::Error, "silenced"),
            ""
        );
    }
}
