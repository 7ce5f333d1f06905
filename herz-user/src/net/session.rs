//! The socket side of a SoupBinTCP session: moves bytes between a non-blocking TCP stream and the
//! sans-I/O [`ServerSession`] (herz-core), which decides what they mean and reports it as events.

use std::{
    io::{self, Read, Write},
    net::SocketAddr,
};

use herz_core::{
    engine::journal::Journal,
    session::{Ctx, Role, ServerSession, SlowConsumerPolicy},
};
use mio::net::TcpStream;

/// Bytes read from one session per loop iteration, so one fast publisher cannot starve fan-out.
const READ_BUDGET: usize = 256 * 1024;

/// One accepted connection: its socket, the peer's address and the session state machine.
pub struct Conn {
    /// The peer's TCP connection (non-blocking, registered with the loop's poll).
    pub stream: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// The protocol state machine.
    pub session: ServerSession,
    /// False after a write would block, until the socket says writable again.
    pub writable: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.peer)
            .field("session", &self.session)
            .finish()
    }
}

impl Conn {
    /// A new session on an accepted socket.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        role: Role,
        out_limit: usize,
        policy: SlowConsumerPolicy,
        now: u64,
    ) -> Self {
        Self {
            stream,
            peer,
            session: ServerSession::new(role, out_limit, policy, now),
            writable: true,
        }
    }

    /// Reads what the socket holds into the session, within the per-iteration budget; true when the
    /// budget ran out before the socket was drained (read again next iteration).
    ///
    /// A read that returns less than the buffer had room for has taken everything the socket held;
    /// the next arrival raises a new (edge-triggered) readiness event, so the loop stops there instead
    /// of paying one more `recv` for `EAGAIN` (one syscall in three for a publisher sending one small
    /// batch per wakeup). Unless `drain`: when the peer's FIN may already have arrived with the data,
    /// no further event would announce it, so the socket is read until it says so.
    pub fn on_readable(&mut self, ctx: &Ctx<'_>, journal: &mut Journal, drain: bool) -> bool {
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                return true;
            }
            let buf = self.session.recv_buf();
            let room = buf.len();
            match self.stream.read(buf) {
                Ok(0) => {
                    self.session.on_peer_closed();
                    return false;
                }
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.session.on_received(n, ctx, journal);
                    let short = n < room;
                    if self.session.is_closed() || (short && !drain) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.session.on_socket_error(e.kind());
                    return false;
                }
            }
        }
    }

    /// Writes queued bytes until done or the socket would block; a failure ends the session.
    pub fn flush(&mut self, now: u64) {
        while self.session.queued() > 0 {
            match self.stream.write(self.session.transmit()) {
                Ok(0) => {
                    self.session.on_socket_error(io::ErrorKind::WriteZero);
                    return;
                }
                Ok(n) => self.session.on_sent(n, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.session.on_socket_error(e.kind());
                    return;
                }
            }
        }
    }

    /// Moves journal messages to the subscriber and writes them, until caught up or the socket would
    /// block.
    pub fn pump(&mut self, journal: &Journal, now: u64) {
        loop {
            let caught_up = self.session.fill(journal);
            if self.session.queued() == 0 {
                return;
            }
            self.flush(now);
            if !self.writable || caught_up || self.session.is_closed() {
                return;
            }
        }
    }
}
