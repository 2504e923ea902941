//! Digests: xxh3 of every block, and of a database at an LSN.
//!
//! Two nodes whose databases have equal digests hold byte-identical blocks
//! under the same block ids. A database digest hashes the sequence of (block
//! id, block digest) in block id order; the per-block list says which blocks
//! differ when the database digests do not match.

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::database::Database;
use crate::engine::Engine;
use crate::error::Error;
use crate::ids::{BlockId, DbId, Lsn};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DbDigest {
    pub db: DbId,
    /// The engine's LSN when the digest was taken; the database did not
    /// change between its last commit at or before this LSN and the digest.
    pub lsn: Lsn,
    pub digest: u64,
    pub blocks: Vec<(BlockId, u64)>,
}

impl DbDigest {
    /// Blocks whose digests differ from `other`'s, or that only one side has.
    pub fn differing_blocks(&self, other: &DbDigest) -> Vec<BlockId> {
        let (mut a, mut b) = (
            self.blocks.iter().peekable(),
            other.blocks.iter().peekable(),
        );
        let mut out = Vec::new();
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => return out,
                (Some(x), Some(y)) if x.0 == y.0 => {
                    if x.1 != y.1 {
                        out.push(x.0);
                    }
                    a.next();
                    b.next();
                }
                (Some(x), Some(y)) if x.0 < y.0 => {
                    out.push(x.0);
                    a.next();
                }
                (Some(_), Some(y)) | (None, Some(y)) => {
                    out.push(y.0);
                    b.next();
                }
                (Some(x), None) => {
                    out.push(x.0);
                    a.next();
                }
            }
        }
    }
}

impl Database {
    /// Digests of every block and of the whole database.
    pub fn digest(&self, lsn_now: impl FnOnce() -> Lsn) -> DbDigest {
        let state = self.state.read();
        let blocks: Vec<(BlockId, u64)> = state
            .table
            .iter()
            .map(|(b, slot)| (b, xxh3_64(state.arena.block(slot))))
            .collect();
        let mut hasher = Xxh3::new();
        for (block, digest) in &blocks {
            hasher.update(&block.0.to_le_bytes());
            hasher.update(&digest.to_le_bytes());
        }
        DbDigest {
            db: self.id(),
            lsn: lsn_now(),
            digest: hasher.digest(),
            blocks,
        }
    }
}

impl Database {
    /// The block with the lowest id at or after `from`, and a copy of its
    /// bytes (snapshots walk the blocks with this while writers go on).
    pub fn block_at_or_after(&self, from: BlockId) -> Option<(BlockId, Vec<u8>)> {
        let state = self.state.read();
        let (block, slot) = state.table.iter_from(from).next()?;
        Some((block, state.arena.block(slot).to_vec()))
    }
}

impl Engine {
    pub fn digest(&self, db: &str) -> Result<DbDigest, Error> {
        Ok(self.database(db)?.digest(|| self.lsn()))
    }

    /// Digests of every database, in id order.
    pub fn digests(&self) -> Vec<DbDigest> {
        self.databases()
            .iter()
            .map(|db| db.digest(|| self.lsn()))
            .collect()
    }

    /// Fault injection for tests: flips the bits of `mask` in one byte of a
    /// block, bypassing every check, as a memory fault would. Returns whether
    /// the block exists.
    #[doc(hidden)]
    pub fn inject_fault_flip_byte(
        &self,
        db: DbId,
        block: BlockId,
        offset: usize,
        mask: u8,
    ) -> bool {
        let Some(database) = self.database_by_id(db) else {
            return false;
        };
        let mut state = database.state.write();
        let Some(slot) = state.table.get(block) else {
            return false;
        };
        let bytes = state.slot_bytes_mut(slot);
        let at = offset % bytes.len();
        bytes[at] ^= mask.max(1);
        true
    }

    /// The bytes of one block, as this node holds them (for verification and
    /// repair by the replication layer).
    pub fn block_bytes(&self, db: &str, block: BlockId) -> Result<Option<Vec<u8>>, Error> {
        let db = self.database(db)?;
        let state = db.state.read();
        Ok(state.block(block).map(<[u8]>::to_vec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_blocks_covers_both_sides() {
        let d = |blocks: &[(u32, u64)]| DbDigest {
            db: DbId(0),
            lsn: Lsn(1),
            digest: 0,
            blocks: blocks.iter().map(|&(b, d)| (BlockId(b), d)).collect(),
        };
        let a = d(&[(0, 1), (1, 2), (3, 4)]);
        let b = d(&[(0, 1), (1, 9), (2, 5)]);
        assert_eq!(
            a.differing_blocks(&b),
            vec![BlockId(1), BlockId(2), BlockId(3)]
        );
        assert!(a.differing_blocks(&a).is_empty());
    }
}
