//! One named database: its blocks, location table and indexes, and the
//! queries over them.
//!
//! A `Database` is shared (`Arc`) between the engine, transactions and
//! readers. Its state sits behind a read-write lock: queries take it shared,
//! and a commit or an apply takes it exclusively for the short time it
//! changes blocks and indexes, so a reader sees a transaction whole or not
//! at all. A second, separate mutex (`writer`) admits one transaction at a
//! time per database for its whole life, from `begin` to commit or abort.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

use crate::arena::{Arena, SlotId};
use crate::block::BlockHeader;
use crate::constants::BLOCK_HEADER_SIZE;
use crate::error::Error;
use crate::ids::{BlockId, DbId, RecordId};
use crate::index::{hash_bytes, Indexes};
use crate::location::LocationTable;
use crate::record::{Record, RecordRef, RecordWalk};

/// What a database is declared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    pub id: DbId,
    pub name: String,
    pub block_size: usize,
    /// Names of the non-unique keys, in the order records carry their values.
    pub indexes: Vec<String>,
}

impl Schema {
    /// Bytes of one block available to records.
    pub fn capacity(&self) -> usize {
        self.block_size - BLOCK_HEADER_SIZE
    }

    /// Position of the non-unique key `name`.
    pub fn index_position(&self, name: &str) -> Result<usize, Error> {
        self.indexes
            .iter()
            .position(|i| i == name)
            .ok_or_else(|| Error::UnknownIndex {
                db: self.name.clone(),
                index: name.to_string(),
            })
    }
}

#[derive(Debug)]
pub struct Database {
    pub(crate) schema: Schema,
    pub(crate) writer: Arc<Mutex<()>>,
    pub(crate) state: RwLock<DbState>,
}

/// Counts that describe a database's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DbStats {
    pub records: u64,
    pub blocks: u64,
    /// Bytes of record slots, live and tombstoned.
    pub used_bytes: u64,
    /// Bytes of tombstoned slots, which compaction reclaims.
    pub dead_bytes: u64,
    /// Bytes of memory mapped for blocks (used, free and partly filled).
    pub mapped_bytes: u64,
    /// Bytes of heap held by the indexes.
    pub index_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct DbState {
    pub(crate) db: DbId,
    pub(crate) arena: Arena,
    pub(crate) table: LocationTable,
    /// `None` on a passive engine, which keeps blocks only.
    pub(crate) indexes: Option<Indexes>,
    /// The block new records are appended to.
    pub(crate) tail: Option<BlockId>,
    pub(crate) records: u64,
    pub(crate) used_bytes: u64,
    pub(crate) dead_bytes: u64,
    /// Set when a change failed half-way; the database then refuses writes.
    pub(crate) poisoned: bool,
    /// During an incremental snapshot: blocks kept from before it that the
    /// primary has not yet confirmed or replaced.
    pub(crate) stale: Option<std::collections::BTreeSet<BlockId>>,
}

impl Database {
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn id(&self) -> DbId {
        self.schema.id
    }

    pub fn name(&self) -> &str {
        &self.schema.name
    }

    /// A consistent read view: every query through it sees the same
    /// committed state. Commits to this database wait while it is held, so
    /// hold it briefly.
    pub fn read(&self) -> ReadView<'_> {
        ReadView {
            schema: &self.schema,
            state: self.state.read(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, Error> {
        self.read().get(key)
    }

    /// Views of several distinct databases at one moment, in the order
    /// given: a transaction across some of them is in all of the views or
    /// none. Taken in ascending id order, the order commits and applies
    /// lock in, so it never waits in a cycle with them.
    pub fn read_across<'a>(dbs: &[&'a Database]) -> Vec<ReadView<'a>> {
        let mut order: Vec<usize> = (0..dbs.len()).collect();
        order.sort_by_key(|&i| dbs[i].id());
        assert!(
            order.windows(2).all(|w| dbs[w[0]].id() != dbs[w[1]].id()),
            "read_across takes distinct databases"
        );
        let mut views: Vec<Option<ReadView<'a>>> = (0..dbs.len()).map(|_| None).collect();
        for i in order {
            views[i] = Some(dbs[i].read());
        }
        views
            .into_iter()
            .map(|v| v.expect("every view taken"))
            .collect()
    }

    /// Calls `f` with the record borrowed from its block, without copying it.
    pub fn with_record<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(RecordRef<'_>) -> R,
    ) -> Result<Option<R>, Error> {
        let view = self.read();
        Ok(view.state.lookup_visible(key)?.map(|(_, rec)| f(rec)))
    }

    pub fn find(
        &self,
        index: &str,
        value: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<Vec<u8>>, Error> {
        self.read().find(index, value, limit)
    }

    pub fn count(&self) -> u64 {
        self.state.read().records
    }

    pub fn stats(&self) -> DbStats {
        self.state.read().stats()
    }
}

