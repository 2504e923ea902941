//! The primary's settings: `PrimaryConfig`, with its defaults (from
//! `limits.rs`), and `SyncPolicy`.
//!
//! Apart from `Primary` because drivers and command lines build these
//! without touching the state machine.

use std::time::Duration;

use crate::repl::limits::{
    BACKLOG_SIZE_DEFAULT, LAG_MAX_DEFAULT_MS, PRIMARY_HEARTBEAT_INTERVAL_DEFAULT_MS,
    SESSION_TIMEOUT_DEFAULT_MS, SYNC_TIMEOUT_DEFAULT_MS,
};

/// What a sync commit does when its acknowledgements do not come in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// The commit fails with "outcome unknown"; sync secondaries stay sync.
    Block,
    /// Late sync secondaries are degraded to async until they catch up, and
    /// commits stop waiting for them.
    Degrade,
}

#[derive(Clone, Debug)]
pub struct PrimaryConfig {
    /// Bytes of recent deltas kept for partial resync.
    pub backlog_bytes_max: usize,
    /// A session with nothing to send gets a heartbeat this often.
    pub heartbeat_interval: Duration,
    /// A session silent this long is closed.
    pub session_timeout: Duration,
    /// Sync secondaries that must acknowledge a commit; 0 (the default):
    /// commits never wait, whatever the secondaries ask for.
    pub sync_quorum: usize,
    pub sync_timeout: Duration,
    pub on_sync_timeout: SyncPolicy,
    /// Writes are refused while fewer than this many secondaries are
    /// current: online, with no commit older than `max_lag` unacknowledged
    /// (as Redis's `min-replicas-to-write`). 0: never refused.
    pub min_secondaries: usize,
    pub max_lag: Duration,
    /// How often a caught-up secondary is sent the digests of every block at
    /// the LSN it has reached, to compare with its own (silent divergence:
    /// a byte changed in its memory). `None`: never.
    pub verify_interval: Option<Duration>,
}

impl Default for PrimaryConfig {
    fn default() -> Self {
        PrimaryConfig {
            backlog_bytes_max: BACKLOG_SIZE_DEFAULT,
            heartbeat_interval: Duration::from_millis(PRIMARY_HEARTBEAT_INTERVAL_DEFAULT_MS),
            session_timeout: Duration::from_millis(SESSION_TIMEOUT_DEFAULT_MS),
            sync_quorum: 0,
            sync_timeout: Duration::from_millis(SYNC_TIMEOUT_DEFAULT_MS),
            on_sync_timeout: SyncPolicy::Block,
            min_secondaries: 0,
            max_lag: Duration::from_millis(LAG_MAX_DEFAULT_MS),
            verify_interval: None,
        }
    }
}
