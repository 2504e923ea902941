//! A secondary's session on the primary: its state, its lifecycle
//! (`connect`, the `Hello` handshake, `disconnect`) and what sessions
//! report (`status`, `acked_lsns`).
//!
//! Apart from `Primary` so that the handshake's decision, partial resync
//! (stream from the backlog) or full resync (snapshot), and the fields it
//! sets up for the rest of the state machine can be read in one place.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use crate::ids::{BlockId, DbId, Lsn};
use crate::repl::frame::{CatchUp, ErrorCode, Frame, Message, Mode};
use crate::repl::history::EpochHistory;
use crate::repl::primary::snapshot::SnapshotCursor;
use crate::repl::primary::Primary;
use crate::repl::NodeId;

/// One connection from a secondary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

/// What `status()` says about one session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    pub session: SessionId,
    pub node: Option<NodeId>,
    pub mode: Mode,
    /// `online`, `resync` or `degraded`.
    pub state: &'static str,
    pub acked_lsn: Lsn,
    pub lag_lsn: u64,
    /// Age of the oldest commit this secondary has not acknowledged.
    pub lag_ms: u64,
    pub unacked_bytes: usize,
}

#[derive(Debug)]
pub(super) enum Phase {
    /// Before the `Hello`, and again once the session is closed (it then
    /// waits for the driver's `disconnect`).
    AwaitHello,
    /// Gathering the block digests of a secondary about to be snapshotted.
    AwaitDigests(HashMap<(DbId, BlockId), u64>),
    Snapshot(Box<SnapshotCursor>),
    Streaming,
}

#[derive(Debug)]
pub(super) struct Session {
    pub(super) node: Option<NodeId>,
    pub(super) mode: Mode,
    pub(super) phase: Phase,
    /// Last LSN whose frames were queued. At most the controller's head,
    /// except right after a snapshot read ahead of it: then `copied_at`
    /// until the head catches up (deltas forwarded come from the backlog).
    pub(super) sent: Lsn,
    /// The LSN the session's last snapshot copy was read at (`ZERO`: none).
    pub(super) copied_at: Lsn,
    /// Highest LSN the secondary acknowledged: at most `sent`.
    pub(super) acked: Lsn,
    pub(super) degraded: bool,
    /// The head LSN when the session was degraded: it counts for sync again
    /// once it has acknowledged that far.
    pub(super) degraded_at: Lsn,
    /// The driver's send buffer for this session is full: produce nothing.
    pub(super) paused: bool,
    /// `Online` was reported for this session.
    pub(super) online: bool,
    pub(super) last_heard: Instant,
    pub(super) last_sent: Instant,
    pub(super) queue: VecDeque<Frame>,
    /// Sequence numbers of the next frame out and the next frame expected.
    pub(super) seq_out: u64,
    pub(super) seq_in: u64,
    /// The databases this secondary replicates (by name); `None`: all.
    /// Transactions of the others reach it empty, so its LSNs follow ours.
    pub(super) subscription: Option<BTreeSet<String>>,
    /// When the secondary was last sent digests to verify its blocks.
    pub(super) last_verified: Instant,
}

/// Whether a session with `subscription` replicates the database `name`.
pub(super) fn subscribed(subscription: &Option<BTreeSet<String>>, name: &str) -> bool {
    subscription
        .as_ref()
        .is_none_or(|names| names.contains(name))
}

