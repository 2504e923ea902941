//! The primary side of replication, as a state machine without I/O.
//!
//! One `Primary` serves every secondary session of a node. The driver (a
//! socket runtime, or the simulator) calls, in any order:
//!
//! - `connect(now)` when a secondary connects, `disconnect(session)` when its
//!   connection ends;
//! - `on_commit(now, delta, sync)` after each local commit, in LSN order;
//! - `handle_frame(now, session, frame)` for each frame a secondary sent;
//! - `handle_timeout(now)` whenever `poll_timeout()` is reached;
//!
//! and after each call drains `poll_transmit()` (frames to send, per
//! session) and `poll_event()` (sync progress, sessions to close, fencing).
//! Time is always passed in; nothing here reads a clock.
//!
//! Sessions are cursors into the backlog: a streaming session sends the
//! deltas after the last one it sent, whether it is catching up or live. A
//! session too far behind for the backlog gets a snapshot of the blocks,
//! taken without stopping writers: blocks are sent one by one while commits
//! go on, and each commit is forwarded only for the blocks already sent
//! (and only if newer than the copy sent), so the secondary reaches the
//! state of one LSN once it has applied everything up to `SnapshotEnd`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::delta::{Delta, DeltaOp};
use crate::engine::Engine;
use crate::ids::{BlockId, DbId, Lsn};
use crate::repl::backlog::Backlog;
use crate::repl::frame::{CatchUp, ErrorCode, Frame, Message, Mode};
use crate::repl::history::{Epoch, EpochHistory};
use crate::repl::NodeId;

/// What a sync commit does when its acknowledgements do not come in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// The commit fails with "outcome unknown"; sync secondaries stay sync.
    Block,
    /// Late sync secondaries are degraded to async until they catch up, and
    /// commits stop waiting for them.
    Degrade,
}

#[derive(Clone, Debug)]
pub struct PrimaryConfig {
    /// Bytes of recent deltas kept for partial resync.
    pub backlog_bytes_max: usize,
    /// A session with nothing to send gets a heartbeat this often.
    pub heartbeat_interval: Duration,
    /// A session silent this long is closed.
    pub session_timeout: Duration,
    /// Sync secondaries that must acknowledge a commit; 0 (the default):
    /// commits never wait, whatever the secondaries ask for.
    pub sync_quorum: usize,
    pub sync_timeout: Duration,
    pub on_sync_timeout: SyncPolicy,
    /// Writes are refused while fewer than this many secondaries are
    /// current: online, with no commit older than `max_lag` unacknowledged
    /// (as Redis's `min-replicas-to-write`). 0: never refused.
    pub min_secondaries: usize,
    pub max_lag: Duration,
    /// How often a caught-up secondary is sent the digests of every block at
    /// the LSN it has reached, to compare with its own (silent divergence:
    /// a byte changed in its memory). `None`: never.
    pub verify_interval: Option<Duration>,
}

impl Default for PrimaryConfig {
    fn default() -> Self {
        PrimaryConfig {
            backlog_bytes_max: 64 << 20,
            heartbeat_interval: Duration::from_millis(100),
            session_timeout: Duration::from_secs(2),
            sync_quorum: 0,
            sync_timeout: Duration::from_secs(1),
            on_sync_timeout: SyncPolicy::Block,
            min_secondaries: 0,
            max_lag: Duration::from_secs(10),
            verify_interval: None,
        }
    }
}

/// One connection from a secondary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

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
enum Phase {
    AwaitHello,
    /// Gathering the block digests of a secondary about to be snapshotted.
    AwaitDigests(HashMap<(DbId, BlockId), u64>),
    Snapshot(Box<SnapshotCursor>),
    Streaming,
}

/// Most block digests held for one secondary: the blocks of 16 databases at
/// their limit. A secondary claiming more is refused.
const DIGESTS_HELD_MAX: usize = 16 * crate::constants::BLOCKS_PER_DB_MAX;

/// A position in (database, block) order.
type Position = (u32, u32);
/// `[from, to)` seen empty at an LSN.
type Gap = (Position, Position, Lsn);

#[derive(Debug)]
struct SnapshotCursor {
    /// Next block to send: databases in id order, blocks in id order.
    db: u32,
    block: u32,
    /// Header LSN of each block sent: deltas at or below it are in the copy.
    sent: HashMap<(DbId, BlockId), Lsn>,
    /// Ranges of (database, block) the cursor passed with no block there,
    /// and the LSN they were seen empty at: later deltas there are needed.
    gaps: Vec<Gap>,
    /// Databases the secondary knows of (from `SnapshotBegin` and forwarded
    /// `DbCreate`s): blocks of later ones wait until their creation is sent.
    dbs_known: u32,
    /// Digests of the blocks the secondary holds: equal ones are not sent.
    theirs: HashMap<(DbId, BlockId), u64>,
    blocks_sent: u64,
    blocks_same: u64,
    /// Set once every block is sent: the LSN the copy is consistent at.
    end: Option<Lsn>,
}