/// A shared lock on one database's committed state.
#[derive(Debug)]
pub struct ReadView<'a> {
    schema: &'a Schema,
    state: RwLockReadGuard<'a, DbState>,
}

impl ReadView<'_> {
    /// The record of `key`, unless it is missing or expired.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, Error> {
        Ok(self
            .state
            .lookup_visible(key)?
            .map(|(_, rec)| rec.to_record()))
    }

    /// Whether `key` has a record that has not expired.
    pub fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.state.lookup_visible(key)?.is_some())
    }

    /// The record of `key` even if it expired (and the primary has not yet
    /// deleted it): what a write replaces.
    pub fn get_including_expired(&self, key: &[u8]) -> Result<Option<Record>, Error> {
        Ok(self.state.lookup(key)?.map(|(_, rec)| rec.to_record()))
    }

    /// Unique keys of the records whose non-unique key `index` equals
    /// `value`, in record id order, at most `limit` of them.
    pub fn find(
        &self,
        index: &str,
        value: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<Vec<u8>>, Error> {
        let i = self.schema.index_position(index)?;
        let rids = self.state.matches(i, value)?;
        let limit = limit.unwrap_or(usize::MAX);
        let mut keys = Vec::with_capacity(rids.len().min(limit));
        let now = now_ms();
        // Expired records are skipped before the limit counts.
        for &rid in rids.iter() {
            if keys.len() == limit {
                break;
            }
            let rec = self.state.record(rid)?;
            if !rec.is_expired_at(now) {
                keys.push(rec.key().to_vec());
            }
        }
        Ok(keys)
    }

    pub fn count(&self) -> u64 {
        self.state.records
    }

    /// Whether a record of `key` is stored, expired or not (what `count`
    /// counts).
    pub(crate) fn stores(&self, key: &[u8]) -> Result<bool, Error> {
        Ok(self.state.lookup(key)?.is_some())
    }

    /// Calls `f` with every stored unique key, expired or not.
    pub(crate) fn for_each_stored_key(&self, mut f: impl FnMut(&[u8])) -> Result<(), Error> {
        for (_, rid) in self.state.indexes()?.unique.iter() {
            f(self.state.record(rid)?.key());
        }
        Ok(())
    }

    /// Calls `f` with every unique key that has not expired, in no
    /// particular order.
    pub fn for_each_key(&self, mut f: impl FnMut(&[u8])) -> Result<(), Error> {
        let now = now_ms();
        for (_, rid) in self.state.indexes()?.unique.iter() {
            let rec = self.state.record(rid)?;
            if !rec.is_expired_at(now) {
                f(rec.key());
            }
        }
        Ok(())
    }

    /// Up to `limit` keys whose time ran out at `now_ms`, soonest first:
    /// what the primary's expiry cycle deletes.
    pub fn expired_keys(&self, now_ms: u64, limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        let mut keys = Vec::new();
        for rid in self.state.indexes()?.expiring.due(now_ms).take(limit) {
            keys.push(self.state.record(rid)?.key().to_vec());
        }
        Ok(keys)
    }

    /// Keys with an expiry time, and their mean time to live from
    /// `now_ms` (0 when none, or all are due), as `INFO keyspace` shows.
    pub fn expiry_stats(&self, now_ms: u64) -> Result<(u64, u64), Error> {
        let expiring = &self.state.indexes()?.expiring;
        let mean_ttl = expiring.mean_ms().map_or(0, |m| m.saturating_sub(now_ms));
        Ok((expiring.len() as u64, mean_ttl))
    }

    /// One step of a scan over the unique keys in the order of their hash
    /// ([`key_order`]): the keys whose hash is at least `cursor`, about
    /// `count` of them (more when the database is large, so that a whole
    /// scan takes at most [`SCAN_STEPS_MAX`] steps, each a pass over the
    /// index), and the cursor of the next step, 0 when the scan is over. A
    /// key present from the first step to the last is returned, whatever
    /// is written meanwhile, because a key's hash never changes and the
    /// steps cover every hash once; the hash is the same on every node, so
    /// a scan may go on after a failover.
    pub fn scan(&self, cursor: u64, count: usize) -> Result<ScanStep, Error> {
        let unique = &self.state.indexes()?.unique;
        let batch = count
            .max(1)
            .max((self.state.records as usize).div_ceil(SCAN_STEPS_MAX));
        // The `batch` smallest hashes at or past the cursor.
        let mut smallest = std::collections::BinaryHeap::with_capacity(batch + 1);
        for (hash, _) in unique.iter() {
            if hash < cursor {
                continue;
            }
            if smallest.len() < batch {
                smallest.push(hash);
            } else if hash < *smallest.peek().expect("batch >= 1") {
                smallest.pop();
                smallest.push(hash);
            }
        }
        let full = smallest.len() == batch;
        let last = match full {
            true => *smallest.peek().expect("full"),
            false => u64::MAX,
        };
        // Every record in [cursor, last]: keys of one hash stay together.
        let mut found: Vec<(u64, RecordId)> = unique
            .iter()
            .filter(|(hash, _)| (cursor..=last).contains(hash))
            .collect();
        found.sort_unstable();
        let mut keys = Vec::with_capacity(found.len());
        let now = now_ms();
        for (_, rid) in found {
            let rec = self.state.record(rid)?;
            if !rec.is_expired_at(now) {
                keys.push(rec.key().to_vec());
            }
        }
        let next = match full {
            true => last.checked_add(1).unwrap_or(0),
            false => 0,
        };
        Ok(ScanStep { next, keys })
    }

    /// A key chosen at random (the first past a random hash), or `None`
    /// when there is none. One pass over the index.
    pub fn random_key(&self, random: u64) -> Result<Option<Vec<u8>>, Error> {
        let unique = &self.state.indexes()?.unique;
        let now = now_ms();
        // The first hash at or past `random`, wrapping round to the
        // smallest.
        let mut past: Option<(u64, RecordId)> = None;
        let mut first: Option<(u64, RecordId)> = None;
        for entry in unique.iter() {
            if self.state.record(entry.1)?.is_expired_at(now) {
                continue;
            }
            if entry.0 >= random && past.is_none_or(|p| entry.0 < p.0) {
                past = Some(entry);
            }
            if first.is_none_or(|f| entry.0 < f.0) {
                first = Some(entry);
            }
        }
        match past.or(first) {
            Some((_, rid)) => Ok(Some(self.state.record(rid)?.key().to_vec())),
            None => Ok(None),
        }
    }

    /// The bytes the record of `key` occupies in its block, or `None`.
    pub fn slot_len(&self, key: &[u8]) -> Result<Option<usize>, Error> {
        Ok(self.state.lookup_visible(key)?.map(|(_, r)| r.slot_len()))
    }
}

