//! Unit tests of the configuration: defaults, validation, and the errors that name the key.

use super::*;

fn err(text: &str) -> String {
    Config::from_toml(text, "test.toml")
        .unwrap_err()
        .to_string()
}

#[test]
fn defaults_validate() {
    let c = Config::load(None).unwrap();
    assert_eq!(c.shield.interfaces, vec!["lo".to_string()]);
    assert!(c.shield_tcp_ports().contains(&7100));
}

#[test]
fn session_name_defaults_to_the_date() {
    let date = time::Date::from_calendar_date(2025, time::Month::November, 6).unwrap();
    assert_eq!(session_name_for(date), "HZ20251106");
    let now = time::OffsetDateTime::from_unix_timestamp(1_764_979_200).unwrap();
    // Memory journal: a name of this run; one millisecond later, another.
    let a = Config::default().fresh_session_name(now).to_string();
    let b = Config::default()
        .fresh_session_name(now + time::Duration::milliseconds(1))
        .to_string();
    assert_eq!((a.len(), &a[..1]), (10, "H"));
    assert!(a < b, "{a} {b}");
    assert_ne!(&a[..2], "HZ");
    let durable = Config::from_toml("[journal]\ndir = \"/var/lib/herz/journal\"\n", "t").unwrap();
    assert_eq!(durable.fresh_session_name(now).to_string(), "HZ20251206");
    let c = Config::from_toml("[journal]\nsession = \"HZPROD0001\"\n", "t").unwrap();
    assert_eq!(c.fresh_session_name(now).to_string(), "HZPROD0001");
    let e = err("[journal]\nsession = \"MUCH-TOO-LONG\"\n");
    assert!(
        e.contains("journal.session") && e.contains("is not a session name"),
        "{e}"
    );
}

#[test]
fn channels_and_feeds_are_validated() {
    let e = err("[[channels]]\nname = \"all\"\ngroup = \"198.18.0.1:6000\"\n");
    assert!(
        e.contains("channels[0].group") && e.contains("not a multicast"),
        "{e}"
    );
    let e = err("[[feeds]]\nname = \"f\"\nlines = []\n");
    assert!(e.contains("feeds[0].lines"), "{e}");
    let e = err("[subscribers]\npolicy = \"sometimes\"\n");
    assert!(e.contains("subscribers.policy"), "{e}");
    let e = err("[[subscribers.users]]\nname = \"toolongname\"\npassword = \"x\"\n");
    assert!(e.contains("subscribers.users[0].name"), "{e}");
}

#[test]
fn the_deployment_example_is_valid() {
    let c = Config::from_toml(
        include_str!("../../../deploy/herz.example.toml"),
        "herz.example.toml",
    )
    .unwrap();
    assert_eq!(c.feeds[0].lines.len(), 2);
    assert_eq!(c.channels.len(), 2);
}

#[test]
fn empty_file_is_the_defaults() {
    let c = Config::from_toml("", "empty").unwrap();
    assert_eq!(c.subscribers.listen, Config::default().subscribers.listen);
}

#[test]
fn unknown_key_is_named() {
    let e = err("[shield]\ninterfacez = [\"lo\"]\n");
    assert!(e.contains("shield.interfacez"), "{e}");
    assert!(e.contains("unknown field"), "{e}");
    let e = err("[shieldd]\n");
    assert!(e.contains("shieldd"), "{e}");
}

#[test]
fn bad_address_is_named() {
    let e = err("[subscribers]\nlisten = \"300.1.1.1:7100\"\n");
    assert!(e.contains("subscribers.listen"), "{e}");
    let e = err("[publishers]\nlisten = \"127.0.0.1:0\"\n");
    assert!(
        e.contains("publishers.listen") && e.contains("port 0"),
        "{e}"
    );
}

#[test]
fn bad_values_are_named() {
    let e = err("[shield]\ninterfaces = [\"lo\", \"lo\"]\n");
    assert!(
        e.contains("shield.interfaces[1]") && e.contains("twice"),
        "{e}"
    );
    let e = err("[shield]\npin_path = \"relative\"\n");
    assert!(e.contains("shield.pin_path"), "{e}");
    let e = err("[shield]\nxdp_mode = \"turbo\"\n");
    assert!(e.contains("shield.xdp_mode"), "{e}");
    let e = err("[log]\nlevel = \"info,=[\"\n");
    assert!(e.contains("log.level"), "{e}");
    let e = err("[shield]\nextra_udp_ports = [7102, 0]\n");
    assert!(e.contains("shield.extra_udp_ports[1]"), "{e}");
    let e = err("[shield]\nenabled = \"yes\"\n");
    assert!(e.contains("shield.enabled"), "{e}");
}

