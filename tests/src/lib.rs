//! Harness for Herz's integration tests: privilege gating, network namespaces that clean up after
//! themselves, daemons that are stopped when a test ends (even by panic), and crafted frames.

pub mod bpf;
pub mod dist;
pub mod frames;
pub mod netns;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// True when this process may use BPF and create namespaces. When it may not: with
/// `HERZ_REQUIRE_PRIVILEGED=1` the test fails; otherwise it prints why it skips and returns false.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("HERZ_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!(
            "{test}: needs root (BPF, network namespaces) and HERZ_REQUIRE_PRIVILEGED=1 forbids skipping"
        );
    }
    eprintln!("skipped {test}: not privileged (run as root, or via `cargo xtask test`)");
    record_skip(test, "not root");
    false
}

/// Appends `test<TAB>reason` to `HERZ_SKIP_LOG` (set by `cargo xtask test`), which ends the run by
/// counting the skips, so that none is silent.
fn record_skip(test: &str, reason: &str) {
    use std::io::Write as _;
    let Some(path) = std::env::var_os("HERZ_SKIP_LOG") else {
        return;
    };
    let line = format!("{test}\t{}\n", reason.replace(['\t', '\n'], " "));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Fails (under `HERZ_REQUIRE_PRIVILEGED=1`) or skips when a prerequisite other than privilege is missing.
pub fn require(test: &str, what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var("HERZ_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{test}: {what}, and HERZ_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("skipped {test}: {what}");
    record_skip(test, what);
    false
}

/// The `herz` binary under test (`HERZ_BIN`, set by `cargo xtask test`, or the debug build).
pub fn herz_bin() -> PathBuf {
    std::env::var_os("HERZ_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/herz"))
}

/// A short id unique within this test process, for interface, namespace and pin names.
pub fn unique_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    (std::process::id() % 10_000) * 100 + NEXT.fetch_add(1, Ordering::Relaxed) % 100
}

/// Runs `herz ARGS` to completion.
pub fn herz(args: &[&str]) -> Output {
    Command::new(herz_bin())
        .args(args)
        .output()
        .expect("running herz")
}

/// Writes `config` to `path` as the daemon reads it (TOML, through serde).
pub fn write_config(path: &Path, config: &herz_user::config::Config) {
    let text = toml::to_string(config).expect("a configuration serializes to TOML");
    std::fs::write(path, text).expect("writing the config file");
}

/// Reads a configuration file back with the daemon's own loader (parsed and validated).
pub fn read_config(path: &Path) -> herz_user::config::Config {
    herz_user::config::Config::load(Some(path)).unwrap_or_else(|e| panic!("{e}"))
}

/// A `herz run` child process, killed when dropped.
pub struct Daemon {
    /// The child.
    pub child: Option<Child>,
    /// Config file used.
    pub config: PathBuf,
    /// Captured stderr (log) file.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `herz --config CONFIG run` with its log going to a file next to the config.
    pub fn start(config: &Path) -> Daemon {
        let log = config.with_extension("log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(herz_bin())
            .args(["--config", config.to_str().unwrap(), "run"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("starting herz run");
        Daemon {
            child: Some(child),
            config: config.into(),
            log,
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `cond` holds, or panics with the log after `timeout`.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "herz exited ({status}) while waiting for {what}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; log:\n{}", self.log());
    }

    /// Sends `signal` and waits for the exit status.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "herz did not exit within 10 s of signal {signal}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGHUP and waits for the daemon to say the reload was applied.
    pub fn reload(&mut self) {
        let pid = self.child.as_ref().expect("running").id() as i32;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        let log = self.log.clone();
        self.wait_for("the reload", Duration::from_secs(10), || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reload applied")
        });
    }

    /// The `herz stats --json` output for this daemon's config.
    pub fn stats(&self) -> serde_json::Value {
        let out = herz(&[
            "--config",
            self.config.to_str().unwrap(),
            "stats",
            "--json",
            "--top",
            "1000",
        ]);
        assert!(
            out.status.success(),
            "herz stats failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stats json")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The stats row of one source in `herz stats --json` output.
pub fn source_row<'a>(stats: &'a serde_json::Value, source: &str) -> Option<&'a serde_json::Value> {
    stats["sources"]
        .as_array()?
        .iter()
        .find(|r| r["source"] == source)
}

/// A child process killed (SIGKILL) when dropped, so a panicking test leaves nothing running.
pub struct KillOnDrop(pub Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
