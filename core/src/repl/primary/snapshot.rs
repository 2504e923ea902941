//! Full resync: the digests exchange and the snapshot cursor.
//!
//! A secondary the backlog cannot serve first sends the digests of the
//! blocks it holds (`AwaitDigests`); then the cursor walks every block in
//! (database, block) order, reading each at a consistent point of the
//! engine, and sends it (or `BlockSame` when the secondary's digest
//! matches). Writers never stop: deltas committed meanwhile are forwarded
//! filtered against what the cursor has passed (`SnapshotCursor::filter`),
//! so the copy reaches the state of one LSN once the secondary has applied
//! every delta up to `SnapshotEnd`.
//!
//! Apart from `Primary` because this is the subtle part: which later
//! changes a half-sent copy needs is decided here, and only here.

use std::collections::{BTreeSet, HashMap};

use crate::delta::{Delta, DeltaOp};
use crate::engine::Engine;
use crate::ids::{BlockId, DbId, Lsn};
use crate::repl::frame::{ErrorCode, Frame, Message};
use crate::repl::history::Epoch;
use crate::repl::limits::{DIGESTS_HELD_MAX, INVARIANT_WALK_LEN_MAX};
use crate::repl::primary::session::{subscribed, Phase, SessionId};
use crate::repl::primary::Primary;

/// A position in (database, block) order.
type Position = (u32, u32);
/// `[from, to)` seen empty at an LSN.
type Gap = (Position, Position, Lsn);

/// Where the cursor stands once every block is sent.
const POSITION_END: Position = (u32::MAX, u32::MAX);

#[derive(Debug)]
pub(super) struct SnapshotCursor {
    /// Next block to send: databases in id order, blocks in id order.
    db: u32,
    block: u32,
    /// Header LSN of each block sent: deltas at or below it are in the copy.
    sent: HashMap<(DbId, BlockId), Lsn>,
    /// Ranges of (database, block) the cursor passed with no block there,
    /// and the LSN they were seen empty at: later deltas there are needed.
    /// In cursor order, not overlapping (some empty: see `next_frame`).
    gaps: Vec<Gap>,
    /// Databases the secondary knows of (from `SnapshotBegin` and forwarded
    /// `DbCreate`s): blocks of later ones wait until their creation is sent.
    dbs_known: u32,
    /// Digests of the blocks the secondary holds: equal ones are not sent.
    theirs: HashMap<(DbId, BlockId), u64>,
    blocks_sent: u64,
    blocks_same: u64,
    /// Set once every block is sent: the LSN the copy is consistent at.
    pub(super) end: Option<Lsn>,
}

impl Primary {
    /// A `BlockDigests` frame of a secondary about to be snapshotted: kept,
    /// up to `DIGESTS_HELD_MAX` in all.
    pub(super) fn block_digests(
        &mut self,
        session: SessionId,
        db: DbId,
        entries: Vec<(BlockId, u64)>,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
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

    /// `DigestsEnd`: the secondary sent all its digests; the snapshot starts.
    pub(super) fn digests_end(&mut self, session: SessionId) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Phase::AwaitDigests(theirs) = &mut s.phase else {
            self.refuse(session, ErrorCode::Protocol, "digests end out of place");
            return;
        };
        let theirs = std::mem::take(theirs);
        self.start_snapshot(session, theirs);
    }

