//! The MoldUDP64 re-request server: answers channel subscribers' gap requests from the journal, one
//! reply packet per request, so that it can never be used as a reflector or an amplifier:
//!
//! - **Who is answered**: only sources in `rerequest.allow`; by default loopback and the local
//!   networks of the channels' interfaces (found with `getifaddrs` when the server starts), the
//!   only places a multicast receiver with the default TTL of 1 can be. Others are dropped,
//!   counted (`rerequests_refused`) and logged at most a few lines a second.
//! - **How much**: a token bucket per requester, keyed by IP address (`per_ip`, the default: a
//!   sender rotating its source ports gets no extra budget), and a global bucket over all
//!   requesters together, in messages.
//! - **How big**: a reply is at most `max_amplification` times the request's size on the wire
//!   (IP and UDP headers included), except that it always carries the first message asked for,
//!   so that recovery progresses whatever the message sizes. Receivers ask again for the rest of
//!   a run when a reply covers only its start (MoldUDP64 receivers do; Herz's do at once).
//!
//! A request is 20 bytes, 48 on the wire over IPv4 (68 over IPv6), so with `max_amplification`
//! F a reply is at most `max(F x 48, 28 + 20 + 2 + L)` bytes on the wire, L being the length of
//! the first message asked for: the bound is exceeded only by a reply holding that one message
//! alone. With the defaults (F = 4, `journal.max_message_len` 1024) that is at most 4 times the
//! request for messages up to 142 bytes (Herz's quotes and trades are 41 and 38 bytes: 3 quotes
//! per reply, 177 bytes, 3.69 times), and at worst `28 + 20 + 2 + 1024 = 1074` bytes, 22.4 times,
//! for one 1024-byte message. Whatever the configuration a reply is one packet of at most 1400
//! bytes (1428 on the wire): never more than 29.75 times the request over IPv4, 21.3 over IPv6.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, RawFd},
};

use herz_core::{
    engine::{
        journal::Journal,
        ratelimit::{Decision, RequesterLimits},
    },
    protocol::moldudp64::{
        BLOCK_HEADER_LEN, DEFAULT_MAX_PACKET_LEN, HEADER_LEN, PacketBuilder, RequestPacket,
    },
};
use herz_sys::{ifaddrs::InterfaceAddress, mmsg::RecvBatch};
use socket2::Socket;

use super::{
    channel::Channel,
    counters::{Counters, add},
    sock,
};
use crate::{
    cidr::Cidr,
    config::{ChannelConfig, RerequestConfig},
    ratelog::RateLimitedLog,
};

/// Requests handled per wake-up before giving the loop back (fairness under a request flood).
const MAX_BATCHES_PER_CALL: usize = 16;

/// Bytes of IPv4 and UDP headers (20 + 8, no IP options: the least a datagram can carry).
pub const IPV4_UDP_OVERHEAD: usize = 28;
/// Bytes of IPv6 and UDP headers (40 + 8, no extension headers).
pub const IPV6_UDP_OVERHEAD: usize = 48;

/// The re-request server.
pub struct RerequestServer {
    sock: Socket,
    limits: RequesterLimits,
    allow: Vec<Cidr>,
    max_amplification: u32,
    max_per_request: u16,
    batch: RecvBatch,
    reply: PacketBuilder,
    refused_log: RateLimitedLog,
}

