//! hotblock-secondary: the secondary backup-and-recovery controller.
//!
//! A secondary holds blocks only. It applies the primary's deltas a whole
//! transaction at a time through its own location table
//! (`hotblock_core::Engine::apply`), persists them when given a data
//! directory, relays them to its own secondaries, and on promotion rebuilds its
//! indexes from the blocks and hands its engine to the primary controller.
//!
//! Until the replication issue lands, the engine-level half of this already
//! works: `hotblock_core::Engine` with `IndexMode::Deferred` is a passive
//! secondary's storage, and `Engine::rebuild_indexes` is its promotion step.
#![forbid(unsafe_code)]
