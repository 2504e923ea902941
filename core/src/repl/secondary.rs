//! The secondary side of replication, as a state machine without I/O.
//!
//! A `Secondary` owns a follower engine. The driver calls `connect(now)`
//! when a connection to the primary is up, `handle_frame(now, frame)` for
//! each frame received, `handle_timeout(now)` at `poll_timeout()`, and
//! drains `poll_transmit()` and `poll_event()` after each call. On
//! `SecondaryEvent::Disconnect` it closes the connection and, later,
//! connects again: the `Hello` then says where to resume from.
//!
//! A transaction is applied whole, at its `TxnCommit`, and acknowledged
//! only after it is applied; a partial transaction is never visible. During
//! a full resync nothing is acknowledged until the copy is consistent.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::constants::DELTA_OPS_MAX;
use crate::database::Schema;
use crate::delta::{Delta, DeltaOp};
use crate::engine::Engine;
use crate::error::{ApplyError, DeltaDecodeError, Error};
use crate::ids::{BlockId, DbId, Lsn};
use crate::repl::frame::{CatchUp, ErrorCode, Frame, Message, Mode, DIGESTS_PER_FRAME_MAX};
use crate::repl::history::{Epoch, EpochHistory};
use crate::repl::limits::{PRIMARY_TIMEOUT_DEFAULT_MS, SECONDARY_HEARTBEAT_INTERVAL_DEFAULT_MS};
use crate::repl::NodeId;

#[derive(Clone, Debug)]
pub struct SecondaryConfig {
    pub node: NodeId,
    pub mode: Mode,
    /// Replicate these databases only (by name); empty: all.
    pub databases: Vec<String>,
    /// An acknowledgement (which doubles as a heartbeat) goes out at least
    /// this often.
    pub heartbeat_interval: Duration,
    /// A primary silent this long is taken for lost.
    pub primary_timeout: Duration,
}

impl SecondaryConfig {
    pub fn new(node: NodeId, mode: Mode) -> Self {
        SecondaryConfig {
            node,
            mode,
            databases: Vec::new(),
            heartbeat_interval: Duration::from_millis(SECONDARY_HEARTBEAT_INTERVAL_DEFAULT_MS),
            primary_timeout: Duration::from_millis(PRIMARY_TIMEOUT_DEFAULT_MS),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecondaryEvent {
    /// Caught up and applying live transactions.
    Online,
    /// A full resync started, of this many blocks.
    SnapshotStarted { blocks: u64 },
    /// One more snapshot block installed.
    SnapshotProgress { installed: u64, blocks: u64 },
    /// The driver should close the connection (and reconnect later).
    Disconnect { reason: String },
}

/// Why a secondary refuses a frame and drops its connection. The text
/// (`Display`) is the reason in `SecondaryEvent::Disconnect` and the
/// message of the `Error` frame sent back: logs and tests match it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum SecondaryError {
    #[error("frame {got} where {due} was due: lost, repeated or reordered")]
    OutOfSequence { got: u64, due: u64 },
    #[error("frame from an older epoch")]
    StaleEpoch,
    #[error("welcome with an inconsistent epoch")]
    WelcomeEpoch,
    /// The snapshot's schemas could not be set up.
    #[error("{source}")]
    SnapshotBegin {
        #[source]
        source: Error,
    },
    #[error("{source}")]
    InstallBlock {
        #[source]
        source: Error,
    },
    #[error("{source}")]
    KeepBlock {
        #[source]
        source: Error,
    },
    #[error("{source}")]
    FinishSnapshot {
        #[source]
        source: Error,
    },
    #[error("block digests inside a transaction")]
    DigestsInTransaction,
    /// Verification found blocks that differ from the primary's.
    #[error(
        "verification: {blocks} block(s) differ from the primary's, first {first:?}; resyncing"
    )]
    Diverged {
        blocks: usize,
        first: (DbId, BlockId),
    },
    #[error("primary refused: {message}")]
    PrimaryRefused { message: String },
    #[error("unexpected {message:?} while {phase:?}")]
    Unexpected { message: Box<Message>, phase: Phase },
    #[error("TxnBegin inside a transaction")]
    TxnBeginInTransaction,
    #[error("op outside a transaction")]
    OpOutsideTransaction,
    #[error("transaction too long")]
    TransactionTooLong,
    /// The ops received do not make a transaction.
    #[error("{source}")]
    BadTransaction {
        #[source]
        source: DeltaDecodeError,
    },
    #[error("apply failed: {source}")]
    Apply {
        #[source]
        source: ApplyError,
    },
}

