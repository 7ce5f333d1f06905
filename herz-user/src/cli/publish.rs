//! `herz pub`: a publisher, over SoupBinTCP to Herz's publisher port (default) or as an upstream
//! MoldUDP64 multicast feed, sending synthetic ticks or messages from a file at a paced rate.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use herz_client::{
    clock::{TimestampSource, mono_ns, realtime_ns},
    generator::{
        Burst, GeneratorConfig, Pace, Pacer, PacingConfig, TickGenerator, generated_symbols,
        parse_symbols,
    },
    herz_core::protocol::tick::{Aggressor, PRICE_SCALE, Quote, Symbol, Tick, Trade},
    mold::{DropRule, MoldFeedSender, MoldFeedSenderConfig, Session},
    soup::SoupPublisher,
};

use super::sub::parse_secs;

/// Publish ticks to Herz (or as an upstream MoldUDP64 feed).
///
/// By default sends synthetic ticks from `--symbols N` generated names (`SYM0001`...), with
/// Zipf-skewed popularity, 80 % quotes / 20 % trades and random-walk prices, deterministic for a
/// given `--seed`. Runs until `--count`, `--duration` or Ctrl-C.
///
/// With `--file`, sends the file's messages instead, one per line, in order (`--repeat` to loop).
/// Blank lines and lines starting with `#` are ignored. A line is either
///
/// - a quote: `Q <SYMBOL> <BIDSIZE>@<BIDPRICE> <ASKSIZE>@<ASKPRICE>`,
///   e.g. `Q AAPL 100@189.12 200@189.13`;
/// - a trade: `T <SYMBOL> <SIZE>@<PRICE> [B|S|-]` (aggressor buyer, seller, unknown; default
///   unknown), e.g. `T AAPL 50@189.125 B`;
/// - or a whole message in hex (spaces allowed), sent byte for byte, any message type, e.g.
///   `51 4141504c20202020 ...`.
///
/// Prices are decimals with at most 8 fractional digits. Quotes and trades written as text are
/// stamped with the `--clock` time when sent; their trade ids count from 1.
///
/// With `--multicast GROUP:PORT` (repeat it once for a B line), acts as an upstream MoldUDP64
/// feed: 1400-byte packets, heartbeats when idle, end of session at the end, and re-requests
/// answered on `--rerequest-listen`.
#[derive(Debug, Clone, clap::Args)]
pub struct PubArgs {
    /// Herz publisher endpoint (SoupBinTCP), host:port.
    #[arg(long, default_value = "127.0.0.1:7101", value_name = "HOST:PORT")]
    pub connect: String,
    /// Publisher username (at most 6 characters).
    #[arg(long, default_value = "feed")]
    pub user: String,
    /// Publisher password (at most 10 characters).
    /// Also from the environment (`HERZ_PASSWORD`) or a file (`--password-file`), which keep it
    /// off the command line (where other users of the machine can read it).
    #[arg(
        long,
        env = "HERZ_PASSWORD",
        hide_env_values = true,
        default_value = "feed"
    )]
    pub password: String,
    /// Read the password from this file (first line; e.g. a systemd credential).
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<std::path::PathBuf>,
    /// Messages per second outside bursts; 0 = as fast as possible.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Every second, send at this multiple of the rate for 50 ms (1 = no bursts).
    #[arg(long, default_value_t = 1.0, value_name = "K")]
    pub burst: f64,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Number of generated symbols.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub symbols: usize,
    /// Use these symbols instead of generated names, most active first (comma-separated).
    #[arg(long, value_name = "LIST", conflicts_with = "symbols")]
    pub symbol_list: Option<String>,
    /// Seed of the synthetic generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fraction of quotes among synthetic ticks (the rest are trades).
    #[arg(long, default_value_t = 0.8)]
    pub quote_ratio: f64,
    /// Zipf exponent of symbol popularity (0 = uniform).
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// Clock of tick timestamps: realtime (Unix epoch, the tick layout's definition) or
    /// monotonic (for same-host latency with `herz sub --latency monotonic`).
    #[arg(long, value_enum, default_value = "realtime")]
    pub clock: TimestampClock,
    /// Send the messages of this file instead of synthetic ticks (format above).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// With --file: start over at the end of the file.
    #[arg(long, requires = "file")]
    pub repeat: bool,
    /// Publish as a MoldUDP64 feed to this group (or unicast address); twice for lines A and B.
    #[arg(long, value_name = "GROUP:PORT")]
    pub multicast: Vec<SocketAddr>,
    /// Multicast: address of the interface to send on.
    #[arg(long, value_name = "ADDR")]
    pub interface: Option<Ipv4Addr>,
    /// Multicast: session name (at most 10 characters).
    #[arg(long, default_value = "FEED000001")]
    pub session: String,
    /// Multicast: where to answer re-requests (also the packets' source address).
    #[arg(long, default_value = "0.0.0.0:0", value_name = "ADDR:PORT")]
    pub rerequest_listen: SocketAddr,
    /// Multicast, for tests: drop this percentage of data packets on line A.
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT")]
    pub drop_percent: f64,
}

