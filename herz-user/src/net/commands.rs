//! Requests from other threads to the hot loop: a queue and a [`mio::Waker`], so the loop acts on them
//! between events without ever blocking on another thread.

use std::sync::{Arc, mpsc};

use herz_core::session::{SlowConsumerPolicy, User};

/// What another thread may ask of the loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// New logins and default policy (reload): applies to logins from now on; sessions already logged
    /// in keep theirs.
    Logins {
        /// Accepted subscriber logins.
        subscribers: Vec<User>,
        /// Accepted publisher logins.
        publishers: Vec<User>,
        /// Default slow-consumer policy of subscribers.
        policy: SlowConsumerPolicy,
    },
}

/// The sending side, for any thread.
#[derive(Debug, Clone)]
pub struct LoopHandle {
    tx: mpsc::Sender<Command>,
    waker: Arc<mio::Waker>,
}

/// The loop stopped: nothing receives commands any more.
#[derive(Debug, thiserror::Error)]
#[error("the distributor loop is not running")]
pub struct LoopGone;

impl LoopHandle {
    pub(super) fn new(tx: mpsc::Sender<Command>, waker: Arc<mio::Waker>) -> Self {
        Self { tx, waker }
    }

    /// Queues `command` and wakes the loop.
    pub fn send(&self, command: Command) -> Result<(), LoopGone> {
        self.tx.send(command).map_err(|_| LoopGone)?;
        self.waker.wake().map_err(|_| LoopGone)
    }
}
