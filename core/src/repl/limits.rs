//! Every limit and default timing of replication, named, in one place.
//!
//! Named as in `crate::constants`: the quantity, then its qualifier
//! (`_MAX`, `_DEFAULT`), then the unit where the name does not say it
//! already (`_MS`; a `SIZE` is in bytes, a `LEN` is a count). The frame
//! codec, the epoch history and both state machines take their bounds from
//! here, and limits that depend on each other (or on the engine's, in
//! `crate::constants`) are tied together by compile-time assertions at the
//! bottom, so changing one cannot silently break another.

use crate::constants::{BLOCKS_PER_DB_MAX, BLOCK_SIZE_MAX, DATABASES_MAX, NAME_LEN_MAX};
use crate::repl::frame::{CHECKSUM_SIZE, FRAME_HEADER_SIZE};

// ---- the wire ----

/// Room in a frame past one whole block: its header, its checksum and the
/// `SnapshotBlock` fields, with plenty to spare for the other messages.
pub(crate) const FRAME_HEADROOM_SIZE: usize = 64 * 1024;
/// Largest frame, in bytes (its declared length, which counts everything
/// after the length field): one whole block plus `FRAME_HEADROOM_SIZE`. The
/// decoder refuses a larger declared length before buffering anything.
pub const FRAME_SIZE_MAX: usize = BLOCK_SIZE_MAX + FRAME_HEADROOM_SIZE;
/// Most (block, digest) entries in one `BlockDigests` frame (12 bytes
/// each): the digests of a large database span several frames.
pub const DIGESTS_PER_FRAME_MAX: usize = 64 * 1024;
/// Most epochs a history keeps; older ones are dropped (a node that far
/// behind resyncs in full). Histories travel whole in `Hello` and `Welcome`.
pub const HISTORY_LEN_MAX: usize = 256;

// ---- the primary ----

/// Most block digests a primary holds for one secondary about to be
/// snapshotted (the blocks of 16 databases at their limit). A secondary
/// claiming more is refused: its digests would cost the primary unbounded
/// memory.
pub(crate) const DIGESTS_HELD_MAX: usize = 16 * BLOCKS_PER_DB_MAX;
/// Default `PrimaryConfig::backlog_bytes_max`: bytes of recent deltas kept
/// for partial resync.
pub(crate) const BACKLOG_SIZE_DEFAULT: usize = 64 * 1024 * 1024;
/// Default `PrimaryConfig::heartbeat_interval`: a streaming session with
/// nothing to send gets a heartbeat this often.
pub(crate) const PRIMARY_HEARTBEAT_INTERVAL_DEFAULT_MS: u64 = 100;
/// Default `PrimaryConfig::session_timeout`: a secondary silent this long
/// is taken for lost and its session closed.
pub(crate) const SESSION_TIMEOUT_DEFAULT_MS: u64 = 2_000;
/// Default `PrimaryConfig::sync_timeout`: how long a sync commit waits for
/// its acknowledgements before `on_sync_timeout` applies.
pub(crate) const SYNC_TIMEOUT_DEFAULT_MS: u64 = 1_000;
/// Default `PrimaryConfig::max_lag`: the oldest unacknowledged commit of a
/// secondary that still counts as current for `min_secondaries`.
pub(crate) const LAG_MAX_DEFAULT_MS: u64 = 10_000;

/// Longest list `check_invariants` walks whole (the backlog's entries, a
/// snapshot's blocks sent): past it only O(1) checks run, so that debug
/// builds of large tests do not turn quadratic. The simulator stays below.
pub(crate) const INVARIANT_WALK_LEN_MAX: usize = 4096;

// ---- the secondary ----

/// Default `SecondaryConfig::heartbeat_interval`: an acknowledgement (or,
/// while a snapshot loads, a heartbeat) goes out at least this often.
pub(crate) const SECONDARY_HEARTBEAT_INTERVAL_DEFAULT_MS: u64 = 100;
/// Default `SecondaryConfig::primary_timeout`: a primary silent this long
/// is taken for lost.
pub(crate) const PRIMARY_TIMEOUT_DEFAULT_MS: u64 = 2_000;

// ---- how they depend on each other ----

// Lengths are `u32` on the wire.
const _: () = assert!(FRAME_SIZE_MAX <= u32::MAX as usize);
// A `SnapshotBlock` of the largest block fits one frame: header (less the
// length field), db u32, block u32, the bytes, checksum.
const _: () = assert!(FRAME_HEADER_SIZE - 4 + 8 + BLOCK_SIZE_MAX + CHECKSUM_SIZE <= FRAME_SIZE_MAX);
// A full `BlockDigests` frame fits: db u32, count u32, 12 bytes an entry.
const _: () = assert!(
    FRAME_HEADER_SIZE - 4 + 8 + 12 * DIGESTS_PER_FRAME_MAX + CHECKSUM_SIZE <= FRAME_SIZE_MAX
);
// A secondary may send the digests of a whole database at its limit, in
// as many frames as it takes.
const _: () = assert!(DIGESTS_HELD_MAX >= BLOCKS_PER_DB_MAX);
const _: () = assert!(DIGESTS_HELD_MAX >= DIGESTS_PER_FRAME_MAX);
// A history's length is a `u16` on the wire, and a `Hello` with the longest
// history and every database named (u8 name lengths, u16 count) fits a
// frame.
const _: () = assert!(HISTORY_LEN_MAX <= u16::MAX as usize);
const _: () = assert!(NAME_LEN_MAX <= u8::MAX as usize && DATABASES_MAX <= u16::MAX as usize);
const _: () = assert!(
    FRAME_HEADER_SIZE - 4
        + 17
        + (2 + 16 * HISTORY_LEN_MAX)
        + 2
        + DATABASES_MAX * (1 + NAME_LEN_MAX)
        + CHECKSUM_SIZE
        <= FRAME_SIZE_MAX
);
// NOT asserted, because it does not hold: a `SnapshotBegin` carries every
// database's `DbCreate` in one frame, and with `DATABASES_MAX` databases of
// `INDEXES_PER_DB_MAX` indexes, all names `NAME_LEN_MAX` long, its declared
// length is 20 + 18 + 1024 * (2 + 1 + 4 + 4 + 65 + 1 + 16 * 65) + 8 =
// 1_143_854 bytes, past `FRAME_SIZE_MAX` (1_114_112): such a primary could
// not snapshot a secondary. Until the message is split (or the limit
// raised), that schema is out of reach of replication.
// Each side hears from the other several times per timeout, so one lost
// heartbeat does not close a session.
const _: () = assert!(3 * SECONDARY_HEARTBEAT_INTERVAL_DEFAULT_MS < SESSION_TIMEOUT_DEFAULT_MS);
const _: () = assert!(3 * PRIMARY_HEARTBEAT_INTERVAL_DEFAULT_MS < PRIMARY_TIMEOUT_DEFAULT_MS);
