//! Multicast egress: each channel is a MoldUDP64 session on a group, a cursor on the journal.
//!
//! Messages are packed into packets up to the configured payload; a packet goes out when full or when
//! its first message has waited `flush_us`. Full packets leave in batches through `sendmmsg`. Idle
//! channels send a heartbeat every second. A channel with a symbol set numbers its own messages, and
//! keeps a ring mapping its sequence numbers to journal sequences so the re-request server can answer.

use std::{io, net::SocketAddr, os::fd::AsRawFd};

use herz_core::{
    engine::{filter::SubscriptionFilter, journal::Journal},
    protocol::moldudp64::{self, PacketBuilder, Session},
};
use herz_sys::mmsg as batch;
use socket2::Socket;

/// One multicast channel.
pub struct Channel {
    /// Name for logs and metrics.
    pub name: String,
    /// MoldUDP64 session.
    pub session: Session,
    /// Destination group.
    pub group: SocketAddr,
    sock: Socket,
    filter: Option<SubscriptionFilter>,
    /// Next journal sequence to consider.
    pub cursor: u64,
    /// Next channel sequence number.
    pub next_seq: u64,
    /// Channel sequence → journal sequence, for filtered channels (ring, journal-sized).
    map: Vec<u64>,
    builders: Vec<PacketBuilder>,
    /// Finished packets waiting to be sent.
    filled: usize,
    /// First finished packet not yet sent (after a partial sendmmsg).
    unsent_from: usize,
    /// When the oldest message of the open packet was added, ns.
    open_since: u64,
    flush_ns: u64,
    last_send: u64,
    ctl: Vec<u8>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("name", &self.name)
            .field("group", &self.group)
            .finish()
    }
}

/// What one pump sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    /// Packets.
    pub packets: u64,
    /// Messages.
    pub messages: u64,
    /// Heartbeats.
    pub heartbeats: u64,
    /// Payload bytes sent.
    pub bytes: u64,
    /// Messages the channel skipped because they fell off the journal before it could send them.
    pub lost: u64,
}

