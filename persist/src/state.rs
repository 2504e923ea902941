//! `state.hb`: the node's replication state — its epoch history and the
//! highest epoch it has seen — its format, encoder, decoder, and loading
//! and saving it.
//!
//! Small and rewritten whole, atomically, whenever it changes: a node that
//! forgot a promotion could vote for, or follow, a stale primary. What the
//! state means is decided by the replication crates; this one only keeps
//! it.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HBST"
//! 4       1     format version (1)
//! 5       3     zero
//! 8       8     epoch_seen
//! 16      2     history entry count n (1..=HISTORY_LEN_MAX of hotblock-core)
//! 18      16n   entries: epoch u64, start lsn u64 (epochs rise, starts never fall)
//! 18+16n  8     lineage (the history's replication id; absent in files
//!               written before lineages, read as 0: unnamed)
//! 26+16n  8     xxh3-64 of every byte before it
//! ```
//!
//! The history's encoding is `EpochHistory::encode`'s; with the largest
//! history the file is 16 + 2 + 16 × 256 + 8 = 4122 bytes.

use std::io;
use std::path::Path;

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Cause, PersistError};
use crate::files::{self, STATE_FILE};
use crate::PERSIST_FORMAT_VERSION;
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
    out.extend_from_slice(&state.history.lineage().to_le_bytes());
    let sum = xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

/// Reads `dir/state.hb`; the default state if there is none.
pub(crate) fn load(dir: &Path) -> Result<PersistedState, PersistError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PersistedState::default()),
        Err(e) => return Err(PersistError::io("reading", path)(e)),
    };
    decode(&bytes).map_err(|e| match e {
        StateError::Version(version) => PersistError::UnsupportedVersion { path, version },
        StateError::Bad {
            offset,
            why,
            source,
        } => PersistError::Corrupt {
            path,
            offset,
            why: why.to_string(),
            source,
        },
    })
}

/// Writes `dir/state.hb`, atomically and durably.
pub(crate) fn save(dir: &Path, state: &PersistedState) -> Result<(), PersistError> {
    files::write_atomically(dir, STATE_FILE, &encode(state))
}

/// Why `state.hb` was refused: (offset, reason, what the history decoder
/// said), or a version.
pub(crate) enum StateError {
    Version(u8),
    Bad {
        offset: u64,
        why: &'static str,
        source: Option<Cause>,
    },
}

pub(crate) fn decode(bytes: &[u8]) -> Result<PersistedState, StateError> {
    let bad = |offset: usize, why| StateError::Bad {
        offset: offset as u64,
        why,
        source: None,
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
    let history = EpochHistory::decode(&mut rest).map_err(|e| StateError::Bad {
        offset: HEADER_SIZE as u64,
        why: "malformed epoch history",
        source: Some(Box::new(e)),
    })?;
    let history = match rest.len() {
        0 => history,
        8 => history.with_lineage(u64::from_le_bytes(rest[..].try_into().unwrap())),
        _ => return Err(bad(body_end - rest.len(), "bytes after the epoch history")),
    };
    Ok(PersistedState {
        history,
        epoch_seen,
    })
}