#[derive(Debug)]
struct Session {
    node: Option<NodeId>,
    mode: Mode,
    phase: Phase,
    /// Last LSN whose frames were queued.
    sent: Lsn,
    acked: Lsn,
    degraded: bool,
    /// The head LSN when the session was degraded: it counts for sync again
    /// once it has acknowledged that far.
    degraded_at: Lsn,
    /// The driver's send buffer for this session is full: produce nothing.
    paused: bool,
    /// `Online` was reported for this session.
    online: bool,
    last_heard: Instant,
    last_sent: Instant,
    queue: VecDeque<Frame>,
    /// Sequence numbers of the next frame out and the next frame expected.
    seq_out: u64,
    seq_in: u64,
    /// The databases this secondary replicates (by name); `None`: all.
    /// Transactions of the others reach it empty, so its LSNs follow ours.
    subscription: Option<BTreeSet<String>>,
    /// When the secondary was last sent digests to verify its blocks.
    last_verified: Instant,
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
    /// Highest LSN known acknowledged by the quorum.
    sync_acked: Lsn,
    events: VecDeque<PrimaryEvent>,
    fenced: bool,
    /// The session served last by `poll_transmit`, so the next call starts
    /// after it (round robin: a snapshot does not starve live sessions).
    last_served: SessionId,
    /// False while a relay's own copy is loading: it serves nobody then.
    available: bool,
    /// The last LSN given to `on_commit` (or the engine's when this
    /// controller started): what the backlog can serve up to. The engine
    /// may be ahead, with commits not yet handed over.
    head: Lsn,
}

impl Primary {
    /// Serves `engine`'s commits, under `history` (whose current epoch is
    /// this primary's).
    pub fn new(engine: Engine, history: EpochHistory, config: PrimaryConfig) -> Self {
        let lsn = engine.lsn();
        Primary {
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
        }
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
    }

    /// A relay's copy is whole again (or not): it serves secondaries only
    /// then.
    pub fn set_available(&mut self, available: bool) {
        self.available = available;
    }

    /// The engine's log restarted under this controller (a relay loading a
    /// snapshot): the backlog no longer continues it, and every session
    /// starts over.
    pub fn reset(&mut self) {
        self.available = false;
        self.backlog = Backlog::new(self.config.backlog_bytes_max);
        self.sync_waits.clear();
        self.sync_acked = self.engine.lsn();
        self.head = self.engine.lsn();
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close(id, "the relay is resyncing");
        }
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

    /// Whether a newer epoch was seen: writes must be refused.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }

