//! The data directory of a hotblock node (`--data-dir`): a snapshot of its
//! blocks plus a log of every delta since, the fsync policies that decide
//! what a power loss may cost, recovery, checkpoints, and the one thread
//! (`hotblock-persist`) that runs the background fsyncs and checkpoints.
//! With it, a node that crashed (kill -9) or restarted comes back with its
//! last LSN, byte-identical blocks and its replication state
//! ([`PersistedState`]), instead of resyncing everything from a peer (or,
//! for a lone primary, losing everything).
//!
//! **What it is not.** The engine (blocks, transactions, deltas) is
//! `hotblock-core`: this crate stores what the engine hands it and rebuilds
//! an engine from it. It has no replication logic (the replication state is
//! decided by `hotblock-primary` and `hotblock-secondary`, and only kept
//! here) and does no networking. It uses no async runtime:
//! [`Persister::wait_durable`] blocks its thread.
//!
//! # How
//!
//! The engine hands every committed or applied delta, in LSN order and
//! under its commit lock, to the persistence hook ([`Persister::attach`],
//! `log_writer.rs`), which appends it to the current log with one
//! `write(2)` — no userspace buffer, so a process crash loses nothing that
//! committed; whether a power loss does depends on the [`FsyncPolicy`]. A
//! checkpoint (`checkpoint.rs`) writes a new snapshot and starts a new log
//! after it; recovery ([`Persister::open`], `recover.rs`, which says what it
//! does with bad bytes) loads the newest readable snapshot and replays the
//! logs after it. The background thread (`worker.rs`) runs the `everysec`
//! fsyncs and the checkpoints nobody asked for. The handle itself is in
//! `persister.rs`; every limit is in `limits.rs`.
//!
//! **Checkpoints pause commits** while the blocks are copied into the
//! snapshot file (through a buffer, into the page cache): the snapshot must
//! hold exactly the transactions up to its LSN. The fsync and rename happen
//! after commits resume. A checkpoint runs when the log outgrows
//! `checkpoint_log_bytes`, after a full resync, and when the caller asks
//! ([`Persister::checkpoint`]).
//!
//! **Retention.** A checkpoint keeps the two newest snapshots
//! (`SNAPSHOTS_KEPT`) and every log from the older of them on, so a
//! snapshot that rots on disk still leaves the previous one plus the logs
//! to recover from. A resync's checkpoint keeps only its own snapshot: the
//! older files describe another history, and chaining them with the new one
//! would mix the two.
//!
//! **Failure.** When an append or fsync fails (disk full, EIO), the error is
//! logged and recorded, no further delta is appended (so the log never has
//! a gap), and [`Persister::check_healthy`] and [`Persister::wait_durable`]
//! return it: the node must refuse writes, as Redis does with `MISCONF`.
//! A later checkpoint that succeeds (the background thread retries every
//! `CHECKPOINT_RETRY_INTERVAL_MS`, 10 s) captures everything in a snapshot
//! and clears the failure. A delta that does not follow the log (the engine
//! was reset without [`Persister::begin_resync`]) stops persistence too,
//! but only the caller's own [`Persister::checkpoint`] resumes it, as after
//! a resync: the background thread cannot know when the engine is whole.
//! Every error is a [`PersistError`] naming the file it is about.
//!
//! # Guarantees
//!
//! Under every policy:
//! - A process crash (kill -9) loses nothing that committed: each delta is
//!   in the log, in the kernel, before its commit returns.
//! - Recovery restores a prefix of the committed history, without a gap:
//!   the engine at the LSN of the last whole record, with byte-identical
//!   blocks. A torn or rotted log tail is cut; a log after a gap or a bad
//!   record is set aside (`*.corrupt`), never applied; a rotted snapshot
//!   is set aside for the one before it.
//! - Snapshots and `state.hb` appear whole or not at all (written aside,
//!   fsynced, renamed, directory fsynced). [`Persister::save_state`]
//!   returns once the state is durable; [`Persister::checkpoint`] once its
//!   snapshot, and every delta up to its LSN, is.
//! - After a failed write or fsync nothing more is logged, and
//!   [`Persister::check_healthy`] and [`Persister::wait_durable`] err until
//!   a checkpoint succeeds: a caller that refuses writes meanwhile never
//!   acknowledges a commit the log lacks.
//! - During a resync ([`Persister::begin_resync`]) nothing is logged: a
//!   crash leaves the directory as it was before the resync.
//!
//! What a power loss or an OS crash may cost, per [`FsyncPolicy`]:
//! - `always`: nothing for which [`Persister::wait_durable`] returned: it
//!   returns once an fdatasync covered the delta (one covers every waiter:
//!   group commit). The caller must wait before acknowledging a commit.
//! - `everysec` (the default): the commits of about the last
//!   `EVERYSEC_INTERVAL_MS` (1 s), plus those of an fsync still running:
//!   the background thread fsyncs on each wake.
//! - `no`: whatever the OS had not written back (on Linux, often up to
//!   30 s). The log is fsynced only by checkpoints, on open, and by
//!   [`Persister::sync_all`] (a clean shutdown).
//!
//! # Limits
//!
//! The crate's are in `limits.rs`, the engine's in
//! `hotblock_core::constants`:
//! - A log record holds one delta of `LOG_RECORD_SIZE_MIN` (16) to
//!   `LOG_RECORD_SIZE_MAX` bytes (the engine's `DELTA_SIZE_MAX`, 256 MiB),
//!   after a 12-byte prefix. A larger delta stops persistence
//!   ([`PersistError::RecordTooLarge`]) rather than being logged. Appending
//!   builds each record in one buffer of its size.
//! - A log has no size limit of its own (offsets are `u64`): once it
//!   outgrows `checkpoint_log_bytes` (default 256 MiB,
//!   [`CHECKPOINT_LOG_BYTES_DEFAULT`]) the background thread checkpoints on
//!   its next wake, so a log ends near that size plus a second of commits.
//!   The file system's limits (a full disk, `RLIMIT_FSIZE`) are write
//!   failures like any other.
//! - A snapshot holds every block of every database: the engine's block
//!   memory, plus 9 bytes a block and the schemas (at most `DATABASES_MAX`,
//!   1024, databases of at most `INDEXES_PER_DB_MAX`, 16, indexes; names of
//!   at most `NAME_LEN_MAX`, 64, bytes; blocks of 4 KiB to 1 MiB).
//! - A directory holds at most `SNAPSHOTS_KEPT` (2) snapshots and the logs
//!   from the older one on, plus a third snapshot while a checkpoint writes
//!   it: room for three copies of the data and the logs is needed.
//! - `state.hb` is at most 4122 bytes (an epoch history of 256 entries).
//! - Memory: snapshots and logs stream through `READ_BUFFER_BYTES` and
//!   `WRITE_BUFFER_BYTES` (1 MiB) buffers. Recovery holds one record at a
//!   time, its buffer growing `READ_CHUNK_BYTES` (64 KiB) at a time as bytes
//!   arrive, so a corrupt length costs no more than the file holds.
//!
//! # Files
//!
//! Every binary file starts with a 4-byte magic and format version 1
//! ([`PERSIST_FORMAT_VERSION`]); integers are little-endian. Each layout is
//! documented beside the code that encodes it:
//! - `snapshot-<lsn>.hb`: the databases at `lsn` (`snapshot.rs`);
//! - `log-<base lsn>.hb`: the deltas after `base lsn` (`log.rs`);
//! - `state.hb`: the replication state (`state.rs`);
//! - `node-id`: this node's id, one line of text (`identity.rs`);
//! - `LOCK`, held while a [`Persister`] lives; `*.tmp` files, being written;
//!   `*.corrupt` files, set aside by recovery; and how names carry LSNs
//!   (`files.rs`).

