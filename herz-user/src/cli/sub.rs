//! `herz sub`: a subscriber client, over SoupBinTCP (default) or MoldUDP64 multicast.
//!
//! Prints one line per tick (or one JSON object per line with `--json`) and, on exit (Ctrl-C,
//! end of session, `--count`, `--duration`), totals on stderr: messages, skipped sequence
//! numbers by reason, first and last sequence, gaps, rate, and optionally one-way latency.
//!
//! Gap accounting: every delivered sequence number must follow the previous one, or be
//! explained by a Herz `SKIP` marker (TCP) — a skip is not a gap. Over TCP, a login whose
//! accepted sequence is above the requested one (`--from`, or a `--reconnect` resume) is a gap;
//! over multicast, a loss the re-request server could not fill is one.

use std::{
    collections::BTreeMap,
    io::{self, BufWriter, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use herz_client::{
    clock::{mono_ns, realtime_ns},
    herz_core::protocol::{
        soupbintcp::{Filter, SkipReason},
        tick::{self, Aggressor, DisplayPrice, Tick},
    },
    mold::{MoldEvent, MoldReceiver, MoldReceiverConfig, StartFrom},
    soup::{Event, Session, SoupClientError, SoupSubscriber},
};

/// Subscribe to Herz and print ticks.
///
/// Over TCP (default) this is a SoupBinTCP subscriber with the Herz filter extension: with
/// `--symbols`/`--prefixes` the server only sends matching ticks and says which sequence numbers
/// it skipped, so the stream can still be resumed exactly. With `--multicast` it joins a
/// MoldUDP64 group instead, recovers losses through `--rerequest`, and applies
/// `--symbols`/`--prefixes` locally.
#[derive(Debug, Clone, clap::Args)]
pub struct SubArgs {
    /// Herz subscriber endpoint (SoupBinTCP), host:port.
    #[arg(long, default_value = "127.0.0.1:7100", value_name = "HOST:PORT")]
    pub connect: String,
    /// Username (at most 6 characters).
    #[arg(long, default_value = "demo")]
    pub user: String,
    /// Password (at most 10 characters).
    /// Also from the environment (`HERZ_PASSWORD`) or a file (`--password-file`), which keep it
    /// off the command line (where other users of the machine can read it).
    #[arg(
        long,
        env = "HERZ_PASSWORD",
        hide_env_values = true,
        default_value = "demo"
    )]
    pub password: String,
    /// Read the password from this file (first line; e.g. a systemd credential).
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<std::path::PathBuf>,
    /// Session to log into (TCP) or to follow (multicast); empty = the current one.
    #[arg(long, default_value = "")]
    pub session: String,
    /// Only these symbols, comma-separated (e.g. AAPL,MSFT).
    #[arg(long, value_name = "LIST")]
    pub symbols: Option<String>,
    /// Only symbols starting with one of these prefixes, comma-separated (e.g. BR,ES).
    #[arg(long, value_name = "LIST")]
    pub prefixes: Option<String>,
    /// First sequence number wanted: 0 = only new messages (multicast: from the first packet
    /// seen), 1 = the whole session, n = resume at n.
    #[arg(long, default_value_t = 0, value_name = "SEQ")]
    pub from: u64,
    /// One JSON object per line: {"seq", "type", "symbol", fields...}; prices are decimal
    /// strings. Totals go to stderr as JSON too.
    #[arg(long)]
    pub json: bool,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Print no ticks, only the totals.
    #[arg(long, short)]
    pub quiet: bool,
    /// TCP: when the connection drops (not at end of session), reconnect every second and
    /// resume exactly at the next sequence.
    #[arg(long)]
    pub reconnect: bool,
    /// Start with the latest retained message of each symbol (of --symbols/--prefixes), then go
    /// live (Herz `HERZ SNAPSHOT`; with --from, the window starts there instead of at the oldest
    /// retained message). A reconnect resumes normally.
    #[arg(long, conflicts_with = "multicast")]
    pub snapshot: bool,
    /// Measure one-way latency as "now - tick timestamp" with this clock (the publisher must
    /// stamp ticks with the same clock, e.g. `herz pub --clock monotonic`).
    #[arg(long, value_enum, value_name = "CLOCK")]
    pub latency: Option<LatencyClock>,
    /// Receive MoldUDP64 from this multicast group instead of TCP (a unicast address listens
    /// for unicast datagrams on it).
    #[arg(long, value_name = "GROUP:PORT")]
    pub multicast: Option<SocketAddrV4>,
    /// Multicast: address of the interface to join the group on.
    #[arg(long, default_value = "0.0.0.0", value_name = "ADDR")]
    pub interface: Ipv4Addr,
    /// Multicast: the MoldUDP64 re-request server that fills gaps.
    #[arg(long, value_name = "HOST:PORT")]
    pub rerequest: Option<String>,
}

