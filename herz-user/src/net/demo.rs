//! The demo feed: synthetic ticks generated inside the daemon so a first run shows data flowing.
//! Always labelled as synthetic in the logs; real deployments turn it off (`demo.enabled = false`).
//! The ticks come from herz-client's [`TickGenerator`] (the one tick generator, also behind
//! `herz pub` and the benchmarks); this module only paces it on the loop's clock.

use herz_client::generator::{GeneratorConfig, TickGenerator};
use herz_core::{engine::journal::Journal, protocol::tick::Symbol};

use super::counters::{Counters, add};

/// A paced generator of quotes and trades on `DEMO001`…
pub struct DemoFeed {
    rate: u64,
    started: u64,
    produced: u64,
    ticks: TickGenerator,
    buf: Vec<u8>,
}

impl DemoFeed {
    /// `rate` messages per second over `symbols` symbols, from `now`.
    pub fn new(rate: u64, symbols: usize, now: u64) -> Self {
        let symbols: Vec<Symbol> = (1..=symbols.max(1))
            .map(|i| Symbol::new(&format!("DEMO{i:03}")).expect("valid symbol"))
            .collect();
        let ticks = TickGenerator::new(GeneratorConfig::with_symbols(symbols))
            .expect("the default generator shape is valid");
        Self {
            rate: rate.max(1),
            started: now,
            produced: 0,
            ticks,
            buf: Vec::with_capacity(64),
        }
    }

    /// Appends the messages due by `now` (at most one second's worth at once).
    pub fn produce(&mut self, now: u64, journal: &mut Journal, counters: &Counters) {
        let due = ((now - self.started) as u128 * self.rate as u128 / 1_000_000_000) as u64;
        let n = due.saturating_sub(self.produced).min(self.rate);
        for _ in 0..n {
            self.buf.clear();
            self.ticks.next_into(&mut self.buf);
            if journal.append_at(&self.buf, now).is_ok() {
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

#[cfg(test)]
mod tests {
    use herz_core::{engine::journal::JournalConfig, protocol::tick::Tick};

    use super::*;

    #[test]
    fn the_demo_feed_paces_decodable_ticks_on_its_own_symbols() {
        let mut journal = Journal::new(JournalConfig {
            max_messages: 10_000,
            max_bytes: 1 << 20,
            max_message_len: 256,
        });
        let counters = Counters::default();
        let mut demo = DemoFeed::new(1_000, 5, 0);
        demo.produce(500_000_000, &mut journal, &counters);
        assert_eq!(journal.head() - 1, 500, "half a second at 1,000/s");
        assert_eq!(demo.next_deadline(500_000_000), 1_000_000);
        for seq in journal.tail()..journal.head() {
            let symbol = match Tick::decode(journal.get(seq).unwrap()).unwrap() {
                Tick::Quote(q) => q.symbol,
                Tick::Trade(t) => t.symbol,
            };
            assert!(symbol.as_str().starts_with("DEMO00"), "{symbol:?}");
        }
        // A stalled loop does not burst to catch up.
        demo.produce(10_000_000_000, &mut journal, &counters);
        assert_eq!(journal.head() - 1, 1_500);
    }
}
