//! The secondary as the RESP node sees it: its engine for reads, its
//! replication state for `INFO`/`ROLE`, and promotion in place.

use hotblock_core::repl::{Epoch, EpochHistory, Mode};
use hotblock_core::{Engine, Error};
use hotblock_primary::node::{Follower, FollowerInfo};

use crate::SecondaryNode;

/// A running [`SecondaryNode`] behind `hotblock-secondary`'s RESP port.
#[derive(Debug)]
pub struct NodeFollower {
    pub node: SecondaryNode,
    /// The primary's replication address, as given.
    pub primary: String,
    pub mode: Mode,
}

impl Follower for NodeFollower {
    fn engine(&self) -> &Engine {
        self.node.engine()
    }

    fn info(&self) -> FollowerInfo {
        let s = self.node.status();
        FollowerInfo {
            primary: self.primary.clone(),
            mode: self.mode,
            connected: s.connected,
            streaming: s.streaming,
            lsn: s.lsn,
            epoch: s.epoch,
            snapshots: s.snapshots,
            blocks_diverged: s.blocks_diverged,
            last_error: s.last_error,
        }
    }

    fn promote(self: Box<Self>) -> Result<(Engine, EpochHistory), Error> {
        // The new epoch rises above every epoch this node has seen (the
        // secondary takes its own highest into account).
        self.node.promote(Epoch(0))
    }
}