/// Which clock tick timestamps are compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LatencyClock {
    /// CLOCK_REALTIME (the tick layout's Unix-epoch timestamps; across hosts only with good
    /// clock sync).
    Realtime,
    /// CLOCK_MONOTONIC (same host only; immune to clock steps).
    Monotonic,
}

/// Parses seconds, fractions allowed (`10`, `0.5`).
pub(crate) fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is not a valid duration"))
}

/// Resolves `host:port` to its first address.
pub(crate) fn resolve(what: &str, text: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("{what} `{text}`: cannot resolve"))?
        .next()
        .with_context(|| format!("{what} `{text}`: resolves to no address"))
}

/// Runs `herz sub`.
pub fn sub(args: SubArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the Ctrl-C handler")?;
    }
    let session = Session::new(&args.session)
        .map_err(|e| anyhow::anyhow!("--session `{}`: {e}", args.session))?;
    let symbols = args.symbols.clone().unwrap_or_default();
    let prefixes = args.prefixes.clone().unwrap_or_default();
    let filter = if symbols.is_empty() && prefixes.is_empty() {
        None
    } else {
        Some(
            Filter::new(&symbols, &prefixes)
                .map_err(|e| anyhow::anyhow!("--symbols/--prefixes: {e}"))?,
        )
    };
    let mut run = Run {
        out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        json: args.json,
        quiet: args.quiet,
        latency: args.latency,
        count: args.count,
        deadline: args.duration.map(|d| Instant::now() + d),
        stop,
        totals: Totals::new(),
        write_error: None,
    };
    let result = match args.multicast {
        Some(group) => run_multicast(&args, group, session, filter, &mut run),
        None => run_tcp(&args, session, filter, &mut run),
    };
    let _ = run.out.flush();
    run.totals.report(args.json);
    result
}

/// Output, limits and totals of one `herz sub` run.
struct Run<W: Write> {
    out: W,
    json: bool,
    quiet: bool,
    latency: Option<LatencyClock>,
    count: Option<u64>,
    deadline: Option<Instant>,
    stop: Arc<AtomicBool>,
    totals: Totals,
    /// The first output error (e.g. a closed pipe): ends the run quietly.
    write_error: Option<io::Error>,
}

impl<W: Write> Run<W> {
    /// Whether a limit, Ctrl-C or an output error says to stop.
    fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.write_error.is_some()
            || self.count.is_some_and(|c| self.totals.messages >= c)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// How long one poll may block: short, so Ctrl-C and `--duration` are honoured promptly.
    fn poll_timeout(&self) -> Duration {
        let slice = Duration::from_millis(100);
        self.deadline.map_or(slice, |d| {
            d.saturating_duration_since(Instant::now()).min(slice)
        })
    }

    /// One delivered message.
    fn message(&mut self, seq: u64, payload: &[u8]) {
        if self.count.is_some_and(|c| self.totals.messages >= c) {
            return; // the rest of this read's batch, past --count
        }
        self.totals.message(seq);
        let decoded = Tick::decode(payload);
        if let (Some(clock), Ok(tick)) = (self.latency, &decoded) {
            let now = match clock {
                LatencyClock::Realtime => realtime_ns(),
                LatencyClock::Monotonic => mono_ns(),
            };
            self.totals.latency(now.saturating_sub(tick.timestamp_ns()));
        }
        if decoded.is_err() {
            self.totals.undecodable += 1;
        }
        if self.quiet || self.write_error.is_some() {
            return;
        }
        let result = match (&decoded, self.json) {
            (Ok(tick), false) => writeln!(self.out, "{seq} {tick}"),
            (Ok(tick), true) => writeln!(self.out, "{}", tick_json(seq, tick)),
            (Err(e), false) => writeln!(
                self.out,
                "{seq} ? {} bytes: {e}: {}",
                payload.len(),
                hex(payload)
            ),
            (Err(e), true) => writeln!(
                self.out,
                "{}",
                serde_json::json!({
                    "seq": seq,
                    "type": "unknown",
                    "error": e.to_string(),
                    "hex": hex(payload),
                })
            ),
        };
        if let Err(e) = result {
            self.write_error = Some(e);
        }
    }