#[test]
fn shield_policy_keys_parse_and_are_validated() {
    let c = Config::from_toml(
        "[shield]\nsyn_rate = 5\nsyn_burst = 10\nallow = [\"198.18.0.0/15\", \"2001:db8::/32\"]\n\
         block = [\"198.18.9.9\"]\nfeed_sources = [\"198.18.1.0/24\"]\nautoblock_ttl_secs = 60\n",
        "test.toml",
    )
    .unwrap();
    assert_eq!((c.shield.syn_rate, c.shield.syn_burst), (5, 10));
    assert_eq!(c.shield.allow[1].to_string(), "2001:db8::/32");
    assert_eq!(c.shield.block[0].to_string(), "198.18.9.9/32");
    let e = err("[shield]\nallow = [\"198.18.0.0/15\", \"198.18.0.300/24\"]\n");
    assert!(
        e.contains("shield.allow[1]") && e.contains("not a CIDR"),
        "{e}"
    );
    let e = err("[shield]\nblock = [\"10.0.0.0/40\"]\n");
    assert!(e.contains("shield.block[0]") && e.contains("/40"), "{e}");
    let e = err("[shield]\nsyn_rate = 10\nsyn_burst = 0\n");
    assert!(e.contains("shield.syn_burst"), "{e}");
    let e = err("[shield]\nudp_rate = 99999999999\nudp_burst = 1\n");
    assert!(e.contains("shield.udp_rate"), "{e}");
    let e = err("[shield]\nhalf_open_timeout_ms = 0\n");
    assert!(e.contains("shield.half_open_timeout_ms"), "{e}");
    let e = err("[shield]\nautoblock_after = 3\nautoblock_window_ms = 0\n");
    assert!(e.contains("shield.autoblock_window_ms"), "{e}");
    let e = err("[shield]\nsyn_ratee = 3\n");
    assert!(e.contains("shield.syn_ratee"), "{e}");
}