mod checkpoint;
mod codec;
mod error;
mod files;
mod identity;
mod limits;
mod log;
mod log_writer;
mod persister;
mod recover;
mod snapshot;
mod state;
mod worker;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use error::PersistError;
pub use identity::NODE_ID_MAX;
pub use persister::Persister;
pub use state::PersistedState;

use hotblock_core::Lsn;

/// Format version of every file in a data directory.
pub const PERSIST_FORMAT_VERSION: u8 = 1;
/// A log larger than this triggers a checkpoint, unless configured otherwise
/// (see `limits.rs` for why this value).
pub const CHECKPOINT_LOG_BYTES_DEFAULT: u64 = limits::CHECKPOINT_LOG_SIZE_DEFAULT;

/// When the log is fsynced, and so what a power loss or OS crash may cost.
/// A process crash (kill -9) costs nothing under any policy: each delta is
/// in the kernel once its commit returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// [`Persister::wait_durable`] returns once the delta is fsynced (one
    /// fdatasync covers every waiter: group commit). Risks nothing that
    /// `wait_durable` confirmed.
    Always,
    /// The background thread fsyncs once a second (`EVERYSEC_INTERVAL_MS`).
    /// A power loss or OS crash may lose up to about a second of commits.
    #[default]
    EverySec,
    /// Never fsynced except by checkpoints, on open and by
    /// [`Persister::sync_all`]: a power loss or OS crash loses whatever the
    /// OS had not yet written back (often up to 30 s).
    No,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        })
    }
}