impl SecondaryError {
    /// The code of the `Error` frame that tells the primary.
    fn code(&self) -> ErrorCode {
        match self {
            SecondaryError::StaleEpoch => ErrorCode::StaleEpoch,
            _ => ErrorCode::Protocol,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Disconnected,
    AwaitWelcome,
    AwaitSnapshot,
    /// Loading a snapshot; consistent once the LSN reaches `end`.
    Snapshot {
        installed: u64,
        blocks: u64,
        end: Option<Lsn>,
    },
    Streaming,
}

#[derive(Debug)]
pub struct Secondary {
    engine: Engine,
    history: EpochHistory,
    config: SecondaryConfig,
    phase: Phase,
    /// Ops of the transaction being received.
    pending: Vec<DeltaOp>,
    queue: VecDeque<Frame>,
    events: VecDeque<SecondaryEvent>,
    ack_due: bool,
    last_acked: Lsn,
    last_heard: Instant,
    last_sent: Instant,
    /// Sequence numbers of the next frame out and the next frame expected,
    /// on the current connection.
    seq_out: u64,
    seq_in: u64,
    /// A delta failed to apply for a reason other than a gap: the blocks no
    /// longer match the primary's history. The next connection starts from
    /// an empty copy (full resync).
    damaged: bool,
    /// This copy started from nothing, or was dropped for damage: it holds
    /// none of the writes it may once have acknowledged, and vouches for
    /// none in an election until it has been level with a primary's head
    /// (then it holds everything that primary held).
    blank: bool,
    /// The primary's head when this session was welcomed.
    level_at: Option<Lsn>,
    /// Blocks an incremental resync found current and did not transfer.
    blocks_kept: u64,
    /// The primary's history, adopted when its snapshot starts.
    pending_history: Option<EpochHistory>,
    /// The highest epoch seen, kept across connections (fencing).
    epoch_seen: Epoch,
    /// Digests received for verification, compared at `DigestsEnd`.
    verifying: Vec<(DbId, Vec<(BlockId, u64)>)>,
    /// Blocks found to differ from the primary's by verification.
    blocks_diverged: u64,
}

impl Secondary {
    /// A secondary over a follower `engine` whose log runs under `history`.
    pub fn new(
        engine: Engine,
        history: EpochHistory,
        config: SecondaryConfig,
        now: Instant,
    ) -> Self {
        let blank = engine.lsn() == Lsn::ZERO;
        Secondary {
            engine,
            history,
            config,
            phase: Phase::Disconnected,
            pending: Vec::new(),
            queue: VecDeque::new(),
            events: VecDeque::new(),
            ack_due: false,
            last_acked: Lsn::ZERO,
            last_heard: now,
            last_sent: now,
            seq_out: 0,
            seq_in: 0,
            damaged: false,
            blank,
            level_at: None,
            blocks_kept: 0,
            pending_history: None,
            epoch_seen: Epoch(0),
            verifying: Vec::new(),
            blocks_diverged: 0,
        }
    }

    /// Learns of a newer epoch from outside the stream (whoever runs a
    /// failover tells every secondary it reaches): from now on frames of
    /// older epochs are refused, so an old primary can no longer count this
    /// secondary's acknowledgements. The current connection, if from an
    /// older epoch, is dropped.
    pub fn observe_epoch(&mut self, epoch: Epoch) {
        if epoch > self.epoch() {
            self.epoch_seen = epoch;
            if !matches!(self.phase, Phase::Disconnected) {
                self.events.push_back(SecondaryEvent::Disconnect {
                    reason: format!("epoch {epoch} announced"),
                });
                self.reset_connection();
            }
        }
        self.check_invariants();
    }

    /// Asserts the state machine's invariants; a no-op in release builds.
    /// Called at the end of every handler; drivers and tests may call it
    /// at any time between calls. It panics, naming the invariant, when one
    /// does not hold:
    ///
    /// - the history's (and a pending history's) epochs strictly rise and
    ///   starts never fall; a pending history exists only while awaiting
    ///   the snapshot it describes, and its epoch is one this node has seen;
    /// - the transaction being received, if any, opens with `TxnBegin`,
    ///   has not reached its `TxnCommit` (it is applied whole, at once) and
    ///   holds at most `DELTA_OPS_MAX` ops, on a streaming or snapshotting
    ///   connection only;
    /// - disconnected, nothing is expected (`seq_in` 0), pending, due or
    ///   being verified;
    /// - an acknowledgement is due and digests are being gathered only
    ///   while streaming (nothing is acknowledged before the copy is
    ///   consistent);
    /// - a damaged copy is never connected (`connect` starts it over);
    /// - a snapshot whose end is known is not yet consistent: once the
    ///   engine reaches the end, the snapshot is finished at once.
    ///
    /// Cost: O(history).
    pub fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        self.history.check_invariants();
        if let Some(pending) = &self.pending_history {
            pending.check_invariants();
            assert_eq!(self.phase, Phase::AwaitSnapshot, "a pending history");
            assert!(
                pending.current() <= self.epoch(),
                "pending history at {}, above the epoch seen {}",
                pending.current(),
                self.epoch()
            );
        }
        if let (Some(first), Some(last)) = (self.pending.first(), self.pending.last()) {
            assert!(
                matches!(first, DeltaOp::TxnBegin { .. }),
                "a transaction opened by {first:?}"
            );
            // `receive_op` takes the transaction whole at its commit.
            assert!(
                !matches!(last, DeltaOp::TxnCommit { .. }),
                "a committed transaction left pending"
            );
            assert!(self.pending.len() <= DELTA_OPS_MAX, "transaction too long");
            assert!(
                matches!(self.phase, Phase::Streaming | Phase::Snapshot { .. }),
                "a transaction pending while {:?}",
                self.phase
            );
        }
        if self.phase == Phase::Disconnected {
            assert_eq!(
                self.seq_in, 0,
                "disconnected, expecting frame {}",
                self.seq_in
            );
        }
        assert!(
            !self.ack_due || self.is_streaming(),
            "an acknowledgement due while {:?}",
            self.phase
        );
        assert!(
            self.verifying.is_empty() || self.is_streaming(),
            "verifying while {:?}",
            self.phase
        );
        assert!(
            !self.damaged || self.phase == Phase::Disconnected,
            "a damaged copy connected ({:?})",
            self.phase
        );
        if let Phase::Snapshot { end: Some(end), .. } = self.phase {
            assert!(
                self.engine.lsn() < end,
                "snapshot at {} not finished though its end is {end}",
                self.engine.lsn()
            );
        }
    }

    /// Blocks that verification found to differ from the primary's.
    pub fn blocks_diverged(&self) -> u64 {
        self.blocks_diverged
    }

    /// Compares the primary's block digests with ours, at the same LSN. A
    /// difference means our blocks changed under us: stop, say which, and
    /// resync.
    fn verify(&mut self) -> Result<(), SecondaryError> {
        let theirs = std::mem::take(&mut self.verifying);
        let mut differ = Vec::new();
        for (db, entries) in &theirs {
            let ours = self
                .engine
                .database_by_id(*db)
                .map(|d| d.digest(|| self.engine.lsn()));
            let ours: Vec<(BlockId, u64)> = ours.map(|d| d.blocks).unwrap_or_default();
            let theirs_map: std::collections::BTreeMap<BlockId, u64> =
                entries.iter().copied().collect();
            let ours_map: std::collections::BTreeMap<BlockId, u64> = ours.iter().copied().collect();
            for (block, digest) in &theirs_map {
                if ours_map.get(block) != Some(digest) {
                    differ.push((*db, *block));
                }
            }
            for block in ours_map.keys() {
                if !theirs_map.contains_key(block) {
                    differ.push((*db, *block));
                }
            }
        }
        if differ.is_empty() {
            return Ok(());
        }
        self.blocks_diverged += differ.len() as u64;
        self.damaged = true;
        Err(SecondaryError::Diverged {
            blocks: differ.len(),
            first: differ[0],
        })
    }

    /// Blocks that incremental resyncs kept rather than transferred.
    pub fn blocks_kept(&self) -> u64 {
        self.blocks_kept
    }

    /// Tells the primary which blocks this copy holds (by digest), ahead of
    /// a snapshot, so it sends only those that differ.
    fn send_digests(&mut self) {
        let epoch = self.epoch();
        for digest in self.engine.digests() {
            for chunk in digest.blocks.chunks(DIGESTS_PER_FRAME_MAX) {
                self.queue.push_back(Frame::new(
                    epoch,
                    Message::BlockDigests {
                        db: digest.db,
                        entries: chunk.to_vec(),
                    },
                ));
            }
        }
        self.queue.push_back(Frame::new(epoch, Message::DigestsEnd));
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// The highest epoch this node has seen: it refuses frames from below
    /// it and stamps its own frames with it. (Its history, which describes
    /// its log, may trail it while a snapshot is pending.)
    pub fn epoch(&self) -> Epoch {
        self.epoch_seen.max(self.history.current())
    }

    /// (epoch of the last applied transaction, its LSN): the highest wins a
    /// promotion.
    pub fn log_position(&self) -> (Epoch, Lsn) {
        let lsn = self.engine.lsn();
        (self.history.epoch_of(lsn), lsn)
    }

    /// Whether this node's blocks are a consistent copy it can vouch for
    /// (not in the middle of a snapshot).
    pub fn is_consistent(&self) -> bool {
        !self.damaged && !matches!(self.phase, Phase::Snapshot { .. })
    }

    /// Whether this copy may stand in an election: it is consistent, and
    /// it holds every write it acknowledged (not a copy started from
    /// nothing, or dropped for damage, that has not yet been level with a
    /// primary's head).
    pub fn vouches(&self) -> bool {
        self.is_consistent() && !self.blank
    }

    /// Whether this copy started from nothing (or was dropped for damage)
    /// and has not yet been level with a primary's head.
    pub fn is_blank(&self) -> bool {
        self.blank
    }

    pub fn is_streaming(&self) -> bool {
        self.phase == Phase::Streaming
    }

    /// A connection to the primary is up: say who we are and where we are.
    /// A copy left half-loaded by an earlier snapshot is dropped first, so
    /// the node starts from the empty log.
    pub fn connect(&mut self, now: Instant) -> Result<(), Error> {
        let connected = self.send_hello(now);
        self.check_invariants();
        connected
    }

    /// `connect`, less the invariant check.
    fn send_hello(&mut self, now: Instant) -> Result<(), Error> {
        self.reset_connection();
        if !self.is_consistent() {
            self.engine.reset_to_snapshot(&[], Lsn::ZERO)?;
            self.engine.finish_snapshot()?;
            self.damaged = false;
            self.blank = true;
        }
        self.phase = Phase::AwaitWelcome;
        self.last_heard = now;
        self.last_sent = now;
        self.queue.push_back(Frame::new(
            self.epoch(),
            Message::Hello {
                node: self.config.node,
                lsn: self.engine.lsn(),
                mode: self.config.mode,
                history: self.history.clone(),
                databases: self.config.databases.clone(),
            },
        ));
        Ok(())
    }

    /// The connection is gone (the driver noticed, or asked for it).
    pub fn disconnected(&mut self) {
        self.reset_connection();
        self.check_invariants();
    }

    fn reset_connection(&mut self) {
        self.seq_out = 0;
        self.seq_in = 0;
        self.pending.clear();
        self.queue.clear();
        self.ack_due = false;
        // A snapshot cut off half-way leaves a copy that is neither the old
        // one nor the primary's: `connect` drops it.
        if matches!(self.phase, Phase::Snapshot { .. }) {
            self.damaged = true;
        }
        self.pending_history = None;
        self.verifying.clear();
        self.level_at = None;
        self.phase = Phase::Disconnected;
    }

    pub fn handle_frame(&mut self, now: Instant, frame: Frame) {
        if let Err(e) = self.frame(now, frame) {
            self.refuse(e.code(), &e.to_string());
        }
        self.check_invariants();
    }

    /// `handle_frame`, less the refusal and the invariant check: checks the
    /// frame's sequence number and epoch, then handles its message.
    fn frame(&mut self, now: Instant, frame: Frame) -> Result<(), SecondaryError> {
        if matches!(self.phase, Phase::Disconnected) {
            return Ok(());
        }
        self.last_heard = now;
        if frame.seq != self.seq_in {
            return Err(SecondaryError::OutOfSequence {
                got: frame.seq,
                due: self.seq_in,
            });
        }
        self.seq_in += 1;
        if frame.epoch < self.epoch() {
            return Err(SecondaryError::StaleEpoch);
        }
        self.handle_message(frame.epoch, frame.message)
    }

    fn handle_message(&mut self, epoch: Epoch, message: Message) -> Result<(), SecondaryError> {
        match (&mut self.phase, message) {
            (
                Phase::AwaitWelcome,
                Message::Welcome {
                    lsn,
                    catch_up,
                    history,
                },
            ) => self.welcome(epoch, lsn, catch_up, history)?,
            (
                Phase::AwaitSnapshot,
                Message::SnapshotBegin {
                    lsn,
                    blocks,
                    databases,
                },
            ) => self.snapshot_begin(lsn, blocks, databases)?,
            (
                Phase::Snapshot {
                    installed,
                    blocks,
                    end: None,
                },
                Message::SnapshotBlock { db, block, bytes },
            ) => {
                self.engine
                    .install_block(db, block, &bytes)
                    .map_err(|source| SecondaryError::InstallBlock { source })?;
                *installed += 1;
                let (installed, blocks) = (*installed, *blocks);
                self.events
                    .push_back(SecondaryEvent::SnapshotProgress { installed, blocks });
            }
            (
                Phase::Snapshot {
                    installed,
                    blocks,
                    end: None,
                },
                Message::BlockSame { db, block },
            ) => {
                self.engine
                    .keep_block(db, block)
                    .map_err(|source| SecondaryError::KeepBlock { source })?;
                *installed += 1;
                self.blocks_kept += 1;
                let (installed, blocks) = (*installed, *blocks);
                self.events
                    .push_back(SecondaryEvent::SnapshotProgress { installed, blocks });
            }
            (Phase::Snapshot { end, .. }, Message::SnapshotEnd { lsn }) if end.is_none() => {
                *end = Some(lsn);
                self.finish_snapshot_if_consistent()?;
            }
            (Phase::Streaming | Phase::Snapshot { .. }, Message::Op(op)) => self.receive_op(op)?,
            (Phase::Streaming | Phase::Snapshot { .. }, Message::TxnAbort) => self.pending.clear(),
            (Phase::Streaming, Message::Heartbeat { .. }) => self.ack_due = true,
            // Verification: the primary's digests at the LSN we are at.
            (Phase::Streaming, Message::BlockDigests { db, entries }) => {
                if !self.pending.is_empty() {
                    return Err(SecondaryError::DigestsInTransaction);
                }
                self.verifying.push((db, entries));
            }
            (Phase::Streaming, Message::DigestsEnd) => self.verify()?,
            (Phase::Snapshot { .. } | Phase::AwaitSnapshot, Message::Heartbeat { .. }) => {}
            (_, Message::Error { message, .. }) => {
                return Err(SecondaryError::PrimaryRefused { message })
            }
            (phase, message) => {
                return Err(SecondaryError::Unexpected {
                    message: Box::new(message),
                    phase: phase.clone(),
                })
            }
        }
        Ok(())
    }

    /// `Welcome`: the primary says how it will bring us up to date.
    fn welcome(
        &mut self,
        epoch: Epoch,
        head: Lsn,
        catch_up: CatchUp,
        history: EpochHistory,
    ) -> Result<(), SecondaryError> {
        if history.current() != epoch || history.current() < self.epoch() {
            return Err(SecondaryError::WelcomeEpoch);
        }
        self.phase = match catch_up {
            // Our log is a prefix of the primary's: its history is ours.
            CatchUp::Stream => {
                self.history = history;
                Phase::Streaming
            }
            // Our log is not (yet) the primary's: keep our history,
            // which describes our blocks, until the snapshot starts.
            CatchUp::Snapshot => {
                self.epoch_seen = self.epoch_seen.max(history.current());
                self.pending_history = Some(history);
                self.send_digests();
                Phase::AwaitSnapshot
            }
        };
        self.level_at = Some(head);
        if self.phase == Phase::Streaming {
            self.events.push_back(SecondaryEvent::Online);
            self.ack_due = true;
            self.note_level();
        }
        Ok(())
    }

    /// A blank copy level with the head its primary welcomed it at holds
    /// everything that primary held: it vouches from now on.
    fn note_level(&mut self) {
        if self.blank
            && self.phase == Phase::Streaming
            && self.level_at.is_some_and(|head| self.engine.lsn() >= head)
        {
            self.blank = false;
        }
    }

    /// `SnapshotBegin`: the primary's schemas at `lsn`; the blocks follow.
    fn snapshot_begin(
        &mut self,
        lsn: Lsn,
        blocks: u64,
        databases: Vec<DeltaOp>,
    ) -> Result<(), SecondaryError> {
        let schemas: Vec<Schema> = databases
            .into_iter()
            .filter_map(|op| match op {
                DeltaOp::DbCreate {
                    db,
                    name,
                    block_size,
                    indexes,
                } => Some(Schema {
                    id: db,
                    name,
                    block_size: block_size as usize,
                    indexes,
                }),
                _ => None,
            })
            .collect();
        self.engine
            .begin_incremental_snapshot(&schemas, lsn)
            .map_err(|source| SecondaryError::SnapshotBegin { source })?;
        if let Some(history) = self.pending_history.take() {
            self.history = history;
        }
        self.phase = Phase::Snapshot {
            installed: 0,
            blocks,
            end: None,
        };
        self.events
            .push_back(SecondaryEvent::SnapshotStarted { blocks });
        Ok(())
    }

    fn receive_op(&mut self, op: DeltaOp) -> Result<(), SecondaryError> {
        match (&op, self.pending.is_empty()) {
            (DeltaOp::TxnBegin { .. }, true) => {}
            (DeltaOp::TxnBegin { .. }, false) => return Err(SecondaryError::TxnBeginInTransaction),
            (_, true) => return Err(SecondaryError::OpOutsideTransaction),
            _ if self.pending.len() >= DELTA_OPS_MAX => {
                return Err(SecondaryError::TransactionTooLong)
            }
            _ => {}
        }
        let commit = matches!(op, DeltaOp::TxnCommit { .. });
        self.pending.push(op);
        if !commit {
            return Ok(());
        }
        let delta = Delta::from_checked_ops(std::mem::take(&mut self.pending))
            .map_err(|source| SecondaryError::BadTransaction { source })?;
        if matches!(self.phase, Phase::Snapshot { .. }) {
            // A block the primary allocates anew cannot be a kept copy.
            for op in delta.ops() {
                if let DeltaOp::BlockAlloc { db, block } = op {
                    self.engine.drop_stale_block(*db, *block);
                }
            }
        }
        // A subscriber gets other databases' transactions empty.
        let skip = !self.config.databases.is_empty()
            && delta.ops().len() == 2
            && self.engine.database_by_id(delta.db()).is_none();
        let applied = match skip {
            true => self.engine.skip(&delta),
            false => self.engine.apply(&delta),
        };
        if let Err(e) = applied {
            // A gap heals by reconnecting; anything else means these blocks
            // are not the primary's, and only a full resync repairs them.
            if !matches!(e, ApplyError::LsnGap { .. }) {
                self.damaged = true;
            }
            return Err(SecondaryError::Apply { source: e });
        }
        match self.phase {
            Phase::Streaming => {
                self.ack_due = true;
                self.note_level();
            }
            _ => self.finish_snapshot_if_consistent()?,
        }
        Ok(())
    }

    fn finish_snapshot_if_consistent(&mut self) -> Result<(), SecondaryError> {
        if let Phase::Snapshot { end: Some(end), .. } = self.phase {
            if self.engine.lsn() >= end {
                self.engine
                    .finish_snapshot()
                    .map_err(|source| SecondaryError::FinishSnapshot { source })?;
                self.phase = Phase::Streaming;
                self.ack_due = true;
                self.events.push_back(SecondaryEvent::Online);
                self.note_level();
            }
        }
        Ok(())
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.timeout(now);
        self.check_invariants();
    }

    /// `handle_timeout`, less the invariant check.
    fn timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Disconnected) {
            return;
        }
        if now.saturating_duration_since(self.last_heard) >= self.config.primary_timeout {
            self.events.push_back(SecondaryEvent::Disconnect {
                reason: "primary silent past the timeout".into(),
            });
            self.reset_connection();
            return;
        }
        if now.saturating_duration_since(self.last_sent) >= self.config.heartbeat_interval {
            if self.is_streaming() {
                self.ack_due = true;
            } else if self.queue.is_empty() {
                // Not acknowledging anything yet (a snapshot loads): say we
                // are alive without counting for sync.
                self.queue.push_back(Frame::new(
                    self.epoch(),
                    Message::Heartbeat {
                        lsn: self.engine.lsn(),
                    },
                ));
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Disconnected => None,
            _ => Some(
                (self.last_heard + self.config.primary_timeout)
                    .min(self.last_sent + self.config.heartbeat_interval),
            ),
        }
    }

    pub fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        let frame = self.next_frame(now);
        self.check_invariants();
        frame
    }

