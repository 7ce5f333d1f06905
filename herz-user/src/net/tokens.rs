//! Which owner a mio token stands for: one table for every registration of the loop, so that no code
//! does arithmetic on token numbers. Fixed owners (signals, listeners, re-request server, feed lines)
//! get consecutive tokens as they register; sessions get `SESSIONS + slab key`.

use mio::Token;

/// Something registered with the loop's poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The shutdown signals.
    Signals,
    /// Another thread queued a command ([`super::commands`]).
    Waker,
    /// The subscriber listener.
    SubscriberListener,
    /// The publisher listener.
    PublisherListener,
    /// The MoldUDP64 re-request server.
    Rerequest,
    /// One line (A, B, or the re-request reply socket) of feed `feed`.
    FeedLine {
        /// Index in the configuration's feeds.
        feed: usize,
        /// Line index as the feed numbers its sockets.
        line: usize,
    },
    /// A SoupBinTCP session (slab key).
    Session(usize),
}

/// First session token: fixed owners stay below it.
const SESSIONS: usize = 1 << 20;

/// The loop's token table.
#[derive(Debug, Default)]
pub struct Tokens {
    fixed: Vec<Owner>,
}

impl Tokens {
    /// A token for a fixed owner (registered once, at start).
    pub fn add(&mut self, owner: Owner) -> Token {
        debug_assert!(
            !matches!(owner, Owner::Session(_)),
            "sessions use Tokens::session"
        );
        assert!(
            self.fixed.len() < SESSIONS,
            "more fixed registrations than tokens below sessions"
        );
        self.fixed.push(owner);
        Token(self.fixed.len() - 1)
    }

    /// The token of the session with slab key `key`.
    pub fn session(key: usize) -> Token {
        Token(SESSIONS + key)
    }

    /// Who `token` belongs to (None: never handed out).
    pub fn owner(&self, token: Token) -> Option<Owner> {
        match token.0.checked_sub(SESSIONS) {
            Some(key) => Some(Owner::Session(key)),
            None => self.fixed.get(token.0).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_maps_back_to_its_owner() {
        let mut t = Tokens::default();
        let owners = [
            Owner::Signals,
            Owner::Waker,
            Owner::SubscriberListener,
            Owner::PublisherListener,
            Owner::Rerequest,
            Owner::FeedLine { feed: 0, line: 0 },
            Owner::FeedLine { feed: 0, line: 1 },
            Owner::FeedLine { feed: 7, line: 2 },
        ];
        let tokens: Vec<Token> = owners.iter().map(|o| t.add(*o)).collect();
        for (token, owner) in tokens.iter().zip(owners) {
            assert_eq!(t.owner(*token), Some(owner));
        }
        for key in [0, 1, 1023, 1 << 19] {
            assert_eq!(t.owner(Tokens::session(key)), Some(Owner::Session(key)));
        }
        assert_eq!(t.owner(Token(owners.len())), None, "not handed out");
    }
}
