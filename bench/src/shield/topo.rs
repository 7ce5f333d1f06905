//! The shield scenarios' network: three namespaces joined by two veth pairs.
//!
//! ```text
//!  hzba (attacker)            hzbv (victim: herz)              hzbc (clients)
//!  hzav 198.18.251.2 ─── hzva 198.18.251.1 │ hzvc 198.18.252.1 ─── hzcv 198.18.252.2
//! ```
//!
//! The publisher and the subscribers run in `hzbc` and reach Herz over `hzvc`; floods come from
//! `hzba` into `hzva`. Spoofed sources (198.19.0.0/16) are routed from the victim back into the
//! attacker's namespace, where replies die. `hzva` receives in a threaded NAPI (GRO on, so the veth
//! has NAPI with or without an XDP program), so every cycle the victim's kernel spends on flood
//! frames is charged to one kernel thread, pinned to the last CPU. Everything is deleted on drop.

use std::{
    fs::File,
    net::Ipv4Addr,
    os::fd::AsRawFd as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Namespace names.
pub const NS_VICTIM: &str = "hzbv";
/// See [`NS_VICTIM`].
pub const NS_ATTACKER: &str = "hzba";
/// See [`NS_VICTIM`].
pub const NS_CLIENTS: &str = "hzbc";
/// The victim's interface toward the attacker.
pub const IF_VICTIM_A: &str = "hzva";
/// The attacker's interface.
pub const IF_ATTACKER: &str = "hzav";
/// The victim's interface toward the clients.
pub const IF_VICTIM_C: &str = "hzvc";
/// The clients' interface.
pub const IF_CLIENTS: &str = "hzcv";
/// Victim address on the attacker's link.
pub const VICTIM_A: Ipv4Addr = Ipv4Addr::new(198, 18, 251, 1);
/// Attacker address.
pub const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 251, 2);
/// Victim address on the clients' link.
pub const VICTIM_C: Ipv4Addr = Ipv4Addr::new(198, 18, 252, 1);
/// Clients' address.
pub const CLIENTS: Ipv4Addr = Ipv4Addr::new(198, 18, 252, 2);
/// Spoofed flood sources.
pub const SPOOF_NET: &str = "198.19.0.0/16";

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// Runs a command inside a namespace (`ip netns exec`: its own /sys shows that namespace's devices).
pub fn ns_exec(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

fn cleanup() {
    for ns in [NS_VICTIM, NS_ATTACKER, NS_CLIENTS] {
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

/// The network; deleted on drop.
pub struct Topo {
    /// The attacker's interface index (in its namespace).
    pub attacker_ifindex: i32,
    /// MAC of the attacker's interface.
    pub attacker_mac: [u8; 6],
    /// MAC of the victim's interface toward the attacker.
    pub victim_mac: [u8; 6],
    /// The CPU the victim's receive thread is pinned to, and the other CPU (for generators), if the
    /// machine has two or more.
    pub cpus: Option<(usize, usize)>,
}

fn mac_of(ns: &str, dev: &str) -> anyhow::Result<[u8; 6]> {
    let j: serde_json::Value = serde_json::from_str(&ip(&["-n", ns, "-j", "link", "show", dev])?)?;
    let s = j[0]["address"]
        .as_str()
        .with_context(|| format!("no MAC for {dev}"))?;
    let mut mac = [0u8; 6];
    for (i, part) in s.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(part, 16)?;
    }
    Ok(mac)
}

fn ifindex_of(ns: &str, dev: &str) -> anyhow::Result<i32> {
    let j: serde_json::Value = serde_json::from_str(&ip(&["-n", ns, "-j", "link", "show", dev])?)?;
    j[0]["ifindex"]
        .as_i64()
        .map(|i| i as i32)
        .with_context(|| format!("no ifindex for {dev}"))
}

impl Topo {
    /// Builds the network (removing leftovers of a killed run first).
    pub fn new() -> anyhow::Result<Self> {
        cleanup();
        let t = Topo {
            attacker_ifindex: 0,
            attacker_mac: [0; 6],
            victim_mac: [0; 6],
            cpus: None,
        };
        for ns in [NS_VICTIM, NS_ATTACKER, NS_CLIENTS] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&[
            "link",
            "add",
            IF_VICTIM_A,
            "netns",
            NS_VICTIM,
            "type",
            "veth",
            "peer",
            "name",
            IF_ATTACKER,
            "netns",
            NS_ATTACKER,
        ])?;
        ip(&[
            "link",
            "add",
            IF_VICTIM_C,
            "netns",
            NS_VICTIM,
            "type",
            "veth",
            "peer",
            "name",
            IF_CLIENTS,
            "netns",
            NS_CLIENTS,
        ])?;
        for (ns, dev, addr) in [
            (NS_VICTIM, IF_VICTIM_A, VICTIM_A),
            (NS_ATTACKER, IF_ATTACKER, ATTACKER),
            (NS_VICTIM, IF_VICTIM_C, VICTIM_C),
            (NS_CLIENTS, IF_CLIENTS, CLIENTS),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        ip(&[
            "-n",
            NS_VICTIM,
            "route",
            "add",
            SPOOF_NET,
            "via",
            &ATTACKER.to_string(),
        ])?;
        // NAPI on the victim's flood-facing veth, in its own kernel thread. A veth hands skbs to its
        // peer's NAPI only when the sender cannot produce TSO super-frames (attaching XDP turns TSO
        // off on the peer for the same reason), so TSO is off on the attacker's side in every case.
        ns_exec(NS_ATTACKER, &["ethtool", "-K", IF_ATTACKER, "tso", "off"])?;
        ns_exec(NS_VICTIM, &["ethtool", "-K", IF_VICTIM_A, "gro", "on"])?;
        ns_exec(
            NS_VICTIM,
            &[
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{IF_VICTIM_A}/threaded"),
            ],
        )?;
        // The victim's replies (SYN-ACKs) are received by the attacker's veth in a NAPI thread of its
        // own on the generator's core; otherwise they would be queued to the backlog of the CPU that
        // sends them, the victim's receive thread, and charged to it.
        ns_exec(NS_VICTIM, &["ethtool", "-K", IF_VICTIM_A, "tso", "off"])?;
        ns_exec(NS_ATTACKER, &["ethtool", "-K", IF_ATTACKER, "gro", "on"])?;
        ns_exec(
            NS_ATTACKER,
            &[
                "sh",
                "-c",
                &format!("echo 1 > /sys/class/net/{IF_ATTACKER}/threaded"),
            ],
        )?;
        let mut t = t;
        t.attacker_ifindex = ifindex_of(NS_ATTACKER, IF_ATTACKER)?;
        t.attacker_mac = mac_of(NS_ATTACKER, IF_ATTACKER)?;
        t.victim_mac = mac_of(NS_VICTIM, IF_VICTIM_A)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores >= 2 {
            t.cpus = Some((cores - 1, 0));
        }
        // Neighbours, so that the first flood frames do not wait for ARP.
        let _ = ns_exec(
            NS_VICTIM,
            &["ping", "-c", "1", "-W", "1", &ATTACKER.to_string()],
        );
        let _ = ns_exec(
            NS_CLIENTS,
            &["ping", "-c", "1", "-W", "1", &VICTIM_C.to_string()],
        );
        t.pin_napi()?;
        Ok(t)
    }

    /// The victim's receive thread for `hzva` (its pid).
    pub fn napi_pid(&self) -> anyhow::Result<i32> {
        napi_pid_of(IF_VICTIM_A)
    }

    /// Pins the receive threads (again: attaching XDP may restart NAPI): the victim's to the receive
    /// CPU, the attacker's to the generator's.
    pub fn pin_napi(&self) -> anyhow::Result<()> {
        if let Some((rx, gen_cpu)) = self.cpus {
            pin(napi_pid_of(IF_VICTIM_A)?, rx)?;
            pin(napi_pid_of(IF_ATTACKER)?, gen_cpu)?;
        }
        Ok(())
    }

    /// Kernel time the receive thread has run, ns (`/proc/PID/schedstat`).
    pub fn napi_runtime_ns(&self) -> anyhow::Result<u64> {
        let pid = self.napi_pid()?;
        let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
        s.split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .context("parsing schedstat")
    }

    /// Frames the victim's flood-facing veth took in, and frames it dropped because its receive
    /// ring was full.
    pub fn victim_rx(&self) -> anyhow::Result<(u64, u64)> {
        let j: serde_json::Value = serde_json::from_str(&ip(&[
            "-n",
            NS_VICTIM,
            "-j",
            "-s",
            "link",
            "show",
            IF_VICTIM_A,
        ])?)?;
        let rx = &j[0]["stats64"]["rx"];
        Ok((
            rx["packets"].as_u64().unwrap_or(0),
            rx["dropped"].as_u64().unwrap_or(0),
        ))
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        cleanup();
    }
}

/// The threaded-NAPI kernel thread of `dev` (its pid).
fn napi_pid_of(dev: &str) -> anyhow::Result<i32> {
    let prefix = format!("napi/{dev}-");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for e in std::fs::read_dir("/proc")?.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with(&prefix) {
                return Ok(pid);
            }
        }
        if Instant::now() > deadline {
            bail!("no threaded NAPI kernel thread for {dev} (is `threaded` supported?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pins thread or process `pid` (0: the caller) to `cpu`.
pub fn pin(pid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: zeroed cpu_set_t is the empty set; CPU_SET and sched_setaffinity get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!(
                "pinning {pid} to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Moves the calling thread into namespace `ns` (threads it starts afterwards are there too).
pub fn enter(ns: &str) -> anyhow::Result<()> {
    let f = File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening namespace {ns}"))?;
    // SAFETY: setns on this thread with an fd we own.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a new thread inside namespace `ns`.
pub fn spawn_in<T: Send + 'static>(
    ns: &'static str,
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            enter(ns)?;
            f()
        })
        .expect("spawning a namespace thread")
}
