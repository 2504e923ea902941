//! The coordinator: the consensus service the nodes of a cluster agree
//! through (who is primary, under which epoch). It is never our own code:
//! hotblock uses etcd (v3), through [`etcd::Etcd`]. What the cluster keeps
//! there is in [`records`]; the thread that acts on it, elections
//! included, is [`agent`]; this node's lease and the write gate it holds
//! open are [`lease`].
//!
//! Without `--coordinator`, failover is manual (`REPLICAOF NO ONE`).

pub mod agent;
pub mod etcd;
pub mod handover;
pub mod lease;
pub mod records;

use std::time::Duration;

pub use etcd::{CoordinatorUrl, CoordinatorUrlError, Etcd, EtcdError, KeyValue, LeaseId};
pub use records::{ClusterState, MemberMode};

/// How a node takes part in a cluster (`--coordinator` and the flags with it).
#[derive(Clone, Debug)]
pub struct Config {
    pub url: CoordinatorUrl,
    /// `--cluster`: the name its keys live under, and Sentinel's master name.
    pub cluster: String,
    /// `--failover-timeout-ms`: the lease a primary holds.
    pub failover_timeout: Duration,
    /// `--announce`: the client address others should see, if not the
    /// address this node listens on.
    pub announce: Option<String>,
    /// How it replicates as a secondary.
    pub mode: MemberMode,
    /// Whether it stands in elections.
    pub candidate: bool,
    /// The sync quorum it uses as a primary (what the next election reads).
    pub sync_quorum: usize,
}

/// The shortest lease etcd grants with its default timing (a 1 s election
/// timeout makes 1.5 s, rounded up to whole seconds): the default.
pub const FAILOVER_TIMEOUT_DEFAULT_MS: u64 = 2000;
/// The longest `--failover-timeout-ms` accepted.
pub const FAILOVER_TIMEOUT_MAX_MS: u64 = 5000;
