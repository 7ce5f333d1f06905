//! Network namespaces and veth pairs for tests. Names start with `hz`; addresses come from 198.18.0.0/15.
//! Everything is deleted on drop, including when the test panics.

use std::{fs::File, os::fd::AsRawFd, process::Command};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace joined to the host by a veth pair: host side `hzh<id>` with `198.18.<id%250>.1/30`... the
/// namespace side `hzn<id>` with `.2`.
pub struct VethNs {
    /// Namespace name.
    pub ns: String,
    /// Host-side interface.
    pub host_if: String,
    /// Namespace-side interface.
    pub ns_if: String,
    /// Host-side address.
    pub host_addr: std::net::Ipv4Addr,
    /// Namespace-side address.
    pub ns_addr: std::net::Ipv4Addr,
}

impl VethNs {
    /// Creates the namespace and the pair; `id` makes names and the /30 unique.
    pub fn new(id: u32) -> VethNs {
        let ns = format!("hz{id}");
        let host_if = format!("hzh{id}");
        let ns_if = format!("hzn{id}");
        let third = (id % 250) as u8;
        let fourth = ((id / 250) % 64 * 4) as u8;
        let host_addr = std::net::Ipv4Addr::new(198, 18, third, fourth + 1);
        let ns_addr = std::net::Ipv4Addr::new(198, 18, third, fourth + 2);
        // Leftovers of an earlier, killed run with the same id.
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        let v = VethNs {
            ns,
            host_if,
            ns_if,
            host_addr,
            ns_addr,
        };
        ip(&["netns", "add", &v.ns]);
        ip(&[
            "link", "add", &v.host_if, "type", "veth", "peer", "name", &v.ns_if, "netns", &v.ns,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", v.host_addr),
            "dev",
            &v.host_if,
        ]);
        ip(&["link", "set", &v.host_if, "up"]);
        ip(&[
            "-n",
            &v.ns,
            "addr",
            "add",
            &format!("{}/30", v.ns_addr),
            "dev",
            &v.ns_if,
        ]);
        ip(&["-n", &v.ns, "link", "set", &v.ns_if, "up"]);
        ip(&["-n", &v.ns, "link", "set", "lo", "up"]);
        v
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it creates live there.
    pub fn run_in<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("opening the namespace");
            // SAFETY: setns on this thread only, with an fd we own.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Starts `f` on a thread that has entered the namespace and returns at once (for traffic that must
    /// run while the test does something else).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = File::open(&path).expect("opening the namespace");
            // SAFETY: setns on this thread only, with an fd we own.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Routes `cidr` (inside 198.18.0.0/15) from the host into the namespace, so that replies to
    /// addresses spoofed from inside it go back there (and die there) instead of following the host's
    /// default route. The route goes away with the veth pair.
    pub fn route_into(&self, cidr: &str) {
        ip(&[
            "route",
            "replace",
            cidr,
            "via",
            &self.ns_addr.to_string(),
            "dev",
            &self.host_if,
        ]);
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for VethNs {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the host end.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}
