//! Metrics, health, state and logs as an operator sees them: scraped over HTTP, parsed by an independent
//! Prometheus parser, compared with the traffic that was actually sent.

use std::{
    io::Write,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use herz_client::{SoupPublisher, SoupSubscriber, soup::Event};
use herz_core::protocol::moldudp64::Session;
use herz_tests::{
    dist::{self, Endpoints, LOGIN_TIMEOUT, http_get, message, sample, scrape},
    herz, read_config, write_config,
};
use herz_user::config::{ChannelConfig, FeedConfig};

#[test]
fn metrics_count_exactly_what_was_sent() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |_| {});
    let mut sub = SoupSubscriber::connect(ep.subscribers, Duration::from_secs(5)).unwrap();
    sub.login("tester", "t3st3r", Session::BLANK, 1, None)
        .unwrap();
    const N: u64 = 1234;
    let mut p = SoupPublisher::connect(ep.publishers, Duration::from_secs(5)).unwrap();
    p.login("pubber", "pubb3r").unwrap();
    for i in 1..=N {
        p.send(&message(i)).unwrap();
    }
    p.flush().unwrap();
    let mut got = 0;
    let t = Instant::now();
    while got < N {
        assert!(t.elapsed() < Duration::from_secs(20));
        sub.poll(Some(Duration::from_millis(100)), |e| {
            if let Event::Message { .. } = e {
                got += 1
            }
        })
        .unwrap();
    }
    // The state snapshot refreshes twice a second.
    std::thread::sleep(Duration::from_millis(700));
    let m = scrape(&ep);
    assert_eq!(sample(&m, "herz_publisher_messages_total"), N as f64);
    assert_eq!(sample(&m, "herz_journal_appended_total"), N as f64);
    assert_eq!(
        sample(&m, "herz_journal_bytes_total"),
        (N * message(1).len() as u64) as f64
    );
    assert_eq!(sample(&m, "herz_subscriber_messages_total"), N as f64);
    assert_eq!(sample(&m, "herz_logins_accepted_total"), 2.0);
    assert_eq!(sample(&m, "herz_journal_head"), (N + 1) as f64);
    assert_eq!(sample(&m, "herz_malformed_closes_total"), 0.0);
    let active = m
        .samples
        .iter()
        .find(|s| s.metric == "herz_sessions" && s.labels.get("role") == Some("subscriber"))
        .expect("sessions gauge");
    assert!(
        matches!(active.value, prometheus_parse::Value::Gauge(v) if v == 1.0),
        "{active:?}"
    );
    let latency = m
        .samples
        .iter()
        .find(|s| s.metric == "herz_latency_seconds")
        .expect("latency histogram");
    match &latency.value {
        prometheus_parse::Value::Histogram(b) => assert!(b.last().unwrap().count > 0.0, "{b:?}"),
        other => panic!("{other:?}"),
    }
    assert!(sample(&m, "process_open_fds") > 0.0);
    assert!(sample(&m, "process_resident_memory_bytes") > 0.0);
    assert_eq!(sample(&m, "herz_shield_active"), 0.0);

    let (status, body) = http_get(&ep, "/healthz");
    assert_eq!(status, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["shield"]["state"], "off");
    let (_, body) = http_get(&ep, "/state");
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    let subs: Vec<&serde_json::Value> = st["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["role"] == "subscriber")
        .collect();
    assert_eq!(subs.len(), 1, "{st}");
    assert_eq!(subs[0]["user"], "tester");
    assert_eq!(subs[0]["lag"], 0);
    assert_eq!(subs[0]["policy"], "disconnect");
    // Without a control token, nobody learns the peers' addresses.
    assert!(
        subs[0]["peer"].as_str().unwrap().starts_with("hidden"),
        "{st}"
    );
}

