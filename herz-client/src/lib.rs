//! Blocking clients for Herz, used by the `herz sub` / `herz pub` tools, by integration tests and
//! by benchmarks.
//!
//! - [`soup`]: SoupBinTCP 3.00 [`SoupSubscriber`] (with the Herz filter and skip extension, exact
//!   resume) and [`SoupPublisher`] (batched `U` packets).
//! - [`mold`]: MoldUDP64 [`MoldReceiver`] (multicast or unicast, in-order delivery, gap recovery
//!   through a re-request server) and [`MoldFeedSender`] (an upstream feed simulator with A/B
//!   lines, history, re-request service and deliberate loss).
//! - [`generator`]: [`TickGenerator`], a deterministic synthetic tick source with a realistic
//!   shape, and its [`Pacer`](generator::Pacer). (Not `gen`: a reserved keyword in Rust 2024.)
//! - [`clock`]: explicit nanosecond clocks ([`clock::mono_ns`], [`clock::realtime_ns`]).
//!
//! Everything is blocking `std::net` + `socket2`, one client per thread, no async runtime. The
//! wire formats come from [`herz_core::protocol`] (re-exported as [`herz_core`]): this crate only
//! moves bytes and keeps state; it never re-implements framing.
//!
//! Hot paths read into one reusable buffer, parse every complete packet in it, and hand borrowed
//! payloads to a callback (`poll(timeout, |event| ...)`), so receiving allocates nothing per
//! message. Simpler owned-event APIs (`recv_timeout`) exist for tests.
#![deny(missing_docs)]

pub use herz_core;

pub mod clock;
pub mod generator;
pub mod mold;
pub mod soup;

mod sys;

pub use self::{
    generator::TickGenerator,
    mold::{MoldFeedSender, MoldReceiver},
    soup::{SoupPublisher, SoupSubscriber},
};
