//! Errors at the node's edges, one enum per operation. What an operator
//! reads at start-up keeps its cause; what a client reads (`REPLICAOF`)
//! keeps Redis's wording where Redis has the same refusal.

use std::path::PathBuf;

use hotblock_nic_transport::TransportError;
use hotblock_persist::PersistError;
use hotblock_primary::StartError;

/// Why a binary could not start (or stopped serving): the command line's
/// edge, where each cause gets the context an operator needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// A setting (flag or config file) is refused; the text says which and
    /// what to do instead.
    #[error("{0}")]
    Setting(String),
    /// A file the node keeps (its TLS identity, a config file) cannot be
    /// read or written.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file the node keeps is not what it should be; the text says how to
    /// recover.
    #[error("{}: {why}", path.display())]
    BadFile { path: PathBuf, why: String },
    /// The data directory cannot be opened or recovered.
    #[error("data directory: {0}")]
    Persist(#[from] PersistError),
    /// The replication port cannot be served.
    #[error("cannot listen for secondaries on {listen}: {source}")]
    Replication {
        listen: String,
        #[source]
        source: StartError,
    },
    /// The engine refused a step of the start (rebuilding indexes, creating
    /// the default database).
    #[error("{what}: {source}")]
    Engine {
        what: &'static str,
        #[source]
        source: hotblock_core::Error,
    },
    /// A TLS identity cannot be made or used.
    #[error("TLS: {0}")]
    Tls(#[source] TransportError),
    /// The primary to follow cannot be reached as given.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The client port cannot be bound, or its runtime started.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why an upstream (`--primary`, `REPLICAOF host port`) cannot be dialled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("primary {address}: {source}")]
    Resolve {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("primary {address}: no address")]
    NoAddress { address: String },
    #[error("--transport tls and quic need the primary's certificate fingerprint (it logs it): --primary-fingerprint, or REPLICAOF host port fingerprint")]
    FingerprintMissing,
    #[error("the primary's fingerprint: 64 hex digits (a SHA-256)")]
    BadFingerprint,
    #[error("a fingerprint is for --transport tls or quic; this node uses tcp")]
    FingerprintOnTcp,
}

/// Why `REPLICAOF host port` (re-pointing) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepointError {
    #[error("a primary cannot follow another in place: restart it as hotblock-secondary --primary HOST:PORT --data-dir <its directory>, and it rejoins (its divergent tail discarded)")]
    NotASecondary,
    #[error("{0}")]
    Unavailable(&'static str),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// Why `REPLICAOF NO ONE` (promotion) failed or finished short.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PromoteError {
    #[error("this node is already a primary")]
    AlreadyPrimary,
    /// The follower stopped but its blocks are not known to be whole: the
    /// node stays unavailable rather than serve them.
    #[error("promotion failed ({0}); restart this node")]
    Failed(#[source] hotblock_core::Error),
    /// Promoted and serving, but something it should also do failed.
    #[error("promoted, but: {}", problems.join("; "))]
    Incomplete {
        /// The epoch it serves under.
        epoch: hotblock_core::repl::Epoch,
        problems: Vec<String>,
    },
}

/// Why a primary could not step down to follow another in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoteError {
    #[error("this node is not a primary")]
    NotAPrimary,
    #[error("this node was not started with what a secondary needs")]
    NotConfigured,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}