/// A name that is not an fsync policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fsync policy '{0}': always, everysec or no")]
pub struct ParseFsyncPolicyError(String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            other => Err(ParseFsyncPolicyError(other.to_string())),
        }
    }
}

/// Where and how a node persists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistConfig {
    /// The data directory. It must exist.
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// A log larger than this triggers a checkpoint. Smaller means faster
    /// recovery and more snapshot writing.
    pub checkpoint_log_bytes: u64,
}

impl PersistConfig {
    /// `dir` with the default policy (`everysec`) and checkpoint size.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PersistConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            checkpoint_log_bytes: CHECKPOINT_LOG_BYTES_DEFAULT,
        }
    }
}

/// What [`Persister::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistStatus {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Every delta up to here is fsynced.
    pub durable_lsn: Lsn,
    /// Every delta up to here is in the log (in the kernel, at least).
    pub logged_lsn: Lsn,
    /// Size of the current log file.
    pub log_bytes: u64,
    /// LSN of the newest snapshot (the one recovered from, before any
    /// checkpoint).
    pub last_checkpoint_lsn: Lsn,
    /// Checkpoints written by this persister.
    pub checkpoints: u64,
    /// When the newest checkpoint was written, or the directory opened
    /// (Redis's `LASTSAVE`), in seconds since the Unix epoch.
    pub last_checkpoint_unix_secs: u64,
    /// A resync is in progress: deltas are not logged until it checkpoints.
    pub resyncing: bool,
    /// Set while persistence is stopped by a failure.
    pub last_error: Option<String>,
}

/// Runs the snapshot decoder over arbitrary bytes (fuzzing): it must return,
/// without panicking, hanging or allocating past its limits.
#[doc(hidden)]
pub fn fuzz_load_snapshot(data: &[u8]) {
    let _ = snapshot::read_snapshot(data, &mut snapshot::Discard);
}

/// Runs the log decoder over arbitrary bytes (fuzzing), record by record to
/// the first bad one; and the `state.hb` decoder over the same bytes.
#[doc(hidden)]
pub fn fuzz_load_log(data: &[u8]) {
    let Ok(mut reader) = log::LogReader::new(data) else {
        return;
    };
    while let Ok(Some(_)) = reader.next_delta() {}
    let _ = state::decode(data);
}
