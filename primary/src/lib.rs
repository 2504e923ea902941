//! hotblock-primary: hotblock embedded in your process.
//!
//! [`Db`] is the entry point for an application that keeps its records in
//! its own memory: named databases of records with one unique key and
//! several non-unique keys, transactions, and queries by either kind of key.
//! Every commit returns the transaction's LSN and its delta (the block
//! changes). With [`Db::with_replication`], the primary controller
//! ([`Replicator`]) streams every delta to secondaries: the engine's commit
//! hook hands it over through the commit pipe (bounded at `Db::begin`, see
//! [`limits`]), and a sync commit returns once the quorum applied it. With
//! [`Db::with_persistence`], commits also wait for the local log.
//!
//! **What it is not.** No client protocol (that is `hotblock-node`), no
//! secondary side (that is `hotblock-secondary`; the two crates do not
//! know each other), no storage format of its own.
//!
//! ```
//! use hotblock_primary::{DatabaseOptions, Db};
//!
//! let db = Db::in_memory();
//! db.create_database("users", DatabaseOptions::with_indexes(["city", "team"])).unwrap();
//! db.put("users", b"ada", &[Some(b"london"), Some(b"engines")], b"{}").unwrap();
//! assert_eq!(db.find("users", "city", b"london", None).unwrap(), vec![b"ada".to_vec()]);
//! ```
//!
//! Limits, guarantees and the isolation level are those of
//! [`hotblock_core`]; see its crate documentation.
#![forbid(unsafe_code)]

mod error;
mod lease;
pub mod limits;
mod pipe;
mod replication;

use std::sync::Arc;

use hotblock_persist::Persister;

pub use error::{Error, StartError, WriteError};
pub use lease::WriteLease;
pub use replication::{AckProgress, ReplicationConfig, Replicator};

use hotblock_core::Error as EngineError;
pub use hotblock_core::{
    ArenaBacking, Committed, Database, DatabaseOptions, DbStats, Engine, EngineConfig, Lsn,
    MemoryAdvice, Record,
};
use hotblock_core::{Txn, Written};

/// How to open a [`Db`].
#[derive(Clone, Debug)]
pub struct DbConfig {
    pub engine: EngineConfig,
    /// Compact a database after a commit leaves it with many tombstoned bytes.
    pub auto_compact: bool,
}

impl Default for DbConfig {
    fn default() -> Self {
        DbConfig {
            engine: EngineConfig::default(),
            auto_compact: true,
        }
    }
}

use limits::AUTO_COMPACT_BLOCKS_MAX;

/// An embedded hotblock database engine.
#[derive(Clone, Debug)]
pub struct Db {
    engine: Engine,
    config: Arc<DbConfig>,
    replicator: Option<Arc<Replicator>>,
    persister: Option<Persister>,
    /// With a coordinator: writes only while it lasts (see [`WriteLease`]).
    lease: Option<Arc<WriteLease>>,
}

impl Db {
    pub fn open(config: DbConfig) -> Db {
        Db::from_engine(Engine::new(config.engine.clone()), config)
    }

    /// A Db over an existing engine: one reattached from tmpfs, or a
    /// promoted secondary's.
    pub fn from_engine(engine: Engine, config: DbConfig) -> Db {
        Db {
            engine,
            config: Arc::new(config),
            replicator: None,
            persister: None,
            lease: None,
        }
    }

    /// Accepts and acknowledges writes only while `lease` lasts: a write
    /// begun after it ran out is refused (`WriteError::NoLease`), and one
    /// that completes after it ran out is not acknowledged
    /// (`WriteError::OutcomeUnknown`): a newer primary may not hold it.
    pub fn with_lease(mut self, lease: Arc<WriteLease>) -> Db {
        self.lease = Some(lease);
        self
    }

    pub fn lease(&self) -> Option<&WriteLease> {
        self.lease.as_deref()
    }

    /// A commit at `lsn` may be acknowledged only if the lease still runs
    /// now, after every wait: the gate is checked last.
    fn check_lease_at_ack(&self, lsn: Lsn) -> Result<(), WriteError> {
        match self.lease_lapsed() {
            true => Err(WriteError::OutcomeUnknown { lsn }),
            false => Ok(()),
        }
    }

