//! What can go wrong with a data directory. Every message names the file or
//! directory it is about, because the operator acts on files.

use std::io;
use std::path::PathBuf;

use hotblock_core::Lsn;
use hotblock_core::{ApplyError, Error};

/// Errors of [`Persister`](super::Persister). Each variant's doc says what
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
    #[error("{}: unsupported format version {version} (this build reads version 1)", .path.display())]
    UnsupportedVersion { path: PathBuf, version: u8 },
    /// A file's bytes do not parse or fail their checksum.
    #[error("{}: corrupt at byte offset {offset}: {why}", .path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: String,
    },
    /// Logs exist but no snapshot to replay them onto: the directory lost
    /// files. Move them away to start empty (a secondary then resyncs).
    #[error("data directory {} holds logs but no readable snapshot; move its files away to start empty", .dir.display())]
    NoSnapshot { dir: PathBuf },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
    /// A logged delta passed its checksum but does not apply: the files do
    /// not describe one history. Resync the node from a peer.
    #[error("{}: replaying {lsn}: {source}", .path.display())]
    Replay {
        path: PathBuf,
        lsn: Lsn,
        source: ApplyError,
    },
    /// The engine refused something recovery asked of it (memory limit, say).
    #[error("recovering into the engine: {0}")]
    Engine(#[source] Error),
    /// Recovery applies deltas, which only a follower engine does. Pass a
    /// follower config and promote the engine `open` returns.
    #[error(
        "Persister::open needs a follower engine config; promote the engine it returns to write"
    )]
    NotFollower,
    /// An earlier write or fsync failed, so the log may lack committed
    /// transactions: refuse writes (Redis's MISCONF) until a checkpoint
    /// succeeds (the background thread retries one).
    #[error("persistence to {} stopped after a failure: {cause}; refuse writes until a checkpoint succeeds", .dir.display())]
    Stopped { dir: PathBuf, cause: String },
    /// `wait_durable` was asked about a transaction the log never saw: the
    /// persister is not attached to the engine that committed it.
    #[error(
        "{lsn} was never logged (logged up to {logged}); is the persister attached to this engine?"
    )]
    NotLogged { lsn: Lsn, logged: Lsn },
}

impl PersistError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> PersistError {
        let path = path.into();
        move |source| PersistError::Io { path, source }
    }
}