    /// Starts a snapshot for `session`, skipping blocks whose digests
    /// `theirs` already matches.
    fn start_snapshot(&mut self, session: SessionId, theirs: HashMap<(DbId, BlockId), u64>) {
        let epoch = self.history.current();
        let subscription = self
            .sessions
            .get(&session)
            .and_then(|s| s.subscription.clone());
        // Schemas and the LSN they hold at, read at one consistent point:
        // the engine's LSN, which may be ahead of the controller's head.
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
        s.copied_at = start;
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
    pub(super) fn filter(&mut self, delta: &Delta) -> Delta {
        let lsn = delta.lsn();
        delta.retain(|op| match op {
            DeltaOp::BlockAlloc { db, block }
            | DeltaOp::BlockWrite { db, block, .. }
            | DeltaOp::BlockFree { db, block } => self.needs(*db, *block, lsn),
            DeltaOp::DbCreate { db, .. } => {
                self.dbs_known = self.dbs_known.max(db.0 + 1);
                true
            }
            DeltaOp::TxnBegin { .. } | DeltaOp::TxnCommit { .. } => true,
        })
    }

    /// The snapshot's next frame once no delta is due: the next block (or
    /// `BlockSame`), then the end marker; `None` while waiting for a
    /// database's creation to be forwarded, and after the end.
    pub(super) fn next_frame(
        &mut self,
        engine: &Engine,
        subscription: &Option<BTreeSet<String>>,
        epoch: Epoch,
    ) -> Option<Frame> {
        if self.end.is_some() {
            return None;
        }
        // Blocks are read at a consistent point `at`: each copy holds exactly
        // the commits up to `at`, and ids passed with no block were empty at
        // `at`; later commits there are forwarded (see `filter`).
        let (found, at, dbs_total) = engine.at_consistent_point(|at| {
            let found = next_block(engine, self.db, self.block, self.dbs_known, subscription);
            (found, at, engine.databases().len() as u32)
        });
        let here = (self.db, self.block);
        match found {
            Some((db, block, bytes, lsn)) => {
                if here < (db.0, block.0) {
                    self.gaps.push((here, (db.0, block.0), at));
                }
                self.sent.insert((db, block), lsn);
                (self.db, self.block) = (db.0, block.0 + 1);
                if self.theirs.get(&(db, block)) == Some(&xxhash_rust::xxh3::xxh3_64(&bytes)) {
                    self.blocks_same += 1;
                    return Some(Frame::new(epoch, Message::BlockSame { db, block }));
                }
                self.blocks_sent += 1;
                Some(Frame::new(
                    epoch,
                    Message::SnapshotBlock {
                        db,
                        block,
                        bytes: bytes.into(),
                    },
                ))
            }
            None if dbs_total > self.dbs_known => {
                // A database created since the snapshot began: its blocks
                // follow once its creation has been forwarded. (Until then
                // each call lands here again and adds an empty gap.)
                self.gaps.push((here, (self.dbs_known, 0), at));
                (self.db, self.block) = (self.dbs_known, 0);
                None
            }
            None => {
                // The copy is whole at `at`: the secondary is consistent once
                // it has applied every delta up to it.
                self.gaps.push((here, POSITION_END, at));
                (self.db, self.block) = POSITION_END;
                self.end = Some(at);
                Some(Frame::new(epoch, Message::SnapshotEnd { lsn: at }))
            }
        }
    }

    /// Asserts the cursor's shape: it stands at the end exactly once `end`
    /// is set, and otherwise within the databases the secondary knows;
    /// every block sent counted once. With `deep`, and at most
    /// `INVARIANT_WALK_LEN_MAX` blocks sent and gaps, also
    /// that the gaps are in cursor order without overlapping, and that
    /// every block sent and every gap lie behind the cursor (`filter`
    /// relies on it: a block ahead of the cursor gets no deltas, as it is
    /// sent later as it is then).
    pub(super) fn check_invariants(&self, deep: bool) {
        let here = (self.db, self.block);
        assert_eq!(
            self.end.is_some(),
            here == POSITION_END,
            "snapshot cursor at {here:?} with end {:?}",
            self.end
        );
        assert!(
            self.end.is_some() || self.db <= self.dbs_known,
            "snapshot cursor at database {} of {} known",
            self.db,
            self.dbs_known
        );
        assert_eq!(
            self.blocks_sent + self.blocks_same,
            self.sent.len() as u64,
            "snapshot blocks counted"
        );
        if !deep || self.sent.len() + self.gaps.len() > INVARIANT_WALK_LEN_MAX {
            return;
        }
        let mut behind: Position = (0, 0);
        for &(from, to, _) in &self.gaps {
            assert!(
                behind <= from && from <= to && to <= here,
                "snapshot gap {from:?}..{to:?} out of order (after {behind:?}, cursor {here:?})"
            );
            behind = to;
        }
        for &(db, block) in self.sent.keys() {
            let key = (db.0, block.0);
            assert!(
                key < here,
                "block {key:?} sent, ahead of the cursor {here:?}"
            );
        }
    }
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
