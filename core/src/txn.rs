//! Transactions: a write set built privately, applied to the blocks at commit.
//!
//! A transaction holds its databases' writer locks from `begin` until it
//! commits or aborts, so its reads of committed state plus its own writes
//! cannot be invalidated by another writer: transactions on one database are
//! serializable. Its writes wait in a write set (key → new record or
//! delete) and touch no block until `commit`, which is why readers see only
//! committed states and an abort leaves no trace.
//!
//! `commit` plans first (which records update in place, which append, how
//! many new blocks that takes), reserves the memory, and only then changes
//! blocks and indexes, so the one fallible resource — memory — is checked
//! before anything changes.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::lock_api::ArcMutexGuard;
use parking_lot::RawMutex;

use crate::block::BlockHeader;
use crate::constants::{BLOCKS_PER_DB_MAX, BLOCK_HEADER_SIZE, DELTA_OPS_MAX, DELTA_SIZE_MAX};
use crate::database::{Database, DbState};
use crate::delta::{Delta, DeltaOp};
use crate::engine::Engine;
use crate::error::Error;
use crate::ids::{BlockId, Lsn, RecordId};
use crate::record::{EncodedRecord, Record, STATE_EXPIRES, STATE_TOMBSTONE};
use crate::write_set::{Pending, WriteSet};

/// A committed transaction: its LSN and the delta that replays it.
#[derive(Clone, Debug)]
pub struct Committed {
    pub lsn: Lsn,
    pub delta: Delta,
}

/// What one database's part of a transaction writes, shown to the caller
/// of [`Txn::commit_observed`] while the commit is being made visible.
#[derive(Debug)]
pub struct Written<'a> {
    db: &'a str,
    writes: &'a WriteSet,
}

impl Written<'_> {
    /// The database's name.
    pub fn db(&self) -> &str {
        self.db
    }

    /// Keys written (puts and deletes).
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Whether `key` is written.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.writes.contains_key(key)
    }

    /// The keys written, in the order first written.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.writes.iter().map(|p| p.key())
    }
}

/// One database's part of a transaction: its writer lock and its writes.
struct Part {
    db: Arc<Database>,
    _writer: ArcMutexGuard<RawMutex, ()>,
    writes: WriteSet,
}

/// A write transaction on one database, or on several (`Engine::begin_across`)
/// committed as one (one LSN, one delta). Reads and writes act on the
/// *selected* database (`select`). Dropping it aborts it.
pub struct Txn {
    engine: Engine,
    /// Ascending database id: the order their writer locks were taken in.
    parts: Vec<Part>,
    selected: usize,
}

impl std::fmt::Debug for Txn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Txn");
        for part in &self.parts {
            d.field(part.db.name(), &part.writes.len());
        }
        d.finish()
    }
}

impl Txn {
    /// Takes the writer lock of each of `dbs` in ascending id order, so two
    /// transactions across the same databases never wait on each other in
    /// a cycle. The first of `dbs` as given is selected.
    pub(crate) fn new(engine: Engine, dbs: Vec<Arc<Database>>) -> Self {
        debug_assert!(!dbs.is_empty());
        let first = dbs[0].id();
        let mut dbs = dbs;
        dbs.sort_by_key(|d| d.id());
        dbs.dedup_by_key(|d| d.id());
        let parts: Vec<Part> = dbs
            .into_iter()
            .map(|db| Part {
                _writer: db.writer.lock_arc(),
                db,
                writes: WriteSet::default(),
            })
            .collect();
        let selected = parts
            .iter()
            .position(|p| p.db.id() == first)
            .expect("the first database is a part");
        Txn {
            engine,
            parts,
            selected,
        }
    }

    fn part(&self) -> &Part {
        &self.parts[self.selected]
    }

    fn part_mut(&mut self) -> &mut Part {
        &mut self.parts[self.selected]
    }

    /// Makes `db` the database later reads and writes act on. It must be
    /// one the transaction began on.
    pub fn select(&mut self, db: &str) -> Result<(), Error> {
        match self.parts.iter().position(|p| p.db.name() == db) {
            Some(i) => {
                self.selected = i;
                Ok(())
            }
            None => Err(Error::NotInTransaction(db.to_string())),
        }
    }

