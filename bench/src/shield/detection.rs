//! Detection: how soon the shield drops the SYN that crosses a source's limit, measured from kernel
//! timestamps on both sides, and how soon the auto-block and the daemon's log line follow.

use super::*;

/// The policy's first refusal among SYNs sent at `times` (ns): the token bucket (full at the first
/// SYN) or the half-open limit (every passed SYN stays half-open: the attacker never completes).
pub(super) fn crossing(times: &[u64], p: &Policy) -> Option<usize> {
    const NS: u128 = 1_000_000_000;
    let cap = u128::from(p.syn_burst) * NS;
    let mut units = cap;
    let mut last = *times.first()?;
    // Every SYN before the first refusal passed.
    for (passed, &t) in times.iter().enumerate() {
        units = (units + u128::from(t.saturating_sub(last)) * u128::from(p.syn_rate)).min(cap);
        last = t;
        if units < NS || (p.max_half_open > 0 && passed as u64 >= p.max_half_open) {
            return Some(passed);
        }
        units -= NS;
    }
    None
}

/// Parses the RFC 3339 UTC timestamps of Herz's JSON log (`2026-11-26T08:50:00.123456Z`) into ns
/// since the epoch.
pub(super) fn parse_utc_ns(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<u64>());
    let (h, mi, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let digits: String = frac.chars().take(9).collect();
    let ns_frac = digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as u64 * 86_400_000_000_000 + (h * 3600 + mi * 60 + sec) * 1_000_000_000 + ns_frac)
}

/// The daemon's log line for `event` about `source`: (kernel_ns, wall-clock ns, reason).
pub(super) fn find_event(log: &str, event: &str, source: &str) -> Option<(u64, u64, String)> {
    log.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        // Herz's JSON lines carry the event's fields at the top level.
        let f = if v.get("fields").is_some() {
            &v["fields"]
        } else {
            &v
        };
        if f["event"] != event || f["source"] != source {
            return None;
        }
        Some((
            f["kernel_ns"].as_u64()?,
            parse_utc_ns(v["timestamp"].as_str()?)?,
            f["reason"].as_str().unwrap_or("").to_string(),
        ))
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn detection_trial(
    policy: &Policy,
    topo: &Topo,
    log: &Path,
    herz: &Path,
    dport: u16,
    k: u8,
    rate: u64,
    count: u64,
) -> anyhow::Result<DetectionTrial> {
    let source = Ipv4Addr::new(198, 19, 250, k);
    let spec = FrameSpec {
        dst_mac: topo.victim_mac,
        src_mac: topo.attacker_mac,
        src: source,
        dst: topo::VICTIM_A,
        dport,
        random_source: false,
    };
    let ifindex = topo.attacker_ifindex;
    let gen_cpu = topo.cpus.map(|(_, g)| g);
    let stop = Arc::new(AtomicBool::new(false));
    let (cap_tx, cap_rx) = std::sync::mpsc::channel();
    let cap_stop = stop.clone();
    let capture = topo::spawn_in(topo::NS_ATTACKER, "bench-capture", move || {
        let c = flood::Capture::open(ifindex, dport)?;
        let _ = cap_tx.send(());
        c.collect(cap_stop)
    });
    // Whatever happens below, the capture stops with this trial.
    let _capture_stop = StopOnDrop(stop.clone());
    cap_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow::anyhow!("the capture did not start"))?;
    // Enabling receive timestamps takes effect asynchronously (a static key flipped by a workqueue):
    // give it a moment, so that the first frames carry the time they left.
    std::thread::sleep(Duration::from_millis(50));
    let gen_stop = Arc::new(AtomicBool::new(false));
    let gs = gen_stop.clone();
    let generator = topo::spawn_in(topo::NS_ATTACKER, "bench-syn-gen", move || {
        if let Some(cpu) = gen_cpu {
            topo::pin(0, cpu)?;
        }
        crate::sys::precise_timers();
        flood::af_packet(
            ifindex,
            &spec,
            Bounds {
                max_packets: count,
                max_time: Duration::from_secs(5),
                rate: Some(rate),
            },
            &gs,
        )
    });
    let sent = generator
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))??;
    // Let the daemon see the events and the capture drain.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut captured = capture
        .join()
        .map_err(|_| anyhow::anyhow!("capture panicked"))??;
    captured.sort_by_key(|c| c.realtime_ns);
    let (offset, uncertainty) = flood::realtime_offset();
    let to_mono = |rt: u64| (i128::from(rt) - offset) as u64;
    let times: Vec<u64> = captured.iter().map(|c| to_mono(c.realtime_ns)).collect();
    let mut t = DetectionTrial {
        source: source.to_string(),
        sent: sent.packets,
        captured: captured.len() as u64,
        clock_uncertainty_ns: uncertainty,
        ..DetectionTrial::default()
    };
    if t.captured != t.sent {
        t.error = Some(format!(
            "the capture saw {} of {} SYNs: SYN numbers may be off",
            t.captured, t.sent
        ));
    }
    let cross = crossing(&times, policy);
    t.crossing_index = cross.map(|i| u64::from(captured[i].seq));
    let log_text = std::fs::read_to_string(log).unwrap_or_default();
    let src = source.to_string();
    if let Some((kns, wall, reason)) = find_event(&log_text, "threshold", &src) {
        t.reason = Some(reason);
        let idx = times.partition_point(|&x| x <= kns);
        if idx > 0 {
            t.first_drop_index = Some(u64::from(captured[idx - 1].seq));
        }
        if let Some(i) = cross {
            t.crossing_to_drop_us = Some((kns as f64 - times[i] as f64) / 1e3);
            t.crossing_to_log_ms = Some((wall as f64 - captured[i].realtime_ns as f64) / 1e6);
        }
    } else {
        t.error = Some("no threshold event in the daemon's log".into());
    }
    if let (Some((kns, _, _)), Some(i)) = (find_event(&log_text, "auto_block", &src), cross) {
        t.crossing_to_autoblock_ms = Some((kns as f64 - times[i] as f64) / 1e6);
    }
    if let Ok(stats) = herz_stats(herz)
        && let Some(row) = stats["sources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["source"] == src.as_str()))
    {
        let syn = row["tcp_syn"].as_u64().unwrap_or(0);
        let drops: u64 = row["drops"]
            .as_object()
            .map(|o| o.values().filter_map(|v| v.as_u64()).sum())
            .or_else(|| row["drops"].as_u64())
            .unwrap_or(0);
        t.passed = Some(syn.saturating_sub(drops));
    }
    Ok(t)
}

