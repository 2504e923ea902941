//! The location table: block id → this node's physical slot.
//!
//! Block ids are the names primary and secondaries share; slots are each
//! node's own. Moving a block (relocation) changes only this table, so
//! record ids (block id, offset) and the indexes that hold them stay valid.

use std::collections::BTreeSet;

use crate::arena::SlotId;
use crate::ids::BlockId;

#[derive(Debug, Default)]
pub struct LocationTable {
    slots: Vec<Option<SlotId>>,
    /// Ids below `slots.len()` that name no block, so that allocation reuses
    /// the lowest free id and ids stay dense.
    free_ids: BTreeSet<u32>,
    len: usize,
}

impl LocationTable {
    pub fn get(&self, block: BlockId) -> Option<SlotId> {
        self.slots.get(block.0 as usize).copied().flatten()
    }

    pub fn contains(&self, block: BlockId) -> bool {
        self.get(block).is_some()
    }

    /// Number of blocks in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// One past the highest id in use: a primary never allocates above it
    /// (it takes the lowest free id), so followers refuse ids beyond it.
    pub fn id_bound(&self) -> usize {
        self.slots.len()
    }

    /// The id the next allocation gets: the lowest unused.
    pub fn next_id(&self) -> BlockId {
        BlockId(
            self.free_ids
                .first()
                .copied()
                .unwrap_or(self.slots.len() as u32),
        )
    }

    /// Records that `block` lives in `slot`. The id must be unused.
    pub fn insert(&mut self, block: BlockId, slot: SlotId) {
        let i = block.0 as usize;
        if i >= self.slots.len() {
            self.free_ids.extend(self.slots.len() as u32..block.0);
            self.slots.resize(i + 1, None);
        } else {
            self.free_ids.remove(&block.0);
        }
        debug_assert!(self.slots[i].is_none(), "{block} inserted twice");
        self.slots[i] = Some(slot);
        self.len += 1;
    }

    /// Moves `block` to `slot` (relocation). Returns the old slot.
    pub fn relocate(&mut self, block: BlockId, slot: SlotId) -> Option<SlotId> {
        self.slots.get_mut(block.0 as usize)?.replace(slot)
    }

    pub fn remove(&mut self, block: BlockId) -> Option<SlotId> {
        let slot = self.slots.get_mut(block.0 as usize)?.take()?;
        self.len -= 1;
        self.free_ids.insert(block.0);
        while self.slots.last() == Some(&None) {
            self.slots.pop();
            self.free_ids.remove(&(self.slots.len() as u32));
        }
        Some(slot)
    }

    /// Blocks from `from` on, in block id order.
    pub fn iter_from(&self, from: BlockId) -> impl Iterator<Item = (BlockId, SlotId)> + '_ {
        let start = (from.0 as usize).min(self.slots.len());
        self.slots[start..]
            .iter()
            .enumerate()
            .filter_map(move |(i, s)| s.map(|slot| (BlockId((start + i) as u32), slot)))
    }

    /// Every block and its slot, in block id order.
    pub fn iter(&self) -> impl Iterator<Item = (BlockId, SlotId)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|slot| (BlockId(i as u32), slot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_reused_lowest_first() {
        let mut t = LocationTable::default();
        for i in 0..4 {
            assert_eq!(t.next_id(), BlockId(i));
            t.insert(BlockId(i), SlotId(10 + i));
        }
        t.remove(BlockId(1));
        t.remove(BlockId(3));
        assert_eq!(t.next_id(), BlockId(1));
        assert_eq!(t.len(), 2);
        t.insert(BlockId(6), SlotId(1));
        assert_eq!(t.next_id(), BlockId(1));
        t.insert(BlockId(1), SlotId(2));
        assert_eq!(t.next_id(), BlockId(3));
        assert_eq!(
            t.iter().map(|(b, _)| b.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 6]
        );
        t.relocate(BlockId(6), SlotId(99));
        assert_eq!(t.get(BlockId(6)), Some(SlotId(99)));
    }
}
