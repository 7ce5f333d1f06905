//! Herz: a market-data distributor for Linux that defends itself in the kernel.
//!
//! This crate holds the daemon (`herz run`), the kernel shield loader, and the `herz` command-line verbs.
//! The wire protocols and the distribution engine live in `herz-core`, free of sockets.
#![deny(missing_docs)]

pub mod cidr;
pub mod cli;
pub mod config;
pub mod control;
pub mod logging;
pub mod net;
pub mod privilege;
pub mod ratelog;
pub mod reload;
pub mod shield;
pub mod status;
pub mod store;
