//! Applying a primary's delta to a follower's engine.
//!
//! A delta names blocks by id; the follower maps them to its own slots
//! through its own location table. Apply runs in three phases so that a bad
//! delta leaves no trace and readers never see half of one:
//!
//! 1. **Check**, against the current state and without changing it: the LSN
//!    follows the applied one, every block written or freed exists (or is
//!    allocated earlier in the delta), every write lies inside its block,
//!    and the arena has room for the new blocks (reserved here).
//! 2. **Unindex**: records that the writes will overwrite or the frees will
//!    drop leave the indexes while their old bytes are still readable.
//! 3. **Write** the bytes, then **index** the records the writes produced.
//!
//! Phases 2 and 3 rely on how a primary writes: every write range starts at
//! a record boundary (or at the block header, offset 0) and slot boundaries
//! never move. So the records a write affects are exactly those whose start
//! lies in its range, before and after.

use std::collections::HashSet;

use crate::block::BlockHeader;
use crate::constants::{BLOCKS_PER_DB_MAX, BLOCK_HEADER_SIZE};
use crate::database::DbState;
use crate::delta::DeltaOp;
use crate::error::{ApplyError, Error};
use crate::ids::BlockId;

/// Checks one database's section of a delta (`Delta::sections`) against
/// `state` and reserves its new blocks. Changes nothing the database's
/// readers can see.
pub(crate) fn check(state: &mut DbState, ops: &[DeltaOp]) -> Result<(), ApplyError> {
    let db = state.db;
    let block_size = state.arena.block_size();
    let mut allocated: HashSet<BlockId> = HashSet::new();
    let mut freed: HashSet<BlockId> = HashSet::new();
    let mut writes: Vec<(BlockId, usize, usize)> = Vec::new();
    let exists = |b: BlockId, allocated: &HashSet<BlockId>, freed: &HashSet<BlockId>| {
        (state.table.contains(b) || allocated.contains(&b)) && !freed.contains(&b)
    };
    for op in ops {
        match op {
            DeltaOp::BlockAlloc { block, .. } => {
                if block.0 as usize >= BLOCKS_PER_DB_MAX {
                    return Err(ApplyError::Engine(Error::DatabaseFull {
                        db,
                        max: BLOCKS_PER_DB_MAX,
                    }));
                }
                if state.table.contains(*block) || allocated.contains(block) {
                    return Err(ApplyError::BlockExists { db, block: *block });
                }
                // Ids are allocated lowest-free-first, so a real primary's
                // never jump past the ids in use: a sparse id would only
                // make this node's table huge.
                if block.0 as usize > state.table.id_bound() + allocated.len() {
                    return Err(ApplyError::SparseBlock { db, block: *block });
                }
                allocated.insert(*block);
            }
            DeltaOp::BlockWrite {
                block,
                offset,
                bytes,
                ..
            } => {
                if !exists(*block, &allocated, &freed) {
                    return Err(ApplyError::UnknownBlock { db, block: *block });
                }
                let end = (*offset as usize).checked_add(bytes.len());
                if end.is_none_or(|end| end > block_size) {
                    return Err(ApplyError::OutOfBlock {
                        offset: *offset,
                        len: bytes.len() as u32,
                        block_size,
                    });
                }
                writes.push((*block, *offset as usize, *offset as usize + bytes.len()));
            }
            DeltaOp::BlockFree { block, .. } => {
                if !exists(*block, &allocated, &freed) {
                    return Err(ApplyError::UnknownBlock { db, block: *block });
                }
                freed.insert(*block);
            }
            DeltaOp::TxnBegin { .. } | DeltaOp::TxnCommit { .. } | DeltaOp::DbCreate { .. } => {
                unreachable!("Delta guarantees the op sequence")
            }
        }
    }
    // A primary merges its writes per block; overlapping ones could index a
    // record twice.
    writes.sort_unstable();
    if writes
        .windows(2)
        .any(|w| w[0].0 == w[1].0 && w[1].1 < w[0].2)
    {
        return Err(ApplyError::OverlappingWrites { db });
    }
    state
        .arena
        .reserve(allocated.len())
        .map_err(ApplyError::Engine)?;
    Ok(())
}

