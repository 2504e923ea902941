//! `Primary::check_invariants`: what the rest of the state machine relies
//! on, asserted after every handler in debug builds (and by the simulator
//! after every step).
//!
//! Apart from `Primary` so that the list can be read (and extended) in one
//! place; each check names the code that relies on it.

use std::collections::BTreeSet;

use crate::repl::limits::{DIGESTS_HELD_MAX, INVARIANT_WALK_LEN_MAX};
use crate::repl::primary::session::{Phase, Session, SessionId};
use crate::repl::primary::Primary;

impl Primary {
    /// Asserts the state machine's invariants; a no-op in release builds.
    /// Called at the end of every handler; drivers and tests may call it
    /// at any time between calls. It panics, naming the invariant, when one
    /// does not hold:
    ///
    /// - the history's epochs strictly rise and its starts never fall;
    /// - the backlog's LSNs are consecutive and none is past the head;
    /// - the sync watermark is at most the head, and the sync commits
    ///   waiting are past it, in rising LSN order, none past the head;
    /// - every session has acknowledged at most what it was sent
    ///   (`acked <= sent`), and a session past its handshake was sent at
    ///   most the head, or else exactly the LSN its snapshot was read at
    ///   (a copy read ahead of the head);
    /// - a degraded session's `degraded_at` is at most the head (it can
    ///   recover by acknowledging what it is sent);
    /// - digests held for a session stay within `DIGESTS_HELD_MAX`;
    /// - the snapshot cursor stands within the databases its secondary
    ///   knows (at the end exactly once `end` is set), its gaps and the
    ///   blocks it sent lie behind it, and every block sent is counted;
    /// - a node has at most one session past its handshake (`hello` closes
    ///   the older ones), and session ids are below `next_session`.
    ///
    /// Cost: O(sessions + history), plus O(backlog) and O(blocks sent by a
    /// snapshot) while those are at most `INVARIANT_WALK_LEN_MAX` long.
    pub fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        self.history.check_invariants();
        self.backlog
            .check_invariants(self.head, INVARIANT_WALK_LEN_MAX);
        assert!(
            self.sync_acked <= self.head,
            "sync watermark {} past the head {}",
            self.sync_acked,
            self.head
        );
        let mut behind = self.sync_acked;
        for &(lsn, _) in &self.sync_waits {
            assert!(
                lsn > behind && lsn <= self.head,
                "sync wait at {lsn} out of order (after {behind}, watermark {}, head {})",
                self.sync_acked,
                self.head
            );
            behind = lsn;
        }
        let mut live_nodes = BTreeSet::new();
        for (&id, s) in &self.sessions {
            assert!(
                id.0 < self.next_session,
                "session {id:?} not issued yet (next {})",
                self.next_session
            );
            self.check_session(id, s, true);
            if !matches!(s.phase, Phase::AwaitHello) {
                let node = s.node.expect("a session past its hello names its node");
                assert!(
                    live_nodes.insert(node),
                    "node {node:?} has two sessions past their hello"
                );
            }
        }
    }

    /// The per-session part of `check_invariants`, for one session (after
    /// `poll_transmit` served it). `deep` adds the O(blocks sent) checks
    /// of a snapshot cursor.
    pub(super) fn check_session_invariants(&self, id: SessionId, deep: bool) {
        if !cfg!(debug_assertions) {
            return;
        }
        if let Some(s) = self.sessions.get(&id) {
            self.check_session(id, s, deep);
        }
    }

    fn check_session(&self, id: SessionId, s: &Session, deep: bool) {
        assert!(
            s.acked <= s.sent,
            "session {id:?} acked {} but was sent only {}",
            s.acked,
            s.sent
        );
        match &s.phase {
            Phase::AwaitHello => {}
            Phase::AwaitDigests(theirs) => assert!(
                theirs.len() <= DIGESTS_HELD_MAX,
                "session {id:?} holds {} digests",
                theirs.len()
            ),
            Phase::Snapshot(_) | Phase::Streaming => {
                assert!(
                    s.sent <= self.head || s.sent == s.copied_at,
                    "session {id:?} sent {}, past the head {} (its copy was read at {})",
                    s.sent,
                    self.head,
                    s.copied_at
                );
                assert!(
                    !s.degraded || s.degraded_at <= self.head,
                    "session {id:?} degraded until {}, past the head {}",
                    s.degraded_at,
                    self.head
                );
            }
        }
        if let Phase::Snapshot(cursor) = &s.phase {
            cursor.check_invariants(deep);
        }
    }
}