    /// Highest LSN acknowledged by the sync quorum.
    pub fn sync_acked(&self) -> Lsn {
        self.sync_acked
    }

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
        id
    }

    pub fn disconnect(&mut self, session: SessionId) {
        self.sessions.remove(&session);
        self.update_sync(None);
    }

    /// Records a local commit. With `sync`, the commit waits for the quorum:
    /// watch for `SyncAcked` (or `SyncTimedOut`) covering its LSN.
    pub fn on_commit(&mut self, now: Instant, delta: Delta, sync: bool) {
        let lsn = delta.lsn();
        self.head = self.head.max(lsn);
        self.backlog.push(delta, now);
        if sync && self.config.sync_quorum > 0 {
            self.sync_waits
                .push_back((lsn, now + self.config.sync_timeout));
            self.update_sync(Some(now));
        } else if self.sync_waits.is_empty() && self.sync_acked < lsn && self.sync_exempt() {
            self.sync_acked = lsn;
        }
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
    }

    pub fn handle_frame(&mut self, now: Instant, session: SessionId, frame: Frame) {
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
            self.fenced = true;
            self.events.push_back(PrimaryEvent::Fenced(frame.epoch));
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
            Message::Ack { lsn } => {
                if lsn > s.sent || matches!(s.phase, Phase::AwaitHello) {
                    self.refuse(session, ErrorCode::Protocol, "ack for an LSN never sent");
                    return;
                }
                s.acked = s.acked.max(lsn);
                if s.degraded && matches!(s.phase, Phase::Streaming) && s.acked >= s.degraded_at {
                    s.degraded = false;
                    self.events.push_back(PrimaryEvent::Degraded {
                        session,
                        degraded: false,
                    });
                }
                self.update_sync(Some(now));
            }
            // A secondary loading a snapshot says it is alive this way (an
            // ack would count for sync before its copy is whole).
            Message::Heartbeat { .. } => {}
            Message::BlockDigests { db, entries } => {
                let Phase::AwaitDigests(theirs) = &mut s.phase else {
                    self.refuse(session, ErrorCode::Protocol, "block digests out of place");
                    return;
                };
                if theirs.len() + entries.len() > DIGESTS_HELD_MAX {
                    self.refuse(session, ErrorCode::Protocol, "too many block digests");
                    return;
                }
                theirs.extend(
                    entries
                        .into_iter()
                        .map(|(block, digest)| ((db, block), digest)),
                );
            }
            Message::DigestsEnd => {
                let Phase::AwaitDigests(theirs) = &mut s.phase else {
                    self.refuse(session, ErrorCode::Protocol, "digests end out of place");
                    return;
                };
                let theirs = std::mem::take(theirs);
                self.start_snapshot(session, theirs);
            }
            Message::Error { .. } => self.close(session, "peer reported an error"),
            _ => self.refuse(
                session,
                ErrorCode::Protocol,
                "unexpected frame from a secondary",
            ),
        }
    }

    fn hello(
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
            self.fenced = true;
            self.events.push_back(PrimaryEvent::Fenced(peer.current()));
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

    /// Starts a snapshot for `session`, skipping blocks whose digests
    /// `theirs` already matches.
    fn start_snapshot(&mut self, session: SessionId, theirs: HashMap<(DbId, BlockId), u64>) {
        let epoch = self.history.current();
        let subscription = self
            .sessions
            .get(&session)
            .and_then(|s| s.subscription.clone());
        // Schemas and the LSN they hold at, read at one consistent point.
        let (start, databases, blocks, dbs_known) = self.engine.at_consistent_point(|start| {
            let mut dbs = self.engine.databases();
            // Every database existing now is known, subscribed or not: the
            // cursor only waits for ones created later.
            let dbs_known = dbs.last().map_or(0, |d| d.id().0 + 1);
            dbs.retain(|db| subscribed(&subscription, db.name()));
            let ops: Vec<DeltaOp> = dbs
                .iter()
                .map(|db| {
                    let schema = db.schema();
                    DeltaOp::DbCreate {
                        db: schema.id,
                        name: schema.name.clone(),
                        block_size: schema.block_size as u32,
                        indexes: schema.indexes.clone(),
                    }
                })
                .collect();
            let blocks = dbs.iter().map(|db| db.stats().blocks).sum::<u64>();
            (start, ops, blocks, dbs_known)
        });
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.queue.push_back(Frame::new(
            epoch,
            Message::SnapshotBegin {
                lsn: start,
                blocks,
                databases,
            },
        ));
        s.sent = start;
        s.phase = Phase::Snapshot(Box::new(SnapshotCursor {
            db: 0,
            block: 0,
            sent: HashMap::new(),
            gaps: Vec::new(),
            dbs_known,
            theirs,
            blocks_sent: 0,
            blocks_same: 0,
            end: None,
        }));
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
    }

    /// Sends every caught-up secondary the digests of its blocks now (the
    /// `VERIFY` command), whatever `verify_interval` says. Returns how many
    /// were sent them: a secondary with frames still queued is skipped, as
    /// its blocks are not yet at a point the digests describe.
    pub fn verify_now(&mut self, now: Instant) -> usize {
        self.send_verification(now, Duration::ZERO)
    }

    /// Sends every caught-up secondary due for it the digests of its blocks
    /// at the LSN it has reached; it compares them with its own and resyncs
    /// on a difference. Returns how many were sent them.
    fn send_verification(&mut self, now: Instant, interval: Duration) -> usize {
        let mut sent = 0;
        let epoch = self.history.current();
        let engine = &self.engine;
        for s in self.sessions.values_mut() {
            if !matches!(s.phase, Phase::Streaming) || !s.queue.is_empty() || s.paused {
                continue;
            }
            if now.saturating_duration_since(s.last_verified) < interval {
                continue;
            }
            // Only a session sent everything up to the consistent point can
            // compare: its next frames follow exactly that state.
            let digests = engine.at_consistent_point(|at| {
                (at == s.sent).then(|| {
                    engine
                        .databases()
                        .iter()
                        .filter(|db| subscribed(&s.subscription, db.name()))
                        .map(|db| db.digest(|| at))
                        .collect::<Vec<_>>()
                })
            });
            let Some(digests) = digests else { continue };
            s.last_verified = now;
            sent += 1;
            for digest in digests {
                for chunk in digest
                    .blocks
                    .chunks(crate::repl::frame::DIGESTS_PER_FRAME_MAX)
                {
                    s.queue.push_back(Frame::new(
                        epoch,
                        Message::BlockDigests {
                            db: digest.db,
                            entries: chunk.to_vec(),
                        },
                    ));
                }
                if digest.blocks.is_empty() {
                    s.queue.push_back(Frame::new(
                        epoch,
                        Message::BlockDigests {
                            db: digest.db,
                            entries: vec![],
                        },
                    ));
                }
            }
            s.queue.push_back(Frame::new(epoch, Message::DigestsEnd));
        }
        sent
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
                return Some((id, frame));
            }
        }
        None
    }

    fn next_frame(&mut self, id: SessionId) -> Option<Frame> {
        let epoch = self.history.current();
        let head = self.engine.lsn();
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
        if matches!(s.phase, Phase::Streaming) && !s.online && s.sent == head {
            s.online = true;
            self.events.push_back(PrimaryEvent::Online(id));
        }
        // The next delta after the last one sent, if the backlog has it.
        if let Some(entry) = self.backlog.get(s.sent.next()) {
            let delta = match &mut s.phase {
                Phase::AwaitHello | Phase::AwaitDigests(_) => return None,
                Phase::Streaming => entry.delta.clone(),
                Phase::Snapshot(cursor) => cursor.filter(&entry.delta),
            };
            let delta = match wants(&self.engine, &s.subscription, &delta) {
                true => delta,
                false => Delta::from_ops(vec![
                    DeltaOp::TxnBegin { db: delta.db() },
                    DeltaOp::TxnCommit { lsn: delta.lsn() },
                ]),
            };
            s.sent = delta.lsn();
            s.queue.extend(
                delta
                    .ops()
                    .iter()
                    .cloned()
                    .map(|op| Frame::new(epoch, Message::Op(op))),
            );
            return s.queue.pop_front();
        }
        // Snapshot: the next block, then the end marker.
        let Phase::Snapshot(cursor) = &mut s.phase else {
            return None;
        };
        if cursor.end.is_some() {
            return None;
        }
        // Blocks are read at a consistent point `at`: each copy holds exactly
        // the commits up to `at`, and ids passed with no block were empty at
        // `at`; later commits there are forwarded (see `filter`).
        let (found, at, dbs_total) = self.engine.at_consistent_point(|at| {
            let found = next_block(
                &self.engine,
                cursor.db,
                cursor.block,
                cursor.dbs_known,
                &s.subscription,
            );
            (found, at, self.engine.databases().len() as u32)
        });
        match found {
            Some((db, block, bytes, lsn)) => {
                if (cursor.db, cursor.block) < (db.0, block.0) {
                    cursor
                        .gaps
                        .push(((cursor.db, cursor.block), (db.0, block.0), at));
                }
                cursor.sent.insert((db, block), lsn);
                cursor.db = db.0;
                cursor.block = block.0 + 1;
                if cursor.theirs.get(&(db, block)) == Some(&xxhash_rust::xxh3::xxh3_64(&bytes)) {
                    cursor.blocks_same += 1;
                    return Some(Frame::new(epoch, Message::BlockSame { db, block }));
                }
                cursor.blocks_sent += 1;
                Some(Frame::new(
                    epoch,
                    Message::SnapshotBlock {
                        db,
                        block,
                        bytes: bytes.into(),
                    },
                ))
            }
            None if dbs_total > cursor.dbs_known => {
                // A database created since the snapshot began: its blocks
                // follow once its creation has been forwarded.
                cursor
                    .gaps
                    .push(((cursor.db, cursor.block), (cursor.dbs_known, 0), at));
                (cursor.db, cursor.block) = (cursor.dbs_known, 0);
                None
            }
            None => {
                // The copy is whole at `at`: the secondary is consistent once
                // it has applied every delta up to it.
                cursor
                    .gaps
                    .push(((cursor.db, cursor.block), (u32::MAX, u32::MAX), at));
                (cursor.db, cursor.block) = (u32::MAX, u32::MAX);
                cursor.end = Some(at);
                Some(Frame::new(epoch, Message::SnapshotEnd { lsn: at }))
            }
        }
    }

    /// Whether writes may go ahead: false while fewer than
    /// `min_secondaries` secondaries are current (see `PrimaryConfig`), or
    /// once fenced.
    pub fn accepts_writes(&self, now: Instant) -> bool {
        if self.fenced {
            return false;
        }
        if self.config.min_secondaries == 0 {
            return true;
        }
        let current = self
            .sessions
            .values()
            .filter(|s| matches!(s.phase, Phase::Streaming))
            .filter(|s| {
                self.oldest_unacked(s.acked)
                    .is_none_or(|t| now.saturating_duration_since(t) <= self.config.max_lag)
            })
            .count();
        current >= self.config.min_secondaries
    }

    /// When the oldest commit after `acked` was made, as far as the backlog
    /// tells: if it no longer holds that commit, its oldest entry (a lower
    /// bound on the lag); if that commit has not reached this controller
    /// yet (the engine runs ahead of it), `None`: it is younger than
    /// anything here.
    fn oldest_unacked(&self, acked: Lsn) -> Option<Instant> {
        let next = acked.next();
        let entry = match self.backlog.first() {
            Some(first) if next < first => self.backlog.get(first),
            _ => self.backlog.get(next),
        };
        entry.map(|e| e.committed_at)
    }

    /// The acknowledged LSN of every streaming secondary (for `WAIT`): cheap
    /// enough to ask after every round.
    pub fn acked_lsns(&self) -> Vec<Lsn> {
        self.sessions
            .values()
            .filter(|s| s.node.is_some() && matches!(s.phase, Phase::Streaming))
            .map(|s| s.acked)
            .collect()
    }

    /// Per-session replication state, for `INFO replication`.
    pub fn status(&self, now: Instant) -> Vec<SessionStatus> {
        let head = self.engine.lsn();
        self.sessions
            .iter()
            .filter(|(_, s)| s.node.is_some())
            .map(|(id, s)| {
                let oldest_unacked = (s.acked < head)
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
                    lag_lsn: head.0.saturating_sub(s.acked.0),
                    lag_ms: oldest_unacked
                        .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
                    unacked_bytes: self.backlog.bytes_after(s.acked),
                }
            })
            .collect()
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

    /// Whether commits need no sync acknowledgement right now: the policy
    /// is `Degrade` and too few sync secondaries are online and current.
    fn sync_exempt(&self) -> bool {
        self.config.on_sync_timeout == SyncPolicy::Degrade
            && self.sync_voters().count() < self.config.sync_quorum
    }

    fn sync_voters(&self) -> impl Iterator<Item = &Session> {
        self.sessions
            .values()
            .filter(|s| s.mode == Mode::Sync && !s.degraded && matches!(s.phase, Phase::Streaming))
    }

    /// Recomputes the quorum watermark and settles waiting commits; with
    /// `now`, also applies the timeout policy.
    fn update_sync(&mut self, now: Option<Instant>) {
        let quorum = self.config.sync_quorum.max(1);
        let mut acks: Vec<Lsn> = self.sync_voters().map(|s| s.acked).collect();
        acks.sort_unstable_by(|a, b| b.cmp(a));
        let mut watermark = acks.get(quorum - 1).copied().unwrap_or(Lsn::ZERO);
        if self.sync_exempt() {
            watermark = self.engine.lsn();
        }
        // A fenced primary's commits are not to be acknowledged any more,
        // whoever still answers it.
        if watermark > self.sync_acked && !self.fenced {
            self.sync_acked = watermark;
            self.events.push_back(PrimaryEvent::SyncAcked(watermark));
        }
        while self
            .sync_waits
            .front()
            .is_some_and(|w| w.0 <= self.sync_acked)
        {
            self.sync_waits.pop_front();
        }
        let Some(now) = now else { return };
        let Some(&(lsn, deadline)) = self.sync_waits.front() else {
            return;
        };
        if deadline > now {
            return;
        }
        match self.config.on_sync_timeout {
            SyncPolicy::Block => {
                let mut last = lsn;
                while let Some(&(l, d)) = self.sync_waits.front() {
                    if d > now {
                        break;
                    }
                    last = l;
                    self.sync_waits.pop_front();
                }
                self.events.push_back(PrimaryEvent::SyncTimedOut(last));
            }
            SyncPolicy::Degrade => {
                let late: Vec<SessionId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.mode == Mode::Sync && !s.degraded && s.acked < lsn)
                    .map(|(id, _)| *id)
                    .collect();
                let head = self.engine.lsn();
                for session in late {
                    let s = self.sessions.get_mut(&session).expect("listed");
                    s.degraded = true;
                    s.degraded_at = head;
                    self.events.push_back(PrimaryEvent::Degraded {
                        session,
                        degraded: true,
                    });
                }
                self.update_sync(None);
            }
        }
    }
}

