//! Herz's sans-I/O core: wire codecs and the distribution engine, with no sockets and no clocks.
#![deny(missing_docs)]

pub mod engine;
pub mod protocol;
pub mod session;
