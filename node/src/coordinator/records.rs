//! What a cluster keeps in etcd, under `/hotblock/<cluster>/`, and what a
//! node knows of it for `INFO`, `ROLE` and the Sentinel commands.
//!
//! | key | lease | value |
//! |---|---|---|
//! | `primary` | the primary's | [`PrimaryRecord`]: who serves writes now |
//! | `term` | none | [`PrimaryRecord`]: the last primary elected, and the term |
//! | `members/<node>` | none | [`MemberRecord`]: every node that ever joined |
//! | `candidates/<node>` | the candidate's | [`CandidateRecord`]: its position in an election |
//!
//! `primary` lives only as long as its holder renews its lease: its absence
//! is what starts an election. `term` outlives it: it names the term the
//! next election must rise above, the quorum the last primary used, and
//! its address (where a node that has nobody else to follow waits).
//! `members` are kept without a lease on purpose: an election counts the
//! sync secondaries that exist, not only those alive, so that it never
//! goes ahead without a holder of every acknowledged write (see
//! [`super::agent`]).

use hotblock_core::repl::{election, Epoch, Mode, NodeId};
use serde::{Deserialize, Serialize};

/// The keys of one cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Keys {
        Keys {
            prefix: format!("/hotblock/{cluster}/"),
        }
    }

    /// Every key of the cluster (what the agent watches).
    pub fn all(&self) -> Vec<u8> {
        self.prefix.clone().into_bytes()
    }

    pub fn primary(&self) -> Vec<u8> {
        format!("{}primary", self.prefix).into_bytes()
    }

    pub fn term(&self) -> Vec<u8> {
        format!("{}term", self.prefix).into_bytes()
    }

    pub fn members(&self) -> Vec<u8> {
        format!("{}members/", self.prefix).into_bytes()
    }

    pub fn member(&self, node: u64) -> Vec<u8> {
        format!("{}members/{node}", self.prefix).into_bytes()
    }

    pub fn candidates(&self) -> Vec<u8> {
        format!("{}candidates/", self.prefix).into_bytes()
    }

    pub fn candidate(&self, node: u64) -> Vec<u8> {
        format!("{}candidates/{node}", self.prefix).into_bytes()
    }
}

/// A primary: who it is, under which epoch, where clients and secondaries
/// reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryRecord {
    pub node: u64,
    /// The term it was elected in (the epoch's high bits).
    pub term: u64,
    pub epoch: u64,
    /// Its client (RESP) address, as clients should dial it.
    pub client: String,
    /// Its replication address.
    pub repl: String,
    /// How many sync secondaries acknowledge each of its commits: the next
    /// election needs N − quorum + 1 of the N sync secondaries.
    pub sync_quorum: usize,
    /// Set by a planned switchover (`FAILOVER`, `SHUTDOWN`): the node the
    /// next election prefers when it is as up to date as any candidate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_to: Option<u64>,
}

/// How a member replicates when it is a secondary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberMode {
    Sync,
    Async,
}

/// A node of the cluster, as it registered itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub node: u64,
    pub client: String,
    pub repl: String,
    pub mode: MemberMode,
    /// It stands in elections (sync secondaries do; async ones only with
    /// `--failover-async`).
    pub candidate: bool,
}

/// A candidate's position in the election after `term`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub node: u64,
    /// The term whose primary is gone: a record for an older term is stale.
    pub term: u64,
    /// The epoch of its last applied transaction, then its LSN: what ranks
    /// candidates (Raft's last log term and index).
    pub last_epoch: u64,
    pub lsn: u64,
    /// The highest epoch it has seen: the new term rises above it too.
    pub epoch_seen: u64,
    pub mode: MemberMode,
    /// It is the last primary, stepped down in place (not restarted).
    #[serde(default)]
    pub stepped_down: bool,
}

impl From<MemberMode> for Mode {
    fn from(m: MemberMode) -> Mode {
        match m {
            MemberMode::Sync => Mode::Sync,
            MemberMode::Async => Mode::Async,
        }
    }
}

impl MemberRecord {
    pub fn as_member(&self) -> election::Member {
        election::Member {
            node: NodeId(self.node),
            mode: self.mode.into(),
        }
    }
}

impl CandidateRecord {
    pub fn as_candidate(&self) -> election::Candidate {
        election::Candidate {
            node: NodeId(self.node),
            mode: self.mode.into(),
            last_epoch: Epoch(self.last_epoch),
            lsn: self.lsn,
            epoch_seen: Epoch(self.epoch_seen),
            stepped_down: self.stepped_down,
        }
    }
}

impl PrimaryRecord {
    /// This record as the primary an election replaces.
    pub fn as_last(&self) -> election::LastPrimary {
        election::LastPrimary {
            node: NodeId(self.node),
            term: self.term,
            epoch: Epoch(self.epoch),
            sync_quorum: self.sync_quorum,
            handover_to: self.handover_to.map(NodeId),
        }
    }
}

/// What this node knows of its cluster, for `INFO`, `ROLE`, the Sentinel
/// commands and `-READONLY`'s pointer to the primary. Refreshed by the
/// coordinator's thread.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    /// The last call to etcd answered.
    pub link_up: bool,
    /// The live primary, if one holds the key.
    pub primary: Option<PrimaryRecord>,
    /// The last primary elected (the cluster's term).
    pub term: Option<PrimaryRecord>,
    pub members: Vec<MemberRecord>,
    /// What an election in progress waits for, as a sentence.
    pub election: Option<String>,
    pub last_error: Option<String>,
    /// Elections this node won, and times it stepped down.
    pub promotions: u64,
    pub demotions: u64,
}

/// Parses a record, or says which key held something else.
pub fn parse<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| {
        format!(
            "etcd key {} does not hold a hotblock record: {e}",
            String::from_utf8_lossy(key)
        )
    })
}

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_values_are_refused() {
        let r = CandidateRecord {
            node: 5,
            term: 1,
            last_epoch: 3,
            lsn: 4,
            epoch_seen: 3,
            mode: MemberMode::Sync,
            stepped_down: false,
        };
        assert!(parse::<CandidateRecord>(b"k", b"{").is_err());
        assert_eq!(parse::<CandidateRecord>(b"k", &encode(&r)).unwrap(), r);
        assert_eq!(r.as_candidate().rank(), (Epoch(3), 4, NodeId(5)));
    }
}