/// Which clock stamps published ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TimestampClock {
    /// CLOCK_REALTIME, nanoseconds since the Unix epoch.
    Realtime,
    /// CLOCK_MONOTONIC, nanoseconds since boot.
    Monotonic,
}

impl TimestampClock {
    fn now_ns(self) -> u64 {
        match self {
            TimestampClock::Realtime => realtime_ns(),
            TimestampClock::Monotonic => mono_ns(),
        }
    }
}

/// Runs `herz pub`.
pub fn publish(args: PubArgs) -> anyhow::Result<()> {
    if args.multicast.len() > 2 {
        bail!(
            "--multicast: at most two lines (A and B), got {}",
            args.multicast.len()
        );
    }
    if !(0.0..=100.0).contains(&args.drop_percent) {
        bail!(
            "--drop-percent {}: must be between 0 and 100",
            args.drop_percent
        );
    }
    if !(args.burst >= 1.0 && args.burst.is_finite()) {
        bail!("--burst {}: must be at least 1", args.burst);
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .context("installing the Ctrl-C handler")?;
    }
    let mut source = Source::new(&args)?;
    let pacer = Pacer::new(PacingConfig {
        burst: (args.burst > 1.0).then_some(Burst {
            every: Duration::from_secs(1),
            length: Duration::from_millis(50),
            multiplier: args.burst,
        }),
        count: args.count,
        duration: args.duration,
        ..PacingConfig::rate(args.rate)
    });
    if args.multicast.is_empty() {
        publish_tcp(&args, &mut source, pacer, &stop)
    } else {
        publish_multicast(&args, &mut source, pacer, &stop)
    }
}

/// Where messages come from.
enum Source {
    Synthetic(TickGenerator),
    File {
        path: PathBuf,
        messages: Vec<FileMessage>,
        next: usize,
        repeat: bool,
        clock: TimestampClock,
        next_trade_id: u64,
    },
}

impl Source {
    fn new(args: &PubArgs) -> anyhow::Result<Self> {
        if let Some(path) = &args.file {
            let messages = read_file(path)?;
            if messages.is_empty() {
                bail!("{}: no messages", path.display());
            }
            return Ok(Source::File {
                path: path.clone(),
                messages,
                next: 0,
                repeat: args.repeat,
                clock: args.clock,
                next_trade_id: 1,
            });
        }
        let symbols = match &args.symbol_list {
            Some(list) => parse_symbols(list).context("--symbol-list")?,
            None => generated_symbols(args.symbols).context("--symbols")?,
        };
        let mut config = GeneratorConfig::with_symbols(symbols);
        config.seed = args.seed;
        config.quote_ratio = args.quote_ratio;
        config.zipf_exponent = args.zipf;
        config.timestamps = match args.clock {
            TimestampClock::Realtime => TimestampSource::Realtime,
            TimestampClock::Monotonic => TimestampSource::Monotonic,
        };
        Ok(Source::Synthetic(TickGenerator::new(config)?))
    }

    /// Writes the next message into `out` (cleared first); `false` when the file is done.
    fn next_into(&mut self, out: &mut Vec<u8>) -> bool {
        out.clear();
        match self {
            Source::Synthetic(generator) => {
                generator.next_into(out);
                true
            }
            Source::File {
                messages,
                next,
                repeat,
                clock,
                next_trade_id,
                ..
            } => {
                if *next == messages.len() {
                    if !*repeat {
                        return false;
                    }
                    *next = 0;
                }
                let message = &messages[*next];
                *next += 1;
                message.encode(clock.now_ns(), next_trade_id, out);
                true
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::Synthetic(g) => format!("synthetic ticks over {} symbols", g.symbols().len()),
            Source::File { path, messages, .. } => {
                format!("{} messages from {}", messages.len(), path.display())
            }
        }
    }
}

/// One line of a `--file`.
#[derive(Debug, Clone, PartialEq)]
enum FileMessage {
    /// Bytes sent as they are.
    Raw(Vec<u8>),
    /// A quote, stamped when sent.
    Quote {
        symbol: Symbol,
        bid_size: u32,
        bid: i64,
        ask_size: u32,
        ask: i64,
    },
    /// A trade, stamped and numbered when sent.
    Trade {
        symbol: Symbol,
        size: u32,
        price: i64,
        aggressor: Aggressor,
    },
}

impl FileMessage {
    fn encode(&self, timestamp_ns: u64, next_trade_id: &mut u64, out: &mut Vec<u8>) {
        match *self {
            FileMessage::Raw(ref bytes) => out.extend_from_slice(bytes),
            FileMessage::Quote {
                symbol,
                bid_size,
                bid,
                ask_size,
                ask,
            } => Tick::Quote(Quote {
                symbol,
                timestamp_ns,
                bid_price: bid,
                bid_size,
                ask_price: ask,
                ask_size,
            })
            .encode(out),
            FileMessage::Trade {
                symbol,
                size,
                price,
                aggressor,
            } => {
                let trade_id = *next_trade_id;
                *next_trade_id += 1;
                Tick::Trade(Trade {
                    symbol,
                    timestamp_ns,
                    price,
                    size,
                    trade_id,
                    aggressor,
                })
                .encode(out);
            }
        }
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<FileMessage>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim();
            !line.is_empty() && !line.starts_with('#')
        })
        .map(|(i, line)| {
            parse_line(line.trim())
                .with_context(|| format!("{} line {}: `{}`", path.display(), i + 1, line.trim()))
        })
        .collect()
}

