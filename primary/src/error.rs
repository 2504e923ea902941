//! Errors at the primary's edges: one enum per operation. Each variant's
//! doc says what caused it and what to do about it. Cluster states (fenced,
//! too few secondaries, an outcome the quorum did not confirm) belong here,
//! not to the engine, which knows nothing of other nodes.

use hotblock_core::Lsn;
use hotblock_nic_transport::TransportError;
use hotblock_persist::PersistError;

/// Why a write (a transaction's begin, commit, or wait) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// The engine refused the transaction (unknown database, memory limit,
    /// record too large...). Nothing was committed.
    #[error(transparent)]
    Engine(#[from] hotblock_core::Error),
    /// The local log cannot be written (disk full, EIO): writes stop until a
    /// checkpoint succeeds, as Redis's `MISCONF`. A commit that got this
    /// error is in memory but not known to be on disk.
    /// (Boxed: it is large, and every write's `Result` carries its size.)
    #[error("local log: {0}")]
    Persist(#[source] Box<PersistError>),
    /// A sync commit was applied here but not acknowledged by the sync
    /// quorum before the sync timeout (policy `block`). It may or may not
    /// survive a failover: its outcome is unknown. Read it back to find out.
    #[error("commit at lsn {lsn} not acknowledged by the sync quorum in time: outcome unknown")]
    OutcomeUnknown { lsn: Lsn },
    /// Fewer secondaries than `min_secondaries` are current (within
    /// `max_lag`): writes are refused until enough catch up (Redis's
    /// `NOREPLICAS`).
    #[error("not enough current secondaries to accept writes")]
    TooFewSecondaries,
    /// A node with a newer epoch exists: this one is no longer the primary
    /// and refuses writes. Restart it as a secondary to rejoin.
    #[error("this node is no longer the primary (a newer epoch exists)")]
    Fenced,
    /// This primary's write lease ran out (it could not renew it with the
    /// coordinator in time): it may have been replaced already, so it
    /// takes no writes until it renews or learns who the primary is.
    #[error("this primary's lease with the coordinator has run out: no writes until it is renewed or a new primary is known")]
    NoLease,
}

impl From<PersistError> for WriteError {
    fn from(e: PersistError) -> Self {
        WriteError::Persist(Box::new(e))
    }
}

/// Why the primary controller could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The controller's runtime (a thread) could not be created.
    #[error("replication runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The replication port could not be bound (in use, no permission, a
    /// bad TLS identity).
    #[error("replication listener: {0}")]
    Listen(#[source] TransportError),
}

/// Any error of this crate, for callers that handle them alike (`?` in an
/// application's `main`): each operation's own enum converts into it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A query or schema operation the engine refused.
    #[error(transparent)]
    Engine(#[from] hotblock_core::Error),
    #[error(transparent)]
    Write(WriteError),
    #[error(transparent)]
    Start(#[from] StartError),
}

impl From<WriteError> for Error {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Engine(e) => Error::Engine(e),
            other => Error::Write(other),
        }
    }
}
