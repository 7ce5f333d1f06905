//! A synthetic tick source with a realistic shape, and the pacing that sends it at a rate.
//!
//! [`TickGenerator`] produces [`Tick`]s: N symbols with skewed popularity (Zipf, exponent ≈ 1.1:
//! the first symbol gets the most ticks, as the most active names do on a real feed), quotes and
//! trades mixed (80/20 by default), random-walk prices on a one-cent grid. Everything derives
//! from one seed, so a run is reproducible; with [`TimestampSource::Synthetic`] the bytes are
//! identical run after run.
//!
//! [`Pacer`] says how many messages to send now, or how long to wait: a configured rate
//! (0 = as fast as possible), optional periodic bursts (e.g. 5× the rate for 50 ms every
//! second), and a count and/or duration limit. It never busy-waits: when ahead of schedule it
//! asks the caller to wait; at high rates it hands out batches per time slice, so a sender makes
//! one pacing decision per batch, not per message.

use std::time::{Duration, Instant};

use herz_core::protocol::tick::{Aggressor, Quote, Symbol, Tick, TickError, Trade};
use thiserror::Error;

pub use crate::clock::TimestampSource;
use crate::clock::{mono_ns, realtime_ns};

/// One cent in tick price units (1e-8).
const CENT: i64 = 1_000_000;

/// Errors from building a generator.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GenError {
    /// No symbols.
    #[error("a tick generator needs at least one symbol")]
    NoSymbols,
    /// More generated symbols than 8-character names allow.
    #[error("cannot generate {requested} symbol names; at most {max} fit in 8 characters")]
    TooManySymbols {
        /// Symbols asked for.
        requested: usize,
        /// The limit.
        max: usize,
    },
    /// A ratio or exponent outside its range.
    #[error("{name} = {value} is out of range ({range})")]
    OutOfRange {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The allowed range.
        range: &'static str,
    },
    /// A symbol name is invalid.
    #[error("symbol \"{text}\": {source}")]
    Symbol {
        /// The text given.
        text: String,
        /// Why it is invalid.
        source: TickError,
    },
}