/// Applies a checked section of a delta. An error here means the delta's
/// bytes left the blocks unparseable; the caller poisons the database.
pub(crate) fn apply(state: &mut DbState, ops: &[DeltaOp]) -> Result<(), Error> {
    let preexisting = preexisting_blocks(state, ops);
    // Phase 2: unindex, and take the touched blocks out of the counts.
    unindex(state, ops, &preexisting)?;
    // Phase 3: write, then index what was written.
    write_blocks(state, ops)?;
    // Every block the delta wrote or allocated, still present, must end up
    // with a valid header of its own.
    let touched = touched_blocks(state, ops);
    index_writes(state, ops)?;
    count_touched(state, touched)?;
    debug_assert!(state.table.iter().all(|(b, _)| state
        .header(b)
        .is_some_and(|h| h.free_offset as usize >= BLOCK_HEADER_SIZE)));
    Ok(())
}

/// The blocks the delta writes or frees that exist before it: the ones
/// whose records and counts phase 2 takes out.
#[inline]
fn preexisting_blocks(state: &DbState, ops: &[DeltaOp]) -> HashSet<BlockId> {
    ops.iter()
        .filter_map(|op| match op {
            DeltaOp::BlockWrite { block, .. } | DeltaOp::BlockFree { block, .. } => Some(*block),
            _ => None,
        })
        .filter(|b| state.table.contains(*b))
        .collect()
}

/// Phase 2: takes the preexisting blocks out of the counts, and the records
/// the writes will overwrite or the frees will drop out of the indexes,
/// while their old bytes are still readable.
#[inline]
fn unindex(
    state: &mut DbState,
    ops: &[DeltaOp],
    preexisting: &HashSet<BlockId>,
) -> Result<(), Error> {
    for &block in preexisting {
        let header = state.header(block).expect("checked");
        state.add_header_counts(&header, -1);
    }
    for op in ops {
        match op {
            DeltaOp::BlockWrite {
                block,
                offset,
                bytes,
                ..
            } if preexisting.contains(block) => {
                let start = *offset as usize;
                for rid in state.live_records_in(*block, start, start + bytes.len())? {
                    state.index_remove(rid)?;
                }
            }
            DeltaOp::BlockFree { block, .. } if preexisting.contains(block) => {
                for rid in state.live_records_in(*block, 0, usize::MAX)? {
                    state.index_remove(rid)?;
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Phase 3, first half: allocates, writes and frees, in the delta's order.
#[inline]
fn write_blocks(state: &mut DbState, ops: &[DeltaOp]) -> Result<(), Error> {
    for op in ops {
        match op {
            DeltaOp::BlockAlloc { block, .. } => {
                let slot = state.arena.alloc()?;
                state.table.insert(*block, slot);
                state.tail = Some(*block);
            }
            DeltaOp::BlockWrite {
                block,
                offset,
                bytes,
                ..
            } => {
                let slot = state.table.get(*block).expect("checked");
                let at = *offset as usize;
                state.slot_bytes_mut(slot)[at..at + bytes.len()].copy_from_slice(bytes);
            }
            DeltaOp::BlockFree { block, .. } => state.release_block(*block),
            _ => {}
        }
    }
    Ok(())
}

/// Every block the delta wrote or allocated that is still present after
/// the writes, once each, in the delta's order.
#[inline]
fn touched_blocks(state: &DbState, ops: &[DeltaOp]) -> Vec<BlockId> {
    let mut touched: Vec<BlockId> = Vec::new();
    for op in ops {
        if let DeltaOp::BlockAlloc { block, .. } | DeltaOp::BlockWrite { block, .. } = op {
            if state.table.contains(*block) && !touched.contains(block) {
                touched.push(*block);
            }
        }
    }
    touched
}

/// Phase 3, second half: indexes the live records whose start lies in a
/// write's range, in blocks still present.
#[inline]
fn index_writes(state: &mut DbState, ops: &[DeltaOp]) -> Result<(), Error> {
    for op in ops {
        if let DeltaOp::BlockWrite {
            block,
            offset,
            bytes,
            ..
        } = op
        {
            if !state.table.contains(*block) {
                continue;
            }
            let start = *offset as usize;
            for rid in state.live_records_in(*block, start, start + bytes.len())? {
                state.index_insert(rid)?;
            }
        }
    }
    Ok(())
}

/// Checks that every touched block ends up with a valid header of its own,
/// and adds it back to the counts.
#[inline]
fn count_touched(state: &mut DbState, touched: Vec<BlockId>) -> Result<(), Error> {
    for block in touched {
        let bytes = state.block(block).expect("exists");
        let header = BlockHeader::read_checked(bytes).map_err(|why| state.corrupt(block, why))?;
        if header.block != block || header.db != state.db {
            return Err(state.corrupt(block, "header names another block"));
        }
        state.add_header_counts(&header, 1);
    }
    Ok(())
}