fn parse_line(line: &str) -> anyhow::Result<FileMessage> {
    let mut words = line.split_whitespace();
    let kind = words.next().unwrap_or_default();
    if kind == "Q" || kind == "T" {
        let symbol_text = words.next().context("missing symbol")?;
        let symbol =
            Symbol::new(symbol_text).map_err(|e| anyhow::anyhow!("symbol `{symbol_text}`: {e}"))?;
        let (size, price) = parse_size_at_price(words.next().context("missing SIZE@PRICE")?)?;
        let message = if kind == "Q" {
            let (ask_size, ask) =
                parse_size_at_price(words.next().context("missing ASKSIZE@ASKPRICE")?)?;
            FileMessage::Quote {
                symbol,
                bid_size: size,
                bid: price,
                ask_size,
                ask,
            }
        } else {
            let aggressor = match words.next() {
                None | Some("-") => Aggressor::Unknown,
                Some("B") => Aggressor::Buy,
                Some("S") => Aggressor::Sell,
                Some(other) => bail!("aggressor `{other}` is not B, S or -"),
            };
            FileMessage::Trade {
                symbol,
                size,
                price,
                aggressor,
            }
        };
        if let Some(extra) = words.next() {
            bail!("unexpected `{extra}` at the end");
        }
        return Ok(message);
    }
    let digits: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.is_empty()
        || !digits.len().is_multiple_of(2)
        || !digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        bail!("neither `Q ...`, `T ...` nor an even number of hex digits");
    }
    let bytes = (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(FileMessage::Raw(bytes))
}

/// `100@189.12` → (100, 18912000000).
fn parse_size_at_price(text: &str) -> anyhow::Result<(u32, i64)> {
    let (size, price) = text
        .split_once('@')
        .with_context(|| format!("`{text}` is not SIZE@PRICE"))?;
    let size = size.parse().with_context(|| format!("size `{size}`"))?;
    Ok((size, parse_price(price)?))
}

/// A decimal price with at most 8 fractional digits, in 1e-8 units.
fn parse_price(text: &str) -> anyhow::Result<i64> {
    let bad =
        || anyhow::anyhow!("price `{text}` is not a decimal with at most 8 fractional digits");
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > 8
        || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let int: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<8}").parse().map_err(|_| bad())?
    };
    let value = int
        .checked_mul(PRICE_SCALE)
        .and_then(|v| v.checked_add(frac))
        .ok_or_else(bad)?;
    Ok(if negative { -value } else { value })
}

fn publish_tcp(
    args: &PubArgs,
    source: &mut Source,
    mut pacer: Pacer,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut publisher = SoupPublisher::connect(args.connect.as_str(), Duration::from_secs(5))?;
    let password = super::secret(&args.password, args.password_file.as_deref())?;
    let accepted = publisher.login(&args.user, &password)?;
    eprintln!(
        "herz pub: logged in to {} session {} as {}; sending {} at {}",
        publisher.peer(),
        accepted.session,
        args.user,
        source.describe(),
        rate_text(args.rate)
    );
    let start = Instant::now();
    let mut buf = Vec::with_capacity(64);
    let mut last_maintain = Instant::now();
    let result = (|| -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            match pacer.pace() {
                Pace::Send(n) => {
                    for _ in 0..n {
                        if !source.next_into(&mut buf) {
                            return Ok(());
                        }
                        publisher.send(&buf)?;
                    }
                    // Flat out, the pacer never says Wait: read heartbeats and notice End of
                    // Session or errors from the server now and then anyway.
                    if last_maintain.elapsed() >= Duration::from_millis(100) {
                        publisher.maintain()?;
                        last_maintain = Instant::now();
                    }
                }
                Pace::Wait(d) => publisher.idle(d)?,
                Pace::Done => return Ok(()),
            }
        }
        Ok(())
    })();
    let sent = publisher.sent();
    let finish = result.and_then(|()| {
        publisher.flush()?;
        publisher.logout()?;
        Ok(())
    });
    // Flushed and logged out: everything counted has left this process.
    report(sent, start.elapsed(), pacer.shortfall());
    finish
}