    /// The selected database.
    pub fn database(&self) -> &Arc<Database> {
        &self.part().db
    }

    /// Every database the transaction began on, in ascending id.
    pub fn databases(&self) -> impl Iterator<Item = &Arc<Database>> {
        self.parts.iter().map(|p| &p.db)
    }

    fn encode(
        &self,
        key: &[u8],
        values: &[Option<&[u8]>],
        payload: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<EncodedRecord, Error> {
        let schema = &self.part().db.schema;
        if values.len() != schema.indexes.len() {
            return Err(Error::ValueCount {
                db: schema.name.clone(),
                expected: schema.indexes.len(),
                got: values.len(),
            });
        }
        EncodedRecord::encode_expiring(key, values, payload, expires_at_ms, schema.capacity())
    }

    /// Inserts or replaces the record with unique key `key`. `values` holds
    /// one entry per declared non-unique key, in declaration order.
    pub fn put(
        &mut self,
        key: &[u8],
        values: &[Option<&[u8]>],
        payload: &[u8],
    ) -> Result<(), Error> {
        self.put_expiring(key, values, payload, None)
    }

    /// Inserts or replaces the record with unique key `key`, to expire at
    /// `expires_at_ms` (ms since the Unix epoch) if given.
    pub fn put_expiring(
        &mut self,
        key: &[u8],
        values: &[Option<&[u8]>],
        payload: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<(), Error> {
        let record = self.encode(key, values, payload, expires_at_ms)?;
        self.part_mut().writes.set(Pending::Put(record));
        Ok(())
    }

    /// Deletes the record of `key` if its time ran out at `now_ms` (and
    /// this transaction has not written it): the primary's expiry. Returns
    /// whether it did.
    pub fn delete_expired(&mut self, key: &[u8], now_ms: u64) -> Result<bool, Error> {
        if self.part().writes.contains_key(key) {
            return Ok(false);
        }
        let expired = self
            .part()
            .db
            .read()
            .get_including_expired(key)?
            .is_some_and(|r| r.expires_at_ms.is_some_and(|at| at <= now_ms));
        if expired {
            self.part_mut().writes.set(Pending::Delete(key.into()));
        }
        Ok(expired)
    }

    /// Inserts a record; `Error::DuplicateKey` if the key exists.
    pub fn insert(
        &mut self,
        key: &[u8],
        values: &[Option<&[u8]>],
        payload: &[u8],
    ) -> Result<(), Error> {
        let record = self.encode(key, values, payload, None)?;
        if self.contains(key)? {
            return Err(Error::DuplicateKey);
        }
        self.part_mut().writes.set(Pending::Put(record));
        Ok(())
    }

    /// Deletes the record with key `key`. Returns whether there was one.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        let existed = self.contains(key)?;
        if existed {
            self.part_mut().writes.set(Pending::Delete(key.into()));
        }
        Ok(existed)
    }

    /// Whether `key` exists, as this transaction sees it.
    pub fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        let part = self.part();
        match part.writes.get(key) {
            Some(pending) => Ok(pending.record().is_some()),
            None => part.db.read().contains(key),
        }
    }

