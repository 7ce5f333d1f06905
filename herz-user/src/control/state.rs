//! The operator's view of the daemon, as `/state` serves it: plain data that the hot loop fills twice a
//! second, the control plane serialises, and `herz top` reads back typed. Nothing here calls the loop.

use std::{collections::BTreeMap, path::PathBuf};

/// What `/state` shows instead of a peer's address to a request without the control token.
pub const HIDDEN_PEER: &str = "hidden (control.token_file)";

use herz_core::session::{Role, SlowConsumerPolicy, State};
use serde::{Deserialize, Serialize};

/// The body of `/state`: the loop's snapshot, every counter, and where the shield's maps are pinned.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateBody {
    /// What the loop reported last.
    #[serde(flatten)]
    pub snapshot: StateSnapshot,
    /// Every distributor counter by name (monotonic since start).
    pub counters: BTreeMap<String, u64>,
    /// The shield's pin directory (None: shield not loaded).
    pub pin_path: Option<PathBuf>,
}

/// What the loop reports about its sessions, channels and feeds.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Journal session name.
    pub session: String,
    /// Next journal sequence.
    pub journal_head: u64,
    /// Oldest retained sequence.
    pub journal_tail: u64,
    /// Every connected session.
    pub sessions: Vec<SessionView>,
    /// Multicast channels.
    pub channels: Vec<ChannelView>,
    /// Upstream feeds.
    pub feeds: Vec<FeedView>,
}

/// One connected SoupBinTCP session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// The peer's address.
    pub peer: String,
    /// Username (empty before login).
    pub user: String,
    /// Which endpoint it came in on.
    pub role: Role,
    /// Where it is in its life.
    pub state: State,
    /// Messages behind the journal head (subscribers; 0 otherwise).
    pub lag: u64,
    /// Slow-consumer policy in force.
    pub policy: SlowConsumerPolicy,
    /// Messages sent to it.
    pub sent: u64,
    /// Bytes queued in Herz for it.
    pub queued: usize,
}

/// One multicast channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelView {
    /// Name from the configuration.
    pub name: String,
    /// Multicast group and port.
    pub group: String,
    /// Next channel sequence number.
    pub next_seq: u64,
}

/// One upstream feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedView {
    /// Name from the configuration.
    pub name: String,
    /// Messages delivered to the journal.
    pub messages: u64,
    /// Seconds since its last packet (None: never heard from).
    pub idle_secs: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_body_reads_back_as_it_was_written() {
        let body = StateBody {
            snapshot: StateSnapshot {
                session: "HZ20261203".into(),
                journal_head: 42,
                journal_tail: 1,
                sessions: vec![SessionView {
                    peer: "198.18.0.2:40000".into(),
                    user: "demo".into(),
                    role: Role::Subscriber,
                    state: State::AwaitingLogin,
                    lag: 7,
                    policy: SlowConsumerPolicy::DropOldest,
                    sent: 35,
                    queued: 0,
                }],
                channels: vec![ChannelView {
                    name: "all".into(),
                    group: "239.1.1.1:5000".into(),
                    next_seq: 9,
                }],
                feeds: vec![FeedView {
                    name: "up".into(),
                    messages: 3,
                    idle_secs: Some(0.5),
                }],
            },
            counters: [("journal_appended".to_string(), 41)].into(),
            pin_path: Some("/sys/fs/bpf/herz".into()),
        };
        let json = serde_json::to_value(&body).unwrap();
        // The wire names operators and scripts already read.
        assert_eq!(json["sessions"][0]["role"], "subscriber");
        assert_eq!(json["sessions"][0]["state"], "awaiting-login");
        assert_eq!(json["sessions"][0]["policy"], "drop-oldest");
        assert_eq!(json["journal_head"], 42);
        assert_eq!(json["counters"]["journal_appended"], 41);
        let back: StateBody = serde_json::from_value(json).unwrap();
        assert_eq!(back, body);
    }
}
