//! Service and cost under flood: one flood cell (a stream while a bounded flood runs) and one cost
//! cell (the same flood, no stream), with the counters each reads before and after.

use super::*;

pub(super) struct FloodHandle {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<anyhow::Result<(Sent, FloodCounters)>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FloodCounters {
    rx: u64,
    ring_drops: u64,
    rx_cpu_ns: u64,
    /// Wall time between the two readings (filled in for the difference only).
    wall_ns: u64,
}

pub(super) fn counters(
    topo_rx: &dyn Fn() -> anyhow::Result<(u64, u64)>,
    cpu: &dyn Fn() -> anyhow::Result<u64>,
) -> anyhow::Result<FloodCounters> {
    let (rx, ring_drops) = topo_rx()?;
    Ok(FloodCounters {
        rx,
        ring_drops,
        rx_cpu_ns: cpu()?,
        wall_ns: 0,
    })
}

pub(super) fn start_flood(
    topo: &Arc<Topo>,
    method: Method,
    random_sources: bool,
    dport: u16,
    max_time: Duration,
) -> FloodHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let spec = FrameSpec {
        dst_mac: topo.victim_mac,
        src_mac: topo.attacker_mac,
        src: if random_sources {
            Ipv4Addr::new(198, 19, 0, 0)
        } else {
            Ipv4Addr::new(198, 19, 251, 1)
        },
        dst: topo::VICTIM_A,
        dport,
        random_source: random_sources,
    };
    let s = stop.clone();
    let t = topo.clone();
    let thread = std::thread::Builder::new()
        .name("bench-flood".into())
        .spawn(move || {
            let rx = || t.victim_rx();
            let cpu = || t.napi_runtime_ns();
            let t0 = std::time::Instant::now();
            let before = counters(&rx, &cpu)?;
            let gen_cpu = t.cpus.map(|(_, g)| g);
            let ifindex = t.attacker_ifindex;
            let sent = topo::spawn_in(topo::NS_ATTACKER, "bench-flood-gen", move || {
                if let Some(cpu) = gen_cpu {
                    topo::pin(0, cpu)?;
                }
                flood::run(
                    method,
                    ifindex,
                    &spec,
                    Bounds {
                        max_packets: 200_000_000,
                        max_time,
                        rate: None,
                    },
                    &s,
                )
            })
            .join()
            .map_err(|_| anyhow::anyhow!("flood generator panicked"))??;
            // Let the receive ring drain before reading the counters.
            std::thread::sleep(Duration::from_millis(100));
            let after = counters(&rx, &cpu)?;
            let wall_ns = t0.elapsed().as_nanos() as u64;
            let diff = |a: u64, b: u64, what: &str| {
                a.checked_sub(b)
                    .with_context(|| format!("{what} went backwards ({b} → {a})"))
            };
            Ok((
                sent,
                FloodCounters {
                    rx: diff(after.rx, before.rx, "veth rx packets")?,
                    ring_drops: diff(after.ring_drops, before.ring_drops, "veth rx drops")?,
                    rx_cpu_ns: diff(after.rx_cpu_ns, before.rx_cpu_ns, "receive thread CPU")?,
                    wall_ns,
                },
            ))
        })
        .expect("spawning the flood thread");
    FloodHandle { stop, thread }
}

