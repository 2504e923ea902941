//! Compaction and relocation: giving space back without stopping readers.
//!
//! **Compaction** reclaims tombstoned bytes. It evacuates a sparse block —
//! its live records are appended to the tail block and the block is freed —
//! rather than sliding records within it, so slot boundaries never move
//! (which `apply.rs` relies on). It is a transaction: it takes the writer
//! lock, gets an LSN and emits a delta, so followers free the same blocks.
//!
//! **Relocation** moves blocks to lower physical slots so that trailing
//! arena chunks empty out and can be unmapped. It changes only this node's
//! location table, so it emits nothing and record ids stay valid.

use crate::block::BlockHeader;
use crate::constants::{BLOCK_HEADER_SIZE, COMPACT_BLOCK_DEAD_PERCENT, COMPACT_DEAD_PERCENT};
use crate::database::{Database, DbState};
use crate::engine::Engine;
use crate::error::Error;
use crate::ids::{BlockId, RecordId};
use crate::record::EncodedRecord;
use crate::txn::{append, Committed, Dirty};

impl Database {
    /// Whether this database holds enough tombstoned bytes to be worth
    /// compacting: over `COMPACT_DEAD_PERCENT` of its bytes, in more than
    /// one block.
    pub fn needs_compaction(&self) -> bool {
        let s = self.state.read();
        s.dead_bytes * 100 > s.used_bytes * COMPACT_DEAD_PERCENT && s.table.len() > 1
    }
}

impl Engine {
    pub fn needs_compaction(&self, db: &str) -> Result<bool, Error> {
        Ok(self.database(db)?.needs_compaction())
    }

    /// Evacuates up to `max_blocks` of the sparsest blocks of `db` (those with
    /// at least `COMPACT_BLOCK_DEAD_PERCENT` of their bytes tombstoned).
    /// Returns the committed compaction, or `None` if no block qualified.
    pub fn compact(&self, db: &str, max_blocks: usize) -> Result<Option<Committed>, Error> {
        let database = self.database(db)?;
        let _writer = database.writer.lock();
        let victims = {
            let state = database.state.read();
            sparse_blocks(&state, max_blocks)
        };
        if victims.is_empty() {
            return Ok(None);
        }
        self.commit_with(&database, |state, lsn| {
            let mut dirty = Dirty::default();
            // Each victim holds at most half a block of live records; one
            // more block covers the tail they start in.
            state.arena.reserve(victims.len() + 1)?;
            for &victim in &victims {
                evacuate(state, victim, &mut dirty).inspect_err(|_| state.poisoned = true)?;
            }
            Ok(dirty.finish(state, lsn))
        })
        .map(Some)
    }

    /// Moves blocks of `db` into the lowest free slots of its arena and
    /// unmaps the chunks that empties. Returns the bytes given back.
    pub fn relocate(&self, db: &str) -> Result<usize, Error> {
        let database = self.database(db)?;
        let mut state = database.state.write();
        let mut blocks: Vec<_> = state.table.iter().collect();
        blocks.sort_by_key(|&(_, slot)| std::cmp::Reverse(slot));
        for (block, slot) in blocks {
            let Some(lower) = state.arena.lowest_free_below(slot) else {
                break;
            };
            state.arena.claim(lower);
            state.arena.copy_slot(slot, lower);
            state.table.relocate(block, lower);
            state.arena.block_mut(slot)[0..4].fill(0);
            state.arena.free(slot);
        }
        Ok(state.arena.trim())
    }
}

fn sparse_blocks(state: &DbState, max_blocks: usize) -> Vec<BlockId> {
    let mut candidates: Vec<(u64, BlockId)> = state
        .table
        .iter()
        .filter(|(b, _)| state.tail != Some(*b))
        .filter_map(|(b, slot)| {
            let h = BlockHeader::read(state.arena.block(slot));
            let used = (h.free_offset as u64).saturating_sub(BLOCK_HEADER_SIZE as u64);
            let dead = h.dead_bytes as u64;
            (used > 0 && dead * 100 >= used * COMPACT_BLOCK_DEAD_PERCENT).then_some((dead, b))
        })
        .collect();
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    candidates
        .into_iter()
        .take(max_blocks)
        .map(|(_, b)| b)
        .collect()
}

/// Appends the live records of `victim` to the tail and empties it; `Dirty`
/// frees it when the commit finishes.
fn evacuate(state: &mut DbState, victim: BlockId, dirty: &mut Dirty) -> Result<(), Error> {
    let end = state.block(victim).map_or(0, <[u8]>::len);
    for old in state.live_records_in(victim, 0, end)? {
        let rec = state.record(old)?;
        let values: Vec<Option<&[u8]>> = (0..rec.value_count()).map(|i| rec.value(i)).collect();
        let copy = EncodedRecord::encode_expiring(
            rec.key(),
            &values,
            rec.payload(),
            rec.expires_at_ms(),
            usize::MAX,
        )?;
        // The copy enters the indexes under its new id; the old id leaves.
        state.index_remove(old)?;
        let new: RecordId = append(state, &copy, dirty)?;
        debug_assert_ne!(new.block, victim);
    }
    // The live records moved: the victim now holds none, so `Dirty::finish`
    // frees it and takes its used and dead bytes out of the totals.
    let slot = state.table.get(victim).expect("victim exists");
    let bytes = state.slot_bytes_mut(slot);
    let mut header = BlockHeader::read(bytes);
    let records = header.record_count;
    header.record_count = 0;
    header.write(bytes);
    state.records -= records as u64;
    dirty.touch(victim, 0, BLOCK_HEADER_SIZE);
    Ok(())
}