impl Primary {
    pub fn connect(&mut self, now: Instant) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        self.sessions.insert(
            id,
            Session {
                node: None,
                mode: Mode::Async,
                phase: Phase::AwaitHello,
                sent: Lsn::ZERO,
                copied_at: Lsn::ZERO,
                acked: Lsn::ZERO,
                degraded: false,
                degraded_at: Lsn::ZERO,
                paused: false,
                online: false,
                last_heard: now,
                last_sent: now,
                queue: VecDeque::new(),
                seq_out: 0,
                seq_in: 0,
                subscription: None,
                last_verified: now,
            },
        );
        self.check_invariants();
        id
    }

    pub fn disconnect(&mut self, session: SessionId) {
        self.sessions.remove(&session);
        self.update_sync(None);
        self.check_invariants();
    }

    /// The handshake: a secondary at `lsn` under history `peer` either
    /// streams from the backlog (its log is a prefix of ours and the
    /// backlog still holds everything after it) or gets a snapshot, after
    /// sending the digests of the blocks it holds.
    pub(super) fn hello(
        &mut self,
        now: Instant,
        session: SessionId,
        node: NodeId,
        lsn: Lsn,
        mode: Mode,
        peer: EpochHistory,
    ) {
        // Not the engine's LSN: commits it made that this controller has
        // not been given yet are not in the backlog, and must not turn a
        // partial resync into a full one.
        let head = self.head;
        let epoch = self.epoch();
        if peer.current() > epoch {
            self.fenced_by(peer.current());
            self.refuse(
                session,
                ErrorCode::Fenced,
                "fenced: the peer knows a newer epoch",
            );
            return;
        }
        if !self.available {
            self.refuse(
                session,
                ErrorCode::Other,
                "resyncing from upstream; try again later",
            );
            return;
        }
        // A node counts once: an older session of the same node (a
        // half-open connection it already left) is closed.
        let stale: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(id, s)| **id != session && s.node == Some(node))
            .map(|(id, _)| *id)
            .collect();
        for old in stale {
            self.close(old, "the same node connected again");
        }
        let shared = self.history.common_prefix(&peer, lsn);
        let stream = shared == Some(lsn) && lsn <= head && self.backlog.covers_after(lsn, head);
        let s = self.sessions.get_mut(&session).expect("caller checked");
        if !matches!(s.phase, Phase::AwaitHello) {
            self.refuse(session, ErrorCode::Protocol, "hello twice");
            return;
        }
        s.node = Some(node);
        s.mode = mode;
        s.last_sent = now;
        let catch_up = if stream {
            CatchUp::Stream
        } else {
            CatchUp::Snapshot
        };
        s.queue.push_back(Frame::new(
            epoch,
            Message::Welcome {
                lsn: head,
                catch_up,
                history: self.history.clone(),
            },
        ));
        if stream {
            s.sent = lsn;
            s.acked = lsn;
            s.phase = Phase::Streaming;
        } else {
            // The secondary first says which blocks it holds (its digests),
            // so that the snapshot sends only those that differ.
            s.acked = Lsn::ZERO;
            s.phase = Phase::AwaitDigests(HashMap::new());
        }
    }

    /// The acknowledged LSN of every streaming secondary, by node (for
    /// `WAIT`, and a switchover waiting for its target): cheap enough to
    /// ask after every round.
    pub fn acked_lsns(&self) -> Vec<(NodeId, Lsn)> {
        self.sessions
            .values()
            .filter(|s| matches!(s.phase, Phase::Streaming))
            .filter_map(|s| Some((s.node?, s.acked)))
            .collect()
    }

    /// Per-session replication state, for `INFO replication`.
    pub fn status(&self, now: Instant) -> Vec<SessionStatus> {
        // `lag_lsn` is the lag behind the engine, what clients wrote (so a
        // commit not yet handed to this controller counts); the age of the
        // oldest unacknowledged commit only covers commits handed over.
        let engine_lsn = self.engine.lsn();
        self.sessions
            .iter()
            .filter(|(_, s)| s.node.is_some())
            .map(|(id, s)| {
                let oldest_unacked = (s.acked < self.head)
                    .then(|| self.oldest_unacked(s.acked))
                    .flatten();
                SessionStatus {
                    session: *id,
                    node: s.node,
                    mode: s.mode,
                    state: match (&s.phase, s.degraded) {
                        (Phase::Streaming, false) => "online",
                        (Phase::Streaming, true) => "degraded",
                        _ => "resync",
                    },
                    acked_lsn: s.acked,
                    lag_lsn: engine_lsn.0.saturating_sub(s.acked.0),
                    lag_ms: oldest_unacked
                        .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
                    unacked_bytes: self.backlog.bytes_after(s.acked),
                }
            })
            .collect()
    }
}