/// A small, fast, seedable pseudo-random generator (xorshift64*), good enough for synthetic
/// data and loss simulation, and dependency-free.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeds the generator; any seed (including 0) gives a good stream (splitmix64 scrambling).
    pub fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n` > 0; the tiny modulo bias is irrelevant here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// The most symbols [`generated_symbols`] can name (`S` + 7 digits).
pub const MAX_GENERATED_SYMBOLS: usize = 9_999_999;

/// `n` symbol names `SYM0001`, `SYM0002`, ... (wider numbers when `n` needs them, `S0000001`
/// beyond 99 999), in popularity order for [`TickGenerator`].
pub fn generated_symbols(n: usize) -> Result<Vec<Symbol>, GenError> {
    if n == 0 {
        return Err(GenError::NoSymbols);
    }
    if n > MAX_GENERATED_SYMBOLS {
        return Err(GenError::TooManySymbols {
            requested: n,
            max: MAX_GENERATED_SYMBOLS,
        });
    }
    let width = n.to_string().len().max(4);
    (1..=n)
        .map(|i| {
            let text = if 3 + width <= 8 {
                format!("SYM{i:0width$}")
            } else {
                format!("S{i:07}")
            };
            Symbol::new(&text).map_err(|source| GenError::Symbol { text, source })
        })
        .collect()
}

/// Parses a comma-separated symbol list (`"AAPL,MSFT"`), in popularity order.
pub fn parse_symbols(list: &str) -> Result<Vec<Symbol>, GenError> {
    let symbols: Vec<Symbol> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|text| {
            Symbol::new(text).map_err(|source| GenError::Symbol {
                text: text.to_owned(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    if symbols.is_empty() {
        return Err(GenError::NoSymbols);
    }
    Ok(symbols)
}

/// The shape of a [`TickGenerator`]'s output.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Symbols, most popular first.
    pub symbols: Vec<Symbol>,
    /// Zipf exponent `s` of symbol popularity: symbol `i` (0-based) has weight `1 / (i+1)^s`.
    /// 0 = uniform; about 1.1 resembles real feeds.
    pub zipf_exponent: f64,
    /// Fraction of quotes (the rest are trades), 0.0 to 1.0.
    pub quote_ratio: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// The clock of `timestamp_ns`.
    pub timestamps: TimestampSource,
}

impl GeneratorConfig {
    /// `n` generated symbols (see [`generated_symbols`]), Zipf 1.1, 80 % quotes, seed 1,
    /// real-time timestamps.
    pub fn new(n: usize) -> Result<Self, GenError> {
        Ok(Self::with_symbols(generated_symbols(n)?))
    }

    /// The given symbols, most popular first, with the other defaults of [`new`](Self::new).
    pub fn with_symbols(symbols: Vec<Symbol>) -> Self {
        GeneratorConfig {
            symbols,
            zipf_exponent: 1.1,
            quote_ratio: 0.8,
            seed: 1,
            timestamps: TimestampSource::Realtime,
        }
    }
}

/// Per-symbol price state.
#[derive(Debug, Clone, Copy)]
struct Book {
    symbol: Symbol,
    /// Bid price, 1e-8 units, on the cent grid.
    bid: i64,
    /// Spread in cents (1 to 3).
    spread: i64,
}

/// A deterministic synthetic tick source. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TickGenerator {
    books: Vec<Book>,
    /// Cumulative popularity, normalised to end at 1.0.
    cdf: Vec<f64>,
    rng: XorShift,
    quote_ratio: f64,
    timestamps: TimestampSource,
    generated: u64,
    next_trade_id: u64,
}

impl TickGenerator {
    /// Builds a generator; validates the ratios.
    pub fn new(config: GeneratorConfig) -> Result<Self, GenError> {
        if config.symbols.is_empty() {
            return Err(GenError::NoSymbols);
        }
        if !(0.0..=1.0).contains(&config.quote_ratio) {
            return Err(GenError::OutOfRange {
                name: "quote_ratio",
                value: config.quote_ratio,
                range: "0.0 to 1.0",
            });
        }
        if !(0.0..=10.0).contains(&config.zipf_exponent) {
            return Err(GenError::OutOfRange {
                name: "zipf_exponent",
                value: config.zipf_exponent,
                range: "0.0 to 10.0",
            });
        }
        let mut rng = XorShift::new(config.seed);
        let books = config
            .symbols
            .iter()
            .map(|&symbol| Book {
                symbol,
                // $10.00 to $499.99.
                bid: (1_000 + rng.below(49_000) as i64) * CENT,
                spread: 1 + rng.below(3) as i64,
            })
            .collect();
        let mut cdf = Vec::with_capacity(config.symbols.len());
        let mut total = 0.0;
        for i in 0..config.symbols.len() {
            total += 1.0 / ((i + 1) as f64).powf(config.zipf_exponent);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Ok(TickGenerator {
            books,
            cdf,
            rng,
            quote_ratio: config.quote_ratio,
            timestamps: config.timestamps,
            generated: 0,
            next_trade_id: 1,
        })
    }

    /// The symbols, most popular first.
    pub fn symbols(&self) -> impl ExactSizeIterator<Item = Symbol> + '_ {
        self.books.iter().map(|b| b.symbol)
    }

    /// Ticks generated so far.
    pub fn generated(&self) -> u64 {
        self.generated
    }

    /// Draws a symbol index by popularity.
    fn pick(&mut self) -> usize {
        let u = self.rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.books.len() - 1)
    }

    fn timestamp(&self) -> u64 {
        match self.timestamps {
            TimestampSource::Realtime => realtime_ns(),
            TimestampSource::Monotonic => mono_ns(),
            TimestampSource::Synthetic { start_ns, step_ns } => {
                start_ns.wrapping_add(self.generated.wrapping_mul(step_ns))
            }
        }
    }

    /// The next tick.
    pub fn next_tick(&mut self) -> Tick {
        let timestamp_ns = self.timestamp();
        let index = self.pick();
        let r = self.rng.next_u64();
        let is_quote = self.rng.next_f64() < self.quote_ratio;
        let book = &mut self.books[index];
        // Random walk on the cent grid: down 30 %, up 30 %, unchanged 40 %; floor at $1.
        match r % 10 {
            0..=2 => book.bid = (book.bid - CENT).max(100 * CENT),
            3..=5 => book.bid += CENT,
            _ => {}
        }
        if (r >> 8).is_multiple_of(8) {
            book.spread = 1 + ((r >> 12) % 3) as i64;
        }
        let ask = book.bid + book.spread * CENT;
        let tick = if is_quote {
            Tick::Quote(Quote {
                symbol: book.symbol,
                timestamp_ns,
                bid_price: book.bid,
                bid_size: 100 * (1 + ((r >> 16) % 10) as u32),
                ask_price: ask,
                ask_size: 100 * (1 + ((r >> 24) % 10) as u32),
            })
        } else {
            let buy = (r >> 32) & 1 == 1;
            // One trade in ten is an odd lot.
            let size = if (r >> 33).is_multiple_of(10) {
                1 + ((r >> 40) % 99) as u32
            } else {
                100 * (1 + ((r >> 40) % 5) as u32)
            };
            let trade_id = self.next_trade_id;
            self.next_trade_id += 1;
            Tick::Trade(Trade {
                symbol: book.symbol,
                timestamp_ns,
                price: if buy { ask } else { book.bid },
                size,
                trade_id,
                aggressor: if buy { Aggressor::Buy } else { Aggressor::Sell },
            })
        };
        self.generated += 1;
        tick
    }

    /// Appends the next tick's wire bytes to `out`.
    pub fn next_into(&mut self, out: &mut Vec<u8>) {
        self.next_tick().encode(out);
    }
}

/// Periodic bursts on top of the base rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// One burst per period (e.g. 1 s); it occupies the end of each period.
    pub every: Duration,
    /// Burst length (e.g. 50 ms); capped at `every`.
    pub length: Duration,
    /// Rate multiplier during the burst (e.g. 5.0).
    pub multiplier: f64,
}

/// When and how much to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingConfig {
    /// Messages per second outside bursts; 0 = as fast as possible.
    pub rate: u64,
    /// Optional periodic bursts.
    pub burst: Option<Burst>,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// The most messages handed out at once (bounds latency of control checks).
    pub max_batch: u64,
    /// How far behind schedule the pacer may fall before it forgets the backlog (a stalled
    /// sender does not catch up with one giant burst; see [`Pacer::shortfall`]).
    pub max_lag: Duration,
}

impl PacingConfig {
    /// `rate` messages per second, no bursts, no limit, batches of at most 1024, 50 ms lag
    /// limit.
    pub fn rate(rate: u64) -> Self {
        PacingConfig {
            rate,
            burst: None,
            count: None,
            duration: None,
            max_batch: 1024,
            max_lag: Duration::from_millis(50),
        }
    }
}

/// What to do next, from [`Pacer::pace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Send this many messages now (already counted as sent).
    Send(u64),
    /// Ahead of schedule: wait this long (sleep, or service sockets) and ask again.
    Wait(Duration),
    /// The count or duration limit is reached.
    Done,
}