impl RerequestServer {
    /// Binds the server's UDP socket and settles who is answered: `config.allow`, or when it is
    /// empty loopback and the local networks of `channels`' interfaces.
    pub fn bind(
        config: &RerequestConfig,
        channels: &[ChannelConfig],
        now: u64,
    ) -> anyhow::Result<Self> {
        let sock = sock::udp_bound(config.listen)?;
        let limits = RequesterLimits::new(config.limits(), now)
            .map_err(|e| anyhow::anyhow!("rerequest: {e}"))?;
        let allow = if config.allow.is_empty() {
            let local = herz_sys::ifaddrs::interface_addresses().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot list the interfaces' addresses");
                Vec::new()
            });
            for c in channels {
                if !c.interface.is_unspecified() && !local.iter().any(|a| a.addr == c.interface) {
                    tracing::warn!(
                        channel = %c.name,
                        interface = %c.interface,
                        "no local interface has this address; the re-request server answers its /24 (IPv4) or /64 (IPv6)"
                    );
                }
            }
            let interfaces: Vec<IpAddr> = channels.iter().map(|c| c.interface).collect();
            default_allow(&interfaces, &local)
        } else {
            config.allow.clone()
        };
        let list = allow
            .iter()
            .map(Cidr::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(
            listen = %config.listen,
            allow = %list,
            per_ip = config.per_ip,
            max_amplification = config.max_amplification,
            "re-request server answers these sources"
        );
        Ok(Self {
            sock,
            limits,
            allow,
            max_amplification: config.max_amplification,
            max_per_request: config.max_per_request,
            batch: RecvBatch::default(),
            reply: PacketBuilder::new(DEFAULT_MAX_PACKET_LEN),
            refused_log: RateLimitedLog::new(5),
        })
    }

    /// The socket, for registration with the event loop.
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Answers every waiting request.
    pub fn serve(
        &mut self,
        channels: &[Channel],
        journal: &Journal,
        now: u64,
        counters: &Counters,
    ) {
        for _ in 0..MAX_BATCHES_PER_CALL {
            let n = match self.batch.recv(self.sock.as_raw_fd()) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            for i in 0..n {
                let (bytes, from) = self.batch.get(i);
                let Some(from) = from else { continue };
                add(&counters.rerequests_received, 1);
                if !allowed(&self.allow, from.ip()) {
                    add(&counters.rerequests_refused, 1);
                    if let Some(suppressed) = self.refused_log.allow(now) {
                        tracing::warn!(%from, suppressed, "re-request from a source not in rerequest.allow dropped");
                    }
                    continue;
                }
                let Ok(req) = RequestPacket::decode(bytes) else {
                    continue;
                };
                let Some(channel) = channels.iter().find(|c| c.session.matches(&req.session))
                else {
                    add(&counters.rerequests_unavailable, 1);
                    continue;
                };
                // What the size bound lets one reply carry, before charging the rate limits:
                // they are charged for what is sent, not for what was asked.
                let budget = reply_payload_budget(bytes.len(), from, self.max_amplification);
                let wanted = req.count.min(self.max_per_request);
                let lens = (0..u64::from(wanted)).map_while(|k| {
                    let j = channel.journal_seq(req.sequence.checked_add(k)?, journal)?;
                    journal.get(j).map(<[u8]>::len)
                });
                let fit = messages_within(budget, lens);
                if fit == 0 {
                    add(&counters.rerequests_unavailable, 1);
                    continue;
                }
                let granted = match self.limits.allow(from, fit, now) {
                    Decision::Allow(n) => n,
                    Decision::Deny => {
                        add(&counters.rerequests_limited, 1);
                        continue;
                    }
                };
                self.reply.start(channel.session, req.sequence);
                for seq in req.sequence..req.sequence.saturating_add(u64::from(granted)) {
                    let Some(j) = channel.journal_seq(seq, journal) else {
                        break;
                    };
                    let msg = journal.get(j).expect("journal_seq checks retention");
                    if !matches!(self.reply.try_push(msg), Ok(true)) {
                        break;
                    }
                }
                if self.reply.is_empty() {
                    add(&counters.rerequests_unavailable, 1);
                    continue;
                }
                let packet = self.reply.finish();
                match self.sock.send_to(packet, &from.into()) {
                    Ok(_) => add(&counters.rerequests_served, 1),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => {}
                }
            }
        }
    }
}

/// Whether `ip` lies in one of `allow`'s networks (an IPv4-mapped IPv6 source counts as IPv4).
pub fn allowed(allow: &[Cidr], ip: IpAddr) -> bool {
    allow.iter().any(|c| c.contains(ip))
}

