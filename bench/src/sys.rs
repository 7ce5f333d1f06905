//! Operating-system helpers: CPU time from /proc, thread ids, precise sleeps, child processes that
//! cannot outlive the bench, free ports, and a description of the machine.

use std::{
    collections::BTreeSet,
    fs, io,
    net::{Ipv4Addr, TcpListener, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// `CLOCK_MONOTONIC` in nanoseconds (the clock the publishers stamp into messages).
#[inline]
pub fn mono_ns() -> u64 {
    herz_client::clock::mono_ns()
}

/// The calling thread's kernel id.
pub fn gettid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::gettid() }
}

/// Makes the calling thread's timed sleeps precise (the default timer slack is 50 µs).
pub fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK only changes this thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns`.
pub fn sleep_until_mono(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; no remainder is needed with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
}

fn clk_tck() -> u64 {
    // SAFETY: no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as u64 } else { 100 }
}

/// utime + stime of a `/proc/.../stat` file, in nanoseconds (resolution: one clock tick, 10 ms).
fn stat_cpu_ns(path: &str) -> io::Result<u64> {
    let s = fs::read_to_string(path)?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let close = s
        .rfind(')')
        .ok_or_else(|| io::Error::other(format!("{path}: no ')'")))?;
    let fields: Vec<&str> = s[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let parse = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{path}: bad field {}", i + 3)))
    };
    let ticks = parse(11)? + parse(12)?;
    Ok(ticks * 1_000_000_000 / clk_tck())
}

/// Whose CPU time counts as "the server's" in a run.
#[derive(Debug, Clone)]
pub enum CpuSource {
    /// A whole process (all its threads, living and dead): herz, nats-server.
    Process(u32),
    /// Threads of this process (the bench's own server or publisher threads).
    Threads(Vec<i32>),
}

impl CpuSource {
    /// CPU nanoseconds so far (user + system).
    pub fn read_ns(&self) -> io::Result<u64> {
        match self {
            CpuSource::Process(pid) => stat_cpu_ns(&format!("/proc/{pid}/stat")),
            CpuSource::Threads(tids) => {
                let mut sum = 0;
                for tid in tids {
                    sum += stat_cpu_ns(&format!("/proc/self/task/{tid}/stat"))?;
                }
                Ok(sum)
            }
        }
    }

    /// How the source is described in reports.
    pub fn describe(&self) -> String {
        match self {
            CpuSource::Process(pid) => format!("process {pid} (/proc/{pid}/stat utime+stime)"),
            CpuSource::Threads(t) => format!(
                "{} bench thread(s) (/proc/self/task/TID/stat utime+stime)",
                t.len()
            ),
        }
    }
}

/// The ids of this process's threads right now.
pub fn thread_ids() -> BTreeSet<i32> {
    fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A child process that is stopped when this guard drops (also on panic), and that the kernel kills
/// if the bench itself dies (PR_SET_PDEATHSIG).
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl std::fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ChildGuard({}, pid {:?})",
            self.name,
            self.child.as_ref().map(|c| c.id())
        )
    }
}

impl ChildGuard {
    /// Spawns `cmd`. Call from the main thread: the death signal follows the spawning thread.
    pub fn spawn(mut cmd: Command, name: &str) -> anyhow::Result<Self> {
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self {
            child: Some(child),
            name: name.to_owned(),
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Fails if the child has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(c) = &mut self.child
            && let Some(status) = c.try_wait()?
        {
            bail!("{} exited ({status})", self.name);
        }
        Ok(())
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Returns whether the child exited by itself
    /// (after the SIGTERM, or earlier).
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: signalling our own child, which we have not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(3));
    }
}

/// A TCP port free on loopback right now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A UDP port free right now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

static NEXT_ID: AtomicU32 = AtomicU32::new(1);

/// A number unique within this bench process.
pub fn unique() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A fresh multicast group in 239.0.0.0/8 for one run (so that no packet of an earlier run is seen).
pub fn fresh_group() -> Ipv4Addr {
    let u = unique();
    Ipv4Addr::new(
        239,
        77,
        (std::process::id() % 250) as u8,
        (u % 250 + 1) as u8,
    )
}

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `base/run-PID-N`.
    pub fn new(base: &Path) -> anyhow::Result<Self> {
        let p = base.join(format!("run-{}-{}", std::process::id(), unique()));
        fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs available to the bench.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// MemTotal, bytes.
    pub ram_bytes: u64,
    /// Load average when the bench started (others may be using the machine).
    pub loadavg_at_start: String,
}

impl Machine {
    /// Reads /proc.
    pub fn probe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        Machine {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            ram_bytes,
            loadavg_at_start: fs::read_to_string("/proc/loadavg")
                .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }
}

/// The first line of `cmd args` output (stdout, else stderr), or a note saying why there is none.
pub fn version_of(cmd: &str, args: &[&str]) -> String {
    match Command::new(cmd).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(e) => format!("unavailable ({cmd}: {e})"),
    }
}
