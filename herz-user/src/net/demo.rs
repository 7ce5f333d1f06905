//! The demo feed: synthetic ticks generated inside the daemon so a first run shows data flowing.
//! Always labelled as synthetic in the logs; real deployments turn it off (`demo.enabled = false`).

use herz_core::{
    engine::journal::Journal,
    protocol::tick::{Aggressor, Quote, Symbol, Trade},
};

use super::counters::{Counters, add};

/// A paced generator of quotes and trades on `DEMO001`…
pub struct DemoFeed {
    rate: u64,
    started: u64,
    produced: u64,
    symbols: Vec<Symbol>,
    prices: Vec<i64>,
    rng: u64,
}

impl DemoFeed {
    /// `rate` messages per second over `symbols` symbols, from `now`.
    pub fn new(rate: u64, symbols: usize, now: u64) -> Self {
        let symbols: Vec<Symbol> = (1..=symbols.max(1))
            .map(|i| Symbol::new(&format!("DEMO{i:03}")).expect("valid symbol"))
            .collect();
        let prices = (0..symbols.len())
            .map(|i| (100 + i as i64 * 7) * 100_000_000)
            .collect();
        Self {
            rate: rate.max(1),
            started: now,
            produced: 0,
            symbols,
            prices,
            rng: 0x2545_f491_4f6c_dd1d,
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Appends the messages due by `now` (at most one second's worth at once).
    pub fn produce(&mut self, now: u64, journal: &mut Journal, counters: &Counters) {
        let due = ((now - self.started) as u128 * self.rate as u128 / 1_000_000_000) as u64;
        let n = due.saturating_sub(self.produced).min(self.rate);
        let mut buf = [0u8; 64];
        for _ in 0..n {
            let r = self.next_rand();
            // Skewed popularity: low-numbered symbols tick more often.
            let i = ((r % 1000) * (r % 1000) / 1_000_000 * self.symbols.len() as u64 / 1000)
                as usize
                % self.symbols.len();
            let step = (self.next_rand() % 21) as i64 - 10;
            self.prices[i] = (self.prices[i] + step * 1_000_000).max(1_000_000);
            let px = self.prices[i];
            let len = if r.is_multiple_of(5) {
                let t = Trade {
                    symbol: self.symbols[i],
                    timestamp_ns: now,
                    price: px,
                    size: 100 * (1 + (r >> 20) % 10) as u32,
                    trade_id: self.produced,
                    aggressor: if r & 1 == 0 {
                        Aggressor::Buy
                    } else {
                        Aggressor::Sell
                    },
                };
                let b = t.to_bytes();
                buf[..b.len()].copy_from_slice(&b);
                b.len()
            } else {
                let q = Quote {
                    symbol: self.symbols[i],
                    timestamp_ns: now,
                    bid_price: px - 1_000_000,
                    bid_size: 100 * (1 + (r >> 24) % 20) as u32,
                    ask_price: px + 1_000_000,
                    ask_size: 100 * (1 + (r >> 28) % 20) as u32,
                };
                let b = q.to_bytes();
                buf[..b.len()].copy_from_slice(&b);
                b.len()
            };
            if journal.append_at(&buf[..len], now).is_ok() {
                add(&counters.journal_appended, 1);
            }
            self.produced += 1;
        }
        if n > 0 && self.produced < due {
            // Far behind (the loop was stalled): do not burst to catch up.
            self.produced = due;
        }
    }

    /// Nanoseconds until the next message is due.
    pub fn next_deadline(&self, now: u64) -> u64 {
        let next_at = self.started + (self.produced + 1) * 1_000_000_000 / self.rate;
        next_at.saturating_sub(now)
    }
}
