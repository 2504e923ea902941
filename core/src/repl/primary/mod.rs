//! The primary side of replication, as a state machine without I/O.
//!
//! One `Primary` serves every secondary session of a node. The driver (a
//! socket runtime, or the simulator) calls:
//!
//! 1. `Primary::new(engine, history, config)` once;
//! 2. then, in any order, as things happen:
//!    - `connect(now)` when a secondary connects (it returns the session's
//!      id), `disconnect(session)` when its connection ends, including
//!      after a `PrimaryEvent::Close` for it;
//!    - `on_commit(now, delta, sync)` after each local commit, in LSN order
//!      (the commit hand-off: the engine may be ahead of it);
//!    - `handle_frame(now, session, frame)` for each frame a secondary sent;
//!    - `handle_timeout(now)` whenever `poll_timeout()` is reached;
//!    - `set_paused(session, paused)` as the session's send buffer fills
//!      and drains;
//! 3. and after each of those drains `poll_transmit(now)` (frames to send,
//!    per session) and `poll_event()` (sync progress, sessions to close,
//!    fencing), then sleeps until `poll_timeout()` or the next input.
//!
//! Between rounds it may ask `accepts_writes(now)`, `is_fenced()`,
//! `acked_lsns()` and `status(now)`, and tell `fence(epoch)`,
//! `verify_now(now)`; a relay also `set_history`, `set_available` and
//! `reset`. Time is always passed in; nothing here reads a clock.
//!
//! Sessions are cursors into the backlog: a streaming session sends the
//! deltas after the last one it sent, whether it is catching up or live. A
//! session too far behind for the backlog gets a snapshot of the blocks,
//! taken without stopping writers: blocks are sent one by one while commits
//! go on, and each commit is forwarded only for the blocks already sent
//! (and only if newer than the copy sent), so the secondary reaches the
//! state of one LSN once it has applied everything up to `SnapshotEnd`.
//!
//! # The controller's head
//!
//! `Primary::head` is the last LSN handed to `on_commit`: what the backlog
//! can serve, and what every decision about "how far this controller has
//! got" uses (partial or full resync, `Online`, sync watermarks,
//! degradation). The engine's live LSN (`engine.lsn()`) runs ahead of it
//! while commits are on their way, and is read only where the engine
//! itself is the subject:
//!
//! - at construction and at `reset`, where the controller starts from the
//!   engine's log;
//! - at a consistent point, to read blocks (a snapshot's start and its
//!   blocks, verification digests): their LSN is the engine's, and may be
//!   ahead of the head (a session's `sent` then is too, see `Session`);
//! - in `status`, whose `lag_lsn` is the lag behind the engine (what
//!   clients wrote), as `INFO` shows it.
//!
//! # Files
//!
//! - `config.rs`: `PrimaryConfig` and `SyncPolicy`;
//! - `session.rs`: a secondary's session, the handshake (`Hello`) and what
//!   sessions report (`status`, `acked_lsns`);
//! - `stream.rs`: forwarding the backlog's deltas to a session;
//! - `snapshot.rs`: the digests exchange and the snapshot cursor;
//! - `sync.rs`: acknowledgements, the sync quorum, degradation and the
//!   gating of writes;
//! - `verify.rs`: sending block digests to caught-up secondaries;
//! - `invariants.rs`: `check_invariants`.

mod config;
mod invariants;
mod session;
mod snapshot;
mod stream;
mod sync;
#[cfg(test)]
mod tests;
mod verify;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use crate::delta::Delta;
use crate::engine::Engine;
use crate::ids::Lsn;
use crate::repl::backlog::Backlog;
use crate::repl::frame::{ErrorCode, Frame, Message};
use crate::repl::history::{Epoch, EpochHistory};

pub use config::{PrimaryConfig, SyncPolicy};
pub use session::{SessionId, SessionStatus};

