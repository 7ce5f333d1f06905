//! The shield's policy on real traffic: `herz run` with its programs on veth pairs into namespaces, an
//! attacker namespace flooding and a legitimate one subscribing. Floods are raw-socket SYNs (IP_HDRINCL,
//! sources spoofed only inside 198.18.0.0/15, replies routed back into the attacker's namespace where
//! they die), always bounded in count and in time.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use herz_client::{SoupPublisher, SoupSubscriber, soup::Event};
use herz_core::protocol::moldudp64::Session;
use herz_tests::{
    Daemon,
    dist::{free_port, message},
    frames::raw_syn4,
    herz,
    netns::VethNs,
    privileged, source_row, unique_id, write_config,
};
use herz_user::config::{Config, ShieldConfig};

const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    pin_path: PathBuf,
    sub_port: u16,
    pub_addr: SocketAddr,
}

/// A daemon config: shield on `interfaces` with its policy as set by `policy`, subscribers on every
/// address, publishers on loopback, demo and control plane off.
fn setup(interfaces: &[&str], policy: impl FnOnce(&mut ShieldConfig)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pin_path = PathBuf::from(format!("/sys/fs/bpf/herz-test-{}", unique_id()));
    let config = dir.path().join("herz.toml");
    let sub_port = free_port();
    let pub_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let mut c = Config::default();
    c.shield.interfaces = interfaces.iter().map(|i| i.to_string()).collect();
    c.shield.pin_path = pin_path.clone();
    policy(&mut c.shield);
    c.demo.enabled = false;
    c.control.enabled = false;
    c.journal.session = Some(Session::new("HZSHIELD01").unwrap());
    c.subscribers.listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, sub_port));
    // These tests hold raw TCP connections that never log in; the login deadline is not under test here.
    c.subscribers.login_timeout_ms = 120_000;
    c.subscribers.users = vec![herz_tests::dist::user("tester", "t3st3r")];
    c.publishers.users = vec![herz_tests::dist::user("pubber", "pubb3r")];
    c.publishers.listen = pub_addr;
    c.rerequest.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    c.state.dir = dir.path().join("state");
    write_config(&config, &c);
    Setup {
        _dir: dir,
        config,
        pin_path,
        sub_port,
        pub_addr,
    }
}

fn start(s: &Setup) -> Daemon {
    let mut d = Daemon::start(&s.config);
    let log = d.log.clone();
    d.wait_for(
        "the shield and the distributor",
        Duration::from_secs(20),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("shield active") && text.contains("distributor serving")
        },
    );
    assert!(herz_user::shield::pinned::is_pinned(&s.pin_path));
    d
}