impl SnapshotCursor {
    /// Whether the secondary needs a change at `lsn` to this block: it got a
    /// copy older than `lsn`, or the cursor found the id empty before `lsn`.
    /// Blocks the cursor has not reached yet arrive later as they are then.
    fn needs(&self, db: DbId, block: BlockId, lsn: Lsn) -> bool {
        if let Some(copy) = self.sent.get(&(db, block)) {
            return lsn > *copy;
        }
        let key = (db.0, block.0);
        self.gaps
            .iter()
            .any(|(from, to, at)| *from <= key && key < *to && lsn > *at)
    }

    /// The part of `delta` a snapshotting secondary needs; schema ops always.
    fn filter(&mut self, delta: &Delta) -> Delta {
        let lsn = delta.lsn();
        let mut ops = Vec::with_capacity(delta.ops().len());
        for op in delta.ops() {
            let keep = match op {
                DeltaOp::BlockAlloc { db, block }
                | DeltaOp::BlockWrite { db, block, .. }
                | DeltaOp::BlockFree { db, block } => self.needs(*db, *block, lsn),
                DeltaOp::DbCreate { db, .. } => {
                    self.dbs_known = self.dbs_known.max(db.0 + 1);
                    true
                }
                DeltaOp::TxnBegin { .. } | DeltaOp::TxnCommit { .. } => true,
            };
            if keep {
                ops.push(op.clone());
            }
        }
        Delta::from_ops(ops)
    }
}