/// (run_time_ns, run_cnt) of the XDP program attached to the victim's flood-facing veth.
pub(super) fn xdp_prog_stats() -> anyhow::Result<(u64, u64)> {
    let net: serde_json::Value = serde_json::from_str(&topo::ns_exec(
        topo::NS_VICTIM,
        &["bpftool", "net", "show", "dev", topo::IF_VICTIM_A, "-j"],
    )?)?;
    let id = net[0]["xdp"][0]["id"]
        .as_u64()
        .context("no XDP program on the victim's veth")?;
    let out = Command::new("bpftool")
        .args(["prog", "show", "id", &id.to_string(), "-j"])
        .output()?;
    let p: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        p["run_time_ns"].as_u64().unwrap_or(0),
        p["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// Drops between two readings of the defence's counters.
pub(super) fn drops_delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// Average run time between two `(run_time_ns, run_cnt)` readings of a BPF program.
pub(super) fn ns_per_run(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((t0, n0), (t1, n1)) = (before?, after?);
    (n1 > n0).then(|| t1.saturating_sub(t0) as f64 / (n1 - n0) as f64)
}

/// Turns the kernel's BPF run-time statistics on for its lifetime, to report the run time of Herz's
/// XDP program. They cost two clock reads per BPF program run, and only Herz runs BPF programs on the
/// victim, so Herz's figures carry that cost and the other defences' do not (said in the report).
pub(super) struct BpfStats(Option<String>);

impl BpfStats {
    pub(super) fn enable() -> Self {
        let old = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").ok();
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
        BpfStats(old)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", old.trim());
        }
    }
}

pub(super) fn defense_drops(defense: Defense, herz: &Path) -> Option<u64> {
    match defense {
        Defense::None => None,
        Defense::Nftables => nft_drops().ok(),
        // `drops` is an object: reason → count.
        Defense::Herz => herz_stats(herz).ok().map(|s| {
            s["drops"]
                .as_object()
                .map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum())
        }),
    }
}

/// The victim's listener ports (its namespace serves nothing else, so they are always free).
pub(super) const SUB_PORT: u16 = 7001;
pub(super) const PUB_PORT: u16 = 7002;