/// With `control.token_file`, `/metrics` and `/state` need the bearer token (`/healthz` stays open
/// for probes), and only a token holder sees peer addresses; `herz top` reads the token file.
#[test]
fn the_control_plane_answers_only_token_holders() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    const TOKEN: &str = "k9T3y8bN2w-control-token";
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let tf = token_file.clone();
    let (_d, _dir) = dist::start(&ep, move |c| c.control.token_file = Some(tf));
    let mut sub = SoupSubscriber::connect(ep.subscribers, LOGIN_TIMEOUT).unwrap();
    sub.login("tester", "t3st3r", Session::BLANK, 0, None)
        .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let get = |path: &str, token: Option<&str>| {
        let mut r = agent.get(&format!("http://{}{path}", ep.control));
        if let Some(t) = token {
            r = r.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = r.call().unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    };
    assert_eq!(get("/metrics", None).0, 401);
    assert_eq!(get("/state", None).0, 401);
    assert_eq!(get("/metrics", Some("k9T3y8bN2w-control-tokeX")).0, 401);
    assert_eq!(get("/healthz", None).0, 200);
    assert_eq!(get("/metrics", Some(TOKEN)).0, 200);
    // The snapshot is refreshed twice a second: wait for the subscriber to appear in it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let peer = loop {
        let (status, body) = get("/state", Some(TOKEN));
        assert_eq!(status, 200);
        let st: serde_json::Value = serde_json::from_str(&body).unwrap();
        let peer = st["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["role"] == "subscriber")
            .map(|s| s["peer"].as_str().unwrap().to_string());
        if let Some(peer) = peer {
            break peer;
        }
        assert!(Instant::now() < deadline, "no subscriber in /state: {st}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(peer.starts_with("127.0.0.1:"), "{peer}");
    let out = herz(&[
        "top",
        "--control",
        &ep.control.to_string(),
        "--token-file",
        token_file.to_str().unwrap(),
        "--once",
        "--interval-ms",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(sub);
}

#[test]
fn a_flood_of_malformed_input_logs_a_bounded_number_of_lines() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    // All from one address, faster than the daemon closes them: per-IP admission is not under test.
    let (d, _dir) = dist::start(&ep, |c| {
        c.admission.max_pending_per_ip = 1000;
        c.admission.max_sessions_per_ip = 1000;
    });
    const BAD: usize = 600;
    let t = Instant::now();
    for _ in 0..BAD {
        let mut s = TcpStream::connect(ep.subscribers).unwrap();
        let _ = s.write_all(b"\x00\x00garbage");
    }
    // Let the daemon process all of them.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(&ep);
        if sample(&m, "herz_malformed_closes_total") as usize == BAD {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "malformed closes counted: {}",
            sample(&m, "herz_malformed_closes_total")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let secs = t.elapsed().as_secs_f64().ceil() + 1.0;
    let lines = d
        .log()
        .lines()
        .filter(|l| l.contains("session closed"))
        .count();
    // 10 lines a second for session closes, whatever the flood.
    assert!(
        lines as f64 <= 10.0 * secs,
        "{lines} log lines for {BAD} malformed sessions in {secs} s"
    );
    assert!(lines >= 1, "the flood is visible in the log");
    assert!(
        d.log().contains("suppressed"),
        "suppressed counts are reported"
    );
}

#[test]
fn sighup_reloads_the_log_level_and_says_what_changed() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (mut d, _dir) = dist::start(&ep, |_| {});
    let mut config = read_config(&d.config);
    config.log.level = "debug".into();
    write_config(&d.config, &config);
    let pid = d.child.as_ref().unwrap().id();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    let log = d.log.clone();
    d.wait_for("the reload to be reported", Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("reload applied")
    });
    let text = d.log();
    let line = text.lines().find(|l| l.contains("reload applied")).unwrap();
    assert!(line.contains("log.level: info -> debug"), "{line}");
    // A broken file is refused and the daemon keeps running.
    std::fs::write(&d.config, "[log\n").unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    d.wait_for(
        "the refusal to be reported",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reload refused")
        },
    );
    let (status, _) = http_get(&ep, "/healthz");
    assert_eq!(status, 200);
}

#[test]
fn the_dashboard_references_only_exported_metrics() {
    if !herz_tests::privileged("the_dashboard_references_only_exported_metrics") {
        return;
    }
    // With the shield on (lo), so that its metrics are exported too.
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let pin = format!("/sys/fs/bpf/herz-test-{}", herz_tests::unique_id());
    let (d, _dir) = dist::start_with_shield(&ep, &pin, |c| {
        c.channels.push(ChannelConfig {
            name: "all".into(),
            group: SocketAddr::from(([239, 18, 1, 1], dist::free_port())),
            interface: Ipv4Addr::LOCALHOST.into(),
            ..Default::default()
        });
        c.feeds.push(FeedConfig {
            name: "f".into(),
            lines: vec![SocketAddr::from(([127, 0, 0, 1], dist::free_port()))],
            ..Default::default()
        });
    });
    let (_, body) = http_get(&ep, "/metrics");
    let exported: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/herz-dashboard.json"
    ))
    .unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut referenced = std::collections::BTreeSet::new();
    for panel in json["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("herz_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                referenced.insert(name);
            }
        }
    }
    assert!(referenced.len() > 15, "{referenced:?}");
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|m| !exported.contains(m.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard metrics not exported: {missing:?}\nexported: {exported:?}"
    );
    drop(d);
}

#[test]
fn herz_top_shows_sessions_and_throughput() {
    let ep = Endpoints::on(Ipv4Addr::LOCALHOST);
    let (_d, _dir) = dist::start(&ep, |_| {});
    let mut sub = SoupSubscriber::connect(ep.subscribers, Duration::from_secs(5)).unwrap();
    sub.login("tester", "t3st3r", Session::BLANK, 0, None)
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let control = ep.control.to_string();
    let out = herz_tests::herz(&[
        "top",
        "--control",
        &control,
        "--once",
        "--interval-ms",
        "300",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("herz session HZTEST0001"), "{text}");
    assert!(
        text.contains("sessions (1)") && text.contains("tester") && text.contains("subscriber"),
        "{text}"
    );
    assert!(text.contains("in msg/s"), "{text}");
    // No daemon: a clear error, not a hang.
    let out = herz_tests::herz(&["top", "--control", "127.0.0.1:1", "--once"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no herz daemon answering"));
}