/// IP and UDP header bytes of a datagram from `from`: an IPv4-mapped IPv6 source (a dual-stack
/// socket) travelled as IPv4.
pub fn udp_overhead(from: SocketAddr) -> usize {
    if from.ip().to_canonical().is_ipv4() {
        IPV4_UDP_OVERHEAD
    } else {
        IPV6_UDP_OVERHEAD
    }
}

/// The most UDP payload bytes a reply to a `request_len`-byte request from `from` may have so that
/// its size on the wire is at most `factor` times the request's: `factor x (request_len +
/// overhead) - overhead`, capped at one packet ([`DEFAULT_MAX_PACKET_LEN`]).
pub fn reply_payload_budget(request_len: usize, from: SocketAddr, factor: u32) -> usize {
    let overhead = udp_overhead(from);
    (factor as usize)
        .saturating_mul(request_len + overhead)
        .saturating_sub(overhead)
        .min(DEFAULT_MAX_PACKET_LEN)
}

/// How many of the messages whose lengths `lens` yields, in order, one reply of at most `budget`
/// payload bytes carries: the header, then a block (2 + length bytes) per message while they fit.
/// The first message is carried whatever the budget if it fits a packet at all, so that a
/// receiver always progresses; 0 when `lens` is empty or its first message fits no packet.
pub fn messages_within(budget: usize, lens: impl Iterator<Item = usize>) -> u16 {
    let mut size = HEADER_LEN;
    let mut count: u16 = 0;
    for len in lens {
        let next = size + BLOCK_HEADER_LEN + len;
        let limit = if count == 0 {
            DEFAULT_MAX_PACKET_LEN
        } else {
            budget.min(DEFAULT_MAX_PACKET_LEN)
        };
        if next > limit || count == u16::MAX {
            break;
        }
        size = next;
        count += 1;
    }
    count
}