/// `herz --config CONFIG ARGS`, which must succeed; returns stdout.
fn herz_ok(s: &Setup, args: &[&str]) -> String {
    let mut all = vec!["--config", s.config.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = herz(&all);
    assert!(
        out.status.success(),
        "herz {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether a TCP connection from inside `ns` to `addr` is established within `timeout`.
fn connects(ns: &VethNs, addr: SocketAddr, timeout: Duration) -> bool {
    ns.run_in(move || TcpStream::connect_timeout(&addr, timeout).is_ok())
}

/// Sends raw SYNs from inside the namespace (the caller's thread must be in it) to `dst:dport` with
/// sources from `src(i)` and pseudo-random source ports and sequence numbers from `seed`, paced at
/// about `pps`, until `max` are sent or `max_time` has passed. Returns how many were sent.
fn raw_syn_flood(
    seed: u32,
    src: impl Fn(u32) -> [u8; 4],
    dst: Ipv4Addr,
    dport: u16,
    max: u32,
    max_time: Duration,
    pps: u32,
) -> u32 {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let sock = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .expect("raw socket (IP_HDRINCL)");
    let to = SockAddr::from(SocketAddrV4::new(dst, 0));
    let start = Instant::now();
    let mut x: u32 = seed.wrapping_mul(0x9e37_79b9) | 1;
    let mut sent = 0;
    while sent < max && start.elapsed() < max_time {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let sport = 1024 + (x % 60_000) as u16;
        let pkt = raw_syn4(src(sent), dst.octets(), sport, dport, x);
        if sock.send_to(&pkt, &to).is_ok() {
            sent += 1;
        }
        // Pace: a packet budget per elapsed time, so the flood is bounded and leaves CPU to the rest.
        let due = start.elapsed().as_secs_f64() * pps as f64;
        if sent as f64 > due {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    sent
}

/// Spoofed sources come from 198.19.0.0/16 (VethNs addresses live in 198.18.0.0/16); the test that
/// spoofs routes the whole /16 into its attacker namespace.
const SPOOFED: &str = "198.19.0.0/16";

/// The log without terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits (5 s at most) until `cond` holds for `herz stats --json`.
fn eventually(d: &mut Daemon, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let config = d.config.clone();
    d.wait_for(what, Duration::from_secs(5), || {
        let out = herz(&[
            "--config",
            config.to_str().unwrap(),
            "stats",
            "--json",
            "--top",
            "100000",
        ]);
        serde_json::from_slice(&out.stdout).is_ok_and(|v| cond(&v))
    });
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn syn_floods_are_dropped_at_xdp_while_a_subscriber_streams() {
    if !privileged("syn_floods_are_dropped_at_xdp_while_a_subscriber_streams") {
        return;
    }
    let attacker = VethNs::new(unique_id());
    let legit = VethNs::new(unique_id());
    attacker.route_into(SPOOFED);
    let s = setup(&[&attacker.host_if, &legit.host_if], |p| {
        p.syn_rate = 20;
        p.syn_burst = 20;
        p.max_half_open = 32;
        p.max_established = 8;
        p.half_open_timeout_ms = 1000;
        p.autoblock_after = 100;
        p.autoblock_window_ms = 5000;
        p.autoblock_ttl_secs = 60;
        p.global_syn_rate = 50;
        p.global_syn_burst = 50;
    });
    let mut d = start(&s);
    const N: u64 = 20_000;

    // The legitimate subscriber connects and logs in before the flood, then reads the whole stream.
    let sub_addr = SocketAddr::from((legit.host_addr, s.sub_port));
    let (ready_tx, ready_rx) = mpsc::channel();
    let subscriber = legit.spawn_in(move || {
        let mut sub =
            SoupSubscriber::connect(sub_addr, LOGIN_TIMEOUT).expect("subscriber connects");
        sub.login("tester", "t3st3r", Session::BLANK, 1, None)
            .expect("subscriber login");
        ready_tx.send(()).unwrap();
        let start = Instant::now();
        let mut next = 1;
        while next <= N && start.elapsed() < Duration::from_secs(60) {
            sub.poll(Some(Duration::from_millis(200)), |ev| match ev {
                Event::Message { seq, payload } => {
                    assert_eq!(seq, next, "gap or reorder");
                    assert_eq!(payload, &message(seq)[..]);
                    next += 1;
                }
                Event::Heartbeat | Event::Debug(_) => {}
                other => panic!("unexpected {other:?} at {next}"),
            })
            .expect("subscriber poll");
        }
        next - 1
    });
    ready_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("subscriber logged in");

    // The flood: one fixed source (the attacker's own address), then random spoofed sources.
    let host = attacker.host_addr;
    let sub_port = s.sub_port;
    let fixed = attacker.ns_addr.octets();
    let flood = attacker.spawn_in(move || {
        let a = raw_syn_flood(
            1,
            |_| fixed,
            host,
            sub_port,
            40_000,
            Duration::from_millis(1500),
            20_000,
        );
        let b = raw_syn_flood(
            2,
            |i| {
                let r = i.wrapping_mul(2_654_435_761);
                [198, 19, (r >> 24) as u8, 1 + (r >> 16) as u8 % 254]
            },
            host,
            sub_port,
            40_000,
            Duration::from_millis(1500),
            20_000,
        );
        (a, b)
    });

    // During both phases a new legitimate connection still gets through (its source has a connection,
    // so the exhausted global guard lets it in), and the stream keeps flowing.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        connects(&legit, sub_addr, Duration::from_secs(2)),
        "legitimate connect during the fixed-source flood"
    );
    let mut p = SoupPublisher::connect(s.pub_addr, LOGIN_TIMEOUT).expect("publisher connects");
    p.login("pubber", "pubb3r").expect("publisher login");
    for i in 1..=N / 2 {
        p.send(&message(i)).unwrap();
    }
    p.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        connects(&legit, sub_addr, Duration::from_secs(2)),
        "legitimate connect during the random-source flood"
    );
    for i in N / 2 + 1..=N {
        p.send(&message(i)).unwrap();
    }
    p.flush().unwrap();
    let (fixed_sent, random_sent) = flood.join().expect("flood thread");
    let received = subscriber.join().expect("subscriber thread");
    p.logout().unwrap();
    assert_eq!(received, N, "the legitimate stream is complete");

    let stats = d.stats();
    let g = &stats["global"];
    eprintln!(
        "fixed-source SYNs sent {fixed_sent}, random-source SYNs sent {random_sent}; drops {}",
        stats["drops"]
    );
    let a = source_row(&stats, &attacker.ns_addr.to_string())
        .unwrap_or_else(|| panic!("no row for the attacker: {stats}"));
    let a_drops = u(&a["drops"]["syn_rate"]) + u(&a["drops"]["auto_blocked"]);
    assert!(
        a_drops * 2 > u64::from(fixed_sent),
        "attacker drops {a_drops} of {fixed_sent}: {a}"
    );
    assert!(u(&a["drops"]["auto_blocked"]) > 0, "{a}");
    assert!(
        u(&g["drop_global_syn"]) * 2 > u64::from(random_sent),
        "global guard drops {} of {random_sent}",
        g["drop_global_syn"]
    );
    let l = source_row(&stats, &legit.ns_addr.to_string()).expect("legit row");
    assert_eq!(u(&l["drops_total"]), 0, "{l}");
    assert!(
        u(&l["tcp_syn"]) >= 3,
        "the subscriber and both later connects: {l}"
    );
    // The repeat offender is auto-blocked, and the events were logged (rate-limited).
    let blocked: serde_json::Value =
        serde_json::from_str(&herz_ok(&s, &["blocked", "--json"])).unwrap();
    let entry = blocked["blocked"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["cidr"] == format!("{}/32", attacker.ns_addr))
        .unwrap_or_else(|| panic!("attacker not auto-blocked: {blocked}"));
    assert_eq!(entry["origin"], "auto");
    assert_eq!(entry["reason"], "syn_rate");
    let log = plain(&d.log());
    assert!(log.contains("source auto-blocked"), "{log}");
    assert!(log.contains("flood threshold"), "{log}");
    let threshold_lines = log
        .lines()
        .filter(|l| l.contains("flood threshold"))
        .count();
    assert!(
        threshold_lines <= 21 * 5,
        "event lines are rate-limited: {threshold_lines}"
    );
    assert!(d.stop_with(libc::SIGTERM).success());
}

#[test]
fn half_open_count_rises_and_falls_after_the_timeout() {
    if !privileged("half_open_count_rises_and_falls_after_the_timeout") {
        return;
    }
    let net = VethNs::new(unique_id());
    net.route_into(SPOOFED);
    let third = net.host_addr.octets()[2];
    let s = setup(&[&net.host_if], |p| {
        p.max_half_open = 5;
        p.half_open_timeout_ms = 1500;
        p.syn_rate = 100;
        p.syn_burst = 100;
        p.autoblock_after = 0;
    });
    let mut d = start(&s);
    // A fixed spoofed source whose SYN-ACKs go back into the namespace and die there: no final ACK,
    // no RST, the handshakes stay half-open.
    let src = [198, 19, third, 7];
    let host = net.host_addr;
    let port = s.sub_port;
    let sent = net.run_in(move || {
        (0..10)
            .map(|i| {
                std::thread::sleep(Duration::from_millis(20));
                raw_syn_flood(
                    100 + i,
                    |_| src,
                    host,
                    port,
                    1,
                    Duration::from_secs(1),
                    1000,
                )
            })
            .sum::<u32>()
    });
    assert_eq!(sent, 10);
    let name = Ipv4Addr::from(src).to_string();
    // Under load the receive side may trail the sender by a few milliseconds.
    eventually(&mut d, "ten SYNs seen", |v| {
        source_row(v, &name).is_some_and(|r| u(&r["tcp_syn"]) == 10)
    });
    let stats = d.stats();
    let row = source_row(&stats, &name).unwrap_or_else(|| panic!("no row for {name}: {stats}"));
    assert_eq!(u(&row["half_open"]), 5, "{row}");
    assert_eq!(u(&row["drops"]["half_open"]), 5, "{row}");
    assert_eq!(u(&row["established"]), 0, "{row}");
    // After the timeout the count lapses, and the source may open handshakes again.
    std::thread::sleep(Duration::from_millis(1700));
    let stats = d.stats();
    let row = source_row(&stats, &name).unwrap();
    assert_eq!(u(&row["half_open"]), 0, "{row}");
    net.run_in(move || raw_syn_flood(200, |_| src, host, port, 1, Duration::from_secs(1), 1000));
    eventually(&mut d, "the eleventh SYN seen", |v| {
        source_row(v, &name).is_some_and(|r| u(&r["tcp_syn"]) == 11)
    });
    let stats = d.stats();
    let row = source_row(&stats, &name).unwrap();
    assert_eq!(u(&row["half_open"]), 1, "{row}");
    assert_eq!(u(&row["drops"]["half_open"]), 5, "{row}");
    assert!(d.stop_with(libc::SIGTERM).success());
}

#[test]
fn connection_limit_refuses_the_next_connection_from_one_source() {
    if !privileged("connection_limit_refuses_the_next_connection_from_one_source") {
        return;
    }
    let a = VethNs::new(unique_id());
    let b = VethNs::new(unique_id());
    let s = setup(&[&a.host_if, &b.host_if], |p| {
        p.max_established = 3;
        p.syn_rate = 100;
        p.syn_burst = 100;
    });
    let mut d = start(&s);
    let addr_a = SocketAddr::from((a.host_addr, s.sub_port));
    let addr_b = SocketAddr::from((b.host_addr, s.sub_port));
    // Three connections from A, held open in A's namespace; the fourth is refused (its SYNs dropped),
    // B still connects; when one of A's closes, A connects again.
    let (cmd_tx, cmd_rx) = mpsc::channel::<()>();
    let (res_tx, res_rx) = mpsc::channel();
    let holder = a.spawn_in(move || {
        let held: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect_timeout(&addr_a, Duration::from_secs(2)).expect("connect"))
            .collect();
        res_tx
            .send(TcpStream::connect_timeout(&addr_a, Duration::from_millis(1500)).is_ok())
            .unwrap();
        cmd_rx.recv().unwrap();
        drop(held.into_iter().next());
        std::thread::sleep(Duration::from_millis(300));
        let again = TcpStream::connect_timeout(&addr_a, Duration::from_secs(2)).is_ok();
        res_tx.send(again).unwrap();
    });
    let fourth = res_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(!fourth, "the fourth connection from A must be refused");
    let stats = d.stats();
    let row = source_row(&stats, &a.ns_addr.to_string()).expect("row for A");
    assert_eq!(u(&row["established"]), 3, "{row}");
    assert!(u(&row["drops"]["conn_limit"]) >= 1, "{row}");
    assert!(
        connects(&b, addr_b, Duration::from_secs(2)),
        "B is not limited by A's connections"
    );
    cmd_tx.send(()).unwrap();
    let again = res_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        again,
        "after one of A's connections closed, A connects again"
    );
    holder.join().unwrap();
    assert!(d.stop_with(libc::SIGTERM).success());
}

#[test]
fn herz_block_unblock_allow_and_ttl_take_effect_on_the_next_packet() {
    if !privileged("herz_block_unblock_allow_and_ttl_take_effect_on_the_next_packet") {
        return;
    }
    let net = VethNs::new(unique_id());
    let s = setup(&[&net.host_if], |_| {});
    let mut d = start(&s);
    let addr = SocketAddr::from((net.host_addr, s.sub_port));
    let me = net.ns_addr.to_string();
    let quick = Duration::from_millis(1200);
    assert!(connects(&net, addr, quick));

    let out = herz_ok(&s, &["block", &me]);
    assert!(
        out.contains(&format!("blocked {me}/32 (permanent)")),
        "{out}"
    );
    assert!(!connects(&net, addr, quick), "blocked from the next packet");
    let v: serde_json::Value = serde_json::from_str(&herz_ok(&s, &["blocked", "--json"])).unwrap();
    let rows = v["blocked"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["cidr"], format!("{me}/32"));
    assert_eq!(rows[0]["origin"], "manual");
    assert!(rows[0]["expires_in_ms"].is_null());
    let human = herz_ok(&s, &["blocked"]);
    assert!(
        human.contains(&format!("{me}/32")) && human.contains("never"),
        "{human}"
    );
    // The allowlist outranks the blocklist.
    herz_ok(&s, &["allow", &me]);
    assert!(connects(&net, addr, quick), "allowed");
    herz_ok(&s, &["allow", "--remove", &me]);
    assert!(!connects(&net, addr, quick), "blocked again");
    herz_ok(&s, &["unblock", &me]);
    assert!(connects(&net, addr, quick), "unblocked");
    let out = herz(&["--config", s.config.to_str().unwrap(), "unblock", &me]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not on the blocklist"));

    // A block with a TTL lapses on time, and the daemon deletes and reports it.
    let blocked_at = Instant::now();
    herz_ok(&s, &["block", &format!("{me}/30"), "--ttl", "2s"]);
    assert!(!connects(&net, addr, quick));
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(blocked_at.elapsed()));
    assert!(connects(&net, addr, quick), "the TTL expired");
    let cidr30 = format!("{me}/30")
        .parse::<herz_user::shield::Cidr>()
        .unwrap()
        .to_string();
    d.wait_for(
        "the expired block to be swept",
        Duration::from_secs(5),
        || {
            let v: serde_json::Value =
                serde_json::from_str(&herz_ok(&s, &["blocked", "--json"])).unwrap();
            v["blocked"].as_array().unwrap().is_empty()
        },
    );
    let log = plain(&d.log());
    assert!(
        log.lines()
            .any(|l| l.contains("shield: blocked") && l.contains(&cidr30)),
        "{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("shield: unblocked")
            && l.contains(&cidr30)
            && l.contains("expired=true")),
        "{log}"
    );
    let stats = d.stats();
    let row = source_row(&stats, &me).unwrap();
    assert!(u(&row["drops"]["blocked"]) > 0, "{row}");
    assert!(u(&stats["global"]["drop_blocked"]) > 0);

    // Without a daemon the pinned maps are still there to edit (a killed daemon leaves them).
    d.stop_with(libc::SIGKILL);
    herz_ok(&s, &["block", "198.18.250.0/24", "--ttl", "1h"]);
    let v: serde_json::Value = serde_json::from_str(&herz_ok(&s, &["blocked", "--json"])).unwrap();
    assert_eq!(v["blocked"][0]["cidr"], "198.18.250.0/24");
    let _ = std::fs::remove_dir_all(&s.pin_path);
}

#[test]
fn a_connection_that_vanished_without_fin_or_rst_stops_counting() {
    if !privileged("a_connection_that_vanished_without_fin_or_rst_stops_counting") {
        return;
    }
    use aya::maps::{HashMap, Map, MapData};
    use herz_common::{FlowKey, FlowState, PeerState, SourceKey, maps};
    let net = VethNs::new(unique_id());
    let s = setup(&[&net.host_if], |p| p.max_established = 4);
    let mut d = start(&s);
    let addr = SocketAddr::from((net.host_addr, s.sub_port));
    // A real connection, held open for the whole test: it must keep counting.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (up_tx, up_rx) = mpsc::channel();
    let holder = net.spawn_in(move || {
        let c = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        up_tx.send(()).unwrap();
        let _ = stop_rx.recv_timeout(Duration::from_secs(60));
        drop(c);
    });
    up_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // A connection whose socket is gone but whose FIN/RST never crossed the wire (a dead peer, a user
    // timeout): simulated by writing its flow and count into the pinned maps.
    let ghost = [198, 19, 77, 77];
    let open =
        |name: &str| Map::from_map_data(MapData::from_pin(s.pin_path.join(name)).unwrap()).unwrap();
    let mut est: HashMap<_, FlowKey, FlowState> =
        HashMap::try_from(open(maps::ESTABLISHED)).unwrap();
    let flow = FlowKey {
        client: SourceKey::from_ipv4(ghost).addr,
        server: SourceKey::from_ipv4(net.host_addr.octets()).addr,
        client_port: 4242,
        server_port: s.sub_port,
        _pad: 0,
    };
    est.insert(flow, FlowState::default(), 0).unwrap();
    let mut peers: HashMap<_, SourceKey, PeerState> = HashMap::try_from(open(maps::PEERS)).unwrap();
    peers
        .insert(
            SourceKey::from_ipv4(ghost),
            PeerState {
                established: 1,
                ..Default::default()
            },
            0,
        )
        .unwrap();
    let ghost_name = Ipv4Addr::from(ghost).to_string();
    let real_name = net.ns_addr.to_string();
    let stats = d.stats();
    assert_eq!(
        u(&source_row(&stats, &ghost_name).expect("ghost row")["established"]),
        1
    );
    assert_eq!(
        u(&source_row(&stats, &real_name).expect("real row")["established"]),
        1
    );
    // The daemon finds it missing from the socket table twice in a row and closes it through the tc
    // program (a synthetic RST run with BPF_PROG_TEST_RUN).
    d.wait_for(
        "the vanished connection to be closed",
        Duration::from_secs(20),
        || {
            let stats =
                herz_tests::herz(&["--config", s.config.to_str().unwrap(), "stats", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap_or_default();
            source_row(&v, &ghost_name).is_none_or(|r| u(&r["established"]) == 0)
        },
    );
    assert!(est.get(&flow, 0).is_err(), "the flow is gone");
    let stats = d.stats();
    let real = source_row(&stats, &real_name).expect("real row");
    assert_eq!(
        u(&real["established"]),
        1,
        "a live connection is never touched: {real}"
    );
    assert!(
        plain(&d.log()).contains("connection vanished without FIN/RST"),
        "{}",
        d.log()
    );
    stop_tx.send(()).unwrap();
    holder.join().unwrap();
    assert!(d.stop_with(libc::SIGTERM).success());
}
