//! The benchmark message and the subscriber-side checker.
//!
//! Every system carries the same bytes: a Herz message (type `Q`, 8-byte symbol) whose quote
//! `timestamp_ns` field (offset 9) holds the publisher's `CLOCK_MONOTONIC` at send time and whose next
//! 8 bytes (offset 17) hold the bench sequence number 1..=N, padded to the message size. The sequence
//! number lets the checker verify order and completeness on transports that have no numbering of
//! their own (NATS, ZeroMQ); on SoupBinTCP and MoldUDP64 it must also equal the transport's number.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::sys::mono_ns;

/// Offset of the monotonic send timestamp (u64, big-endian).
pub const TS_OFF: usize = 9;
/// Offset of the bench sequence number (u64, big-endian).
pub const SEQ_OFF: usize = 17;
/// The smallest message that holds both.
pub const MIN_SIZE: usize = 25;

/// A message of `size` bytes with sequence 0 and timestamp 0.
pub fn template(size: usize) -> Vec<u8> {
    assert!(size >= MIN_SIZE, "messages are at least {MIN_SIZE} bytes");
    let mut m = vec![b' '; size];
    m[0] = b'Q';
    m[1..9].copy_from_slice(b"BENCH   ");
    for (i, b) in m.iter_mut().enumerate().skip(MIN_SIZE) {
        *b = b'a' + (i % 26) as u8;
    }
    m
}

/// Writes the sequence number and timestamp into a message.
#[inline]
pub fn stamp(m: &mut [u8], seq: u64, ts: u64) {
    m[TS_OFF..TS_OFF + 8].copy_from_slice(&ts.to_be_bytes());
    m[SEQ_OFF..SEQ_OFF + 8].copy_from_slice(&seq.to_be_bytes());
}

/// The bench sequence number of a message.
#[inline]
pub fn seq_of(m: &[u8]) -> u64 {
    u64::from_be_bytes(m[SEQ_OFF..SEQ_OFF + 8].try_into().unwrap())
}

/// The send timestamp of a message.
#[inline]
pub fn ts_of(m: &[u8]) -> u64 {
    u64::from_be_bytes(m[TS_OFF..TS_OFF + 8].try_into().unwrap())
}

/// What one subscriber saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SubResult {
    /// Messages received in order.
    pub received: u64,
    /// Messages never received (sequence gaps, and the tail missing at the end).
    pub lost: u64,
    /// Integrity errors: out of order, duplicated, wrong size, transport number mismatch, skips.
    pub errors: u64,
    /// Messages seen again after a later one. Over multicast, an exact duplicate (same MoldUDP64
    /// number, same message) is discarded as every MoldUDP64 receiver does, and only counted here; over
    /// the other transports it is an integrity error.
    pub duplicates: u64,
    /// Of `errors`: messages whose SoupBinTCP / MoldUDP64 number differs from the bench number.
    pub misnumbered: u64,
    /// The first integrity error, for the report.
    pub first_error: Option<String>,
    /// Why the subscriber stopped before receiving everything, if it did.
    pub stopped: Option<String>,
    /// `CLOCK_MONOTONIC` when the first / last message was seen (read per batch, not per message).
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// One-way latency histogram (ns), for paced runs.
    #[serde(skip)]
    pub hist: Option<Histogram<u64>>,
}

/// Checks every message a subscriber receives against the expected sequence.
#[derive(Debug)]
pub struct Checker {
    n: u64,
    size: usize,
    /// The next bench sequence number expected.
    pub expected: u64,
    warmup: u64,
    /// Exact duplicates are discarded without error (MoldUDP64).
    dedup: bool,
    r: SubResult,
}

impl Checker {
    /// Expects messages 1..=n of `size` bytes; with `latency`, records the latency of every message
    /// after the first `warmup`.
    pub fn new(n: u64, size: usize, latency: bool, warmup: u64, dedup: bool) -> Self {
        let hist = latency.then(|| {
            Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
        });
        Checker {
            n,
            size,
            expected: 1,
            warmup,
            dedup,
            r: SubResult {
                hist,
                ..SubResult::default()
            },
        }
    }

    fn error(&mut self, what: impl FnOnce() -> String) {
        self.r.errors += 1;
        if self.r.first_error.is_none() {
            self.r.first_error = Some(what());
        }
    }

    /// One received message; `transport_seq` is the SoupBinTCP / MoldUDP64 number where there is one.
    #[inline]
    pub fn on_msg(&mut self, payload: &[u8], transport_seq: Option<u64>) {
        if payload.len() != self.size || payload[0] != b'Q' {
            let (len, size) = (payload.len(), self.size);
            self.error(|| {
                format!("message of {len} bytes (expected {size}) or not a bench message")
            });
            return;
        }
        let s = seq_of(payload);
        if let Some(t) = transport_seq
            && t != s
        {
            self.r.misnumbered += 1;
            self.error(|| format!("transport sequence {t} carries bench message {s}"));
        }
        if s == self.expected {
            self.expected += 1;
        } else if s > self.expected && s <= self.n {
            self.r.lost += s - self.expected;
            self.expected = s + 1;
        } else {
            self.r.duplicates += 1;
            if !(self.dedup && transport_seq == Some(s)) {
                let exp = self.expected;
                self.error(|| format!("message {s} arrived when {exp} was expected"));
            }
            return;
        }
        self.r.received += 1;
        if s > self.warmup
            && let Some(h) = &mut self.r.hist
        {
            h.saturating_record(mono_ns().saturating_sub(ts_of(payload)).max(1));
        }
    }

    /// A skip marker or other sign that messages were withheld.
    pub fn withheld(&mut self, what: &str, count: u64) {
        self.error(|| format!("{what} ({count} messages)"));
    }

    /// Notes the time after a batch of messages.
    #[inline]
    pub fn mark(&mut self) {
        if self.r.received > 0 {
            let now = mono_ns();
            if self.r.first_ns == 0 {
                self.r.first_ns = now;
            }
            self.r.last_ns = now;
        }
    }

    /// Whether every message has been seen (received or counted lost).
    #[inline]
    pub fn done(&self) -> bool {
        self.expected > self.n
    }

    /// Messages received so far.
    pub fn received(&self) -> u64 {
        self.r.received
    }

    /// The result; messages not seen by now count as lost.
    pub fn finish(mut self, stopped: Option<String>) -> SubResult {
        self.mark_final();
        if self.expected <= self.n {
            self.r.lost += self.n + 1 - self.expected;
        }
        self.r.stopped = stopped;
        self.r
    }

    fn mark_final(&mut self) {
        if self.r.received > 0 && self.r.last_ns == 0 {
            self.mark();
        }
    }
}
