//! The MoldUDP64 re-request server: answers channel subscribers' gap requests from the journal, one
//! reply packet per request, within per-requester rate limits.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
};

use herz_core::{
    engine::{
        journal::Journal,
        ratelimit::{Decision, RequesterLimits, RequesterLimitsConfig, TokenRate},
    },
    protocol::moldudp64::{PacketBuilder, RequestPacket},
};
use herz_sys::mmsg::RecvBatch;
use socket2::Socket;

use super::{
    channel::Channel,
    counters::{Counters, add},
    sock,
};
use crate::config::RerequestConfig;

/// Requests handled per wake-up before giving the loop back (fairness under a request flood).
const MAX_BATCHES_PER_CALL: usize = 16;

/// The re-request server.
pub struct RerequestServer {
    sock: Socket,
    limits: RequesterLimits,
    batch: RecvBatch,
    reply: PacketBuilder,
}

impl RerequestServer {
    /// Binds the server's UDP socket.
    pub fn bind(config: &RerequestConfig, now: u64) -> anyhow::Result<Self> {
        let sock = sock::udp_bound(config.listen)?;
        let limits = RequesterLimits::new(
            RequesterLimitsConfig {
                per_requester: TokenRate {
                    per_sec: config.rate.max(1),
                    burst: config.burst.max(1),
                },
                global: None,
                max_per_request: config.max_per_request.max(1),
                max_requesters: 4096,
                per_ip: false,
            },
            now,
        )
        .map_err(|e| anyhow::anyhow!("rerequest: {e}"))?;
        Ok(Self {
            sock,
            limits,
            batch: RecvBatch::default(),
            reply: PacketBuilder::new(1400),
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
                let Ok(req) = RequestPacket::decode(bytes) else {
                    continue;
                };
                let Some(channel) = channels.iter().find(|c| c.session.matches(&req.session))
                else {
                    add(&counters.rerequests_unavailable, 1);
                    continue;
                };
                let granted = match self.limits.allow(from, req.count, now) {
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
