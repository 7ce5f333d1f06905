//! Validation of a parsed configuration: every error names the key at fault and why.

use super::*;

/// The first-run demo's logins, published in the README: refused anywhere but loopback.
const DEMO_LOGINS: [(&str, &str); 2] = [("demo", "demo"), ("feed", "feed")];

/// Upper bound of `rerequest.max_amplification`. From 30 on it limits nothing: a full 1400-byte
/// reply (1428 bytes on the wire) to a 20-byte request (48) is within the bound.
const MAX_AMPLIFICATION: u32 = 64;

/// Most entries in `rerequest.allow` (each request is checked against them in turn).
const MAX_REREQUEST_ALLOW: usize = 1024;

impl Config {
    pub(super) fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.into(),
            key: key.into(),
            message,
        };
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("not a valid level or filter: {e}")))?;
        if self.shield.enabled && self.shield.interfaces.is_empty() {
            return Err(invalid(
                "shield.interfaces",
                "must name at least one interface".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, name) in self.shield.interfaces.iter().enumerate() {
            let key = format!("shield.interfaces[{i}]");
            if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
                return Err(invalid(
                    &key,
                    format!("`{name}` is not a valid interface name"),
                ));
            }
            if !seen.insert(name) {
                return Err(invalid(&key, format!("interface `{name}` is listed twice")));
            }
        }
        if let Err((key, message)) = self.shield.validate_policy() {
            return Err(invalid(&key, message));
        }
        if !self.shield.pin_path.is_absolute() {
            return Err(invalid(
                "shield.pin_path",
                "must be an absolute path under a bpffs mount".into(),
            ));
        }
        for (key, addr) in [
            ("subscribers.listen", self.subscribers.listen),
            ("publishers.listen", self.publishers.listen),
        ] {
            if addr.port() == 0 {
                return Err(invalid(
                    key,
                    format!("{addr}: port 0 is not allowed, name a fixed port"),
                ));
            }
            if let IpAddr::V4(v4) = addr.ip()
                && (v4.is_multicast() || v4.is_broadcast())
            {
                return Err(invalid(key, format!("{addr}: not a unicast address")));
            }
        }
        if self.subscribers.listen == self.publishers.listen {
            return Err(invalid(
                "publishers.listen",
                format!("{} is already subscribers.listen", self.publishers.listen),
            ));
        }
        for (section, users, listen) in [
            (
                "subscribers",
                &self.subscribers.users,
                self.subscribers.listen,
            ),
            ("publishers", &self.publishers.users, self.publishers.listen),
        ] {
            let loopback = listen.ip().is_loopback();
            if users.is_empty() && !loopback {
                return Err(invalid(
                    &format!("{section}.users"),
                    format!(
                        "no logins configured for {listen}: Herz has no built-in users except the first-run demo on loopback"
                    ),
                ));
            }
            for (i, u) in users.iter().enumerate() {
                if u.password.is_empty() {
                    return Err(invalid(
                        &format!("{section}.users[{i}].password"),
                        "must not be empty".into(),
                    ));
                }
                if !loopback && DEMO_LOGINS.contains(&(u.name.as_str(), u.password.as_str())) {
                    return Err(invalid(
                        &format!("{section}.users[{i}]"),
                        format!(
                            "the demo's well-known login `{}` is refused on {listen}, a non-loopback address",
                            u.name
                        ),
                    ));
                }
                if u.name.is_empty()
                    || u.name.len() > 6
                    || !u.name.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(invalid(
                        &format!("{section}.users[{i}].name"),
                        format!("`{}`: 1 to 6 printable characters", u.name),
                    ));
                }
                if u.password.len() > 10 || !u.password.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(invalid(
                        &format!("{section}.users[{i}].password"),
                        "at most 10 printable characters".into(),
                    ));
                }
            }
        }
        let a = &self.admission;
        for (key, v) in [
            (
                "admission.max_pending_per_ip",
                u64::from(a.max_pending_per_ip),
            ),
            (
                "admission.max_sessions_per_ip",
                u64::from(a.max_sessions_per_ip),
            ),
            (
                "admission.max_failed_logins",
                u64::from(a.max_failed_logins),
            ),
            (
                "admission.failed_login_forgive_ms",
                a.failed_login_forgive_ms,
            ),
            ("admission.max_tracked_ips", a.max_tracked_ips as u64),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be positive".into()));
            }
        }
        let s = &self.subscribers;
        if s.max_lag == 0 {
            return Err(invalid("subscribers.max_lag", "must be positive".into()));
        }
        if s.output_buffer < 4096 {
            return Err(invalid(
                "subscribers.output_buffer",
                format!("{} bytes is too small (at least 4096)", s.output_buffer),
            ));
        }
        if s.heartbeat_ms == 0 || s.timeout_ms <= s.heartbeat_ms {
            return Err(invalid(
                "subscribers.timeout_ms",
                "must be larger than subscribers.heartbeat_ms (> 0)".into(),
            ));
        }
        if s.login_timeout_ms == 0 {
            return Err(invalid(
                "subscribers.login_timeout_ms",
                "must be positive".into(),
            ));
        }
        let j = &self.journal;
        if j.max_message_len < 9 || j.max_message_len > 65_000 {
            return Err(invalid(
                "journal.max_message_len",
                format!("{}: must be between 9 and 65000", j.max_message_len),
            ));
        }
        if j.max_messages == 0 {
            return Err(invalid("journal.max_messages", "must be positive".into()));
        }
        if j.max_bytes < 2 * j.max_message_len {
            return Err(invalid(
                "journal.max_bytes",
                "must be at least twice journal.max_message_len".into(),
            ));
        }
        if j.dir.is_some() {
            if !(64 << 10..=1 << 31).contains(&j.segment_bytes) {
                return Err(invalid(
                    "journal.segment_bytes",
                    format!("{}: must be between 65536 and 2147483648", j.segment_bytes),
                ));
            }
            if j.segment_bytes < 4 * j.max_message_len {
                return Err(invalid(
                    "journal.segment_bytes",
                    "must hold at least four journal.max_message_len messages".into(),
                ));
            }
            if j.max_bytes < 2 * j.segment_bytes {
                return Err(invalid(
                    "journal.max_bytes",
                    "with journal.dir, must be at least twice journal.segment_bytes (the segment being written and one full one)".into(),
                ));
            }
            if j.durability == Durability::Batch && !(1..=60_000).contains(&j.sync_interval_ms) {
                return Err(invalid(
                    "journal.sync_interval_ms",
                    format!("{}: must be between 1 and 60000", j.sync_interval_ms),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, f) in self.feeds.iter().enumerate() {
            if f.lines.is_empty() || f.lines.len() > 2 {
                return Err(invalid(
                    &format!("feeds[{i}].lines"),
                    "one line, or two (A and B)".into(),
                ));
            }
            if !names.insert(format!("feed:{}", f.name)) {
                return Err(invalid(
                    &format!("feeds[{i}].name"),
                    format!("`{}` is used twice", f.name),
                ));
            }
            let local = f.lines.iter().all(|l| {
                l.ip().is_loopback() || (l.ip().is_multicast() && f.interface.is_loopback())
            });
            if f.sources.is_empty() && !local {
                return Err(invalid(
                    &format!("feeds[{i}].sources"),
                    "required for a feed off loopback: the senders allowed to feed the journal"
                        .into(),
                ));
            }
            for (k, l) in f.lines.iter().enumerate() {
                if l.port() == 0 {
                    return Err(invalid(
                        &format!("feeds[{i}].lines[{k}]"),
                        "port 0 is not allowed".into(),
                    ));
                }
            }
        }
        let mut sessions = BTreeSet::new();
        for (i, c) in self.channels.iter().enumerate() {
            if !c.group.ip().is_multicast() {
                return Err(invalid(
                    &format!("channels[{i}].group"),
                    format!("{} is not a multicast group", c.group),
                ));
            }
            if !names.insert(format!("channel:{}", c.name)) {
                return Err(invalid(
                    &format!("channels[{i}].name"),
                    format!("`{}` is used twice", c.name),
                ));
            }
            if c.max_payload < 64 || c.max_payload > 8972 {
                return Err(invalid(
                    &format!("channels[{i}].max_payload"),
                    "between 64 and 8972 bytes".into(),
                ));
            }
            if c.max_payload < 20 + 2 + j.max_message_len {
                return Err(invalid(
                    &format!("channels[{i}].max_payload"),
                    "must hold one journal.max_message_len message".into(),
                ));
            }
            if !sessions.insert(c.session) {
                return Err(invalid(
                    &format!("channels[{i}].session"),
                    "two channels share a session name; give each its own".into(),
                ));
            }
        }
        let r = &self.rerequest;
        // The limiter checks its own fields; its names map back to this section's keys.
        if let Err(e) = r.limits().validate() {
            let key = match e.field {
                "per_requester.per_sec" => "rerequest.rate",
                "per_requester.burst" => "rerequest.burst",
                "global.per_sec" => "rerequest.global_rate",
                "global.burst" => "rerequest.global_burst",
                "max_per_request" => "rerequest.max_per_request",
                other => other,
            };
            return Err(invalid(key, format!("{}: {}", e.value, e.reason)));
        }
        if !(1..=MAX_AMPLIFICATION).contains(&r.max_amplification) {
            return Err(invalid(
                "rerequest.max_amplification",
                format!(
                    "{}: must be between 1 and {MAX_AMPLIFICATION}",
                    r.max_amplification
                ),
            ));
        }
        if r.allow.len() > MAX_REREQUEST_ALLOW {
            return Err(invalid(
                "rerequest.allow",
                format!("at most {MAX_REREQUEST_ALLOW} entries"),
            ));
        }
        for (key, ports) in [
            ("shield.extra_tcp_ports", &self.shield.extra_tcp_ports),
            ("shield.extra_udp_ports", &self.shield.extra_udp_ports),
        ] {
            if let Some(i) = ports.iter().position(|p| *p == 0) {
                return Err(invalid(
                    &format!("{key}[{i}]"),
                    "port 0 is not a port".into(),
                ));
            }
        }
        Ok(())
    }
}

impl RerequestConfig {
    /// The re-request server's limits as this section sets them (checked by [`Config::load`],
    /// used by the server).
    pub fn limits(&self) -> herz_core::engine::ratelimit::RequesterLimitsConfig {
        use herz_core::engine::ratelimit::{RequesterLimitsConfig, TokenRate};
        RequesterLimitsConfig {
            per_requester: TokenRate {
                per_sec: self.rate,
                burst: self.burst,
            },
            global: Some(TokenRate {
                per_sec: self.global_rate,
                burst: self.global_burst,
            }),
            max_per_request: self.max_per_request,
            max_requesters: 4096,
            per_ip: self.per_ip,
        }
    }
}
