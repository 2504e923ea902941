//! The secondary as the RESP node sees it: its engine for reads, its
//! replication state for `INFO`/`ROLE`, and promotion in place.

use hotblock_core::repl::{Epoch, EpochHistory, Mode, NodeId};
use hotblock_core::{Engine, Error};
use hotblock_primary::node::{Follower, FollowerInfo};

use hotblock_nic_transport::{ConnectTo, Secret};

use crate::fence::{self, FenceNotice};
use crate::SecondaryNode;

/// A running [`SecondaryNode`] behind `hotblock-secondary`'s RESP port.
#[derive(Debug)]
pub struct NodeFollower {
    pub node: SecondaryNode,
    /// The primary's replication address, as given.
    pub primary: String,
    pub mode: Mode,
    /// Where and as whom to tell the former primary of a new epoch after a
    /// promotion (`fence`); `None`: do not.
    pub fence: Option<(ConnectTo, Secret, NodeId)>,
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
        let (engine, history) = self.node.promote(Epoch(0))?;
        if let Some((to, secret, node)) = self.fence {
            fence::announce(FenceNotice {
                to,
                secret,
                node,
                lsn: engine.lsn(),
                history: history.clone(),
            });
        }
        Ok((engine, history))
    }
}
