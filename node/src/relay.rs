//! A relay: a secondary that serves secondaries of its own (a daisy chain).
//!
//! It is composition, not a role of its own: the secondary controller
//! applies the upstream's deltas to the engine, the engine hands each one
//! to the primary controller started here on the same engine, and that
//! controller forwards it downstream. This module starts that controller
//! the way a relay needs it (no sync quorum: a relay never makes its
//! upstream's commits wait; frames stamped with the upstream's epochs) and
//! passes it the follow loop's news through [`Downstream`].

use std::sync::Arc;

use hotblock_core::repl::EpochHistory;
use hotblock_core::Engine;
use hotblock_primary::{ReplicationConfig, Replicator, StartError};
use hotblock_secondary::Downstream;

/// The primary controller of a relay.
#[derive(Debug)]
pub struct Relay {
    replicator: Replicator,
}

impl Relay {
    /// Serves `engine`'s applied deltas downstream on `config.listen`.
    /// `history` is the one the secondary controller starts with.
    pub fn start(
        engine: &Engine,
        history: &EpochHistory,
        mut config: ReplicationConfig,
    ) -> Result<Arc<Relay>, StartError> {
        config.protocol.sync_quorum = 0;
        config.history = history.clone();
        let replicator = Replicator::start(engine.clone(), config)?;
        Ok(Arc::new(Relay { replicator }))
    }

    /// Serves no one until the follow loop says the copy is online (see
    /// [`Downstream::online`]): a node that restarted behind its old
    /// secondaries must not offer them its own, older state.
    pub fn withhold(&self) {
        self.replicator.set_available(false);
    }

    /// Where downstream secondaries connect (the port the OS picked, if
    /// asked for port 0).
    pub fn local_addr(&self) -> &str {
        self.replicator.local_addr()
    }
}

impl Downstream for Relay {
    fn resync_started(&self) {
        self.replicator.reset();
    }

    fn online(&self, history: &EpochHistory) {
        // Downstream frames carry the upstream's epoch.
        self.replicator.set_history(history.clone());
        self.replicator.set_available(true);
    }

    fn admit(&self) {
        self.replicator.admit();
    }
}
