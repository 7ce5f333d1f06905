//! MoldUDP64 clients: a receiver with gap recovery ([`MoldReceiver`]) and an upstream feed
//! simulator ([`MoldFeedSender`]).
//!
//! Packet layouts come from [`herz_core::protocol::moldudp64`] (`docs/PROTOCOL.md` section 3):
//! [`Packet::parse`](herz_core::protocol::moldudp64::Packet::parse) validates datagrams,
//! [`PacketBuilder`](herz_core::protocol::moldudp64::PacketBuilder) batches messages up to 1400
//! bytes, and [`RequestPacket`](herz_core::protocol::moldudp64::RequestPacket) is the unicast
//! re-request.
//!
//! Sockets are IPv4 for multicast (group joined on an interface address); unicast works with any
//! address family.

use std::{io, net::SocketAddr};

use herz_core::protocol::moldudp64::MoldError;
use thiserror::Error;

mod receiver;
mod sender;
#[cfg(test)]
mod tests;

pub use herz_core::protocol::moldudp64::Session;

pub use self::{
    receiver::{
        MoldEvent, MoldReceiver, MoldReceiverConfig, MoldReceiverStats, OwnedMoldEvent, StartFrom,
    },
    sender::{DropRule, MoldFeedSender, MoldFeedSenderConfig, MoldSenderStats},
};

/// Errors of the MoldUDP64 clients. Each names the socket address involved.
#[derive(Debug, Error)]
pub enum MoldClientError {
    /// Creating or configuring a socket failed (bind, multicast join, socket options).
    #[error("{op} {addr}: {source}")]
    Socket {
        /// What was being done (`"bind"`, `"join multicast group"`, ...).
        op: &'static str,
        /// The address concerned.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Receiving failed.
    #[error("receive on {local}: {source}")]
    Recv {
        /// The local socket address.
        local: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Sending failed.
    #[error("send from {local} to {to}: {source}")]
    Send {
        /// The local socket address.
        local: SocketAddr,
        /// The destination.
        to: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Waiting for the sockets failed.
    #[error("poll on {local}: {source}")]
    Poll {
        /// The local socket address.
        local: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// A message cannot be sent (e.g. too large for a packet).
    #[error("message at sequence {seq}: {source}")]
    Message {
        /// The sequence number it would have had.
        seq: u64,
        /// Why.
        source: MoldError,
    },
    /// The configuration cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// The largest UDP datagram: the receive buffer size, so nothing is ever truncated.
pub(crate) const MAX_DATAGRAM: usize = 65_536;