#[test]
fn channel_symbols_are_parsed_into_symbols_and_a_bad_one_is_named() {
    let ch = "[[channels]]\nname = \"eq\"\ngroup = \"239.1.1.1:6000\"\n";
    let c = Config::from_toml(
        &format!("{ch}symbols = [\"AAPL\", \"MSFT\"]\nprefixes = [\"ES\"]\n"),
        "t",
    )
    .unwrap();
    let names: Vec<&str> = c.channels[0].symbols.iter().map(|s| s.as_str()).collect();
    assert_eq!(names, ["AAPL", "MSFT"]);
    assert_eq!(c.channels[0].prefixes[0].as_str(), "ES");
    for bad in ["\"TOOLONGSYM\"", "\"A,B\"", "\"\"", "\"A B\""] {
        let e = err(&format!("{ch}symbols = [\"AAPL\", {bad}]\n"));
        assert!(
            e.contains("channels[0].symbols[1]") && e.contains("is not a symbol"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn a_configuration_written_with_serde_reads_back_the_same() {
    let mut c = Config::from_toml(
        include_str!("../../../deploy/herz.example.toml"),
        "deploy/herz.example.toml",
    )
    .unwrap();
    c.journal.session = Some(Session::new("HZTEST0001").unwrap());
    let text = toml::to_string(&c).unwrap();
    let back = Config::from_toml(&text, "written").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(back, c);
    let default = toml::to_string(&Config::default()).unwrap();
    assert_eq!(
        Config::from_toml(&default, "default").unwrap(),
        Config::default()
    );
}

/// No built-in logins and no demo feed in a configuration file; the first-run defaults (no file)
/// keep the demo working on loopback.
#[test]
fn a_configuration_file_has_no_demo_and_no_built_in_users() {
    let c = Config::from_toml("[journal]\nmax_message_len = 64\n", "t").unwrap();
    assert!(!c.demo.enabled);
    assert!(c.subscribers.users.is_empty() && c.publishers.users.is_empty());
    let first = Config::load(None).unwrap();
    assert!(first.demo.enabled);
    assert_eq!(first.subscribers.users[0].name, "demo");
    assert_eq!(first.publishers.users[0].name, "feed");
    assert!(
        first.subscribers.listen.ip().is_loopback() && first.publishers.listen.ip().is_loopback()
    );
}

#[test]
fn logins_are_required_off_loopback_and_demo_logins_refused_there() {
    let e = err("[subscribers]\nlisten = \"0.0.0.0:7100\"\n");
    assert!(
        e.contains("subscribers.users") && e.contains("no built-in users"),
        "{e}"
    );
    let e = err(
        "[publishers]\nlisten = \"198.18.0.1:7101\"\n[[publishers.users]]\nname = \"feed\"\npassword = \"feed\"\n",
    );
    assert!(
        e.contains("publishers.users[0]") && e.contains("well-known"),
        "{e}"
    );
    let e = err("[[subscribers.users]]\nname = \"ops\"\npassword = \"\"\n");
    assert!(
        e.contains("subscribers.users[0].password") && e.contains("empty"),
        "{e}"
    );
    // On loopback the demo logins are fine, and other logins anywhere.
    Config::from_toml(
        "[[subscribers.users]]\nname = \"demo\"\npassword = \"demo\"\n",
        "t",
    )
    .unwrap();
    Config::from_toml(
        "[subscribers]\nlisten = \"0.0.0.0:7100\"\n[[subscribers.users]]\nname = \"ops\"\npassword = \"s3cret\"\n",
        "t",
    )
    .unwrap();
}

#[test]
fn rerequest_limits_parse_and_are_validated() {
    let c = Config::default().rerequest;
    assert!(c.per_ip && c.allow.is_empty());
    assert_eq!((c.global_rate, c.global_burst), (10 * c.rate, 10 * c.burst));
    assert_eq!(c.max_amplification, 4);
    let c = Config::from_toml(
        "[rerequest]\nper_ip = false\nallow = [\"10.0.0.0/16\", \"2001:db8::1\"]\nmax_amplification = 2\nglobal_rate = 5000\nglobal_burst = 500\n",
        "t",
    )
    .unwrap()
    .rerequest;
    assert!(!c.per_ip);
    assert_eq!(c.allow.len(), 2);
    assert_eq!(
        (c.max_amplification, c.global_rate, c.global_burst),
        (2, 5000, 500)
    );
    for (text, key) in [
        ("max_amplification = 0", "rerequest.max_amplification"),
        ("max_amplification = 65", "rerequest.max_amplification"),
        ("global_rate = 0", "rerequest.global_rate"),
        ("global_burst = 0", "rerequest.global_burst"),
        ("rate = 0", "rerequest.rate"),
        ("max_per_request = 0", "rerequest.max_per_request"),
        ("allow = [\"10.0.0.0/33\"]", "rerequest.allow"),
    ] {
        let e = err(&format!("[rerequest]\n{text}\n"));
        assert!(e.contains(key), "{text}: {e}");
    }
}

/// A reload cannot move sockets: the ports the shield polices stay those in use until a restart.
#[test]
fn a_reload_keeps_policing_the_ports_in_use() {
    let running = Config::from_toml(
        "[[subscribers.users]]\nname = \"ops\"\npassword = \"pw\"\n",
        "t",
    )
    .unwrap();
    let mut new = running.clone();
    new.subscribers.listen.set_port(7200);
    new.publishers.listen.set_port(7201);
    new.shield.syn_rate += 1;
    let policed = new.with_endpoints_of(&running);
    assert_eq!(policed.shield_tcp_ports(), running.shield_tcp_ports());
    assert_eq!(
        policed.shield.syn_rate,
        running.shield.syn_rate + 1,
        "the rest applies"
    );
    assert!(!policed.shield_tcp_ports().contains(&7200));
}

#[test]
fn a_feed_off_loopback_names_its_senders() {
    let e = err(
        "[[feeds]]\nname = \"x\"\nlines = [\"233.54.12.1:26400\"]\ninterface = \"198.18.0.1\"\n",
    );
    assert!(
        e.contains("feeds[0].sources") && e.contains("required"),
        "{e}"
    );
    Config::from_toml(
        "[[feeds]]\nname = \"x\"\nlines = [\"233.54.12.1:26400\"]\ninterface = \"198.18.0.1\"\nsources = [\"198.18.0.2\"]\nsession = \"UPSTREAM01\"\n",
        "t",
    )
    .unwrap();
    Config::from_toml(
        "[[feeds]]\nname = \"x\"\nlines = [\"127.0.0.1:26400\"]\n",
        "t",
    )
    .unwrap();
}
