//! Every limit of the storage engine, named, with the unit last.
//!
//! Limits that depend on each other are tied together by compile-time
//! assertions at the bottom of this file, so changing one cannot silently
//! break another.

/// Smallest block size a database may declare: one page.
pub const BLOCK_SIZE_MIN: usize = 4 * 1024;
/// Largest block size a database may declare. Record lengths and offsets are
/// stored as `u32`, and a block is copied whole during snapshots, so 1 MiB
/// keeps both far from their limits.
pub const BLOCK_SIZE_MAX: usize = 1024 * 1024;
/// Block size of a database that does not choose one.
pub const BLOCK_SIZE_DEFAULT: usize = 64 * 1024;

/// Bytes at the start of every block taken by its header (see `block.rs`).
pub const BLOCK_HEADER_SIZE: usize = 48;

/// Longest unique key, in bytes. Keys are compared and hashed on every
/// lookup; a cap keeps one lookup's cost bounded.
pub const KEY_LEN_MAX: usize = 2 * 1024;
/// Longest value of one non-unique key, in bytes. Stored as a `u16` length
/// with `u16::MAX` reserved to mean "absent".
pub const VALUE_LEN_MAX: usize = 1024;
/// Most non-unique keys one database may declare. Each costs an index and two
/// bytes per record.
pub const INDEXES_PER_DB_MAX: usize = 16;
/// Longest database or index name, in bytes.
pub const NAME_LEN_MAX: usize = 64;
/// Most databases one engine holds.
pub const DATABASES_MAX: usize = 1024;
/// Most blocks one database holds (block ids are `u32`; this keeps the
/// location table's worst case at 32 MiB of addresses).
pub const BLOCKS_PER_DB_MAX: usize = 4 * 1024 * 1024;

/// Bytes an arena maps at a time when it grows. A chunk holds at least one
/// block; bigger chunks mean fewer mappings, smaller ones less memory held
/// by a small database.
pub const ARENA_CHUNK_SIZE: usize = 4 * 1024 * 1024;

/// Most operations one encoded delta may hold. A delta is one transaction;
/// the cap bounds the work a single decode or apply can demand.
pub const DELTA_OPS_MAX: usize = 1 << 20;
/// Largest encoded delta, in bytes.
pub const DELTA_SIZE_MAX: usize = 256 * 1024 * 1024;

/// A database is worth compacting when its tombstoned bytes exceed this
/// fraction (in percent) of the bytes its blocks hold.
pub const COMPACT_DEAD_PERCENT: u64 = 25;
/// A block is evacuated by compaction when at least this percent of its
/// record bytes are tombstoned.
pub const COMPACT_BLOCK_DEAD_PERCENT: u64 = 50;

const _: () = assert!(BLOCK_SIZE_MIN.is_power_of_two() && BLOCK_SIZE_MAX.is_power_of_two());
const _: () = assert!(BLOCK_SIZE_MIN <= BLOCK_SIZE_DEFAULT && BLOCK_SIZE_DEFAULT <= BLOCK_SIZE_MAX);
const _: () = assert!(BLOCK_SIZE_MAX <= u32::MAX as usize);
const _: () = assert!(ARENA_CHUNK_SIZE >= BLOCK_SIZE_MAX);
const _: () = assert!(VALUE_LEN_MAX < u16::MAX as usize);
const _: () = assert!(KEY_LEN_MAX <= u16::MAX as usize);
const _: () = assert!(INDEXES_PER_DB_MAX <= u8::MAX as usize);
// A record with the longest key, an expiry time (and empty values and
// payload) fits the smallest block.
const _: () = assert!(
    crate::record::RECORD_HEADER_SIZE + 8 + 2 * INDEXES_PER_DB_MAX + KEY_LEN_MAX
        < BLOCK_SIZE_MIN - BLOCK_HEADER_SIZE
);