    /// The record with key `key`, as this transaction sees it.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, Error> {
        let part = self.part();
        match part.writes.get(key) {
            Some(pending) => Ok(pending.record().map(|r| r.as_ref().to_record())),
            None => part.db.get(key),
        }
    }

    /// Keys of the records whose non-unique key `index` equals `value`, as
    /// this transaction sees them: committed matches first (record id
    /// order), then this transaction's own (key order).
    pub fn find(
        &self,
        index: &str,
        value: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let part = self.part();
        let i = part.db.schema.index_position(index)?;
        let limit = limit.unwrap_or(usize::MAX);
        let mut keys: Vec<Vec<u8>> = part
            .db
            .find(index, value, None)?
            .into_iter()
            .filter(|k| !part.writes.contains_key(k))
            .collect();
        for pending in part.writes.iter() {
            if pending
                .record()
                .is_some_and(|r| r.as_ref().value(i) == Some(value))
            {
                keys.push(pending.key().to_vec());
            }
        }
        keys.truncate(limit);
        Ok(keys)
    }

    /// Number of records, as this transaction sees it.
    pub fn count(&self) -> Result<u64, Error> {
        let part = self.part();
        let view = part.db.read();
        let mut count = view.count() as i64;
        for pending in part.writes.iter() {
            // `count` counts stored records, expired ones included (as
            // Redis's DBSIZE counts keys not yet reclaimed).
            count += pending.record().is_some() as i64 - view.stores(pending.key())? as i64;
        }
        Ok(count as u64)
    }

    /// Every key, as this transaction sees it, in no particular order.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, Error> {
        let part = self.part();
        let mut keys = Vec::new();
        part.db.read().for_each_key(|k| {
            if !part.writes.contains_key(k) {
                keys.push(k.to_vec());
            }
        })?;
        for pending in part.writes.iter() {
            if pending.record().is_some() {
                keys.push(pending.key().to_vec());
            }
        }
        Ok(keys)
    }

    /// Deletes every record of the selected database, expired ones too
    /// (`FLUSHDB`).
    pub fn clear(&mut self) -> Result<(), Error> {
        let mut keys = Vec::new();
        self.part()
            .db
            .read()
            .for_each_stored_key(|k| keys.push(k.to_vec()))?;
        keys.extend(
            self.part()
                .writes
                .iter()
                .filter(|p| p.record().is_some())
                .map(|p| p.key().to_vec()),
        );
        let writes = &mut self.part_mut().writes;
        for key in keys {
            writes.set(Pending::Delete(key.into()));
        }
        Ok(())
    }

    /// The keys this transaction writes on the selected database (puts and
    /// deletes), in the order first written.
    pub fn written_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.part().writes.iter().map(|p| p.key())
    }

    /// Whether this transaction writes `key` of the selected database.
    pub fn writes_key(&self, key: &[u8]) -> bool {
        self.part().writes.contains_key(key)
    }

    /// Number of keys this transaction changes, on every database.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.writes.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|p| p.writes.is_empty())
    }

    /// Makes the writes visible and durable in memory, as one transaction
    /// with the next LSN. Returns its delta, or `None` if it wrote nothing.
    pub fn commit(self) -> Result<Option<Committed>, Error> {
        self.commit_observed(|_| {})
    }

    /// `commit`, calling `observe` with each database's writes once they
    /// are applied but before any reader can see them or another writer of
    /// those databases can begin: whoever `observe` tells (a `WATCH`) learns
    /// of the write before anyone can read it.
    pub fn commit_observed(
        self,
        mut observe: impl FnMut(Written<'_>),
    ) -> Result<Option<Committed>, Error> {
        // Every part, written or not, keeps its writer until the commit is
        // over: a database this transaction only read or watched must not
        // take another writer's commit before this one.
        let Txn { engine, parts, .. } = self;
        let mut written = parts.iter().filter(|p| !p.writes.is_empty());
        match (written.next(), written.next()) {
            (None, _) => Ok(None),
            // The common case, one database: no per-database vectors.
            (Some(part), None) => engine
                .commit_with(&part.db, |state, lsn| {
                    let plan = plan(state, &part.writes)?;
                    check_size(&[(&*state, &plan)])?;
                    reserve(state, &plan)?;
                    let delta = execute(state, plan, lsn)?;
                    observe(Written {
                        db: part.db.name(),
                        writes: &part.writes,
                    });
                    Ok(delta)
                })
                .map(Some),
            (Some(first), Some(second)) => {
                let written: Vec<&Part> = [first, second].into_iter().chain(written).collect();
                let dbs: Vec<&Database> = written.iter().map(|p| &*p.db).collect();
                engine
                    .commit_across(&dbs, |states, lsn| {
                        // Plan every database first: memory is reserved
                        // everywhere before any block changes.
                        let mut plans = Vec::with_capacity(written.len());
                        for (state, part) in states.iter().zip(&written) {
                            plans.push(plan(state, &part.writes)?);
                        }
                        let parts: Vec<(&DbState, &Plan<'_>)> =
                            states.iter().map(|s| &**s).zip(&plans).collect();
                        check_size(&parts)?;
                        for (state, plan) in states.iter_mut().zip(&plans) {
                            reserve(state, plan)?;
                        }
                        let mut deltas = Vec::with_capacity(written.len());
                        for (state, plan) in states.iter_mut().zip(plans) {
                            match execute(state, plan, lsn) {
                                Ok(delta) => deltas.push(delta),
                                Err(e) => {
                                    // Earlier databases hold part of a
                                    // transaction that will not complete.
                                    for state in states.iter_mut() {
                                        state.poisoned = true;
                                    }
                                    return Err(e);
                                }
                            }
                        }
                        for part in &written {
                            observe(Written {
                                db: part.db.name(),
                                writes: &part.writes,
                            });
                        }
                        Ok(Delta::join(deltas))
                    })
                    .map(Some)
            }
        }
    }

    /// Drops the writes. Equivalent to dropping the transaction.
    pub fn abort(self) {}
}

/// Block changes of one commit on the primary, collected to emit its delta.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    pub(crate) allocs: Vec<BlockId>,
    /// Byte ranges written, as (block, start, end), in any order.
    ranges: Vec<(BlockId, u32, u32)>,
}