    /// This Db has a write lease, and it has run out.
    fn lease_lapsed(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| !l.is_valid())
    }

    /// Makes every commit wait for the local log as its fsync policy says
    /// (`Persister::wait_durable`) before it returns, and refuses writes
    /// once the log cannot be written. The persister must already be
    /// attached to this Db's engine.
    pub fn with_persistence(mut self, persister: Persister) -> Db {
        self.persister = Some(persister);
        self
    }

    pub fn persister(&self) -> Option<&Persister> {
        self.persister.as_ref()
    }

    /// Waits until the commit at `lsn` is as durable as configured: in the
    /// local log (per its fsync policy), then on the sync quorum. The async
    /// counterpart of what `Transaction::commit` does after committing.
    pub async fn wait_committed(&self, lsn: Lsn) -> Result<(), WriteError> {
        if let Some(p) = &self.persister {
            if p.needs_wait(lsn) {
                let p = p.clone();
                match tokio::task::spawn_blocking(move || p.wait_durable(lsn)).await {
                    Ok(durable) => durable?,
                    // The blocking pool is shutting down (or the wait
                    // panicked): the commit is not known to be on disk.
                    Err(_) => return Err(WriteError::OutcomeUnknown { lsn }),
                }
            } else {
                // The append may have failed even where nothing waits for
                // an fsync: never OK a transaction the log lacks.
                p.check_healthy()?;
            }
        }
        if let Some(replicator) = &self.replicator {
            replicator.wait_sync_async(lsn).await?;
        }
        self.check_lease_at_ack(lsn)
    }

    /// Starts serving secondaries. From now on every commit is streamed to
    /// them, and with a sync quorum a commit returns only once the quorum
    /// has applied it (or fails with `WriteError::OutcomeUnknown`).
    pub fn with_replication(mut self, config: ReplicationConfig) -> Result<Db, StartError> {
        let replicator = Replicator::start(self.engine.clone(), config)?;
        if let Some(p) = &self.persister {
            // A fencing outlives a restart (see `Replicator::fence`).
            replicator.keep_fencing_in(p.clone());
        }
        self.replicator = Some(Arc::new(replicator));
        Ok(self)
    }

    pub fn replicator(&self) -> Option<&Replicator> {
        self.replicator.as_deref()
    }

    /// A Db in anonymous memory with no memory limit.
    pub fn in_memory() -> Db {
        Db::open(DbConfig::default())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn lsn(&self) -> Lsn {
        self.engine.lsn()
    }

    /// Creates a database, in a transaction of its own (refused when a
    /// write would be: fenced, too few secondaries, a failed log).
    pub fn create_database(&self, name: &str, options: DatabaseOptions) -> Result<Lsn, WriteError> {
        self.check_writable()?;
        Ok(self.engine.create_database(name, options)?.lsn)
    }

    fn check_writable(&self) -> Result<(), WriteError> {
        if self.lease_lapsed() {
            return Err(WriteError::NoLease);
        }
        if let Some(replicator) = &self.replicator {
            replicator.check_writable()?;
        }
        if let Some(p) = &self.persister {
            p.check_healthy()?;
        }
        Ok(())
    }

    /// A handle to one database, for repeated queries without a name lookup.
    pub fn database(&self, name: &str) -> Result<Arc<Database>, EngineError> {
        self.engine.database(name)
    }

    /// Begins a write transaction on `db`. Waits while another transaction
    /// on the same database is open.
    pub fn begin(&self, db: &str) -> Result<Transaction<'_>, WriteError> {
        if let Some(replicator) = &self.replicator {
            // Backpressure from the commit pipe, before any lock is taken
            // (and before the checks, which a wait could make stale).
            replicator.admit();
        }
        self.begin_admitted(db)
    }

    /// `begin` for async callers (the client port): the wait for room in
    /// the commit pipe is on the task, not the thread.
    pub async fn begin_async(&self, db: &str) -> Result<Transaction<'_>, WriteError> {
        if let Some(replicator) = &self.replicator {
            replicator.admit_async().await;
        }
        self.begin_admitted(db)
    }

    fn begin_admitted(&self, db: &str) -> Result<Transaction<'_>, WriteError> {
        self.begin_across_admitted(&[db])
    }

    /// Begins one write transaction on several databases, committed as one
    /// (one LSN, all or nothing on every node): `MULTI` across `SELECT`.
    /// Waits while other transactions hold any of them.
    pub async fn begin_across_async(&self, dbs: &[&str]) -> Result<Transaction<'_>, WriteError> {
        if let Some(replicator) = &self.replicator {
            replicator.admit_async().await;
        }
        self.begin_across_admitted(dbs)
    }

    fn begin_across_admitted(&self, dbs: &[&str]) -> Result<Transaction<'_>, WriteError> {
        self.check_writable()?;
        Ok(Transaction {
            owner: self,
            txn: self.engine.begin_across(dbs)?,
        })
    }

    /// Inserts or replaces one record in a transaction of its own.
    pub fn put(
        &self,
        db: &str,
        key: &[u8],
        values: &[Option<&[u8]>],
        payload: &[u8],
    ) -> Result<Lsn, WriteError> {
        let mut txn = self.begin(db)?;
        txn.put(key, values, payload)?;
        Ok(txn.commit()?.expect("a put writes").lsn)
    }

    /// Deletes one record in a transaction of its own. Returns whether it existed.
    pub fn delete(&self, db: &str, key: &[u8]) -> Result<bool, WriteError> {
        let mut txn = self.begin(db)?;
        let existed = txn.delete(key)?;
        txn.commit()?;
        Ok(existed)
    }

    pub fn get(&self, db: &str, key: &[u8]) -> Result<Option<Record>, EngineError> {
        self.engine.database(db)?.get(key)
    }

    /// Unique keys of the records whose non-unique key `index` is `value`.
    pub fn find(
        &self,
        db: &str,
        index: &str,
        value: &[u8],
        limit: Option<usize>,
    ) -> Result<Vec<Vec<u8>>, EngineError> {
        self.engine.database(db)?.find(index, value, limit)
    }

    pub fn count(&self, db: &str) -> Result<u64, EngineError> {
        Ok(self.engine.database(db)?.count())
    }

    pub fn stats(&self, db: &str) -> Result<DbStats, EngineError> {
        self.engine.stats(db)
    }

    /// Housekeeping after a commit. The commit stands whatever happens
    /// here, so a failure is logged, not returned.
    fn after_commit(&self, db: &Database) {
        if self.config.auto_compact && db.needs_compaction() {
            if let Err(e) = self.engine.compact(db.name(), AUTO_COMPACT_BLOCKS_MAX) {
                tracing::warn!(db = db.name(), error = %e, "compaction after a commit failed");
            }
        }
    }
}

