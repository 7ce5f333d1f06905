//! `herz run` with its shield on a real veth pair: counts seen by `herz stats --json`, bpftool's view,
//! leftovers of a killed daemon, and starts that must fail cleanly.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use herz_tests::{
    Daemon, herz, netns::VethNs, privileged, read_config, source_row, unique_id, write_config,
};
use herz_user::config::Config;

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    pin_path: PathBuf,
}

const SUB_PORT: u16 = 7100;
const PUB_PORT: u16 = 7101;
const FEED_PORT: u16 = 7102;

/// A config attaching the shield to `interfaces`, pinning under a unique path.
fn setup(interfaces: &[&str], listen: std::net::Ipv4Addr) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pin_path = PathBuf::from(format!("/sys/fs/bpf/herz-test-{}", unique_id()));
    let config = dir.path().join("herz.toml");
    let mut c = Config::default();
    c.shield.interfaces = interfaces.iter().map(|i| i.to_string()).collect();
    c.shield.pin_path = pin_path.clone();
    c.shield.extra_udp_ports = vec![FEED_PORT];
    c.subscribers.listen = SocketAddr::from((listen, SUB_PORT));
    c.publishers.listen = SocketAddr::from((listen, PUB_PORT));
    c.subscribers.users = vec![herz_tests::dist::user("tester", "t3st3r")];
    c.publishers.users = vec![herz_tests::dist::user("pubber", "pubb3r")];
    c.control.enabled = false;
    c.state.dir = dir.path().join("state");
    write_config(&config, &c);
    Setup {
        _dir: dir,
        config,
        pin_path,
    }
}

/// Waits until the daemon says its shield is active (maps are pinned before that line is logged).
fn wait_loaded(d: &mut Daemon, pin_path: &Path) {
    let log = d.log.clone();
    d.wait_for(
        "the shield to become active",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("shield active")
        },
    );
    assert!(herz_user::shield::pinned::is_pinned(pin_path));
}

#[test]
fn stats_report_exact_syn_and_udp_counts_from_a_namespace() {
    if !privileged("stats_report_exact_syn_and_udp_counts_from_a_namespace") {
        return;
    }
    let net = VethNs::new(unique_id());
    let s = setup(&[&net.host_if], net.host_addr);
    let mut d = Daemon::start(&s.config);
    wait_loaded(&mut d, &s.pin_path);

    // bpftool sees Herz's programs while the daemon runs.
    let progs = std::process::Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .unwrap();
    let progs = String::from_utf8_lossy(&progs.stdout);
    for name in ["herz_xdp", "herz_tc_ingress", "herz_tc_egress"] {
        assert!(
            progs.contains(name),
            "bpftool prog show lacks {name}:\n{progs}"
        );
    }
    let xdp_id =
        xdp_prog_id(&net.host_if).expect("bpftool net show lists an XDP program on the host veth");
    let prog = std::process::Command::new("bpftool")
        .args(["prog", "show", "id", &xdp_id.to_string()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&prog.stdout).contains("herz_xdp"));

    const SYNS: usize = 25;
    const DATAGRAMS: usize = 40;
    let host = net.host_addr;
    net.run_in(move || {
        for _ in 0..SYNS {
            // Nothing listens on the subscriber port yet or it accepts: either way one SYN per attempt.
            let _ = TcpStream::connect_timeout(
                &SocketAddr::from((host, SUB_PORT)),
                Duration::from_secs(2),
            );
        }
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..DATAGRAMS {
            sock.send_to(&[i as u8; 64], SocketAddr::from((host, FEED_PORT)))
                .unwrap();
        }
    });

    let stats = d.stats();
    assert_eq!(stats["shield"], "loaded", "{stats}");
    let row = source_row(&stats, &net.ns_addr.to_string())
        .unwrap_or_else(|| panic!("no row for the namespace: {stats}"));
    assert_eq!(row["tcp_syn"], SYNS as u64, "{row}");
    assert_eq!(row["udp"], DATAGRAMS as u64, "{row}");
    assert!(
        row["packets"].as_u64().unwrap() >= (SYNS + DATAGRAMS) as u64,
        "{row}"
    );
    assert_eq!(stats["global"]["herz_tcp_syn"], SYNS as u64);
    assert_eq!(stats["global"]["herz_udp"], DATAGRAMS as u64);
    assert_eq!(stats["global"]["handshake_syn_in"], SYNS as u64);

    // A clean stop detaches and unpins.
    let status = d.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit {status}; log:\n{}", d.log());
    assert!(!s.pin_path.exists(), "pins left after a clean stop");
    assert_eq!(
        xdp_prog_id(&net.host_if),
        None,
        "XDP still attached after stop"
    );
}