/// Now, in milliseconds since the Unix epoch: the clock expiry times are
/// read against (wall time, as Redis's; see `docs/` on clock skew).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Most steps a whole scan takes ([`ReadView::scan`]): each step is a pass
/// over the index, so a larger database returns more keys per step rather
/// than take more passes.
pub const SCAN_STEPS_MAX: usize = 256;

/// The order a scan visits keys in: the hash every index files them under.
pub fn key_order(key: &[u8]) -> u64 {
    hash_bytes(key)
}

/// One step of [`ReadView::scan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanStep {
    /// Where the next step starts; 0 once the scan is over.
    pub next: u64,
    /// Keys found, in scan order.
    pub keys: Vec<Vec<u8>>,
}

impl DbState {
    pub(crate) fn block(&self, block: BlockId) -> Option<&[u8]> {
        self.table.get(block).map(|slot| self.arena.block(slot))
    }

    pub(crate) fn slot_bytes_mut(&mut self, slot: SlotId) -> &mut [u8] {
        self.arena.block_mut(slot)
    }

    /// Takes a block out of the table and returns its slot to the arena.
    /// The slot's magic is cleared so that a reattaching engine never takes
    /// the stale bytes for a live block.
    pub(crate) fn release_block(&mut self, block: BlockId) {
        if let Some(slot) = self.table.remove(block) {
            self.arena.block_mut(slot)[0..4].fill(0);
            self.arena.free(slot);
        }
        if self.tail == Some(block) {
            self.tail = None;
        }
    }