use session::{Phase, Session};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrimaryEvent {
    /// Every commit up to this LSN is acknowledged by the sync quorum (or,
    /// degraded, needs no acknowledgement).
    SyncAcked(Lsn),
    /// Commits up to this LSN waited past the sync timeout under the `Block`
    /// policy: their outcome is unknown to their clients.
    SyncTimedOut(Lsn),
    /// A sync session was degraded to async (policy `Degrade`), or recovered.
    Degraded { session: SessionId, degraded: bool },
    /// A session finished catching up and streams live.
    Online(SessionId),
    /// The driver should close this session's connection.
    Close { session: SessionId, reason: String },
    /// A peer runs a newer epoch: this node is no longer the primary and
    /// must stop accepting writes.
    Fenced(Epoch),
}

#[derive(Debug)]
pub struct Primary {
    engine: Engine,
    history: EpochHistory,
    config: PrimaryConfig,
    backlog: Backlog,
    sessions: BTreeMap<SessionId, Session>,
    next_session: u64,
    /// Sync commits waiting for acknowledgements: LSN → deadline.
    sync_waits: VecDeque<(Lsn, Instant)>,
    /// Highest LSN known acknowledged by the quorum (at most `head`).
    sync_acked: Lsn,
    events: VecDeque<PrimaryEvent>,
    /// A newer epoch was seen: writes are refused. The source of truth;
    /// drivers keep copies (for their writers' threads) that follow it
    /// through `PrimaryEvent::Fenced` and `is_fenced`.
    fenced: bool,
    /// The session served last by `poll_transmit`, so the next call starts
    /// after it (round robin: a snapshot does not starve live sessions).
    last_served: SessionId,
    /// False while a relay's own copy is loading: it serves nobody then.
    available: bool,
    /// The last LSN given to `on_commit` (or the engine's when this
    /// controller started): what the backlog can serve up to. The engine
    /// may be ahead, with commits not yet handed over. See the module doc.
    head: Lsn,
}

impl Primary {
    /// Serves `engine`'s commits, under `history` (whose current epoch is
    /// this primary's).
    pub fn new(engine: Engine, history: EpochHistory, config: PrimaryConfig) -> Self {
        // The controller starts from the engine's log: one of the places
        // the engine's LSN is read (see the module doc).
        let lsn = engine.lsn();
        let primary = Primary {
            engine,
            history,
            backlog: Backlog::new(config.backlog_bytes_max),
            config,
            sessions: BTreeMap::new(),
            next_session: 1,
            sync_waits: VecDeque::new(),
            sync_acked: lsn,
            events: VecDeque::new(),
            fenced: false,
            last_served: SessionId(0),
            available: true,
            head: lsn,
        };
        primary.check_invariants();
        primary
    }

    pub fn epoch(&self) -> Epoch {
        self.history.current()
    }

    /// A relay (a secondary serving its own secondaries) follows its
    /// upstream's history: frames downstream carry the upstream's epoch.
    pub fn set_history(&mut self, history: EpochHistory) {
        if history != self.history {
            self.history = history;
            let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
            for id in ids {
                self.close(id, "the upstream history changed");
            }
        }
        self.check_invariants();
    }

    /// A relay's copy is whole again (or not): it serves secondaries only
    /// then.
    pub fn set_available(&mut self, available: bool) {
        if available && !self.available {
            // Whole again at the engine's LSN: a snapshot loaded into the
            // relay's engine without deltas through the commit hook, so the
            // head set at `reset` is behind it. Left there, a secondary at
            // that old LSN would be told to stream from a log that never
            // comes (seen: `a_daisy_chained_secondary_converges_through_its_relay`
            // stuck at LSN 0 about one run in two).
            let lsn = self.engine.lsn();
            if lsn > self.head {
                self.head = lsn;
                self.sync_acked = self.sync_acked.max(lsn);
            }
        }
        self.available = available;
        self.check_invariants();
    }