    /// `poll_transmit`, less the invariant check.
    fn next_frame(&mut self, now: Instant) -> Option<Frame> {
        let mut frame = self.queue.pop_front().or_else(|| {
            if !(self.ack_due && self.is_streaming()) {
                return None;
            }
            self.ack_due = false;
            self.last_acked = self.engine.lsn();
            Some(Frame::new(
                self.epoch(),
                Message::Ack {
                    lsn: self.last_acked,
                },
            ))
        })?;
        self.last_sent = now;
        frame.seq = self.seq_out;
        self.seq_out += 1;
        Some(frame)
    }

    pub fn poll_event(&mut self) -> Option<SecondaryEvent> {
        self.events.pop_front()
    }

    /// Turns this secondary into a primary at the next epoch (above
    /// `at_least`, the highest epoch the promoter knows of), starting after
    /// its applied LSN. A transaction received in part is dropped: it was
    /// never acknowledged, so no client got `OK` for it. Returns the engine
    /// (now writable) and the history with the new epoch.
    pub fn promote(
        mut self,
        at_least: Epoch,
    ) -> Result<(Engine, EpochHistory), crate::error::Error> {
        if !self.is_consistent() {
            return Err(crate::error::Error::Corrupt {
                db: crate::ids::DbId(0),
                block: crate::ids::BlockId(0),
                why: "promotion refused: a snapshot is half-loaded".into(),
            });
        }
        self.pending.clear();
        let lsn = self.engine.promote()?;
        self.history
            .promote(lsn, self.config.node, at_least.max(self.epoch()));
        Ok((self.engine, self.history))
    }