    fn flush(&mut self) {
        if self.write_error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.write_error = Some(e);
        }
    }
}

/// One tick as a JSON object.
fn tick_json(seq: u64, tick: &Tick) -> serde_json::Value {
    match tick {
        Tick::Quote(q) => serde_json::json!({
            "seq": seq,
            "type": "quote",
            "symbol": q.symbol.as_str(),
            "timestamp_ns": q.timestamp_ns,
            "bid_price": DisplayPrice(q.bid_price).to_string(),
            "bid_size": q.bid_size,
            "ask_price": DisplayPrice(q.ask_price).to_string(),
            "ask_size": q.ask_size,
        }),
        Tick::Trade(t) => serde_json::json!({
            "seq": seq,
            "type": "trade",
            "symbol": t.symbol.as_str(),
            "timestamp_ns": t.timestamp_ns,
            "price": DisplayPrice(t.price).to_string(),
            "size": t.size,
            "trade_id": t.trade_id,
            "aggressor": match t.aggressor {
                Aggressor::Buy => "buy",
                Aggressor::Sell => "sell",
                Aggressor::Unknown => "unknown",
            },
        }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a TCP connection ended.
enum Ending {
    /// A limit, Ctrl-C or an output error.
    Stopped,
    /// End of Session.
    EndOfSession,
    /// The connection dropped (closed, reset, silent); the error if there was one.
    Dropped(Option<SoupClientError>),
}

fn run_tcp<W: Write>(
    args: &SubArgs,
    mut session: Session,
    filter: Option<Filter<'_>>,
    run: &mut Run<W>,
) -> anyhow::Result<()> {
    let mut from = args.from;
    let mut first = true;
    loop {
        let mut sub = match connect_and_login(args, session, from, filter, first && args.snapshot) {
            Ok(sub) => sub,
            Err(e) if first || !args.reconnect => return Err(e),
            Err(e) => {
                eprintln!("herz sub: {e:#}; retrying in 1 s");
                if sleep_unless_stopped(run, Duration::from_secs(1)) {
                    return Ok(());
                }
                continue;
            }
        };
        let accepted = (sub.session(), sub.next_seq());
        if first {
            eprintln!(
                "herz sub: logged in to {} session {} at sequence {}{}",
                sub.peer(),
                accepted.0,
                accepted.1,
                filter.map_or(String::new(), |_| " (filtered)".into())
            );
        } else {
            eprintln!(
                "herz sub: resumed session {} at sequence {}",
                accepted.0, accepted.1
            );
        }
        if from > 0 && accepted.1 > from && !(first && args.snapshot) {
            eprintln!(
                "herz sub: gap: asked for sequence {from}, the server starts at {}",
                accepted.1
            );
            run.totals.gap(from, accepted.1 - from);
        }
        run.totals.expect(accepted.1);
        first = false;
        let ending = receive_tcp(&mut sub, run);
        session = sub.session();
        from = sub.next_seq();
        match ending {
            Ending::Stopped => {
                let _ = sub.logout();
                return Ok(());
            }
            Ending::EndOfSession => {
                eprintln!("herz sub: end of session");
                return Ok(());
            }
            Ending::Dropped(error) => {
                let why = match (&error, sub.last_error_text()) {
                    (Some(e), _) => e.to_string(),
                    (None, Some(text)) => format!("connection closed by the server: {text}"),
                    (None, None) => "connection closed by the server".into(),
                };
                if !args.reconnect {
                    bail!("{why}");
                }
                eprintln!("herz sub: {why}; resuming at sequence {from} in 1 s");
                if sleep_unless_stopped(run, Duration::from_secs(1)) {
                    return Ok(());
                }
            }
        }
    }
}

fn connect_and_login(
    args: &SubArgs,
    session: Session,
    from: u64,
    filter: Option<Filter<'_>>,
    snapshot: bool,
) -> anyhow::Result<SoupSubscriber> {
    let password = super::secret(&args.password, args.password_file.as_deref())?;
    let mut sub = SoupSubscriber::connect(args.connect.as_str(), Duration::from_secs(5))?;
    if snapshot {
        sub.login_with_snapshot(&args.user, &password, session, from, filter)?;
    } else {
        sub.login(&args.user, &password, session, from, filter)?;
    }
    Ok(sub)
}

/// Sleeps up to `duration`, waking early for Ctrl-C; returns whether to stop.
fn sleep_unless_stopped<W: Write>(run: &Run<W>, duration: Duration) -> bool {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        if run.should_stop() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    run.should_stop()
}

fn receive_tcp<W: Write>(sub: &mut SoupSubscriber, run: &mut Run<W>) -> Ending {
    loop {
        if run.should_stop() {
            return Ending::Stopped;
        }
        let (mut ended, mut closed) = (false, false);
        let timeout = run.poll_timeout();
        let result = sub.poll(Some(timeout), |event| match event {
            Event::Message { seq, payload } => run.message(seq, payload),
            Event::Skip { seq, count, reason } => run.totals.skip(seq, count, reason),
            Event::HerzError(text) => eprintln!("herz sub: server error: {text}"),
            Event::Live { next } => {
                eprintln!("herz sub: snapshot complete; live from sequence {next}")
            }
            Event::Debug(text) => {
                eprintln!("herz sub: server debug: {}", String::from_utf8_lossy(text));
            }
            Event::Heartbeat => {}
            Event::EndOfSession => ended = true,
            Event::Closed => closed = true,
        });
        run.flush();
        if let Err(e) = result {
            return Ending::Dropped(Some(e));
        }
        if ended {
            return Ending::EndOfSession;
        }
        if closed {
            return Ending::Dropped(None);
        }
    }
}

fn run_multicast<W: Write>(
    args: &SubArgs,
    group: SocketAddrV4,
    session: Session,
    filter: Option<Filter<'_>>,
    run: &mut Run<W>,
) -> anyhow::Result<()> {
    let mut config = if group.ip().is_multicast() {
        MoldReceiverConfig::multicast(*group.ip(), group.port(), args.interface)
    } else {
        MoldReceiverConfig::unicast(SocketAddr::V4(group))
    };
    if let Some(server) = &args.rerequest {
        config.rerequest = Some(resolve("--rerequest", server)?);
    }
    if !session.is_blank() {
        config.session = Some(session);
    }
    config.start = match args.from {
        0 => StartFrom::FirstSeen,
        n => StartFrom::Sequence(n),
    };
    let rerequest = config.rerequest;
    let mut rx = MoldReceiver::new(config)?;
    eprintln!(
        "herz sub: listening on {group} (local {}){}",
        rx.local_addr(),
        rerequest.map_or(" without gap recovery".into(), |r| format!(
            ", re-requests to {r}"
        ))
    );
    let mut ended = false;
    while !ended && !run.should_stop() {
        let timeout = run.poll_timeout();
        rx.poll(Some(timeout), |event| match event {
            MoldEvent::Message { seq, payload } => {
                // No server-side filter on multicast: filter here, and account for the rest as
                // skipped so that contiguity checks still hold.
                let pass = match (&filter, tick::symbol_of(payload)) {
                    (None, _) => true,
                    (Some(f), Some(symbol)) => f.matches(symbol),
                    (Some(_), None) => false,
                };
                if pass {
                    run.message(seq, payload);
                } else {
                    run.totals.skip(seq, 1, SkipReason::Filtered);
                }
            }
            MoldEvent::Gap { from, count } => {
                eprintln!(
                    "herz sub: gap: sequences {from}..{} could not be recovered",
                    from + count - 1
                );
                run.totals.gap(from, count);
            }
            MoldEvent::Heartbeat { .. } => {}
            MoldEvent::EndOfSession { next_seq } => {
                eprintln!("herz sub: end of session at sequence {next_seq}");
                ended = true;
            }
        })?;
        run.flush();
    }
    let s = rx.stats();
    eprintln!(
        "herz sub: receiver: {} datagrams, {} duplicates, {} re-requests, {} invalid, {} other session",
        s.datagrams, s.duplicates, s.requests_sent, s.invalid, s.foreign_session
    );
    Ok(())
}

/// What `herz sub` counts.
struct Totals {
    start: Instant,
    messages: u64,
    undecodable: u64,
    skipped: BTreeMap<&'static str, u64>,
    first_seq: Option<u64>,
    last_seq: Option<u64>,
    /// The sequence the next message or skip must have.
    next: Option<u64>,
    gaps: u64,
    gap_messages: u64,
    /// Latency samples (ns), capped so memory stays bounded.
    latencies: Vec<u64>,
    latency_count: u64,
}

const MAX_LATENCY_SAMPLES: usize = 1 << 20;

impl Totals {
    fn new() -> Self {
        Totals {
            start: Instant::now(),
            messages: 0,
            undecodable: 0,
            skipped: BTreeMap::new(),
            first_seq: None,
            last_seq: None,
            next: None,
            gaps: 0,
            gap_messages: 0,
            latencies: Vec::new(),
            latency_count: 0,
        }
    }

    /// The next sequence is known to be `seq` (after a login).
    fn expect(&mut self, seq: u64) {
        self.next = Some(seq);
    }

    /// Checks that `seq` continues the stream; anything else is a gap (or a step back).
    fn advance(&mut self, seq: u64, count: u64) {
        if let Some(next) = self.next
            && seq != next
        {
            self.gaps += 1;
            self.gap_messages += seq.saturating_sub(next);
            eprintln!("herz sub: gap: expected sequence {next}, got {seq}");
        }
        self.next = Some(seq + count);
    }

    fn message(&mut self, seq: u64) {
        self.advance(seq, 1);
        self.messages += 1;
        self.first_seq.get_or_insert(seq);
        self.last_seq = Some(seq);
    }

    fn skip(&mut self, seq: u64, count: u64, reason: SkipReason) {
        self.advance(seq, count);
        *self.skipped.entry(reason.as_str()).or_default() += count;
    }

    /// A gap reported by the transport.
    fn gap(&mut self, from: u64, count: u64) {
        self.gaps += 1;
        self.gap_messages += count;
        self.next = Some(from + count);
    }

    fn latency(&mut self, ns: u64) {
        self.latency_count += 1;
        if self.latencies.len() < MAX_LATENCY_SAMPLES {
            self.latencies.push(ns);
        }
    }

    fn report(&mut self, json: bool) {
        let elapsed = self.start.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            self.messages as f64 / elapsed
        } else {
            0.0
        };
        let skipped: u64 = self.skipped.values().sum();
        self.latencies.sort_unstable();
        let pct = |p: f64| -> Option<u64> {
            let n = self.latencies.len();
            (n > 0).then(|| self.latencies[((n - 1) as f64 * p).round() as usize])
        };
        if json {
            let latency = (!self.latencies.is_empty()).then(|| {
                serde_json::json!({
                    "samples": self.latencies.len(),
                    "p50_ns": pct(0.5),
                    "p90_ns": pct(0.9),
                    "p99_ns": pct(0.99),
                    "p999_ns": pct(0.999),
                    "max_ns": pct(1.0),
                })
            });
            eprintln!(
                "{}",
                serde_json::json!({
                    "messages": self.messages,
                    "undecodable": self.undecodable,
                    "skipped": skipped,
                    "skipped_by_reason": self.skipped,
                    "first_seq": self.first_seq,
                    "last_seq": self.last_seq,
                    "gaps": self.gaps,
                    "gap_messages": self.gap_messages,
                    "elapsed_s": elapsed,
                    "rate_per_s": rate,
                    "latency": latency,
                })
            );
            return;
        }
        let by_reason: Vec<String> = self
            .skipped
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        let seq = |s: Option<u64>| s.map_or("-".to_string(), |s| s.to_string());
        eprintln!(
            "herz sub: {} messages in {elapsed:.2} s ({rate:.0} msg/s), sequences {}..{}, \
             skipped {skipped}{}, gaps {} ({} messages){}",
            self.messages,
            seq(self.first_seq),
            seq(self.last_seq),
            if by_reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", by_reason.join(", "))
            },
            self.gaps,
            self.gap_messages,
            if self.undecodable > 0 {
                format!(", {} undecodable", self.undecodable)
            } else {
                String::new()
            },
        );
        if let (Some(p50), Some(p99), Some(max)) = (pct(0.5), pct(0.99), pct(1.0)) {
            eprintln!(
                "herz sub: latency over {} samples: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, \
                 p99.9 {:.1} µs, max {:.1} µs",
                self.latencies.len(),
                p50 as f64 / 1e3,
                pct(0.9).unwrap_or(0) as f64 / 1e3,
                p99 as f64 / 1e3,
                pct(0.999).unwrap_or(0) as f64 / 1e3,
                max as f64 / 1e3,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_tell_gaps_from_skips() {
        let mut t = Totals::new();
        t.expect(5);
        t.message(5);
        t.skip(6, 3, SkipReason::Filtered);
        t.message(9);
        assert_eq!((t.gaps, t.messages), (0, 2));
        t.message(12);
        assert_eq!((t.gaps, t.gap_messages), (1, 2));
        assert_eq!(t.skipped["filtered"], 3);
        assert_eq!((t.first_seq, t.last_seq), (Some(5), Some(12)));
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("-1").is_err());
    }
}