/// The id of the XDP program attached to `dev`, from `bpftool net show -j`.
fn xdp_prog_id(dev: &str) -> Option<u64> {
    let out = std::process::Command::new("bpftool")
        .args(["net", "show", "-j", "dev", dev])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["xdp"].as_array()?.first()?["id"].as_u64()
}

#[test]
fn a_killed_daemons_pins_do_not_break_the_next_start() {
    if !privileged("a_killed_daemons_pins_do_not_break_the_next_start") {
        return;
    }
    let net = VethNs::new(unique_id());
    let s = setup(&[&net.host_if], net.host_addr);
    let mut first = Daemon::start(&s.config);
    wait_loaded(&mut first, &s.pin_path);
    let host = net.host_addr;
    net.run_in(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..7 {
            sock.send_to(b"x", SocketAddr::from((host, FEED_PORT)))
                .unwrap();
        }
    });
    assert_eq!(first.stats()["global"]["herz_udp"], 7);
    first.stop_with(libc::SIGKILL);
    assert!(
        herz_user::shield::pinned::is_pinned(&s.pin_path),
        "a killed daemon leaves its pins"
    );
    // With no daemon, stats still reads the leftover maps.
    assert_eq!(first.stats()["global"]["herz_udp"], 7);

    let mut second = Daemon::start(&s.config);
    wait_loaded(&mut second, &s.pin_path);
    assert!(
        second
            .log()
            .contains("removed pins left by a previous daemon"),
        "{}",
        second.log()
    );
    // Fresh maps: the old count is gone, new traffic counts from zero.
    net.run_in(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..3 {
            sock.send_to(b"y", SocketAddr::from((host, FEED_PORT)))
                .unwrap();
        }
    });
    assert_eq!(second.stats()["global"]["herz_udp"], 3);
    assert!(second.stop_with(libc::SIGTERM).success());
    assert!(!s.pin_path.exists());
}