    fn refuse(&mut self, code: ErrorCode, message: &str) {
        self.queue.push_back(Frame::new(
            self.epoch(),
            Message::Error {
                code,
                message: message.into(),
            },
        ));
        self.events.push_back(SecondaryEvent::Disconnect {
            reason: message.into(),
        });
        let (queue, seq_out) = (std::mem::take(&mut self.queue), self.seq_out);
        self.reset_connection();
        // The error frame still goes out before the driver closes.
        self.queue = queue;
        self.seq_out = seq_out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DatabaseOptions, EngineConfig, IndexMode, Role};
    use crate::ids::{BlockId, DbId};
    use bytes::Bytes;

    fn follower() -> Engine {
        Engine::new(EngineConfig {
            role: Role::Follower(IndexMode::Maintained),
            ..Default::default()
        })
    }

    fn feed(sec: &mut Secondary, now: Instant, seq: &mut u64, message: Message) {
        let mut frame = Frame::new(sec.epoch(), message);
        frame.seq = *seq;
        *seq += 1;
        sec.handle_frame(now, frame);
    }

    /// The texts of `SecondaryError` are the ones the `String` errors they
    /// replaced had (they reach logs, `Disconnect` reasons and the error
    /// frames primaries log); the wrapped errors stay reachable as sources.
    #[test]
    fn error_texts_are_unchanged_and_sources_kept() {
        use std::error::Error as _;
        let texts = [
            (
                SecondaryError::OutOfSequence { got: 7, due: 5 },
                "frame 7 where 5 was due: lost, repeated or reordered",
            ),
            (SecondaryError::StaleEpoch, "frame from an older epoch"),
            (
                SecondaryError::WelcomeEpoch,
                "welcome with an inconsistent epoch",
            ),
            (
                SecondaryError::DigestsInTransaction,
                "block digests inside a transaction",
            ),
            (
                SecondaryError::Diverged {
                    blocks: 2,
                    first: (DbId(0), BlockId(3)),
                },
                &format!(
                    "verification: {} block(s) differ from the primary's, first {:?}; resyncing",
                    2,
                    (DbId(0), BlockId(3))
                ),
            ),
            (
                SecondaryError::PrimaryRefused {
                    message: "no".into(),
                },
                "primary refused: no",
            ),
            (
                SecondaryError::Unexpected {
                    message: Box::new(Message::DigestsEnd),
                    phase: Phase::AwaitWelcome,
                },
                &format!(
                    "unexpected {:?} while {:?}",
                    Message::DigestsEnd,
                    Phase::AwaitWelcome
                ),
            ),
            (
                SecondaryError::TxnBeginInTransaction,
                "TxnBegin inside a transaction",
            ),
            (
                SecondaryError::OpOutsideTransaction,
                "op outside a transaction",
            ),
            (SecondaryError::TransactionTooLong, "transaction too long"),
            (
                SecondaryError::BadTransaction {
                    source: DeltaDecodeError::Malformed("x"),
                },
                &DeltaDecodeError::Malformed("x").to_string(),
            ),
            (
                SecondaryError::Apply {
                    source: ApplyError::UnknownDatabase(DbId(4)),
                },
                &format!("apply failed: {}", ApplyError::UnknownDatabase(DbId(4))),
            ),
            (
                SecondaryError::InstallBlock {
                    source: Error::ReadOnly,
                },
                &Error::ReadOnly.to_string(),
            ),
        ];
        for (error, text) in &texts {
            assert_eq!(error.to_string(), *text);
        }
        let apply = SecondaryError::Apply {
            source: ApplyError::UnknownDatabase(DbId(4)),
        };
        assert!(apply.source().is_some_and(|s| s.is::<ApplyError>()));
        assert_eq!(
            SecondaryError::StaleEpoch.code(),
            ErrorCode::StaleEpoch,
            "a stale frame is answered as such"
        );
    }

