//! What can go wrong with a data directory: [`PersistError`], the crate's
//! one error type. Every message says what failed and names the file or
//! directory it is about, because the operator acts on files; every
//! underlying error (I/O, the engine's, a decoder's) is kept as the
//! variant's source rather than flattened into its text.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use hotblock_core::Lsn;
use hotblock_core::{ApplyError, Error};

use crate::limits::LOG_RECORD_SIZE_MAX;

/// The error under a corrupt file's description, when a decoder (the
/// engine's delta or history decoder, or the engine itself) gave one.
pub(crate) type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Errors of [`Persister`](crate::Persister). Each variant's doc says what
/// caused it and what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The data directory is not created on demand, so that a typo in a
    /// path does not silently start an empty node.
    #[error("data directory {} does not exist; create it first", .dir.display())]
    MissingDir { dir: PathBuf },
    /// The path names a file, or runs through one.
    #[error("data directory {} is not a directory (it, or one of its parents, is a file)", .dir.display())]
    NotADirectory { dir: PathBuf },
    /// Files cannot be created in the directory (permissions, read-only
    /// filesystem).
    #[error("data directory {} is not writable: {source}", .dir.display())]
    NotWritable { dir: PathBuf, source: io::Error },
    /// Another process (or another `Persister` in this one) holds the
    /// directory's `LOCK`. Two nodes must never share a data directory.
    #[error("data directory {} is in use: another process holds its LOCK file", .dir.display())]
    Locked { dir: PathBuf },
    /// The file was written by a newer hotblock. Nothing was changed; run
    /// that version, or move the directory away.
    #[error("{}: unsupported format version {version} (this build reads version {})",
        .path.display(), crate::PERSIST_FORMAT_VERSION)]
    UnsupportedVersion { path: PathBuf, version: u8 },
    /// A file's bytes do not parse or fail their checksum. `source` is the
    /// decoder's own error, when one said more than `why`.
    #[error("{}: corrupt at byte offset {offset}: {why}{}", .path.display(), caused_by(.source))]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
        #[source]
        source: Option<Cause>,
    },
    /// Logs exist but no snapshot to replay them onto: the directory lost
    /// files. Move them away to start empty (a secondary then resyncs).
    #[error("data directory {} holds logs but no readable snapshot; move its files away to start empty", .dir.display())]
    NoSnapshot { dir: PathBuf },
    /// A system call on a file failed (`what` says which: "creating",
    /// "fsyncing"...). Nothing about the file's bytes is implied.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Appending a delta's record to the log failed (disk full, EIO, the
    /// file size limit): persistence stops (see [`PersistError::Stopped`]).
    #[error("appending {lsn} to {}: {source}", .path.display())]
    Append {
        path: PathBuf,
        lsn: Lsn,
        source: io::Error,
    },
    /// A delta encodes larger than a log record holds: persistence stops
    /// rather than log it.
    #[error("{lsn} encodes to {size} bytes, more than a record of {} holds ({} bytes)",
        .path.display(), LOG_RECORD_SIZE_MAX)]
    RecordTooLarge {
        path: PathBuf,
        lsn: Lsn,
        size: usize,
    },
    /// The engine committed a delta that does not follow the log, or was
    /// attached at another LSN than the log ends at: it changed without
    /// the persister (a resync without `begin_resync`?). Persistence stops
    /// until an explicit [`Persister::checkpoint`](crate::Persister::checkpoint).
    #[error("{} ends at {logged}, but the engine is at {engine}: the engine changed without \
             the persister (a resync without begin_resync?)", .path.display())]
    Diverged {
        path: PathBuf,
        engine: Lsn,
        logged: Lsn,
    },
    /// A logged delta passed its checksum but does not apply: the files do
    /// not describe one history. Resync the node from a peer.
    #[error("{}: replaying {lsn}: {source}", .path.display())]
    Replay {
        path: PathBuf,
        lsn: Lsn,
        source: ApplyError,
    },
    /// The engine refused something recovery asked of it while loading the
    /// snapshot `path` (memory limit, say).
    #[error("{}: recovering into the engine: {source}", .path.display())]
    Engine { path: PathBuf, source: Error },
    /// Recovery applies deltas, which only a follower engine does. Pass a
    /// follower config and promote the engine `open` returns.
    #[error(
        "Persister::open needs a follower engine config; promote the engine it returns to write"
    )]
    NotFollower,
    /// A checkpoint of the directory failed; `source` says where. Older
    /// files are kept, and the background thread retries.
    #[error("checkpoint in {} failed: {source}", .dir.display())]
    Checkpoint {
        dir: PathBuf,
        source: Arc<PersistError>,
    },
    /// An earlier write or fsync failed (`cause`), so the log may lack
    /// committed transactions: refuse writes (Redis's MISCONF) until a
    /// checkpoint succeeds (the background thread retries one).
    #[error("persistence to {} stopped after a failure: {cause}; refuse writes until a checkpoint succeeds", .dir.display())]
    Stopped {
        dir: PathBuf,
        #[source]
        cause: Arc<PersistError>,
    },
    /// `wait_durable` was asked about a transaction the log never saw: the
    /// persister is not attached to the engine that committed it.
    #[error(
        "{lsn} was never logged to {} (logged up to {logged}); is the persister attached to this engine?",
        .path.display()
    )]
    NotLogged {
        path: PathBuf,
        lsn: Lsn,
        logged: Lsn,
    },
}

impl PersistError {
    /// Maps an I/O error of `what` (a verb: "creating", "fsyncing") on
    /// `path`.
    pub(crate) fn io(
        what: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> PersistError {
        let path = path.into();
        move |source| PersistError::Io { what, path, source }
    }
}

/// `": {source}"`, or nothing: a corrupt file's message ends with what the
/// decoder said, if it said anything.
pub(crate) fn caused_by(source: &Option<Cause>) -> String {
    source
        .as_ref()
        .map(|e| format!(": {e}"))
        .unwrap_or_default()
}
