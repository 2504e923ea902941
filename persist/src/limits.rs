//! Every limit, interval and buffer size of the crate, named, in one place,
//! each with why it has its value.
//!
//! Named as in `hotblock_core::constants`: the quantity, then its qualifier
//! (`_MIN`, `_MAX`, `_DEFAULT`), then the unit, last (`_BYTES`, `_MS`); a
//! `SIZE` is in bytes and needs no unit. Limits that depend on each other,
//! or on the engine's (`hotblock_core::constants`), or on the width of the
//! field that stores them in a file, are tied together by compile-time
//! assertions at the bottom, so changing one cannot silently break another.
//!
//! File layouts (header sizes, tags, magics) are not limits: they stay with
//! the code that encodes them (`snapshot.rs`, `log.rs`, `state.rs`).

use hotblock_core::constants::{
    BLOCK_SIZE_MAX, DATABASES_MAX, DELTA_SIZE_MAX, INDEXES_PER_DB_MAX, NAME_LEN_MAX,
};

// ---- files ----

/// Default `PersistConfig::checkpoint_log_bytes` (public as
/// `CHECKPOINT_LOG_BYTES_DEFAULT`): a log larger than this triggers a
/// checkpoint. It bounds what recovery replays, while keeping checkpoints,
/// which copy every block with commits paused, rare under a steady write
/// load.
pub(crate) const CHECKPOINT_LOG_SIZE_DEFAULT: u64 = 256 * 1024 * 1024;
/// Largest delta a log record holds: the engine's largest delta, so that
/// every transaction it can commit can be logged. The length is stored as
/// a `u32`. A larger delta stops persistence rather than being logged.
pub(crate) const LOG_RECORD_SIZE_MAX: usize = DELTA_SIZE_MAX;
/// Smallest delta a log record holds: an encoded delta's 8-byte prefix and
/// 8-byte checksum, with no operation. A shorter length is corruption.
pub(crate) const LOG_RECORD_SIZE_MIN: usize = 16;
/// Snapshots a checkpoint keeps: the new one and one to fall back to if it
/// rots on disk (with every log from the older one on).
pub(crate) const SNAPSHOTS_KEPT: usize = 2;

// ---- memory ----

/// Buffer for reading snapshots and logs as streams: large enough for the
/// largest block, so a block costs at most a couple of `read(2)`s, and
/// small enough to be irrelevant next to the engine's memory.
pub(crate) const READ_BUFFER_BYTES: usize = 1024 * 1024;
/// Buffer for writing a snapshot while commits wait: a whole block of the
/// largest size per `write(2)` keeps the pause short.
pub(crate) const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// A length read from a file (a log record's) is never allocated up front:
/// the buffer grows by this much as bytes arrive, so a corrupt length costs
/// at most this beyond the bytes the file really holds.
pub(crate) const READ_CHUNK_BYTES: usize = 64 * 1024;

// ---- the `hotblock-persist` thread ----

/// How often the background thread wakes: the `everysec` fsync interval
/// (what a power loss may cost under that policy), and so also how soon a
/// log that outgrew `checkpoint_log_bytes` is checkpointed.
pub(crate) const EVERYSEC_INTERVAL_MS: u64 = 1_000;
/// How often the background thread retries a checkpoint after a failure:
/// often enough that a node recovers soon after the disk has room again,
/// rarely enough that a disk that stays full is not rewritten in a loop
/// (each attempt writes a whole snapshot).
pub(crate) const CHECKPOINT_RETRY_INTERVAL_MS: u64 = 10_000;
/// How long a `wait_durable` caller waits for the checkpoint that starts a
/// new history before it looks again: the checkpoint notifies when it
/// succeeds, but not when it fails, and then the waiter must see the
/// failure soon.
pub(crate) const NEW_HISTORY_RECHECK_INTERVAL_MS: u64 = 1_000;

// ---- how they depend on each other ----

// A record's length is a `u32` in the file, and every delta the engine can
// produce fits a record.
const _: () = assert!(LOG_RECORD_SIZE_MAX <= u32::MAX as usize);
const _: () = assert!(LOG_RECORD_SIZE_MAX >= DELTA_SIZE_MAX);
const _: () = assert!(LOG_RECORD_SIZE_MIN <= LOG_RECORD_SIZE_MAX);
// Recovery falls back to an older snapshot only if one is kept.
const _: () = assert!(SNAPSHOTS_KEPT >= 2);
// The snapshot stores the database count as a `u32`, block sizes as `u32`,
// name lengths and index counts as `u8`.
const _: () = assert!(DATABASES_MAX <= u32::MAX as usize);
const _: () = assert!(BLOCK_SIZE_MAX <= u32::MAX as usize);
const _: () = assert!(NAME_LEN_MAX <= u8::MAX as usize);
const _: () = assert!(INDEXES_PER_DB_MAX <= u8::MAX as usize);
// Streaming buffers hold at least one whole block of the largest size.
const _: () = assert!(READ_BUFFER_BYTES >= BLOCK_SIZE_MAX);
const _: () = assert!(WRITE_BUFFER_BYTES >= BLOCK_SIZE_MAX);
const _: () = assert!(READ_CHUNK_BYTES > 0 && READ_CHUNK_BYTES <= READ_BUFFER_BYTES);
// Retries happen on the background thread's ticks: an interval shorter
// than a tick would be a tick anyway.
const _: () = assert!(CHECKPOINT_RETRY_INTERVAL_MS >= EVERYSEC_INTERVAL_MS);
const _: () = assert!(NEW_HISTORY_RECHECK_INTERVAL_MS > 0);