    #[test]
    fn a_delta_that_does_not_fit_the_blocks_forces_a_full_resync() {
        let now = Instant::now();
        let primary = Engine::new(EngineConfig::default());
        let created = primary
            .create_database("t", DatabaseOptions::default())
            .unwrap();
        let engine = follower();
        engine.apply(&created.delta).unwrap();
        let mut sec = Secondary::new(
            engine,
            EpochHistory::default(),
            SecondaryConfig::new(NodeId(1), Mode::Async),
            now,
        );
        sec.connect(now).unwrap();
        let mut seq = 0;
        let history = EpochHistory::default();
        feed(
            &mut sec,
            now,
            &mut seq,
            Message::Welcome {
                lsn: Lsn(1),
                catch_up: CatchUp::Stream,
                history,
            },
        );
        assert!(sec.is_streaming());
        // A write to a block this copy does not have: its blocks are not the
        // primary's.
        let bad = [
            DeltaOp::TxnBegin { db: DbId(0) },
            DeltaOp::BlockWrite {
                db: DbId(0),
                block: BlockId(7),
                offset: 48,
                bytes: Bytes::from_static(b"x"),
            },
            DeltaOp::TxnCommit { lsn: Lsn(2) },
        ];
        for op in bad {
            feed(&mut sec, now, &mut seq, Message::Op(op));
        }
        assert!(matches!(sec.poll_event(), Some(SecondaryEvent::Online)));
        assert!(matches!(
            sec.poll_event(),
            Some(SecondaryEvent::Disconnect { .. })
        ));
        assert!(!sec.is_consistent());
        sec.disconnected();
        // The next connection starts from the empty log.
        sec.connect(now).unwrap();
        while let Some(frame) = sec.poll_transmit(now) {
            if let Message::Hello { lsn, .. } = frame.message {
                assert_eq!(lsn, Lsn::ZERO);
                assert!(sec.engine().databases().is_empty());
                return;
            }
        }
        panic!("no hello");
    }