/// A write transaction of a [`Db`]. Derefs to [`hotblock_core::Txn`] for
/// `put`, `insert`, `delete`, `get`, `find` and `count`. Dropping it aborts.
#[derive(Debug)]
pub struct Transaction<'a> {
    owner: &'a Db,
    txn: Txn,
}

impl Transaction<'_> {
    /// Commits; returns the LSN and delta, or `None` if nothing was written.
    /// With replication and a sync quorum, returns once the quorum applied
    /// the transaction, or fails with `WriteError::OutcomeUnknown`.
    pub fn commit(self) -> Result<Option<Committed>, WriteError> {
        let owner = self.owner;
        let committed = self.commit_local()?;
        if let Some(c) = &committed {
            if let Some(p) = &owner.persister {
                p.wait_durable(c.lsn)?;
            }
            if let Some(replicator) = &owner.replicator {
                replicator.wait_sync(c.lsn)?;
            }
            owner.check_lease_at_ack(c.lsn)?;
        }
        Ok(committed)
    }

    /// Commits in memory and returns at once, without waiting for the disk
    /// or the sync quorum: nobody may be told the transaction is committed
    /// until `Db::wait_committed(lsn)` returns.
    pub fn commit_local(self) -> Result<Option<Committed>, WriteError> {
        self.commit_local_observed(|_| {})
    }

    /// `commit_local`, calling `observe` with each database's writes while
    /// the commit is made visible (see `Txn::commit_observed`).
    pub fn commit_local_observed(
        self,
        observe: impl FnMut(Written<'_>),
    ) -> Result<Option<Committed>, WriteError> {
        // The lease again, just before the transaction is applied: `begin`
        // checked it, but may then have waited for the database's writer,
        // and a transaction can stay open long. A primary whose lease ran
        // out meanwhile must not apply it (its readers would see a write
        // the next primary never has).
        if self.owner.lease_lapsed() {
            return Err(WriteError::NoLease);
        }
        let dbs: Vec<Arc<Database>> = self.txn.databases().cloned().collect();
        let committed = self.txn.commit_observed(observe)?;
        if committed.is_some() {
            for db in &dbs {
                self.owner.after_commit(db);
            }
        }
        Ok(committed)
    }

    pub fn abort(self) {}
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Txn;
    fn deref(&self) -> &Txn {
        &self.txn
    }
}

impl std::ops::DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut Txn {
        &mut self.txn
    }
}