impl Dirty {
    pub(crate) fn touch(&mut self, block: BlockId, start: usize, end: usize) {
        self.ranges.push((block, start as u32, end as u32));
    }

    /// Writes the LSN into every touched header, frees blocks left empty
    /// (other than the tail), and builds the delta.
    pub(crate) fn finish(mut self, state: &mut DbState, lsn: Lsn) -> Delta {
        let db = state.db;
        // Every touched block's header changes (its LSN at least).
        let touched = self.ranges.len();
        for i in 0..touched {
            let block = self.ranges[i].0;
            self.ranges.push((block, 0, BLOCK_HEADER_SIZE as u32));
        }
        self.ranges.sort_unstable();
        merge(&mut self.ranges);
        let mut frees = Vec::new();
        let mut data_len = 0;
        for &(block, start, end) in &self.ranges {
            data_len += (end - start) as usize;
            if start != 0 {
                continue;
            }
            // One header range per block, first in its sorted ranges.
            let slot = state.table.get(block).expect("a touched block exists");
            let bytes = state.slot_bytes_mut(slot);
            let mut header = BlockHeader::read(bytes);
            header.lsn = lsn;
            header.write(bytes);
            if header.record_count == 0 && state.tail != Some(block) {
                frees.push(block);
            }
        }
        // One buffer for all write bytes; ops slice it.
        let mut data = Vec::with_capacity(data_len);
        let mut writes = Vec::with_capacity(self.ranges.len());
        for &(block, start, end) in &self.ranges {
            if frees.contains(&block) {
                continue;
            }
            let bytes = state.block(block).expect("a touched block exists");
            let at = data.len();
            data.extend_from_slice(&bytes[start as usize..end as usize]);
            writes.push((block, start, at..data.len()));
        }
        let data = Bytes::from(data);
        let mut ops = Vec::with_capacity(2 + self.allocs.len() + writes.len() + frees.len());
        ops.push(DeltaOp::TxnBegin { db });
        ops.extend(
            self.allocs
                .iter()
                .map(|&block| DeltaOp::BlockAlloc { db, block }),
        );
        ops.extend(
            writes
                .into_iter()
                .map(|(block, offset, r)| DeltaOp::BlockWrite {
                    db,
                    block,
                    offset,
                    bytes: data.slice(r),
                }),
        );
        for &block in &frees {
            state.add_header_counts(&state.header(block).expect("exists"), -1);
            state.release_block(block);
            ops.push(DeltaOp::BlockFree { db, block });
        }
        ops.push(DeltaOp::TxnCommit { lsn });
        Delta::from_ops(ops)
    }
}

