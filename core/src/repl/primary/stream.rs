//! Forwarding the backlog: a session is a cursor in it, sending the delta
//! after the last one it sent, whole to a streaming session, filtered for
//! one loading a snapshot, and without the databases its secondary does
//! not subscribe to — empty (begin and commit only) if that is all of
//! them, so that its LSNs still follow ours.
//!
//! Apart from `Primary` because it is the one path every live byte takes,
//! and it reads only the backlog, the engine's catalog and one session.

use std::collections::BTreeSet;

use crate::delta::{Delta, DeltaOp};
use crate::engine::Engine;
use crate::ids::DbId;
use crate::repl::backlog::Backlog;
use crate::repl::frame::{Frame, Message};
use crate::repl::history::Epoch;
use crate::repl::primary::session::{subscribed, Phase, Session};

impl Session {
    /// Queues the ops of the next delta after `sent`, if the backlog has it
    /// and the session is past its handshake, and returns the first.
    pub(super) fn next_delta(
        &mut self,
        backlog: &Backlog,
        engine: &Engine,
        epoch: Epoch,
    ) -> Option<Frame> {
        let entry = backlog.get(self.sent.next())?;
        let delta = match &mut self.phase {
            Phase::AwaitHello | Phase::AwaitDigests(_) => return None,
            Phase::Streaming => entry.delta.clone(),
            Phase::Snapshot(cursor) => cursor.filter(&entry.delta),
        };
        let delta = share(engine, &self.subscription, delta);
        self.sent = delta.lsn();
        self.queue.extend(
            delta
                .ops()
                .iter()
                .cloned()
                .map(|op| Frame::new(epoch, Message::Op(op))),
        );
        self.queue.pop_front()
    }
}

/// The part of `delta` a session with `subscription` gets: the sections of
/// the databases it subscribes to (all of it without a subscription).
fn share(engine: &Engine, subscription: &Option<BTreeSet<String>>, delta: Delta) -> Delta {
    if subscription.is_none() {
        return delta;
    }
    let mut names: Vec<(DbId, bool)> = Vec::new();
    let mut wanted = |db: DbId, name: Option<&str>| -> bool {
        if let Some(&(_, w)) = names.iter().find(|(d, _)| *d == db) {
            return w;
        }
        let w = match name {
            Some(name) => subscribed(subscription, name),
            None => engine
                .database_by_id(db)
                .is_some_and(|d| subscribed(subscription, d.name())),
        };
        names.push((db, w));
        w
    };
    delta.retain(|op| match op {
        DeltaOp::DbCreate { db, name, .. } => wanted(*db, Some(name)),
        DeltaOp::BlockAlloc { db, .. }
        | DeltaOp::BlockWrite { db, .. }
        | DeltaOp::BlockFree { db, .. } => wanted(*db, None),
        DeltaOp::TxnBegin { .. } | DeltaOp::TxnCommit { .. } => true,
    })
}