#[test]
fn a_second_daemon_on_the_same_pin_path_is_refused() {
    if !privileged("a_second_daemon_on_the_same_pin_path_is_refused") {
        return;
    }
    let s = setup(&["lo"], std::net::Ipv4Addr::LOCALHOST);
    let mut first = Daemon::start(&s.config);
    wait_loaded(&mut first, &s.pin_path);
    // Other listen addresses (the daemon binds its sockets before the shield: the same ones would fail
    // there first), the same pin path.
    let mut c = read_config(&s.config);
    let other = std::net::Ipv4Addr::new(127, 0, 0, 2).into();
    c.subscribers.listen.set_ip(other);
    c.publishers.listen.set_ip(other);
    let second = s.config.with_file_name("herz2.toml");
    write_config(&second, &c);
    let out = herz(&["--config", second.to_str().unwrap(), "run"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_default();
    assert!(
        line.contains("another herz daemon") && line.contains(&s.pin_path.display().to_string()),
        "{err}"
    );
    // The first daemon is untouched.
    assert_eq!(first.stats()["shield"], "loaded");
    assert!(first.stop_with(libc::SIGTERM).success());
}

#[test]
fn a_missing_interface_fails_the_start_and_leaves_nothing_behind() {
    if !privileged("a_missing_interface_fails_the_start_and_leaves_nothing_behind") {
        return;
    }
    let net = VethNs::new(unique_id());
    let s = setup(&[&net.host_if, "hznosuch0"], net.host_addr);
    let out = herz(&["--config", s.config.to_str().unwrap(), "run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no network interface named `hznosuch0`"),
        "{err}"
    );
    assert!(
        !s.pin_path.exists(),
        "a failed start left {}",
        s.pin_path.display()
    );
    assert_eq!(
        xdp_prog_id(&net.host_if),
        None,
        "a failed start left a program attached"
    );
}

#[test]
fn a_non_root_daemon_runs_with_the_shield_disabled_and_says_why() {
    if !privileged("a_non_root_daemon_runs_with_the_shield_disabled_and_says_why") {
        return;
    }
    let s = setup(&["lo"], std::net::Ipv4Addr::LOCALHOST);
    let state = s.config.parent().unwrap().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // Let `nobody` read the config and write the state directory.
    for p in [s.config.parent().unwrap(), &state] {
        std::process::Command::new("chmod")
            .args(["0777", p.to_str().unwrap()])
            .status()
            .unwrap();
    }
    std::process::Command::new("chmod")
        .args(["0644", s.config.to_str().unwrap()])
        .status()
        .unwrap();
    let log = s.config.with_extension("log");
    let child = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(herz_tests::herz_bin())
        .args(["--config", s.config.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut child = herz_tests::KillOnDrop(Some(child));
    let child = child.0.as_mut().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("herz running") || std::time::Instant::now() > deadline {
            break text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("unprivileged herz exited ({status}):\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let disabled: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("shield disabled"))
        .collect();
    assert_eq!(disabled.len(), 1, "exactly one loud line:\n{text}");
    assert!(disabled[0].contains("needs root"), "{}", disabled[0]);
    assert!(text.contains("herz running"), "{text}");
    // The state is queryable from another process.
    let out = herz(&["--config", s.config.to_str().unwrap(), "stats"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("shield disabled") && err.contains("needs root"),
        "{err}"
    );
    let out = herz(&["--config", s.config.to_str().unwrap(), "stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["shield"], "not loaded");
    assert!(!s.pin_path.exists());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_logged_in_subscriber_is_trusted_until_its_session_ends() {
    if !privileged("a_logged_in_subscriber_is_trusted_until_its_session_ends") {
        return;
    }
    let net = VethNs::new(unique_id());
    let s = setup(&[&net.host_if], net.host_addr);
    let mut d = Daemon::start(&s.config);
    wait_loaded(&mut d, &s.pin_path);
    let addr = SocketAddr::from((net.host_addr, SUB_PORT));
    let ns_ip = std::net::IpAddr::V4(net.ns_addr);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (logged_tx, logged_rx) = std::sync::mpsc::channel::<()>();
    let client = net.spawn_in(move || {
        let mut sub = herz_client::SoupSubscriber::connect(addr, Duration::from_secs(5)).unwrap();
        sub.login(
            "tester",
            "t3st3r",
            herz_core::protocol::moldudp64::Session::BLANK,
            0,
            None,
        )
        .unwrap();
        logged_tx.send(()).unwrap();
        let _ = rx.recv();
        sub.logout().unwrap();
    });
    logged_rx.recv().unwrap();
    let trusted = || herz_user::shield::pinned::read_trusted(&s.pin_path).unwrap();
    let t = std::time::Instant::now();
    while !trusted().contains(&ns_ip) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "login did not mark {ns_ip} trusted: {:?}",
            trusted()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    tx.send(()).unwrap();
    client.join().unwrap();
    let t = std::time::Instant::now();
    while trusted().contains(&ns_ip) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "logout did not remove the trust"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.stop_with(libc::SIGTERM).success());
}

/// Fills the pinned established-connection table with flows no packet will ever match.
fn fill_established_table(pin_path: &Path) -> usize {
    use aya::maps::{HashMap, Map, MapData};
    use herz_common::{FlowKey, FlowState, MAX_ESTABLISHED, maps};
    let data = MapData::from_pin(pin_path.join(maps::ESTABLISHED)).expect("pinned table");
    let mut table: HashMap<MapData, FlowKey, FlowState> =
        HashMap::try_from(Map::HashMap(data)).expect("a hash map");
    let mut n = 0;
    for i in 0..MAX_ESTABLISHED {
        let mut client = [0u8; 16];
        // 198.19.x.y, outside every address the test uses.
        client[10..16].copy_from_slice(&[0xff, 0xff, 198, 19, (i >> 8) as u8, i as u8]);
        let key = FlowKey {
            client,
            server: [0; 16],
            client_port: 40_000,
            server_port: SUB_PORT,
            _pad: 0,
        };
        if table.insert(key, FlowState::default(), 0).is_ok() {
            n += 1;
        }
    }
    n
}

#[test]
fn a_full_connection_table_is_logged_by_the_kernel_under_herz_ebpf_and_sighup_turns_it_on() {
    let test =
        "a_full_connection_table_is_logged_by_the_kernel_under_herz_ebpf_and_sighup_turns_it_on";
    if !privileged(test) {
        return;
    }
    let net = VethNs::new(unique_id());
    let s = setup(&[&net.host_if], net.host_addr);
    // Kernel lines off at start. The control plane stays off: SIGHUP is the daemon's own.
    let mut config = read_config(&s.config);
    let mut with_level = |level: &str| {
        config.log.level = level.into();
        write_config(&s.config, &config);
    };
    with_level("info,herz_ebpf=off");
    let mut d = Daemon::start(&s.config);
    wait_loaded(&mut d, &s.pin_path);
    let filled = fill_established_table(&s.pin_path);
    assert_eq!(filled, herz_common::MAX_ESTABLISHED as usize);

    let host = net.host_addr;
    let connect = move || {
        let c =
            TcpStream::connect_timeout(&SocketAddr::from((host, SUB_PORT)), Duration::from_secs(2))
                .expect("the subscriber port accepts");
        // Hold the connection until its final ACK has certainly crossed tc ingress.
        std::thread::sleep(Duration::from_millis(200));
        drop(c);
    };
    net.run_in(connect);
    let full = |d: &Daemon| d.stats()["global"]["conn_table_full"].as_u64().unwrap_or(0);
    assert!(
        full(&d) >= 1,
        "the kernel did not find the table full: {}",
        d.stats()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !d.log().contains("established-connection table full"),
        "herz_ebpf=off still logged:\n{}",
        d.log()
    );

    // SIGHUP with the target on: the next occurrence (the kernel writes one a second) reaches the log.
    with_level("info,herz_ebpf=debug");
    d.reload();
    let log = d.log.clone();
    std::thread::sleep(Duration::from_millis(1100));
    net.run_in(connect);
    d.wait_for(
        "the kernel's line in the daemon log",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .any(|l| {
                    l.contains("herz_ebpf")
                        && l.contains("established-connection table full (65536 entries)")
                        && l.contains(&format!("::ffff:{}", net.ns_addr))
                })
        },
    );
}

/// The TCP ports in the shield's pinned port map.
fn policed_tcp_ports(pin_path: &Path) -> Vec<u16> {
    use aya::maps::{HashMap, Map, MapData};
    use herz_common::{IPPROTO_TCP, PortKey, maps};
    let data = MapData::from_pin(pin_path.join(maps::PORTS)).expect("pinned port map");
    let ports: HashMap<MapData, PortKey, u32> =
        HashMap::try_from(Map::HashMap(data)).expect("a hash map");
    let mut out: Vec<u16> = ports
        .keys()
        .filter_map(Result::ok)
        .filter(|k| k.proto == IPPROTO_TCP)
        .map(|k| k.port)
        .collect();
    out.sort_unstable();
    out
}

/// A SIGHUP whose file moves the listen ports cannot move the listeners (that needs a restart, and
/// the log says so); the shield goes on policing the ports actually in use.
#[test]
fn a_reload_that_moves_the_listeners_keeps_the_shield_on_the_ports_in_use() {
    if !privileged("a_reload_that_moves_the_listeners_keeps_the_shield_on_the_ports_in_use") {
        return;
    }
    let s = setup(&["lo"], std::net::Ipv4Addr::LOCALHOST);
    let mut d = Daemon::start(&s.config);
    wait_loaded(&mut d, &s.pin_path);
    assert_eq!(policed_tcp_ports(&s.pin_path), [SUB_PORT, PUB_PORT]);
    let mut c = read_config(&s.config);
    c.subscribers.listen.set_port(SUB_PORT + 50);
    c.publishers.listen.set_port(PUB_PORT + 50);
    c.shield.syn_rate += 1;
    write_config(&s.config, &c);
    d.reload();
    assert!(
        d.log().contains("needs_restart") && d.log().contains("subscribers"),
        "{}",
        d.log()
    );
    assert_eq!(policed_tcp_ports(&s.pin_path), [SUB_PORT, PUB_PORT]);
    // The listener is where it was.
    TcpStream::connect(("127.0.0.1", SUB_PORT)).expect("the running listener");
    assert!(d.stop_with(libc::SIGTERM).success());
}

/// A capability set from a `/proc/*/status` line (`CapEff:\t0000...`).
fn cap_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

/// Once the shield is attached, every thread of the daemon keeps CAP_BPF (map updates) and
/// CAP_NET_ADMIN (detaching at exit) and nothing else, in its effective, permitted and bounding
/// sets; the daemon still serves, trusts logins and cleans up at exit.
#[test]
fn after_the_shield_starts_every_thread_keeps_only_bpf_and_net_admin() {
    if !privileged("after_the_shield_starts_every_thread_keeps_only_bpf_and_net_admin") {
        return;
    }
    let s = setup(&["lo"], std::net::Ipv4Addr::LOCALHOST);
    let mut c = read_config(&s.config);
    c.control.enabled = true;
    c.control.listen = SocketAddr::from(([127, 0, 0, 1], herz_tests::dist::free_port()));
    write_config(&s.config, &c);
    let mut d = Daemon::start(&s.config);
    wait_loaded(&mut d, &s.pin_path);
    let log = d.log.clone();
    d.wait_for(
        "the capabilities to be dropped",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("capabilities dropped")
        },
    );
    // The shield's event thread follows at its next loop (every 200 ms).
    std::thread::sleep(Duration::from_millis(500));
    const CAP_NET_ADMIN: u64 = 12;
    const CAP_BPF: u64 = 39;
    let want = (1 << CAP_NET_ADMIN) | (1 << CAP_BPF);
    let pid = d.child.as_ref().unwrap().id();
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let name = std::fs::read_to_string(task.join("comm")).unwrap();
        for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
            assert_eq!(
                cap_mask(&status, field),
                want,
                "thread {} {field}",
                name.trim()
            );
        }
        assert_eq!(cap_mask(&status, "CapAmb:"), 0);
        threads.push(name.trim().to_string());
    }
    for t in ["herz-shield", "herz-reload", "herz-control"] {
        assert!(threads.iter().any(|n| n == t), "{t} not among {threads:?}");
    }
    // Still serving, and the kernel side still works: a login is trusted.
    let addr = SocketAddr::from(([127, 0, 0, 1], SUB_PORT));
    let mut sub = herz_client::SoupSubscriber::connect(addr, Duration::from_secs(5)).unwrap();
    sub.login(
        "tester",
        "t3st3r",
        herz_core::protocol::moldudp64::Session::BLANK,
        0,
        None,
    )
    .unwrap();
    d.wait_for("the login to be trusted", Duration::from_secs(5), || {
        herz_user::shield::pinned::read_trusted(&s.pin_path)
            .map(|t| !t.is_empty())
            .unwrap_or(false)
    });
    drop(sub);
    // And it detaches and unpins at exit with what it kept.
    assert!(d.stop_with(libc::SIGTERM).success());
    assert!(!s.pin_path.exists());
}
