//! The block header: what every block says about itself.
//!
//! Format version 2 (`BLOCK_FORMAT_VERSION`, which follows the record
//! format's; version 1 blocks still read), little-endian, `BLOCK_HEADER_SIZE` = 48 bytes:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HBLK"
//! 4       2     format version (1; also the record format version)
//! 6       2     reserved, 0
//! 8       4     database id
//! 12      4     block id
//! 16      4     live record count
//! 20      4     free offset: first byte after the last record
//! 24      4     dead bytes: slot bytes of tombstoned records
//! 28      4     reserved, 0
//! 32      8     LSN of the transaction that last changed the block
//! 40      8     xxh3-64 of bytes 0..40
//! ```
//!
//! The header checksum covers only the header, so a commit that touches a
//! block pays for hashing 40 bytes, not the whole block. The whole block is
//! covered by its digest (`digest.rs`), computed when it is compared,
//! snapshotted or verified. A reattached arena recognises its blocks by magic
//! and header checksum.

use xxhash_rust::xxh3::xxh3_64;

use crate::constants::BLOCK_HEADER_SIZE;
use crate::ids::{BlockId, DbId, Lsn};

pub const BLOCK_MAGIC: [u8; 4] = *b"HBLK";
pub const BLOCK_FORMAT_VERSION: u16 = crate::record::RECORD_FORMAT_VERSION;

/// The decoded header of one block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHeader {
    pub db: DbId,
    pub block: BlockId,
    pub record_count: u32,
    pub free_offset: u32,
    pub dead_bytes: u32,
    pub lsn: Lsn,
}

impl BlockHeader {
    /// The header of a freshly allocated, empty block.
    pub fn empty(db: DbId, block: BlockId, lsn: Lsn) -> Self {
        BlockHeader {
            db,
            block,
            record_count: 0,
            free_offset: BLOCK_HEADER_SIZE as u32,
            dead_bytes: 0,
            lsn,
        }
    }

    /// Reads a header without checking it: the engine's own blocks, whose
    /// headers it wrote itself. Bytes from elsewhere go through `read_checked`.
    pub fn read(block: &[u8]) -> Self {
        let u32_at = |at: usize| u32::from_le_bytes(block[at..at + 4].try_into().unwrap());
        BlockHeader {
            db: DbId(u32_at(8)),
            block: BlockId(u32_at(12)),
            record_count: u32_at(16),
            free_offset: u32_at(20),
            dead_bytes: u32_at(24),
            lsn: Lsn(u64::from_le_bytes(block[32..40].try_into().unwrap())),
        }
    }

    /// Reads a header and checks magic, version, checksum and that the free
    /// offset lies within the block.
    pub fn read_checked(block: &[u8]) -> Result<Self, &'static str> {
        if block.len() < BLOCK_HEADER_SIZE {
            return Err("block shorter than its header");
        }
        if block[0..4] != BLOCK_MAGIC {
            return Err("bad block magic");
        }
        let version = u16::from_le_bytes([block[4], block[5]]);
        if !(crate::record::RECORD_FORMAT_VERSION_MIN..=BLOCK_FORMAT_VERSION).contains(&version) {
            return Err("unsupported block format version");
        }
        if xxh3_64(&block[0..40]).to_le_bytes() != block[40..48] {
            return Err("block header checksum mismatch");
        }
        let header = Self::read(block);
        let free = header.free_offset as usize;
        if free < BLOCK_HEADER_SIZE || free > block.len() {
            return Err("free offset outside the block");
        }
        Ok(header)
    }

    pub fn write(&self, block: &mut [u8]) {
        block[0..4].copy_from_slice(&BLOCK_MAGIC);
        block[4..6].copy_from_slice(&BLOCK_FORMAT_VERSION.to_le_bytes());
        block[6..8].fill(0);
        block[8..12].copy_from_slice(&self.db.0.to_le_bytes());
        block[12..16].copy_from_slice(&self.block.0.to_le_bytes());
        block[16..20].copy_from_slice(&self.record_count.to_le_bytes());
        block[20..24].copy_from_slice(&self.free_offset.to_le_bytes());
        block[24..28].copy_from_slice(&self.dead_bytes.to_le_bytes());
        block[28..32].fill(0);
        block[32..40].copy_from_slice(&self.lsn.0.to_le_bytes());
        let sum = xxh3_64(&block[0..40]);
        block[40..48].copy_from_slice(&sum.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_checksum() {
        let mut block = vec![0u8; 4096];
        let h = BlockHeader {
            db: DbId(3),
            block: BlockId(9),
            record_count: 2,
            free_offset: 300,
            dead_bytes: 40,
            lsn: Lsn(77),
        };
        h.write(&mut block);
        assert_eq!(BlockHeader::read_checked(&block), Ok(h));
        for at in 0..BLOCK_HEADER_SIZE {
            let mut bad = block.clone();
            bad[at] ^= 0x10;
            assert!(BlockHeader::read_checked(&bad).is_err(), "flip at {at}");
        }
    }
}