/// Merges sorted (block, start, end) ranges in place where they touch or
/// overlap within a block. Each merged range starts where one of its ranges
/// starts: at a record boundary or at 0.
fn merge(ranges: &mut Vec<(BlockId, u32, u32)>) {
    let mut out = 0;
    for i in 0..ranges.len() {
        let (b, s, e) = ranges[i];
        if out > 0 && ranges[out - 1].0 == b && s <= ranges[out - 1].2 {
            ranges[out - 1].2 = ranges[out - 1].2.max(e);
        } else {
            ranges[out] = (b, s, e);
            out += 1;
        }
    }
    ranges.truncate(out);
}

/// How one write of the write set lands.
enum Step<'a> {
    /// Over the record's slot, of this many bytes (all of it rewritten).
    InPlace(RecordId, &'a EncodedRecord, usize),
    Replace(RecordId, &'a EncodedRecord),
    Append(&'a EncodedRecord),
    Delete(RecordId),
}

/// A database's writes, planned: how each lands, and at most how large
/// their delta is.
struct Plan<'a> {
    steps: Vec<Step<'a>>,
    new_blocks: usize,
    size: DeltaSize,
}

/// At most how many ops and bytes a delta (or a database's part of one)
/// holds.
#[derive(Clone, Copy, Debug, Default)]
struct DeltaSize {
    ops: usize,
    bytes: usize,
}

impl DeltaSize {
    fn add(&mut self, ops: usize, bytes: usize) {
        self.ops += ops;
        self.bytes += bytes;
    }

    fn fits(self) -> bool {
        self.ops <= DELTA_OPS_MAX && self.bytes <= DELTA_SIZE_MAX
    }
}

/// Bytes one op adds to an encoded delta besides a write's data: a
/// `BlockWrite`'s tag, database, block, offset and length (the largest).
const OP_OVERHEAD: usize = 17;

/// Plans `writes` against `state`. Changes nothing.
fn plan<'a>(state: &DbState, writes: &'a WriteSet) -> Result<Plan<'a>, Error> {
    let mut steps = Vec::with_capacity(writes.len());
    let mut appends = Vec::new();
    for pending in writes.iter() {
        let existing = state
            .lookup(pending.key())?
            .map(|(rid, rec)| (rid, rec.slot_len()));
        let step = match (existing, pending.record()) {
            (Some((rid, slot_len)), Some(rec)) if rec.len() <= slot_len => {
                Step::InPlace(rid, rec, slot_len)
            }
            (Some((rid, _)), Some(rec)) => Step::Replace(rid, rec),
            (None, Some(rec)) => Step::Append(rec),
            (Some((rid, _)), None) => Step::Delete(rid),
            (None, None) => continue,
        };
        if let Step::Append(rec) | Step::Replace(_, rec) = step {
            appends.push(rec.len());
        }
        steps.push(step);
    }
    let new_blocks = blocks_needed(state, &appends);
    if state.table.len() + new_blocks > BLOCKS_PER_DB_MAX {
        return Err(Error::DatabaseFull {
            db: state.db,
            max: BLOCKS_PER_DB_MAX,
        });
    }
    let size = quick_size(&steps, new_blocks);
    Ok(Plan {
        steps,
        new_blocks,
        size,
    })
}