    #[test]
    fn a_copy_started_from_nothing_vouches_once_level_with_its_primary() {
        let now = Instant::now();
        let primary = Engine::new(EngineConfig::default());
        let created = primary
            .create_database("t", DatabaseOptions::default())
            .unwrap();
        let mut txn = primary.begin("t").unwrap();
        txn.put(b"k", &[], b"v").unwrap();
        let put = txn.commit().unwrap().unwrap();
        let config = SecondaryConfig::new(NodeId(1), Mode::Sync);
        let mut sec = Secondary::new(follower(), EpochHistory::default(), config.clone(), now);
        assert!(
            sec.is_consistent() && !sec.vouches(),
            "empty: vouches for nothing"
        );
        sec.connect(now).unwrap();
        let mut seq = 0;
        feed(
            &mut sec,
            now,
            &mut seq,
            Message::Welcome {
                lsn: put.lsn,
                catch_up: CatchUp::Stream,
                history: EpochHistory::default(),
            },
        );
        assert!(
            sec.is_streaming() && !sec.vouches(),
            "streaming, not level yet"
        );
        for op in created.delta.ops() {
            feed(&mut sec, now, &mut seq, Message::Op(op.clone()));
        }
        assert_eq!(sec.engine().lsn(), created.lsn);
        assert!(!sec.vouches(), "behind the head it was welcomed at");
        for op in put.delta.ops() {
            feed(&mut sec, now, &mut seq, Message::Op(op.clone()));
        }
        assert_eq!(sec.engine().lsn(), put.lsn);
        assert!(
            sec.vouches(),
            "level with the primary: it holds what it held"
        );
        sec.disconnected();
        assert!(sec.vouches(), "and keeps vouching across connections");
        // A copy with blocks of its own (a data directory, a demoted
        // primary) vouches from the start.
        let engine = follower();
        engine.apply(&created.delta).unwrap();
        let sec = Secondary::new(engine, EpochHistory::default(), config, now);
        assert!(sec.vouches());
    }
}
