//! hotblock-core: the storage engine of hotblock.
//!
//! **What it is.** Records — one unique key, one optional value per declared
//! non-unique key, and a payload — stored one after another in fixed-size
//! RAM blocks. Blocks are named by id and found through a location table, so
//! they can move in memory without anything else noticing. A unique index and
//! one index per non-unique key answer lookups; they are derived state,
//! rebuilt from the blocks alone when needed. Every committed transaction
//! yields a *delta* — the physical redo of its block changes — that another
//! engine applies to hold byte-identical blocks. That is what replication
//! streams. The replication *protocol* lives here too, as pure state
//! machines with no I/O ([`repl`]: frames, the primary's and the
//! secondary's roles), driven by `hotblock-primary` and
//! `hotblock-secondary` over real links and by the simulator in tests.
//!
//! **What it is not.** No sockets, no threads of its own, no durability to
//! disk (that is `hotblock-persist`). Its only file I/O maps its memory:
//! with [`ArenaBacking::Dir`] the blocks live in files on a tmpfs, with a
//! small catalog beside them, so that they outlive the process (not the
//! machine) and a restart can reattach to them.
//!
//! **Limits** are in [`constants`]: block sizes 4 KiB..=1 MiB (default 64 KiB),
//! keys up to 2 KiB, non-unique values up to 1 KiB, 16 non-unique keys per
//! database, and a record must fit in one block.
//!
//! **Isolation.** One write transaction per database at a time, holding the
//! database's writer lock from `begin` to commit or abort: writers are
//! serializable. A transaction's writes touch no block until commit, which
//! applies them under the database's exclusive lock; readers take that lock
//! shared, so every query sees a committed state, a transaction whole or not
//! at all (read committed per query). [`Database::read`] holds one state for
//! several queries (a snapshot), delaying commits to that database meanwhile.
//!
//! ```
//! use hotblock_core::{DatabaseOptions, Engine, EngineConfig};
//!
//! let engine = Engine::new(EngineConfig::default());
//! engine.create_database("users", DatabaseOptions::with_indexes(["city"])).unwrap();
//! let mut txn = engine.begin("users").unwrap();
//! txn.put(b"ada", &[Some(b"london")], b"{\"born\":1815}").unwrap();
//! let committed = txn.commit().unwrap().unwrap();
//! assert_eq!(committed.lsn.0, 2); // creating the database was LSN 1
//!
//! let users = engine.database("users").unwrap();
//! assert_eq!(users.find("city", b"london", None).unwrap(), vec![b"ada".to_vec()]);
//! ```

mod apply;
mod arena;
mod block;
mod catalog_file;
mod compact;
pub mod constants;
mod database;
mod delta;
mod digest;
mod engine;
mod error;
mod ids;
mod index;
mod location;
mod record;
pub mod repl;
mod snapshot;
mod txn;
mod write_set;

pub use arena::{ArenaBacking, MemoryAdvice};
pub use block::{BlockHeader, BLOCK_FORMAT_VERSION};
pub use database::{
    key_order, now_ms, Database, DbStats, ReadView, ScanStep, Schema, SCAN_STEPS_MAX,
};
pub use delta::{Delta, DeltaOp, DELTA_FORMAT_VERSION};
pub use digest::DbDigest;
pub use engine::{CommitHook, DatabaseOptions, Engine, EngineConfig, HookPurpose, IndexMode, Role};
pub use error::{ApplyError, DeltaDecodeError, Error, RecordDecodeError};
pub use ids::{BlockId, DbId, Lsn, RecordId};
pub use record::{EncodedRecord, Record, RecordRef, RECORD_FORMAT_VERSION};
pub use txn::{Committed, Txn, Written};