/// A quick upper bound of a plan's delta: every step in a block of its
/// own (a header write each, and a free).
fn quick_size(steps: &[Step<'_>], new_blocks: usize) -> DeltaSize {
    let mut size = DeltaSize::default();
    // The tail's header; each new block's alloc and header.
    size.add(
        1 + 2 * new_blocks,
        (1 + new_blocks) * (BLOCK_HEADER_SIZE + OP_OVERHEAD) + new_blocks * OP_OVERHEAD,
    );
    for step in steps {
        let header = BLOCK_HEADER_SIZE + 2 * OP_OVERHEAD;
        match step {
            Step::InPlace(_, _, slot_len) => size.add(3, slot_len + OP_OVERHEAD + header),
            Step::Replace(_, rec) => size.add(4, rec.len() + 1 + 2 * OP_OVERHEAD + header),
            Step::Append(rec) => size.add(1, rec.len() + OP_OVERHEAD),
            Step::Delete(_) => size.add(3, 1 + OP_OVERHEAD + header),
        }
    }
    size
}

/// An upper bound of a plan's delta, block by block, as `Dirty::finish`
/// builds it: a block whose every record this transaction deletes (and
/// that is not the tail) becomes one `BlockFree`, its writes dropped; any
/// other touched block, its ranges and one header write.
fn exact_size(state: &DbState, plan: &Plan<'_>) -> DeltaSize {
    #[derive(Default)]
    struct Touch {
        deletes: u32,
        ranges: usize,
        bytes: usize,
        rewritten: bool,
    }
    let mut blocks: std::collections::HashMap<BlockId, Touch> = std::collections::HashMap::new();
    let mut size = DeltaSize::default();
    size.add(
        1 + 2 * plan.new_blocks,
        (1 + plan.new_blocks) * (BLOCK_HEADER_SIZE + OP_OVERHEAD) + plan.new_blocks * OP_OVERHEAD,
    );
    for step in &plan.steps {
        match step {
            Step::InPlace(rid, _, slot_len) => {
                let t = blocks.entry(rid.block).or_default();
                t.ranges += 1;
                t.bytes += slot_len;
                t.rewritten = true;
            }
            Step::Replace(rid, rec) => {
                let t = blocks.entry(rid.block).or_default();
                t.deletes += 1;
                t.ranges += 1;
                t.bytes += 1;
                size.add(1, rec.len() + OP_OVERHEAD);
            }
            Step::Append(rec) => size.add(1, rec.len() + OP_OVERHEAD),
            Step::Delete(rid) => {
                let t = blocks.entry(rid.block).or_default();
                t.deletes += 1;
                t.ranges += 1;
                t.bytes += 1;
            }
        }
    }
    for (block, t) in blocks {
        let emptied = !t.rewritten
            && state.tail != Some(block)
            && state
                .header(block)
                .is_some_and(|h| h.record_count == t.deletes);
        match emptied {
            true => size.add(1, OP_OVERHEAD),
            false => size.add(
                t.ranges + 1,
                t.bytes + (t.ranges + 1) * OP_OVERHEAD + BLOCK_HEADER_SIZE,
            ),
        }
    }
    size
}

/// Refuses, before anything changes, a transaction whose delta could pass
/// what a delta may hold (`DELTA_OPS_MAX`, `DELTA_SIZE_MAX`): secondaries
/// and the log would refuse it after it was applied here. The quick bound
/// settles ordinary transactions; a big one is counted block by block.
fn check_size(parts: &[(&DbState, &Plan<'_>)]) -> Result<(), Error> {
    let mut quick = DeltaSize::default();
    quick.add(2, 2 * OP_OVERHEAD);
    for (_, plan) in parts {
        quick.add(plan.size.ops, plan.size.bytes);
    }
    if quick.fits() {
        return Ok(());
    }
    let mut exact = DeltaSize::default();
    exact.add(2, 2 * OP_OVERHEAD);
    for (state, plan) in parts {
        let s = exact_size(state, plan);
        exact.add(s.ops, s.bytes);
    }
    match exact.fits() {
        true => Ok(()),
        false => Err(Error::TransactionTooLarge {
            ops: exact.ops,
            bytes: exact.bytes,
        }),
    }
}

/// Reserves the memory a checked plan's new blocks take.
fn reserve(state: &mut DbState, plan: &Plan<'_>) -> Result<(), Error> {
    state.arena.reserve(plan.new_blocks)
}

/// Applies a plan to the blocks and indexes; returns the database's delta.
/// A failure here means corrupt blocks: the database is poisoned.
fn execute(state: &mut DbState, plan: Plan<'_>, lsn: Lsn) -> Result<Delta, Error> {
    let mut dirty = Dirty::default();
    let result = (|| {
        for step in plan.steps {
            match step {
                Step::InPlace(rid, rec, _) => update_in_place(state, rid, rec, &mut dirty)?,
                Step::Replace(rid, rec) => {
                    tombstone(state, rid, &mut dirty)?;
                    append(state, rec, &mut dirty)?;
                }
                Step::Append(rec) => {
                    append(state, rec, &mut dirty)?;
                }
                Step::Delete(rid) => tombstone(state, rid, &mut dirty)?,
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        state.poisoned = true;
        return Err(e);
    }
    Ok(dirty.finish(state, lsn))
}

/// New blocks that appending records of these lengths, in order, takes.
fn blocks_needed(state: &DbState, lens: &[usize]) -> usize {
    let block_size = state.arena.block_size();
    let mut free = state
        .tail
        .and_then(|t| state.header(t))
        .map_or(0, |h| block_size - h.free_offset as usize);
    let mut blocks = 0;
    for &len in lens {
        if len > free {
            blocks += 1;
            free = block_size - BLOCK_HEADER_SIZE;
        }
        free -= len;
    }
    blocks
}

pub(crate) fn tombstone(
    state: &mut DbState,
    rid: RecordId,
    dirty: &mut Dirty,
) -> Result<(), Error> {
    state.index_remove(rid)?;
    let slot_len = state.record(rid)?.slot_len();
    let slot = state.table.get(rid.block).expect("record's block exists");
    let bytes = state.slot_bytes_mut(slot);
    // The expiry flag stays: it says where the record's fields are.
    let state_byte = &mut bytes[rid.offset as usize];
    *state_byte = STATE_TOMBSTONE | (*state_byte & STATE_EXPIRES);
    let mut header = BlockHeader::read(bytes);
    header.record_count -= 1;
    header.dead_bytes += slot_len as u32;
    header.write(bytes);
    state.records -= 1;
    state.dead_bytes += slot_len as u64;
    dirty.touch(rid.block, rid.offset as usize, rid.offset as usize + 1);
    Ok(())
}

fn update_in_place(
    state: &mut DbState,
    rid: RecordId,
    rec: &EncodedRecord,
    dirty: &mut Dirty,
) -> Result<(), Error> {
    state.index_remove(rid)?;
    let slot_len = state.record(rid)?.slot_len();
    let slot = state.table.get(rid.block).expect("record's block exists");
    let start = rid.offset as usize;
    rec.write_into(&mut state.slot_bytes_mut(slot)[start..start + slot_len]);
    state.index_insert(rid)?;
    dirty.touch(rid.block, start, start + slot_len);
    Ok(())
}

/// Appends a record to the tail block, opening a new block when it does not
/// fit. The caller reserved the arena slots.
pub(crate) fn append(
    state: &mut DbState,
    rec: &EncodedRecord,
    dirty: &mut Dirty,
) -> Result<RecordId, Error> {
    let block_size = state.arena.block_size();
    let fits = |state: &DbState, t: BlockId| {
        state
            .header(t)
            .is_some_and(|h| h.free_offset as usize + rec.len() <= block_size)
    };
    let tail = match state.tail {
        Some(t) if fits(state, t) => t,
        _ => open_block(state, dirty)?,
    };
    let slot = state.table.get(tail).expect("tail exists");
    let bytes = state.slot_bytes_mut(slot);
    let mut header = BlockHeader::read(bytes);
    let at = header.free_offset as usize;
    rec.write_into(&mut bytes[at..at + rec.len()]);
    header.free_offset += rec.len() as u32;
    header.record_count += 1;
    header.write(bytes);
    state.records += 1;
    state.used_bytes += rec.len() as u64;
    let rid = RecordId {
        block: tail,
        offset: at as u32,
    };
    state.index_insert(rid)?;
    dirty.touch(tail, at, at + rec.len());
    Ok(rid)
}

fn open_block(state: &mut DbState, dirty: &mut Dirty) -> Result<BlockId, Error> {
    let block = state.table.next_id();
    let slot = state.arena.alloc()?;
    state.table.insert(block, slot);
    // The LSN is set when the commit finishes.
    BlockHeader::empty(state.db, block, Lsn::ZERO).write(state.slot_bytes_mut(slot));
    dirty.allocs.push(block);
    dirty.touch(block, 0, BLOCK_HEADER_SIZE);
    state.tail = Some(block);
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::{check_size, exact_size, merge, plan, quick_size, DeltaSize, Plan, Step};
    use crate::engine::{DatabaseOptions, Engine, EngineConfig};
    use crate::error::Error;
    use crate::ids::{BlockId, RecordId};
    use crate::record::EncodedRecord;
    use crate::write_set::{Pending, WriteSet};

    fn engine_with_records(n: u32) -> Engine {
        let engine = Engine::new(EngineConfig::default());
        engine
            .create_database("t", DatabaseOptions::default().block_size(4096))
            .unwrap();
        let mut txn = engine.begin("t").unwrap();
        for i in 0..n {
            txn.put(format!("k{i:05}").as_bytes(), &[], &[7; 80])
                .unwrap();
        }
        txn.commit().unwrap();
        engine
    }

    /// Deleting every record of full blocks frees them: a delta of about
    /// one op per block, however many records, as `Dirty::finish` builds
    /// it. The bound follows it, so a big `FLUSHDB` is not refused.
    #[test]
    fn deleting_whole_blocks_is_counted_as_their_frees() {
        let engine = engine_with_records(2000);
        let db = engine.database("t").unwrap();
        let blocks = db.stats().blocks;
        let mut writes = WriteSet::default();
        for i in 0..2000 {
            writes.set(Pending::Delete(format!("k{i:05}").into_bytes().into()));
        }
        let state = db.state.read();
        let plan = plan(&state, &writes).unwrap();
        let exact = exact_size(&state, &plan);
        assert!(plan.size.ops >= 3 * 2000, "{:?}", plan.size);
        assert!(
            exact.ops <= blocks as usize + 200,
            "{exact:?} for {blocks} blocks"
        );
        drop(state);
        // And the real delta is that small.
        let mut txn = engine.begin("t").unwrap();
        txn.clear().unwrap();
        let delta = txn.commit().unwrap().unwrap().delta;
        assert!(
            delta.ops().len() <= exact.ops,
            "{} > {exact:?}",
            delta.ops().len()
        );
        assert!(delta.encoded_len() <= exact.bytes + 16);
    }

    /// Rewriting big slots in place writes every slot whole: 4,200 slots
    /// of 65,000 bytes pass `DELTA_SIZE_MAX`, and are refused before they
    /// apply.
    #[test]
    fn a_transaction_too_large_for_a_delta_is_refused_before_it_applies() {
        let engine = engine_with_records(10);
        let db = engine.database("t").unwrap();
        let state = db.state.read();
        let rec = EncodedRecord::encode(b"k", &[], b"x", 4000).unwrap();
        let rid = |i: u32| RecordId {
            block: BlockId(i),
            offset: 48,
        };
        let plan = |n: u32| Plan {
            steps: (0..n)
                .map(|i| Step::InPlace(rid(i), &rec, 65_000))
                .collect(),
            new_blocks: 0,
            size: DeltaSize::default(),
        };
        let mut big = plan(4200);
        big.size = quick_size(&big.steps, 0);
        assert!(matches!(
            check_size(&[(&state, &big)]),
            Err(Error::TransactionTooLarge { .. })
        ));
        let mut fine = plan(1000);
        fine.size = quick_size(&fine.steps, 0);
        assert!(check_size(&[(&state, &fine)]).is_ok());
        // Two databases' parts count together.
        assert!(check_size(&[
            (&state, &fine),
            (&state, &fine),
            (&state, &fine),
            (&state, &fine),
            (&state, &fine)
        ])
        .is_err());
    }

    #[test]
    fn merge_joins_touching_ranges_within_a_block() {
        let b = |i| BlockId(i);
        let mut r = vec![
            (b(1), 0, 48),
            (b(1), 48, 100),
            (b(1), 120, 121),
            (b(1), 120, 200),
            (b(2), 0, 48),
        ];
        merge(&mut r);
        assert_eq!(r, vec![(b(1), 0, 100), (b(1), 120, 200), (b(2), 0, 48)]);
    }
}