/// A rate schedule with bursts and limits. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Pacer {
    cfg: PacingConfig,
    start: Option<Instant>,
    released: u64,
    /// Messages the schedule allowed but that were given up because the sender lagged.
    forgiven: f64,
}

/// The shortest wait handed out: sleeping less is pointless (timer slack is ~50 µs), and a
/// longer slice lets high rates go out in batches.
const MIN_WAIT: Duration = Duration::from_micros(50);
/// The longest wait handed out, so limits and rate changes (bursts) are noticed promptly.
const MAX_WAIT: Duration = Duration::from_millis(20);

impl Pacer {
    /// A pacer; its clock starts at the first call to [`pace`](Self::pace).
    pub fn new(cfg: PacingConfig) -> Self {
        Pacer {
            cfg,
            start: None,
            released: 0,
            forgiven: 0.0,
        }
    }

    /// Messages handed out so far.
    pub fn released(&self) -> u64 {
        self.released
    }

    /// Messages the schedule called for but that were given up because the sender could not
    /// keep up (more than `max_lag` behind).
    pub fn shortfall(&self) -> u64 {
        self.forgiven as u64
    }

    /// Time since the first call to [`pace`](Self::pace).
    pub fn elapsed(&self) -> Duration {
        self.start.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Whether `t` (seconds since start) is inside a burst, and the burst parameters.
    fn rate_at(&self, t: f64) -> f64 {
        let base = self.cfg.rate as f64;
        match self.cfg.burst {
            Some(b) if b.every > Duration::ZERO => {
                let p = b.every.as_secs_f64();
                let l = b.length.as_secs_f64().min(p);
                if t % p >= p - l {
                    base * b.multiplier
                } else {
                    base
                }
            }
            _ => base,
        }
    }

    /// Messages the schedule allows from the start to `t` seconds.
    fn scheduled(&self, t: f64) -> f64 {
        let base = self.cfg.rate as f64;
        match self.cfg.burst {
            Some(b) if b.every > Duration::ZERO => {
                let p = b.every.as_secs_f64();
                let l = b.length.as_secs_f64().min(p);
                let extra = base * (b.multiplier - 1.0);
                let periods = (t / p).floor();
                let r = t - periods * p;
                periods * (base * p + extra * l) + base * r + extra * (r - (p - l)).max(0.0)
            }
            _ => base * t,
        }
    }

    /// The next decision. `Send(n)` counts the `n` messages as sent.
    pub fn pace(&mut self) -> Pace {
        let now = Instant::now();
        let start = *self.start.get_or_insert(now);
        let remaining = self
            .cfg
            .count
            .map_or(u64::MAX, |c| c.saturating_sub(self.released));
        if remaining == 0 {
            return Pace::Done;
        }
        let elapsed = now.duration_since(start);
        let time_left = self.cfg.duration.map(|d| d.saturating_sub(elapsed));
        if time_left == Some(Duration::ZERO) {
            return Pace::Done;
        }
        let max_batch = self.cfg.max_batch.max(1);
        if self.cfg.rate == 0 {
            let n = remaining.min(max_batch);
            self.released += n;
            return Pace::Send(n);
        }
        let t = elapsed.as_secs_f64();
        let rate_now = self.rate_at(t).max(1e-9);
        let mut target = self.scheduled(t) - self.forgiven;
        let max_lag = (rate_now * self.cfg.max_lag.as_secs_f64()).max(max_batch as f64);
        let backlog = target - self.released as f64;
        if backlog > max_lag {
            self.forgiven += backlog - max_lag;
            target = self.released as f64 + max_lag;
        }
        let available = (target.floor() as u64).saturating_sub(self.released);
        if available > 0 {
            let n = available.min(max_batch).min(remaining);
            self.released += n;
            return Pace::Send(n);
        }
        let needed = self.released as f64 + 1.0 - target;
        let mut wait =
            Duration::from_secs_f64((needed / rate_now).clamp(0.0, 1.0)).clamp(MIN_WAIT, MAX_WAIT);
        if let Some(left) = time_left {
            wait = wait.min(left);
        }
        Pace::Wait(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> GeneratorConfig {
        let mut c = GeneratorConfig::new(50).unwrap();
        c.seed = seed;
        c.timestamps = TimestampSource::Synthetic {
            start_ns: 1_700_000_000_000_000_000,
            step_ns: 1_000,
        };
        c
    }

    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut g = TickGenerator::new(config(seed)).unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            g.next_into(&mut out);
        }
        out
    }

    #[test]
    fn deterministic_per_seed() {
        assert_eq!(bytes(7, 1000), bytes(7, 1000));
        assert_ne!(bytes(7, 1000), bytes(8, 1000));
    }

    #[test]
    fn ticks_decode_and_have_a_realistic_shape() {
        let mut g = TickGenerator::new(config(3)).unwrap();
        let n = 20_000;
        let mut per_symbol = [0u32; 50];
        let (mut quotes, mut trades) = (0, 0);
        let mut last_ts = 0;
        for _ in 0..n {
            let tick = g.next_tick();
            let mut buf = Vec::new();
            tick.encode(&mut buf);
            assert_eq!(Tick::decode(&buf).unwrap(), tick);
            assert!(tick.timestamp_ns() > last_ts);
            last_ts = tick.timestamp_ns();
            let index = g.symbols().position(|s| s == tick.symbol()).unwrap();
            per_symbol[index] += 1;
            match tick {
                Tick::Quote(q) => {
                    quotes += 1;
                    assert!(q.ask_price > q.bid_price && q.bid_price >= 100 * CENT);
                    assert_eq!(q.bid_price % CENT, 0);
                }
                Tick::Trade(t) => {
                    trades += 1;
                    assert!(t.size > 0 && t.aggressor != Aggressor::Unknown);
                }
            }
        }
        let quote_share = f64::from(quotes) / f64::from(n);
        assert!((0.77..0.83).contains(&quote_share), "quotes {quote_share}");
        assert_eq!(quotes + trades, n);
        // Zipf 1.1 over 50 symbols: the top symbol gets ~22 %, far more than the tail.
        let top = f64::from(per_symbol[0]) / f64::from(n);
        assert!((0.17..0.28).contains(&top), "top share {top}");
        assert!(per_symbol[0] > 10 * per_symbol[49]);
        assert!(per_symbol[1] > per_symbol[10]);
    }

    #[test]
    fn symbol_names() {
        let s = generated_symbols(3).unwrap();
        assert_eq!(s[0].as_str(), "SYM0001");
        assert_eq!(
            generated_symbols(100_000).unwrap()[99_999].as_str(),
            "S0100000"
        );
        assert_eq!(generated_symbols(0), Err(GenError::NoSymbols));
        assert_eq!(parse_symbols("AAPL, MSFT").unwrap().len(), 2);
        assert!(parse_symbols("TOOLONGNAME").is_err());
    }

    #[test]
    fn xorshift_is_uniform_enough() {
        let mut r = XorShift::new(0);
        let mean = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
        assert!((0.48..0.52).contains(&mean));
    }

    #[test]
    fn pacer_unlimited_count() {
        let mut p = Pacer::new(PacingConfig {
            count: Some(2500),
            ..PacingConfig::rate(0)
        });
        assert_eq!(p.pace(), Pace::Send(1024));
        assert_eq!(p.pace(), Pace::Send(1024));
        assert_eq!(p.pace(), Pace::Send(452));
        assert_eq!(p.pace(), Pace::Done);
    }

    #[test]
    fn pacer_holds_the_rate_without_spinning() {
        let mut p = Pacer::new(PacingConfig {
            duration: Some(Duration::from_millis(200)),
            ..PacingConfig::rate(10_000)
        });
        let (mut sent, mut decisions) = (0, 0);
        loop {
            decisions += 1;
            assert!(decisions < 100_000, "pacer spins");
            match p.pace() {
                Pace::Send(n) => sent += n,
                Pace::Wait(d) => std::thread::sleep(d),
                Pace::Done => break,
            }
        }
        // 10k/s for 0.2 s = 2000, give or take scheduling noise.
        assert!((1700..=2100).contains(&sent), "sent {sent}");
    }

    #[test]
    fn burst_schedule_integrates() {
        let p = Pacer::new(PacingConfig {
            burst: Some(Burst {
                every: Duration::from_secs(1),
                length: Duration::from_millis(100),
                multiplier: 5.0,
            }),
            ..PacingConfig::rate(1000)
        });
        // Per second: 900 ms at 1000/s + 100 ms at 5000/s = 1400.
        assert!((p.scheduled(1.0) - 1400.0).abs() < 1e-6);
        assert!((p.scheduled(0.9) - 900.0).abs() < 1e-6);
        assert!((p.scheduled(0.95) - 1150.0).abs() < 1e-6);
        assert!((p.scheduled(2.5) - 3300.0).abs() < 1e-6);
        assert_eq!(p.rate_at(0.95), 5000.0);
        assert_eq!(p.rate_at(0.5), 1000.0);
    }
}
