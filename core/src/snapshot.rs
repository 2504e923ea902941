//! Installing a snapshot on a follower: its schemas, then whole blocks, then
//! indexes rebuilt from them.
//!
//! While a snapshot loads, the follower also applies the primary's
//! (filtered) deltas, so its LSN moves on; it is consistent — and may serve
//! reads or acknowledge — only once it has applied every delta up to the
//! LSN the primary names in `SnapshotEnd`, and `finish_snapshot` has rebuilt
//! its indexes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::arena::{ArenaBacking, ControlPage};
use crate::block::BlockHeader;
use crate::catalog_file;
use crate::database::Schema;
use crate::engine::{Engine, IndexMode, Role};
use crate::error::Error;
use crate::ids::{BlockId, DbId, Lsn};

impl Engine {
    /// Drops every database of this follower and recreates `schemas`, empty
    /// and without indexes, at `lsn`: the start of a full resync.
    pub fn reset_to_snapshot(&self, schemas: &[Schema], lsn: Lsn) -> Result<(), Error> {
        self.begin_snapshot(schemas, lsn, false)
    }

    /// Like `reset_to_snapshot`, but a database whose schema is unchanged
    /// keeps its blocks, as stale copies: the snapshot then confirms those
    /// that are current (`keep_block`), replaces those that differ
    /// (`install_block`), and `finish_snapshot` drops the rest. This is the
    /// incremental resync: only differing blocks cross the network.
    pub fn begin_incremental_snapshot(&self, schemas: &[Schema], lsn: Lsn) -> Result<(), Error> {
        self.begin_snapshot(schemas, lsn, true)
    }

    fn begin_snapshot(&self, schemas: &[Schema], lsn: Lsn, keep: bool) -> Result<(), Error> {
        if self.role() == Role::Primary {
            return Err(Error::ReadOnly);
        }
        let mut commit = self.shared().commit.lock();
        let mut catalog = self.shared().catalog.write();
        let old = std::mem::take(&mut catalog.by_id);
        catalog.by_name = HashMap::new();
        for schema in schemas {
            if schema.id < catalog.next_id() || catalog.by_name.contains_key(&schema.name) {
                return Err(Error::Corrupt {
                    db: schema.id,
                    block: BlockId(0),
                    why: "snapshot schemas out of order or named twice".into(),
                });
            }
            let kept = old.iter().find(|d| keep && d.schema == *schema).cloned();
            let db = match kept {
                Some(db) => {
                    let mut state = db.state.write();
                    state.stale = Some(state.table.iter().map(|(b, _)| b).collect());
                    state.indexes = None;
                    state.poisoned = false;
                    drop(state);
                    db
                }
                None => self.open_database(schema.clone())?,
            };
            db.state.write().indexes = None;
            catalog.by_name.insert(schema.name.clone(), db.clone());
            catalog.by_id.push(db);
        }
        if let ArenaBacking::Dir(dir) = &self.shared().config.backing {
            if commit.control.is_none() {
                commit.control = Some(ControlPage::open(dir)?);
            }
            catalog_file::write(dir, schemas)?;
            // Blocks are inconsistent until the snapshot finishes: a process
            // that dies meanwhile leaves them marked as torn.
            if let Some(control) = &mut commit.control {
                control.begin(u64::MAX);
            }
            commit.snapshotting = true;
        }
        commit.last = lsn;
        self.shared().lsn.store(lsn.0, Ordering::Release);
        Ok(())
    }

    /// Installs one whole block of a snapshot (replacing any copy held).
    pub fn install_block(&self, db: DbId, block: BlockId, bytes: &[u8]) -> Result<(), Error> {
        let database = self
            .database_by_id(db)
            .ok_or_else(|| Error::UnknownDatabase(format!("{db}")))?;
        let mut state = database.state.write();
        let corrupt = |why: &str| Error::Corrupt {
            db,
            block,
            why: why.to_string(),
        };
        if bytes.len() != state.arena.block_size() {
            return Err(corrupt("snapshot block of the wrong size"));
        }
        let header = BlockHeader::read_checked(bytes).map_err(corrupt)?;
        if header.block != block || header.db != db {
            return Err(corrupt("snapshot block names another block"));
        }
        if let Some(stale) = &mut state.stale {
            stale.remove(&block);
        }
        let slot = match state.table.get(block) {
            Some(slot) => slot,
            None => {
                let slot = state.arena.alloc()?;
                state.table.insert(block, slot);
                slot
            }
        };
        state.slot_bytes_mut(slot).copy_from_slice(bytes);
        Ok(())
    }

    /// In an incremental snapshot: the stale copy of `block` is current.
    pub fn keep_block(&self, db: DbId, block: BlockId) -> Result<(), Error> {
        let database = self
            .database_by_id(db)
            .ok_or_else(|| Error::UnknownDatabase(format!("{db}")))?;
        let mut state = database.state.write();
        match state
            .stale
            .as_mut()
            .is_some_and(|stale| stale.remove(&block))
        {
            true => Ok(()),
            false => Err(Error::Corrupt {
                db,
                block,
                why: "told to keep a block this copy does not hold".into(),
            }),
        }
    }

    /// In an incremental snapshot: a stale block whose id the primary
    /// allocates anew is dropped first (the primary had no block there).
    pub fn drop_stale_block(&self, db: DbId, block: BlockId) {
        if let Some(database) = self.database_by_id(db) {
            let mut state = database.state.write();
            if state
                .stale
                .as_mut()
                .is_some_and(|stale| stale.remove(&block))
            {
                state.release_block(block);
            }
        }
    }

    /// Ends a snapshot: stale blocks no longer held by the primary dropped;
    /// counts, indexes (if this follower keeps them) and tail blocks rebuilt
    /// from the blocks.
    pub fn finish_snapshot(&self) -> Result<(), Error> {
        let keep_indexes = self.role() != Role::Follower(IndexMode::Deferred);
        for db in self.databases() {
            let mut state = db.state.write();
            for block in state.stale.take().unwrap_or_default() {
                state.release_block(block);
            }
            if keep_indexes {
                state.rebuild(db.schema.indexes.len())?;
            } else {
                state.recount()?;
            }
            state.tail = state.table.iter().last().map(|(b, _)| b);
        }
        let mut commit = self.shared().commit.lock();
        commit.snapshotting = false;
        let last = commit.last.0;
        if let Some(control) = &mut commit.control {
            control.begin(last);
            control.end(last);
        }
        Ok(())
    }
}
