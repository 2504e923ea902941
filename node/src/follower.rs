//! The secondary as the RESP node sees it: its engine for reads, its
//! replication state for `INFO`/`ROLE`, re-pointing and promotion in place.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::cli::Transport;
use crate::error::{RepointError, UpstreamError};
use crate::relay::Relay;
use crate::FollowerInfo;
use hotblock_core::repl::{Epoch, EpochHistory, Mode, NodeId};
use hotblock_core::{Engine, Error};
use hotblock_nic_transport::{ConnectTo, Secret};

use crate::cmd::secondary::connect_to;
use hotblock_secondary::SecondaryNode;

/// A running [`SecondaryNode`] behind `hotblock-secondary`'s RESP port.
#[derive(Debug)]
pub struct Follower {
    node: SecondaryNode,
    /// Serving this node's own secondaries (`--repl-listen`), if it does.
    relay: Option<Arc<Relay>>,
    /// Why it does not, though asked to: shown as the last error until the
    /// follow loop has one of its own.
    relay_error: Option<String>,
    mode: Mode,
    transport: Transport,
    /// Who this node is, to tell the former primary of a new epoch after a
    /// promotion (`crate::fence`).
    secret: Secret,
    node_id: NodeId,
    /// The epoch this node was primary of, if it became a follower by
    /// stepping down in place.
    stepped_down_from: Option<Epoch>,
}

impl Follower {
    /// `node` follows its primary; `relay` serves its own secondaries.
    pub fn new(
        node: SecondaryNode,
        (relay, relay_error): (Option<Arc<Relay>>, Option<String>),
        mode: Mode,
        transport: Transport,
        secret: Secret,
        node_id: NodeId,
    ) -> Self {
        Follower {
            node,
            relay,
            relay_error,
            mode,
            transport,
            secret,
            node_id,
            stepped_down_from: None,
        }
    }

    /// This follower is a primary of `epoch` stepped down in place.
    pub fn stepped_down_from(mut self, epoch: Epoch) -> Self {
        self.stepped_down_from = Some(epoch);
        self
    }

    pub fn engine(&self) -> &Engine {
        self.node.engine()
    }

    pub fn info(&self) -> FollowerInfo {
        let s = self.node.status();
        FollowerInfo {
            primary: self.node.upstream().1,
            mode: self.mode,
            connected: s.connected,
            streaming: s.streaming,
            lsn: s.lsn,
            epoch: s.epoch,
            snapshots: s.snapshots,
            blocks_diverged: s.blocks_diverged,
            lineage: s.lineage,
            last_error: s.last_error.or_else(|| self.relay_error.clone()),
        }
    }

    /// Stops following and promotes: indexes rebuilt, a new epoch. Returns
    /// the engine, now writable, and its history. Blocks (it joins threads
    /// and drops runtimes): call it off the async workers.
    pub fn promote(self, at_least: Epoch) -> Result<(Engine, EpochHistory), Error> {
        let Follower { node, relay, .. } = self;
        let secondary = node.stop();
        // The relay's port is free again for the new primary's controller.
        drop(relay);
        // The new epoch rises above `at_least` and every epoch this node
        // has seen (the secondary takes its own highest into account).
        secondary.promote(at_least)
    }

    /// Where this secondary stands, for an election.
    pub(crate) fn position(&self) -> crate::coordinator::agent::Position {
        let s = self.node.status();
        crate::coordinator::agent::Position {
            last_epoch: s.last_epoch,
            lsn: s.lsn.0,
            epoch_seen: s.epoch,
            consistent: s.consistent,
            vouches: s.vouches,
            stepped_down_from: self.stepped_down_from,
            upstream: self.node.upstream().1,
        }
    }

    pub fn upstream(&self) -> Option<(ConnectTo, Secret, NodeId)> {
        Some((self.node.upstream().0, self.secret.clone(), self.node_id))
    }

    pub fn relay_address(&self) -> Option<SocketAddr> {
        self.relay.as_ref()?.local_addr().parse().ok()
    }

    pub fn repoint(
        &self,
        address: SocketAddr,
        fingerprint: Option<&str>,
    ) -> Result<(), RepointError> {
        if self.transport == Transport::Tcp && fingerprint.is_some() {
            return Err(UpstreamError::FingerprintOnTcp.into());
        }
        let to = connect_to(self.transport, &address.to_string(), fingerprint)?;
        // One record, in the secondary controller, that INFO and the fence
        // notice read too: they never disagree with the follow loop.
        self.node.repoint(to, address.to_string());
        Ok(())
    }
}