/// Detection trials under `policy`, with sources 198.19.250.`first`.. (fresh ones: no state yet).
pub(super) fn detection(
    env: &Env,
    topo: &Topo,
    policy: &Policy,
    first: u8,
    trials: u8,
) -> anyhow::Result<Vec<DetectionTrial>> {
    let tmp = TempDir::new(&env.tmp)?;
    let load = Load {
        n: 1000,
        size: 64,
        rate: None,
        warmup: 0,
    };
    let d = HerzDaemon::start(
        &env.herz_bin,
        &tmp.0,
        1,
        &load,
        None,
        &victim_opts(Defense::Herz, policy),
    )?;
    topo.pin_napi()?;
    let dport = d.sub_addr.port();
    let log = d.log.clone();
    let mut out = Vec::new();
    let limits = if policy.max_half_open > 0 {
        format!(
            "half-open ≤ {}, {} SYN/s burst {}",
            policy.max_half_open, policy.syn_rate, policy.syn_burst
        )
    } else {
        format!("{} SYN/s burst {}", policy.syn_rate, policy.syn_burst)
    };
    for k in first..first + trials {
        let mut t = detection_trial(policy, topo, &d.log, &env.herz_bin, dport, k, 10_000, 2_000)
            .unwrap_or_else(|e| DetectionTrial {
                source: Ipv4Addr::new(198, 19, 250, k).to_string(),
                error: Some(format!("{e:#}")),
                ..DetectionTrial::default()
            });
        t.limits = limits.clone();
        eprintln!(
            "  shield detection {}/{trials} ({limits}): crossing at SYN {:?}, first drop at SYN {:?} ({}), {:?} µs; auto-block {:?} ms; log {:?} ms{}",
            k - first + 1,
            t.crossing_index,
            t.first_drop_index,
            t.reason.as_deref().unwrap_or("?"),
            t.crossing_to_drop_us.map(|v| v.round()),
            t.crossing_to_autoblock_ms
                .map(|v| (v * 10.0).round() / 10.0),
            t.crossing_to_log_ms.map(|v| (v * 10.0).round() / 10.0),
            t.error
                .as_deref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        );
        out.push(t);
    }
    drop(d);
    // Keep the daemon's log next to the report: the events the figures come from.
    if let Some(out_dir) = env.tmp.parent() {
        let _ = std::fs::copy(&log, out_dir.join(format!("shield-detection-{first}.log")));
    }
    Ok(out)
}