fn subscribed(subscription: &Option<BTreeSet<String>>, name: &str) -> bool {
    subscription
        .as_ref()
        .is_none_or(|names| names.contains(name))
}

/// Whether a session with `subscription` gets `delta` whole (or empty).
fn wants(engine: &Engine, subscription: &Option<BTreeSet<String>>, delta: &Delta) -> bool {
    if subscription.is_none() {
        return true;
    }
    let name = match &delta.ops()[1] {
        DeltaOp::DbCreate { name, .. } => name.clone(),
        _ => match engine.database_by_id(delta.db()) {
            Some(db) => db.name().to_string(),
            None => return false,
        },
    };
    subscribed(subscription, &name)
}

/// The first block at or after (`db`, `block`) in (database, block) order,
/// among databases with ids below `dbs` that `subscription` takes, with its
/// bytes and the LSN of its last change.
fn next_block(
    engine: &Engine,
    db: u32,
    block: u32,
    dbs: u32,
    subscription: &Option<BTreeSet<String>>,
) -> Option<(DbId, BlockId, Vec<u8>, Lsn)> {
    let databases = engine.databases();
    for database in databases
        .iter()
        .filter(|d| d.id().0 >= db && d.id().0 < dbs)
    {
        if !subscribed(subscription, database.name()) {
            continue;
        }
        let from = if database.id().0 == db { block } else { 0 };
        if let Some((id, bytes)) = database.block_at_or_after(BlockId(from)) {
            let lsn = crate::block::BlockHeader::read(&bytes).lsn;
            return Some((database.id(), id, bytes, lsn));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DatabaseOptions, EngineConfig, IndexMode};
    use crate::repl::secondary::{Secondary, SecondaryConfig, SecondaryEvent};

    /// A fresh async secondary with a hot follower engine.
    fn async_secondary(now: Instant) -> Secondary {
        let follower = Engine::new(EngineConfig::follower(IndexMode::Maintained));
        Secondary::new(
            follower,
            EpochHistory::default(),
            SecondaryConfig::new(NodeId(1), Mode::Async),
            now,
        )
    }

    /// Moves frames both ways until neither side has anything to say.
    fn pump(p: &mut Primary, session: SessionId, s: &mut Secondary, now: Instant) {
        loop {
            let mut moved = false;
            while let Some((_, frame)) = p.poll_transmit(now) {
                s.handle_frame(now, frame);
                moved = true;
            }
            while let Some(frame) = s.poll_transmit(now) {
                p.handle_frame(now, session, frame);
                moved = true;
            }
            if !moved {
                return;
            }
        }
    }

    /// Moves at most `frames` frames from the primary, and everything back.
    fn pump_some(
        p: &mut Primary,
        session: SessionId,
        s: &mut Secondary,
        now: Instant,
        frames: usize,
    ) {
        for _ in 0..frames {
            match p.poll_transmit(now) {
                Some((_, frame)) => s.handle_frame(now, frame),
                None => break,
            }
        }
        while let Some(frame) = s.poll_transmit(now) {
            p.handle_frame(now, session, frame);
        }
    }

    #[test]
    fn a_snapshot_taken_while_writers_run_ahead_of_the_backlog_converges() {
        let t0 = Instant::now();
        let engine = Engine::new(EngineConfig::default());
        let opts = DatabaseOptions::with_indexes(["v"]).block_size(4096);
        // A backlog of about six deltas: a fresh secondary needs a snapshot.
        let config = PrimaryConfig {
            backlog_bytes_max: 20_000,
            ..PrimaryConfig::default()
        };
        let mut p = Primary::new(engine.clone(), EpochHistory::default(), config);
        p.on_commit(t0, engine.create_database("t", opts).unwrap().delta, false);
        // Ten blocks of two 1.5 KiB records each.
        let put = |keys: std::ops::Range<u32>, fill: u8| {
            let mut txn = engine.begin("t").unwrap();
            for k in keys {
                txn.put(&k.to_be_bytes(), &[Some(&[fill])], &[fill; 1500])
                    .unwrap();
            }
            txn.commit().unwrap().unwrap().delta
        };
        for i in 0..10u32 {
            p.on_commit(t0, put(i * 2..i * 2 + 2, 1), false);
        }
        // A hole at block 1 before the snapshot starts (both its records go).
        let mut txn = engine.begin("t").unwrap();
        txn.delete(&2u32.to_be_bytes()).unwrap();
        txn.delete(&3u32.to_be_bytes()).unwrap();
        p.on_commit(t0, txn.commit().unwrap().unwrap().delta, false);
        let mut s = async_secondary(t0);
        let session = p.connect(t0);
        s.connect(t0).unwrap();
        // The hello reaches the primary; then about half the blocks go out,
        // the cursor passing the hole at block 1.
        pump_some(&mut p, session, &mut s, t0, 0);
        // Welcome; the secondary's digests come back; then blocks go out.
        pump_some(&mut p, session, &mut s, t0, 1);
        pump_some(&mut p, session, &mut s, t0, 5);
        assert!(!s.is_consistent(), "the snapshot is under way");
        // Meanwhile the engine runs ahead of the controller: new records fill
        // the hole (block 1 again, behind the cursor), both records of block
        // 2 (already sent) go, and a record of block 8 (not sent yet) is
        // rewritten.
        let mut pending = vec![put(100..104, 2)];
        let mut txn = engine.begin("t").unwrap();
        txn.delete(&4u32.to_be_bytes()).unwrap();
        txn.delete(&5u32.to_be_bytes()).unwrap();
        pending.push(txn.commit().unwrap().unwrap().delta);
        pending.push(put(16..17, 3));
        // More of the snapshot goes out before the controller hears of them.
        pump_some(&mut p, session, &mut s, t0, 4);
        for delta in pending {
            p.on_commit(t0, delta, false);
        }
        pump(&mut p, session, &mut s, t0);
        assert!(s.is_streaming(), "the snapshot finished");
        assert_eq!(s.engine().lsn(), engine.lsn());
        assert_eq!(s.engine().digests(), engine.digests());
        let copy = s.engine().database("t").unwrap();
        assert_eq!(copy.count(), engine.database("t").unwrap().count());
        assert_eq!(copy.find("v", &[2], None).unwrap().len(), 4);
    }

    /// RELIABILITY guarantee 3 and rows 5 and 23: a node that has seen
    /// epoch e refuses anything from a lower one. A secondary streaming
    /// from a primary on epoch 2 is handed that primary's next frames
    /// relabelled with epoch 1 (a stale primary's stream): it refuses the
    /// first, applies nothing and drops the connection. The primary, given
    /// an acknowledgement relabelled with epoch 1, refuses it and does not
    /// count it.
    #[test]
    fn frames_and_acks_from_an_older_epoch_are_refused() {
        let t0 = Instant::now();
        let engine = Engine::new(EngineConfig::default());
        let old_epoch = EpochHistory::default().current();
        let mut history = EpochHistory::default();
        let new_epoch = history.promote(Lsn::ZERO, NodeId(2), Epoch(0));
        assert!(new_epoch > old_epoch);
        let mut p = Primary::new(engine.clone(), history, PrimaryConfig::default());
        let mut s = async_secondary(t0);
        let session = p.connect(t0);
        s.connect(t0).unwrap();
        pump(&mut p, session, &mut s, t0);
        let created = engine
            .create_database("t", DatabaseOptions::default())
            .unwrap();
        p.on_commit(t0, created.delta, false);
        pump(&mut p, session, &mut s, t0);
        assert_eq!((s.epoch(), s.engine().lsn()), (new_epoch, engine.lsn()));

        // A stale primary's frames: refused at the first, nothing applied.
        let (lsn, digests) = (s.engine().lsn(), s.engine().digests());
        let mut txn = engine.begin("t").unwrap();
        txn.put(&[1], &[], b"v").unwrap();
        p.on_commit(t0, txn.commit().unwrap().unwrap().delta, false);
        let mut refused = false;
        while let Some((_, mut frame)) = p.poll_transmit(t0) {
            frame.epoch = old_epoch;
            s.handle_frame(t0, frame);
            if let Some(SecondaryEvent::Disconnect { reason }) = s.poll_event() {
                assert!(reason.contains("older epoch"), "{reason}");
                refused = true;
                break;
            }
        }
        assert!(refused, "a frame from epoch {old_epoch} was taken");
        let Some(Message::Error { code, .. }) = s.poll_transmit(t0).map(|f| f.message) else {
            panic!("no error frame sent back");
        };
        assert_eq!(code, ErrorCode::StaleEpoch);
        assert_eq!((s.engine().lsn(), s.engine().digests()), (lsn, digests));

        // Reconnected, it catches up; its next acknowledgement, relabelled
        // with the old epoch, is refused and not counted.
        s.disconnected();
        p.disconnect(session);
        let session = p.connect(t0);
        s.connect(t0).unwrap();
        pump(&mut p, session, &mut s, t0);
        assert_eq!(s.engine().lsn(), engine.lsn());
        let acked = p.acked_lsns();
        let mut txn = engine.begin("t").unwrap();
        txn.put(&[2], &[], b"v").unwrap();
        p.on_commit(t0, txn.commit().unwrap().unwrap().delta, false);
        while let Some((_, frame)) = p.poll_transmit(t0) {
            s.handle_frame(t0, frame);
        }
        let mut ack = s.poll_transmit(t0).expect("an acknowledgement");
        assert!(matches!(ack.message, Message::Ack { .. }), "{ack:?}");
        ack.epoch = old_epoch;
        p.handle_frame(t0, session, ack);
        let Some((
            to,
            Frame {
                message: Message::Error { code, .. },
                ..
            },
        )) = p.poll_transmit(t0)
        else {
            panic!("the stale ack was not refused");
        };
        assert_eq!((to, code), (session, ErrorCode::StaleEpoch));
        assert!(p.acked_lsns().iter().all(|a| acked.contains(a)));
        assert!(!p.is_fenced(), "an older epoch never fences");
    }

    #[test]
    fn writes_are_refused_while_too_few_secondaries_are_current() {
        let t0 = Instant::now();
        let engine = Engine::new(EngineConfig::default());
        let config = PrimaryConfig {
            min_secondaries: 1,
            max_lag: Duration::from_millis(500),
            ..PrimaryConfig::default()
        };
        let mut p = Primary::new(engine.clone(), EpochHistory::default(), config);
        assert!(!p.accepts_writes(t0), "no secondary yet");
        let mut s = async_secondary(t0);
        let session = p.connect(t0);
        s.connect(t0).unwrap();
        pump(&mut p, session, &mut s, t0);
        assert!(p.accepts_writes(t0));
        // A commit the secondary never acknowledges (it is cut off).
        let created = engine
            .create_database("t", DatabaseOptions::default())
            .unwrap();
        p.on_commit(t0, created.delta, false);
        assert!(p.accepts_writes(t0 + Duration::from_millis(400)));
        assert!(
            !p.accepts_writes(t0 + Duration::from_millis(600)),
            "lag past max_lag"
        );
        // Once it catches up, writes go ahead again.
        let t1 = t0 + Duration::from_millis(700);
        pump(&mut p, session, &mut s, t1);
        assert_eq!(s.engine().lsn(), engine.lsn());
        assert!(p.accepts_writes(t1));
        let status = p.status(t1);
        assert_eq!((status[0].state, status[0].lag_lsn), ("online", 0));
        // A commit the engine made but this controller has not yet been
        // given is not lag of seconds: the secondary is not behind
        // anything it could have been sent.
        let t2 = t1 + Duration::from_secs(30);
        let mut txn = engine.begin("t").unwrap();
        txn.put(b"k", &[], b"v").unwrap();
        txn.commit().unwrap();
        let status = p.status(t2);
        assert_eq!((status[0].lag_lsn, status[0].lag_ms), (1, 0));
        assert!(p.accepts_writes(t2));
    }
}