fn publish_multicast(
    args: &PubArgs,
    source: &mut Source,
    mut pacer: Pacer,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let session = Session::new(&args.session)
        .map_err(|e| anyhow::anyhow!("--session `{}`: {e}", args.session))?;
    let mut config = MoldFeedSenderConfig::new(session, args.multicast.clone());
    config.bind = args.rerequest_listen;
    config.interface = args.interface;
    let mut sender = MoldFeedSender::new(config)?;
    if args.drop_percent > 0.0 {
        sender.set_drop(
            0,
            DropRule {
                probability: args.drop_percent / 100.0,
                ..DropRule::default()
            },
        )?;
    }
    let lines: Vec<String> = args.multicast.iter().map(ToString::to_string).collect();
    eprintln!(
        "herz pub: feed session {session} to {}; re-requests on {}; sending {} at {}",
        lines.join(" and "),
        sender.local_addr(),
        source.describe(),
        rate_text(args.rate)
    );
    let start = Instant::now();
    let mut buf = Vec::with_capacity(64);
    let result = (|| -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            match pacer.pace() {
                Pace::Send(n) => {
                    for _ in 0..n {
                        if !source.next_into(&mut buf) {
                            return Ok(());
                        }
                        sender.push(&buf)?;
                    }
                    // One batch per time slice: send it now rather than when a packet fills,
                    // so a slow feed's latency is not the time to fill 1400 bytes.
                    sender.flush()?;
                    sender.maintain()?;
                }
                Pace::Wait(d) => {
                    sender.flush()?;
                    sender.serve_rerequests_once(d)?;
                    sender.maintain()?;
                }
                Pace::Done => return Ok(()),
            }
        }
        Ok(())
    })();
    let elapsed = start.elapsed();
    // End of session, repeated, answering the receivers' last re-requests meanwhile.
    let finish = result.and_then(|()| Ok(sender.end_session(3, Duration::from_millis(300))?));
    let s = sender.stats();
    report(s.messages, elapsed, pacer.shortfall());
    eprintln!(
        "herz pub: {} packets, {} datagrams sent, {} dropped on purpose, {} heartbeats, \
         {} re-requests ({} ignored), {} messages resent",
        s.data_packets,
        s.datagrams_sent,
        s.datagrams_dropped,
        s.heartbeats,
        s.requests,
        s.requests_ignored,
        s.messages_resent
    );
    finish
}

fn rate_text(rate: u64) -> String {
    if rate == 0 {
        "full speed".into()
    } else {
        format!("{rate} msg/s")
    }
}

fn report(sent: u64, elapsed: Duration, shortfall: u64) {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { sent as f64 / secs } else { 0.0 };
    eprintln!(
        "herz pub: {sent} messages in {secs:.2} s ({rate:.0} msg/s){}",
        if shortfall > 0 {
            format!(", {shortfall} behind schedule (could not keep up)")
        } else {
            String::new()
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(parse_price("189.12").unwrap(), 18_912_000_000);
        assert_eq!(parse_price("-0.00000001").unwrap(), -1);
        assert_eq!(parse_price("7").unwrap(), 700_000_000);
        assert_eq!(parse_price(".5").unwrap(), 50_000_000);
        assert!(parse_price("1.123456789").is_err());
        assert!(parse_price("1e3").is_err());
        assert!(parse_price("").is_err());
    }

    #[test]
    fn file_lines_parse() {
        let q = parse_line("Q AAPL 100@189.12 200@189.13").unwrap();
        let mut out = Vec::new();
        q.encode(1, &mut 1, &mut out);
        let Tick::Quote(quote) = Tick::decode(&out).unwrap() else {
            panic!("not a quote")
        };
        assert_eq!((quote.bid_size, quote.ask_price), (100, 18_913_000_000));

        let t = parse_line("T BRK.B 50@1.5 S").unwrap();
        out.clear();
        let mut id = 7;
        t.encode(2, &mut id, &mut out);
        let Tick::Trade(trade) = Tick::decode(&out).unwrap() else {
            panic!("not a trade")
        };
        assert_eq!(
            (trade.trade_id, trade.aggressor, id),
            (7, Aggressor::Sell, 8)
        );

        assert_eq!(
            parse_line("51 41 42").unwrap(),
            FileMessage::Raw(vec![0x51, 0x41, 0x42])
        );
        assert!(parse_line("Q AAPL 100@1").is_err());
        assert!(parse_line("T AAPL 1@1 X").is_err());
        assert!(parse_line("hello").is_err());
    }
}