#[allow(clippy::too_many_arguments)]
pub(super) fn flood_run(
    env: &Env,
    topo: &Arc<Topo>,
    method: Option<Method>,
    random_sources: bool,
    defense: Defense,
    subs: usize,
    load: Load,
    secs: u64,
) -> FloodRun {
    let mut opts = victim_opts(defense, &POLICY);
    opts.ports = Some((SUB_PORT, PUB_PORT));
    let flood: Mutex<Option<FloodHandle>> = Mutex::new(None);
    let outcome: Mutex<(Sent, FloodCounters, Option<u64>)> = Mutex::default();
    let prog_after: Mutex<Option<(u64, u64)>> = Mutex::default();
    let mut error = None;
    let mut drops_before = None;
    if defense == Defense::Nftables
        && let Err(e) = nft_apply(&nft_ruleset(&[SUB_PORT, PUB_PORT], &POLICY))
    {
        // Not an nftables run without its ruleset: report the failure and measure nothing.
        nft_remove();
        return FloodRun {
            service: RunResult::failed(System::HerzTcp, subs, &load, format!("nftables: {e:#}")),
            flood: Sent::default(),
            victim_rx: 0,
            victim_ring_drops: 0,
            rx_cpu_s: 0.0,
            ns_per_frame: None,
            defense_drops: None,
            xdp_ns_per_run: None,
            rx_wall_s: 0.0,
            error: Some(format!("nftables: {e:#}")),
        };
    }
    let flood_error: Mutex<Option<String>> = Mutex::default();
    let herz_bin = env.herz_bin.clone();
    let mut prog_before = None;
    let mut go = || -> anyhow::Result<()> {
        topo.pin_napi()?;
        drops_before = defense_drops(defense, &herz_bin);
        if defense == Defense::Herz {
            prog_before = xdp_prog_stats().ok();
        }
        if let Some(m) = method {
            *flood.lock().expect("lock") = Some(start_flood(
                topo,
                m,
                random_sources,
                SUB_PORT,
                Duration::from_secs(secs + 15),
            ));
            // Let the flood build up before the stream starts.
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(())
    };
    // Stop the flood while the daemon (and its shield) still runs.
    let mut after = || {
        let mut o = outcome.lock().expect("lock");
        // The flood stops first: `herz stats` walks every per-source entry, which on a full table
        // takes a core for a while and must not compete with the receive thread being measured.
        if let Some(f) = flood.lock().expect("lock").take() {
            f.stop.store(true, Ordering::Relaxed);
            match f.thread.join() {
                Ok(Ok((sent, c))) => {
                    o.0 = sent;
                    o.1 = c;
                }
                Ok(Err(e)) => *flood_error.lock().expect("lock") = Some(format!("flood: {e:#}")),
                Err(_) => *flood_error.lock().expect("lock") = Some("flood thread panicked".into()),
            }
        }
        o.2 = defense_drops(defense, &herz_bin);
        if defense == Defense::Herz {
            *prog_after.lock().expect("lock") = xdp_prog_stats().ok();
        }
    };
    let service = std::thread::scope(|s| {
        s.spawn(|| {
            if let Err(e) = topo::enter(topo::NS_CLIENTS) {
                return RunResult::failed(System::HerzTcp, subs, &load, format!("{e:#}"));
            }
            run_once_with(
                env,
                System::HerzTcp,
                subs,
                load,
                RunOpts {
                    herz: opts,
                    before_go: Some(&mut go),
                    after_subs: Some(&mut after),
                    herz_stopped: None,
                },
            )
        })
        .join()
        .expect("run thread")
    });
    // A run that failed before `after` ran: stop the flood now.
    if let Some(f) = flood.lock().expect("lock").take() {
        f.stop.store(true, Ordering::Relaxed);
        let _ = f.thread.join();
    }
    if let Some(e) = flood_error.into_inner().expect("lock") {
        error = Some(e);
    }
    let (sent, c, drops_after) = outcome.into_inner().expect("lock");
    if defense == Defense::Nftables {
        nft_remove();
    }
    FloodRun {
        service,
        flood: sent,
        victim_rx: c.rx,
        victim_ring_drops: c.ring_drops,
        rx_cpu_s: c.rx_cpu_ns as f64 / 1e9,
        rx_wall_s: c.wall_ns as f64 / 1e9,
        ns_per_frame: (c.rx > 0).then(|| c.rx_cpu_ns as f64 / c.rx as f64),
        defense_drops: drops_delta(drops_before, drops_after),
        xdp_ns_per_run: ns_per_run(prog_before, prog_after.into_inner().expect("lock")),
        error,
    }
}

/// One flood of `secs` against an idle herz (its listener; with Herz, its shield), no stream.
pub(super) fn cost_run(
    env: &Env,
    topo: &Arc<Topo>,
    method: Method,
    random_sources: bool,
    defense: Defense,
    secs: u64,
) -> CostRun {
    let mut r = CostRun::default();
    let result = (|| -> anyhow::Result<()> {
        let tmp = TempDir::new(&env.tmp)?;
        let mut opts = victim_opts(defense, &POLICY);
        opts.ports = Some((SUB_PORT, PUB_PORT));
        if defense == Defense::Nftables {
            nft_apply(&nft_ruleset(&[SUB_PORT, PUB_PORT], &POLICY))?;
        }
        let load = Load {
            n: 1000,
            size: 64,
            rate: None,
            warmup: 0,
        };
        let d = HerzDaemon::start(&env.herz_bin, &tmp.0, 1, &load, None, &opts)?;
        topo.pin_napi()?;
        let drops_before = defense_drops(defense, &env.herz_bin);
        let prog_before = (defense == Defense::Herz)
            .then(xdp_prog_stats)
            .and_then(Result::ok);
        let f = start_flood(
            topo,
            method,
            random_sources,
            SUB_PORT,
            Duration::from_secs(secs),
        );
        let joined = f.thread.join();
        let drops_after = defense_drops(defense, &env.herz_bin);
        let prog_after = (defense == Defense::Herz)
            .then(xdp_prog_stats)
            .and_then(Result::ok);
        drop(d);
        let (sent, c) = joined.map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
        r.flood = sent;
        r.victim_rx = c.rx;
        r.rx_cpu_s = c.rx_cpu_ns as f64 / 1e9;
        r.rx_wall_s = c.wall_ns as f64 / 1e9;
        r.ns_per_frame = (c.rx > 0).then(|| c.rx_cpu_ns as f64 / c.rx as f64);
        r.defense_drops = drops_delta(drops_before, drops_after);
        r.xdp_ns_per_run = ns_per_run(prog_before, prog_after);
        Ok(())
    })();
    if defense == Defense::Nftables {
        nft_remove();
    }
    if let Err(e) = result {
        r.error = Some(format!("{e:#}"));
    }
    r
}