    /// The engine's log restarted under this controller (a relay loading a
    /// snapshot): the backlog no longer continues it, and every session
    /// starts over.
    pub fn reset(&mut self) {
        self.available = false;
        self.backlog = Backlog::new(self.config.backlog_bytes_max);
        self.sync_waits.clear();
        // The controller starts over from the engine's (new) log: one of
        // the places the engine's LSN is read (see the module doc).
        let lsn = self.engine.lsn();
        self.sync_acked = lsn;
        self.head = lsn;
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close(id, "the relay is resyncing");
        }
        self.check_invariants();
    }

    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Learns of a newer epoch from outside a session (a promoted node's
    /// answer to its notice, or a fencing kept on disk): fenced from now on.
    pub fn fence(&mut self, epoch: Epoch) {
        if epoch > self.epoch() && !self.fenced {
            self.fenced = true;
            self.events.push_back(PrimaryEvent::Fenced(epoch));
        }
    }

    /// Whether a newer epoch was seen: writes must be refused. This is the
    /// fencing's source of truth (see the `fenced` field).
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// A session showed a newer epoch: fenced from now on. Unlike `fence`,
    /// every such sighting is reported, each closing its session.
    fn fenced_by(&mut self, epoch: Epoch) {
        self.fenced = true;
        self.events.push_back(PrimaryEvent::Fenced(epoch));
    }

    /// Records a local commit (the commit hand-off). With `sync`, the commit
    /// waits for the quorum: watch for `SyncAcked` (or `SyncTimedOut`)
    /// covering its LSN.
    pub fn on_commit(&mut self, now: Instant, delta: Delta, sync: bool) {
        let lsn = delta.lsn();
        self.head = self.head.max(lsn);
        self.backlog.push(delta, now);
        self.sync_commit(now, lsn, sync);
        // Sessions that lost the LSN they need from the backlog start over.
        let first = self.backlog.first().unwrap_or(lsn);
        let lost: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                matches!(s.phase, Phase::Streaming | Phase::Snapshot(_)) && s.sent.next() < first
            })
            .map(|(id, _)| *id)
            .collect();
        for session in lost {
            self.close(session, "fell behind the backlog; reconnect to resync");
        }
        self.check_invariants();
    }

    pub fn handle_frame(&mut self, now: Instant, session: SessionId, frame: Frame) {
        self.frame(now, session, frame);
        self.check_invariants();
    }

    /// `handle_frame`, less the invariant check: checks the frame's sequence
    /// number and epoch, then hands its message to the part of the state
    /// machine it is for.
    fn frame(&mut self, now: Instant, session: SessionId, frame: Frame) {
        let current = self.epoch();
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.last_heard = now;
        if frame.seq != s.seq_in {
            self.close(session, "frame lost, repeated or reordered");
            return;
        }
        s.seq_in += 1;
        if frame.epoch > current {
            self.fenced_by(frame.epoch);
            self.refuse(
                session,
                ErrorCode::Fenced,
                "fenced: the peer runs a newer epoch",
            );
            return;
        }
        match frame.message {
            Message::Hello {
                node,
                lsn,
                mode,
                history,
                databases,
            } => {
                s.subscription = (!databases.is_empty()).then(|| databases.into_iter().collect());
                self.hello(now, session, node, lsn, mode, history)
            }
            _ if frame.epoch < current => {
                self.refuse(session, ErrorCode::StaleEpoch, "frame from an older epoch");
            }
            Message::Ack { lsn } => self.ack(now, session, lsn),
            // A secondary loading a snapshot says it is alive this way (an
            // ack would count for sync before its copy is whole).
            Message::Heartbeat { .. } => {}
            Message::BlockDigests { db, entries } => self.block_digests(session, db, entries),
            Message::DigestsEnd => self.digests_end(session),
            Message::Error { .. } => self.close(session, "peer reported an error"),
            _ => self.refuse(
                session,
                ErrorCode::Protocol,
                "unexpected frame from a secondary",
            ),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let mut silent = Vec::new();
        for (id, s) in &mut self.sessions {
            if now.saturating_duration_since(s.last_heard) >= self.config.session_timeout {
                silent.push(*id);
            } else if matches!(s.phase, Phase::Streaming)
                && s.queue.is_empty()
                && now.saturating_duration_since(s.last_sent) >= self.config.heartbeat_interval
            {
                s.queue.push_back(Frame::new(
                    self.history.current(),
                    Message::Heartbeat { lsn: s.sent },
                ));
                s.last_sent = now;
            }
        }
        for id in silent {
            self.close(id, "secondary silent past the session timeout");
        }
        if let Some(interval) = self.config.verify_interval {
            self.send_verification(now, interval);
        }
        self.update_sync(Some(now));
        self.check_invariants();
    }

    /// The next instant `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.sessions.values().flat_map(|s| {
            // Only streaming sessions get heartbeats; others would make this
            // instant lie in the past until they stream.
            let heartbeat = matches!(s.phase, Phase::Streaming)
                .then(|| s.last_sent + self.config.heartbeat_interval);
            let verify = self
                .config
                .verify_interval
                .filter(|_| matches!(s.phase, Phase::Streaming));
            let heartbeat = match (heartbeat, verify) {
                (Some(h), Some(v)) => Some(h.min(s.last_verified + v)),
                (h, _) => h,
            };
            [Some(s.last_heard + self.config.session_timeout), heartbeat]
                .into_iter()
                .flatten()
        });
        sessions.chain(self.sync_waits.front().map(|w| w.1)).min()
    }

    /// Holds back (or releases) a session's frames while the driver's send
    /// buffer for it is full, so a slow secondary bounds the memory it costs.
    pub fn set_paused(&mut self, session: SessionId, paused: bool) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.paused = paused;
        }
    }

    /// The next frame to send, and to which session. Sessions take turns.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SessionId, Frame)> {
        let after = self.last_served;
        let ids: Vec<SessionId> = self
            .sessions
            .range(SessionId(after.0 + 1)..)
            .chain(self.sessions.range(..=after))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(mut frame) = self.next_frame(id) {
                let s = self.sessions.get_mut(&id).expect("listed");
                s.last_sent = now;
                frame.seq = s.seq_out;
                s.seq_out += 1;
                self.last_served = id;
                // Only the session served: checking everything on every
                // frame would make a snapshot quadratic.
                self.check_session_invariants(id, false);
                return Some((id, frame));
            }
        }
        None
    }

    /// The next frame for one session: its queue first, then the next
    /// delta of the backlog (`stream.rs`), then the snapshot's next block
    /// (`snapshot.rs`).
    fn next_frame(&mut self, id: SessionId) -> Option<Frame> {
        let epoch = self.history.current();
        let head = self.head;
        let s = self.sessions.get_mut(&id)?;
        if s.paused {
            return None;
        }
        if let Some(frame) = s.queue.pop_front() {
            return Some(frame);
        }
        // A snapshot is over once every delta up to its end is forwarded:
        // until then deltas stay filtered against the copies sent.
        if let Phase::Snapshot(cursor) = &s.phase {
            if cursor.end.is_some_and(|end| s.sent >= end) {
                s.phase = Phase::Streaming;
            }
        }
        // Caught up with everything this controller was handed (a session
        // whose snapshot was read ahead of the head is past it already).
        if matches!(s.phase, Phase::Streaming) && !s.online && s.sent >= head {
            s.online = true;
            self.events.push_back(PrimaryEvent::Online(id));
        }
        if let Some(frame) = s.next_delta(&self.backlog, &self.engine, epoch) {
            return Some(frame);
        }
        match &mut s.phase {
            Phase::Snapshot(cursor) => cursor.next_frame(&self.engine, &s.subscription, epoch),
            _ => None,
        }
    }

    pub fn poll_event(&mut self) -> Option<PrimaryEvent> {
        self.events.pop_front()
    }

    fn refuse(&mut self, session: SessionId, code: ErrorCode, message: &str) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.queue.push_back(Frame::new(
                self.history.current(),
                Message::Error {
                    code,
                    message: message.into(),
                },
            ));
        }
        self.close(session, message);
    }

    fn close(&mut self, session: SessionId, reason: &str) {
        // The session stays until the driver has sent its queue and calls
        // `disconnect`; it stops counting for sync meanwhile.
        if let Some(s) = self.sessions.get_mut(&session) {
            s.phase = Phase::AwaitHello;
            s.degraded = true;
            self.events.push_back(PrimaryEvent::Close {
                session,
                reason: reason.into(),
            });
        }
        self.update_sync(None);
    }
}