/// The sources answered when `rerequest.allow` is empty: loopback (127.0.0.0/8, ::1), and for each
/// channel interface address its network as `local` lists it (the interfaces' addresses and
/// prefixes); an address `local` does not list gets its /24 (IPv4) or /64 (IPv6); a channel on the
/// unspecified address (the kernel picks the interface per group) allows every network in `local`.
/// Sorted, without duplicates.
pub fn default_allow(channel_interfaces: &[IpAddr], local: &[InterfaceAddress]) -> Vec<Cidr> {
    let mut out = vec![
        Cidr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8).expect("/8 is a prefix"),
        Cidr::host(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    let network = |a: &InterfaceAddress| Cidr::new(a.addr, a.prefix);
    for &ip in channel_interfaces {
        if ip.is_unspecified() {
            out.extend(local.iter().filter_map(network));
            continue;
        }
        match local.iter().find(|a| a.addr == ip).and_then(network) {
            Some(cidr) => out.push(cidr),
            None => {
                let prefix = if ip.is_ipv4() { 24 } else { 64 };
                out.extend(Cidr::new(ip, prefix));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn local(addr: &str, prefix: u8) -> InterfaceAddress {
        InterfaceAddress {
            name: "eth0".into(),
            addr: addr.parse().unwrap(),
            prefix,
        }
    }

    fn v4(s: &str) -> SocketAddr {
        SocketAddr::from((s.parse::<Ipv4Addr>().unwrap(), 5000))
    }

    #[test]
    fn default_allow_is_loopback_and_the_channels_networks() {
        let interfaces = [
            local("127.0.0.1", 8),
            local("198.18.4.1", 30),
            local("10.0.0.10", 16),
            local("2001:db8::10", 64),
        ];
        let loopback = [cidr("127.0.0.0/8"), cidr("::1")];
        assert_eq!(default_allow(&[], &interfaces), loopback);
        let got = default_allow(&["198.18.4.1".parse().unwrap()], &interfaces);
        assert_eq!(
            got,
            [cidr("127.0.0.0/8"), cidr("198.18.4.0/30"), cidr("::1")]
        );
        assert!(allowed(&got, "198.18.4.2".parse().unwrap()));
        assert!(!allowed(&got, "198.18.4.5".parse().unwrap()));
        assert!(allowed(&got, "127.0.0.2".parse().unwrap()));
        assert!(
            allowed(&got, "::ffff:198.18.4.2".parse().unwrap()),
            "IPv4-mapped sources are IPv4"
        );
        assert!(!allowed(&got, "2001:db8::1".parse().unwrap()));
        // An address the machine does not list: its /24.
        let got = default_allow(&["192.0.2.7".parse().unwrap()], &interfaces);
        assert!(got.contains(&cidr("192.0.2.0/24")), "{got:?}");
        // The unspecified address: every local network, once each.
        let got = default_allow(
            &["0.0.0.0".parse().unwrap(), "10.0.0.10".parse().unwrap()],
            &interfaces,
        );
        assert_eq!(
            got,
            [
                cidr("10.0.0.0/16"),
                cidr("127.0.0.0/8"),
                cidr("198.18.4.0/30"),
                cidr("::1"),
                cidr("2001:db8::/64"),
            ]
        );
    }

    #[test]
    fn the_budget_is_the_factor_times_the_request_on_the_wire() {
        // 20-byte request over IPv4 = 48 bytes on the wire; x4 = 192 on the wire = 164 of payload.
        assert_eq!(reply_payload_budget(20, v4("198.18.0.1"), 4), 164);
        assert_eq!(reply_payload_budget(20, v4("198.18.0.1"), 1), 20);
        // A dual-stack socket's IPv4-mapped source travelled as IPv4.
        let mapped: SocketAddr = "[::ffff:198.18.0.1]:5000".parse().unwrap();
        assert_eq!(reply_payload_budget(20, mapped, 4), 164);
        // IPv6: 68 bytes on the wire, x4 = 272, minus 48.
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert_eq!(reply_payload_budget(20, v6, 4), 224);
        // Never more than one packet.
        assert_eq!(
            reply_payload_budget(20, v4("198.18.0.1"), 64),
            DEFAULT_MAX_PACKET_LEN
        );
    }

    #[test]
    fn messages_are_packed_within_the_budget_and_the_first_always() {
        // 41-byte quotes: 43-byte blocks after the 20-byte header. 164 bytes hold 3.
        assert_eq!(messages_within(164, [41; 10].into_iter()), 3);
        assert_eq!(messages_within(20 + 3 * 43, [41; 10].into_iter()), 3);
        assert_eq!(messages_within(20 + 3 * 43 - 1, [41; 10].into_iter()), 2);
        // Fewer available than fit.
        assert_eq!(messages_within(164, [41; 2].into_iter()), 2);
        assert_eq!(messages_within(164, std::iter::empty()), 0);
        // A large first message goes alone; nothing after it.
        assert_eq!(messages_within(164, [1024, 41, 41].into_iter()), 1);
        // One that fits no packet cannot be sent.
        assert_eq!(messages_within(164, [1379].into_iter()), 0);
        assert_eq!(messages_within(1400, [1378].into_iter()), 1);
        // A huge budget is still one packet.
        assert_eq!(messages_within(usize::MAX, [41; 100].into_iter()), 32);
    }

    /// The bound as stated in the module docs, for every message size: a reply (on the wire) is at
    /// most `factor` times the request, or one message.
    #[test]
    fn amplification_is_bounded_for_every_message_size() {
        for factor in [1, 2, 4, 8, 30] {
            for len in 1..=1378 {
                let from = v4("198.18.0.1");
                let budget = reply_payload_budget(20, from, factor);
                let n = messages_within(budget, std::iter::repeat_n(len, 1000));
                assert!(n >= 1);
                let reply = IPV4_UDP_OVERHEAD + HEADER_LEN + usize::from(n) * (2 + len);
                let request = IPV4_UDP_OVERHEAD + 20;
                assert!(
                    reply <= factor as usize * request || n == 1,
                    "factor {factor}, len {len}: {n} messages, {reply} bytes"
                );
                assert!(reply <= 1428);
            }
        }
    }
}
