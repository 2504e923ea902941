//! Forwarding the backlog: a session is a cursor in it, sending the delta
//! after the last one it sent, whole to a streaming session, filtered for
//! one loading a snapshot, and empty (begin and commit only) for a
//! database its secondary does not subscribe to, so that its LSNs still
//! follow ours.
//!
//! Apart from `Primary` because it is the one path every live byte takes,
//! and it reads only the backlog, the engine's catalog and one session.

use std::collections::BTreeSet;

use crate::delta::{Delta, DeltaOp};
use crate::engine::Engine;
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
        let delta = match wants(engine, &self.subscription, &delta) {
            true => delta,
            false => Delta::from_ops(vec![
                DeltaOp::TxnBegin { db: delta.db() },
                DeltaOp::TxnCommit { lsn: delta.lsn() },
            ]),
        };
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

/// Whether a session with `subscription` gets `delta` whole (or empty).
fn wants(engine: &Engine, subscription: &Option<BTreeSet<String>>, delta: &Delta) -> bool {
    if subscription.is_none() {
        return true;
    }
    let name = match &delta.ops()[1] {
        DeltaOp::DbCreate { name, .. } => name.clone(),
        _ => match engine.database_by_id(delta.db()) {
            Some(db) => db.name().to_string(),
            None => return false,
        },
    };
    subscribed(subscription, &name)
}