    pub(crate) fn header(&self, block: BlockId) -> Option<BlockHeader> {
        self.block(block).map(BlockHeader::read)
    }

    /// The record at `rid`. Parses against the block's end rather than its
    /// free offset: a lookup then touches the record's cache lines only.
    pub(crate) fn record(&self, rid: RecordId) -> Result<RecordRef<'_>, Error> {
        let block = self.block(rid.block).ok_or_else(|| Error::Corrupt {
            db: self.db,
            block: rid.block,
            why: "an index points at a block that does not exist".into(),
        })?;
        let at = rid.offset as usize;
        if !(BLOCK_HEADER_SIZE..block.len()).contains(&at) {
            return Err(self.corrupt(rid.block, "an index points outside the block"));
        }
        RecordRef::parse(&block[at..]).map_err(|e| self.corrupt(rid.block, &e.to_string()))
    }

    pub(crate) fn corrupt(&self, block: BlockId, why: &str) -> Error {
        Error::Corrupt {
            db: self.db,
            block,
            why: why.to_string(),
        }
    }

    fn indexes(&self) -> Result<&Indexes, Error> {
        self.indexes.as_ref().ok_or(Error::IndexesNotBuilt)
    }

    /// The live record with unique key `key`, unless its time ran out:
    /// what readers see.
    pub(crate) fn lookup_visible(
        &self,
        key: &[u8],
    ) -> Result<Option<(RecordId, RecordRef<'_>)>, Error> {
        Ok(self
            .lookup(key)?
            .filter(|(_, rec)| match rec.expires_at_ms() {
                None => true,
                Some(at) => at > now_ms(),
            }))
    }

    /// The live record with unique key `key`, expired or not: what a write
    /// replaces.
    pub(crate) fn lookup(&self, key: &[u8]) -> Result<Option<(RecordId, RecordRef<'_>)>, Error> {
        let hash = hash_bytes(key);
        let rid = self
            .indexes()?
            .unique
            .find(hash, |rid| self.record(rid).is_ok_and(|r| r.key() == key));
        match rid {
            Some(rid) => Ok(Some((rid, self.record(rid)?))),
            None => Ok(None),
        }
    }

    /// The live records whose value `index` equals `value`, in record id
    /// order, with their first bytes already on their way into the cache.
    pub(crate) fn matches(&self, index: usize, value: &[u8]) -> Result<&[RecordId], Error> {
        let rids = self.indexes()?.values[index].find(hash_bytes(value), value);
        self.touch(rids);
        Ok(rids)
    }

    /// Loads the first bytes of each record in one tight pass, so that the
    /// cache misses of records scattered across blocks overlap instead of
    /// following one another (measured: `find` over 10 records per value at
    /// 1M records, see the README).
    fn touch(&self, rids: &[RecordId]) {
        let mut sum = 0u8;
        for rid in rids {
            if let Some(block) = self.block(rid.block) {
                let at = rid.offset as usize;
                sum ^= block.get(at).copied().unwrap_or(0);
                sum ^= block.get(at + 32).copied().unwrap_or(0);
            }
        }
        std::hint::black_box(sum);
    }

    /// Adds a live record to every index.
    pub(crate) fn index_insert(&mut self, rid: RecordId) -> Result<(), Error> {
        let Some(mut indexes) = self.indexes.take() else {
            return Ok(());
        };
        let result = (|| {
            let rec = self.record(rid)?;
            indexes.unique.insert(hash_bytes(rec.key()), rid);
            if let Some(at) = rec.expires_at_ms() {
                indexes.expiring.insert(at, rid);
            }
            for (i, index) in indexes.values.iter_mut().enumerate() {
                if let Some(value) = rec.value(i) {
                    index.insert(hash_bytes(value), value, rid);
                }
            }
            Ok(())
        })();
        self.indexes = Some(indexes);
        result
    }

    /// Removes a record (still readable in its block) from every index.
    pub(crate) fn index_remove(&mut self, rid: RecordId) -> Result<(), Error> {
        let Some(mut indexes) = self.indexes.take() else {
            return Ok(());
        };
        let result = (|| {
            let rec = self.record(rid)?;
            indexes.unique.remove(hash_bytes(rec.key()), rid);
            if let Some(at) = rec.expires_at_ms() {
                indexes.expiring.remove(at, rid);
            }
            for (i, index) in indexes.values.iter_mut().enumerate() {
                if let Some(value) = rec.value(i) {
                    index.remove(hash_bytes(value), value, rid);
                }
            }
            Ok(())
        })();
        self.indexes = Some(indexes);
        result
    }

    /// Live records of `block` starting in `[start, stop)`, walked up to the
    /// block's free offset.
    pub(crate) fn live_records_in(
        &self,
        block: BlockId,
        start: usize,
        stop: usize,
    ) -> Result<Vec<RecordId>, Error> {
        let Some(bytes) = self.block(block) else {
            return Ok(Vec::new());
        };
        let free = BlockHeader::read(bytes).free_offset as usize;
        let mut out = Vec::new();
        for item in RecordWalk::new(bytes, start, stop, free) {
            let (offset, rec) = item.map_err(|e| self.corrupt(block, &e.to_string()))?;
            if rec.is_live() {
                out.push(RecordId { block, offset });
            }
        }
        Ok(out)
    }

    /// Rebuilds every index and count from the blocks alone.
    pub(crate) fn rebuild(&mut self, value_indexes: usize) -> Result<(), Error> {
        self.indexes = Some(Indexes::new(value_indexes));
        self.recount()?;
        let blocks: Vec<BlockId> = self.table.iter().map(|(b, _)| b).collect();
        for block in blocks {
            let end = self.block(block).map_or(0, |b| b.len());
            for rid in self.live_records_in(block, 0, end)? {
                let key = self.record(rid)?.key();
                if self.lookup(key)?.is_some() {
                    return Err(self.corrupt(block, "unique key held by two live records"));
                }
                self.index_insert(rid)?;
            }
        }
        Ok(())
    }

    /// Recomputes the counts from the block headers.
    pub(crate) fn recount(&mut self) -> Result<(), Error> {
        let (mut records, mut used, mut dead) = (0, 0, 0);
        for (block, slot) in self.table.iter() {
            let header = BlockHeader::read_checked(self.arena.block(slot))
                .map_err(|why| self.corrupt(block, why))?;
            records += header.record_count as u64;
            used += (header.free_offset as usize - BLOCK_HEADER_SIZE) as u64;
            dead += header.dead_bytes as u64;
        }
        (self.records, self.used_bytes, self.dead_bytes) = (records, used, dead);
        Ok(())
    }

    pub(crate) fn add_header_counts(&mut self, h: &BlockHeader, sign: i64) {
        let used = (h.free_offset as u64).saturating_sub(BLOCK_HEADER_SIZE as u64);
        let apply = |x: &mut u64, d: u64| {
            *x = if sign > 0 {
                *x + d
            } else {
                x.saturating_sub(d)
            };
        };
        apply(&mut self.records, h.record_count as u64);
        apply(&mut self.used_bytes, used);
        apply(&mut self.dead_bytes, h.dead_bytes as u64);
    }

    pub(crate) fn stats(&self) -> DbStats {
        DbStats {
            records: self.records,
            blocks: self.table.len() as u64,
            used_bytes: self.used_bytes,
            dead_bytes: self.dead_bytes,
            mapped_bytes: self.arena.mapped_bytes() as u64,
            index_bytes: self.indexes.as_ref().map_or(0, |i| i.heap_bytes() as u64),
        }
    }
}
