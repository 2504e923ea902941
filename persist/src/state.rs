//! `state.hb`: the node's replication state — its epoch history and the
//! highest epoch it has seen (format in the module doc of `persist`).
//!
//! Small and rewritten whole, atomically, whenever it changes: a node that
//! forgot a promotion could vote for, or follow, a stale primary.

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use super::PERSIST_FORMAT_VERSION;
use hotblock_core::repl::{Epoch, EpochHistory};

pub(crate) const STATE_MAGIC: [u8; 4] = *b"HBST";
const HEADER_SIZE: usize = 16;
const CHECKSUM_SIZE: usize = 8;

/// What a node must remember about replication across restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedState {
    /// Where each epoch this node knows began.
    pub history: EpochHistory,
    /// The highest epoch this node has seen from any peer; it refuses
    /// anything older.
    pub epoch_seen: Epoch,
}

impl Default for PersistedState {
    /// A node that never saved a state: a new cluster's first epoch.
    fn default() -> Self {
        let history = EpochHistory::default();
        PersistedState {
            epoch_seen: history.current(),
            history,
        }
    }
}

pub(crate) fn encode(state: &PersistedState) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&STATE_MAGIC);
    out.extend_from_slice(&[PERSIST_FORMAT_VERSION, 0, 0, 0]);
    out.extend_from_slice(&state.epoch_seen.0.to_le_bytes());
    state.history.encode(&mut out);
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Why `state.hb` was refused: (offset, reason), or a version.
pub(crate) enum StateError {
    Version(u8),
    Bad { offset: u64, why: &'static str },
}

pub(crate) fn decode(bytes: &[u8]) -> Result<PersistedState, StateError> {
    let bad = |offset: usize, why| StateError::Bad {
        offset: offset as u64,
        why,
    };
    if bytes.len() < HEADER_SIZE + CHECKSUM_SIZE {
        return Err(bad(0, "shorter than a header and checksum"));
    }
    if bytes[0..4] != STATE_MAGIC {
        return Err(bad(0, "not a hotblock state file (bad magic)"));
    }
    if bytes[4] != PERSIST_FORMAT_VERSION {
        return Err(StateError::Version(bytes[4]));
    }
    let body_end = bytes.len() - CHECKSUM_SIZE;
    let sum = u64::from_le_bytes(bytes[body_end..].try_into().unwrap());
    if xxh3_64(&bytes[..body_end]) != sum {
        return Err(bad(body_end, "checksum mismatch"));
    }
    if bytes[5..8] != [0; 3] {
        return Err(bad(5, "reserved header bytes are not zero"));
    }
    let epoch_seen = Epoch(u64::from_le_bytes(bytes[8..16].try_into().unwrap()));
    let mut rest = Bytes::copy_from_slice(&bytes[HEADER_SIZE..body_end]);
    let history =
        EpochHistory::decode(&mut rest).map_err(|_| bad(HEADER_SIZE, "malformed epoch history"))?;
    if !rest.is_empty() {
        return Err(bad(body_end - rest.len(), "bytes after the epoch history"));
    }
    Ok(PersistedState {
        history,
        epoch_seen,
    })
}