impl Channel {
    /// A channel starting at the journal's head. A filtered channel numbers its own messages:
    /// over a journal that already holds messages (a restart of a durable journal), it counts
    /// them again from the session's first message so that its numbers keep their meaning;
    /// when the journal no longer holds that first message, the count is unknown and the
    /// channel is refused rather than renumbered.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        session: Session,
        group: SocketAddr,
        sock: Socket,
        filter: Option<SubscriptionFilter>,
        journal: &Journal,
        journal_capacity: usize,
        max_payload: usize,
        flush_us: u64,
        now: u64,
    ) -> anyhow::Result<Self> {
        let builders = (0..batch::BATCH)
            .map(|_| PacketBuilder::new(max_payload))
            .collect();
        let mut c = Self {
            name,
            session,
            group,
            sock,
            map: if filter.is_some() {
                vec![0; journal_capacity.max(1)]
            } else {
                Vec::new()
            },
            filter,
            cursor: journal.head(),
            // An unfiltered channel numbers like the journal; a filtered one counts its own from 1.
            next_seq: 1,
            builders,
            filled: 0,
            unsent_from: 0,
            open_since: 0,
            flush_ns: flush_us * 1000,
            last_send: now,
            ctl: Vec::with_capacity(64),
        };
        match &c.filter {
            None => c.next_seq = journal.head(),
            Some(_) if journal.head() > 1 => {
                if journal.tail() > 1 {
                    anyhow::bail!(
                        "channel {} numbers its own messages (symbols or prefixes) and the journal no longer holds its session's first message (oldest is {}): its numbering cannot be rebuilt; give the channel a new session or raise the journal's retention",
                        c.name,
                        journal.tail()
                    );
                }
                for (seq, msg) in journal.range(1, journal.head()) {
                    if c.carries(msg) {
                        let len = c.map.len() as u64;
                        c.map[(c.next_seq % len) as usize] = seq;
                        c.next_seq += 1;
                    }
                }
            }
            Some(_) => {}
        }
        let first = c.next_seq;
        c.builders[0].start(c.session, first);
        Ok(c)
    }

    /// The journal sequence carried as channel sequence `seq`, if it is known and retained.
    pub fn journal_seq(&self, seq: u64, journal: &Journal) -> Option<u64> {
        if seq == 0 || seq >= self.next_seq {
            return None;
        }
        let j = if self.filter.is_none() {
            seq
        } else {
            if self.next_seq - seq > self.map.len() as u64 {
                return None;
            }
            self.map[(seq % self.map.len() as u64) as usize]
        };
        (j >= journal.tail() && j < journal.head()).then_some(j)
    }

    /// Whether the channel carries `msg`.
    pub fn carries(&self, msg: &[u8]) -> bool {
        self.filter.as_ref().is_none_or(|f| f.matches(msg))
    }

    /// Packs new journal messages, sends full packets, and flushes or heartbeats on time.
    pub fn pump(&mut self, journal: &Journal, now: u64) -> io::Result<Sent> {
        let mut sent = Sent::default();
        if self.cursor < journal.tail() {
            // Multicast cannot make the journal wait; report what this channel never carried.
            sent.lost = journal.tail() - self.cursor;
            self.cursor = journal.tail();
            if self.filter.is_none() {
                self.restart_open_packet(journal.tail());
            }
        }
        let head = journal.head();
        while self.cursor < head && self.filled < self.builders.len() {
            let seq = self.cursor;
            let msg = journal.get(seq).expect("cursor within the journal");
            if !self.carries(msg) {
                self.cursor += 1;
                continue;
            }
            let b = &mut self.builders[self.filled];
            if b.is_empty() {
                self.open_since = now;
            }
            match b.try_push(msg) {
                Ok(true) => {}
                Ok(false) => {
                    self.close_open();
                    if self.filled == self.builders.len() {
                        break;
                    }
                    self.open_since = now;
                    self.builders[self.filled]
                        .try_push(msg)
                        .expect("a message fits an empty packet (validated at start)");
                }
                Err(_) => {
                    unreachable!("journal.max_message_len fits channel max_payload (validated)")
                }
            }
            if !self.map.is_empty() {
                let len = self.map.len() as u64;
                self.map[(self.next_seq % len) as usize] = seq;
            }
            self.next_seq += 1;
            self.cursor += 1;
            sent.messages += 1;
        }
        // Close the open packet when it has waited long enough.
        if self.filled < self.builders.len()
            && !self.builders[self.filled].is_empty()
            && now.saturating_sub(self.open_since) >= self.flush_ns
        {
            self.close_open();
        }
        if self.filled > self.unsent_from {
            let (packets, bytes) = self.send_filled(now)?;
            sent.packets += packets;
            sent.bytes += bytes;
        } else if self.filled == 0
            && self.builders[0].is_empty()
            && now.saturating_sub(self.last_send) >= 1_000_000_000
        {
            self.ctl.clear();
            moldudp64::encode_heartbeat(self.session, self.next_seq, &mut self.ctl);
            if batch::send_connected(self.sock.as_raw_fd(), &[&self.ctl])? == 1 {
                self.last_send = now;
                sent.heartbeats += 1;
            }
        }
        Ok(sent)
    }

    fn send_filled(&mut self, now: u64) -> io::Result<(u64, u64)> {
        let mut slices: [&[u8]; batch::BATCH] = [&[]; batch::BATCH];
        let (from, to) = (self.unsent_from, self.filled);
        for (i, b) in self.builders[from..to].iter_mut().enumerate() {
            slices[i] = b.finish();
        }
        let n = match batch::send_connected(self.sock.as_raw_fd(), &slices[..to - from]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            // No listener on a connected UDP socket (ICMP port unreachable) is not a failure for multicast.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => to - from,
            Err(e) => return Err(e),
        };
        let bytes: u64 = slices[..n].iter().map(|p| p.len() as u64).sum();
        self.unsent_from += n;
        if n > 0 {
            self.last_send = now;
        }
        if self.unsent_from == self.filled {
            // All sent: recycle the builders, keeping the open packet (if any) as the first.
            let open_idx = self.filled;
            if open_idx < self.builders.len() && !self.builders[open_idx].is_empty() {
                self.builders.swap(0, open_idx);
            } else {
                let next = self.next_seq;
                self.builders[0].start(self.session, next);
            }
            self.filled = 0;
            self.unsent_from = 0;
        }
        Ok((n as u64, bytes))
    }

    fn restart_open_packet(&mut self, next: u64) {
        self.next_seq = next;
        if self.filled == 0 {
            self.builders[0].start(self.session, next);
        }
    }

    /// Sends what the journal holds for the channel, open packet included (at shutdown).
    pub fn flush(&mut self, now: u64) {
        let _ = self.pump_all(now);
    }

    /// Sends End of Session a few times (it is the last word; repeated in case one copy is lost).
    pub fn end_of_session(&mut self, now: u64) {
        let _ = self.pump_all(now);
        self.ctl.clear();
        moldudp64::encode_end_of_session(self.session, self.next_seq, &mut self.ctl);
        for _ in 0..3 {
            let _ = batch::send_connected(self.sock.as_raw_fd(), &[&self.ctl]);
        }
    }

    /// Closes the open packet and starts the next builder, so that the open builder is always a fresh
    /// packet numbered from `next_seq` (a recycled builder still holds a sent packet until started).
    fn close_open(&mut self) {
        self.filled += 1;
        if self.filled < self.builders.len() {
            let next = self.next_seq;
            self.builders[self.filled].start(self.session, next);
        }
    }

    fn pump_all(&mut self, now: u64) -> io::Result<()> {
        if self.filled < self.builders.len() && !self.builders[self.filled].is_empty() {
            self.close_open();
        }
        if self.filled > self.unsent_from {
            self.send_filled(now)?;
        }
        Ok(())
    }

    /// Nanoseconds until this channel needs a timer pass (flush or heartbeat).
    pub fn next_deadline(&self, now: u64) -> u64 {
        if self.filled < self.builders.len() && !self.builders[self.filled].is_empty() {
            (self.open_since + self.flush_ns).saturating_sub(now)
        } else {
            (self.last_send + 1_000_000_000).saturating_sub(now)
        }
    }
}
