//! The engine: a set of named databases, the node's LSN, and the two ways
//! blocks change — local transactions (a primary) or applied deltas (a
//! follower).
//!
//! Commits and applies are serialised by one commit lock, which assigns LSNs
//! in the order deltas are produced, so a node's deltas form one sequence
//! across all its databases. Building a transaction's write set happens
//! outside that lock; only the short apply to blocks runs under it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::apply;
use crate::arena::{Arena, ArenaBacking, ControlPage, MemoryAdvice, MemoryBudget, SlotId};
use crate::block::BlockHeader;
use crate::catalog_file;
use crate::constants::{
    BLOCK_SIZE_DEFAULT, BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, DATABASES_MAX, INDEXES_PER_DB_MAX,
    NAME_LEN_MAX,
};
use crate::database::{Database, DbState, DbStats, Schema};
use crate::delta::{Delta, DeltaOp};
use crate::error::{ApplyError, Error};
use crate::ids::{DbId, Lsn};
use crate::index::Indexes;
use crate::txn::{Committed, Txn};

/// Whether an engine runs its own transactions or follows a primary's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// Runs transactions; emits deltas.
    #[default]
    Primary,
    /// Applies a primary's deltas; refuses local transactions.
    Follower(IndexMode),
}

/// What a follower keeps besides blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexMode {
    /// Indexes kept current on every apply: a hot secondary serving reads.
    Maintained,
    /// Blocks only: a passive secondary. Indexes are built on promotion.
    Deferred,
}

#[derive(Clone, Debug, Default)]
pub struct EngineConfig {
    /// Most bytes all arenas together may map. `None`: no limit.
    pub memory_limit_bytes: Option<u64>,
    pub backing: ArenaBacking,
    pub advice: MemoryAdvice,
    pub role: Role,
}

impl EngineConfig {
    /// An engine that follows a primary, keeping indexes (`Maintained`) or
    /// blocks only (`Deferred`).
    pub fn follower(indexes: IndexMode) -> Self {
        EngineConfig {
            role: Role::Follower(indexes),
            ..Self::default()
        }
    }
}

/// How a database is declared.
#[derive(Clone, Debug)]
pub struct DatabaseOptions {
    pub block_size: usize,
    /// Names of the non-unique keys.
    pub indexes: Vec<String>,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        DatabaseOptions {
            block_size: BLOCK_SIZE_DEFAULT,
            indexes: Vec::new(),
        }
    }
}

impl DatabaseOptions {
    pub fn with_indexes<S: Into<String>>(indexes: impl IntoIterator<Item = S>) -> Self {
        DatabaseOptions {
            indexes: indexes.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    pub fn block_size(mut self, bytes: usize) -> Self {
        self.block_size = bytes;
        self
    }
}

/// A handle to an engine; clones share it.
#[derive(Clone, Debug)]
pub struct Engine {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    budget: Arc<MemoryBudget>,
    pub(crate) catalog: RwLock<Catalog>,
    /// Held while a commit or apply changes blocks.
    pub(crate) commit: Mutex<CommitState>,
    /// The last committed LSN, readable without the commit lock.
    pub(crate) lsn: AtomicU64,
    role: RwLock<Role>,
    hook: HookSlot,
}

/// One commit hook per purpose, run in this order: a delta reaches the
/// local log before it reaches secondaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPurpose {
    /// Appending deltas to the local log (`--data-dir`).
    Persistence = 0,
    /// Streaming deltas to secondaries.
    Replication = 1,
}

#[derive(Default)]
struct HookSlot(RwLock<[Option<CommitHook>; 2]>);

impl std::fmt::Debug for HookSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hooks = self.0.read();
        write!(
            f,
            "HookSlot(persistence: {}, replication: {})",
            hooks[0].is_some(),
            hooks[1].is_some()
        )
    }
}

/// Called with each delta in LSN order; see [`Engine::set_commit_hook`].
pub type CommitHook = Arc<dyn Fn(&Delta) + Send + Sync>;

#[derive(Debug)]
pub(crate) struct CommitState {
    pub(crate) last: Lsn,
    /// With `ArenaBacking::Dir`: marks the commit in progress.
    pub(crate) control: Option<ControlPage>,
    /// A snapshot is loading: the control page stays marked torn until it
    /// finishes, whatever deltas apply meanwhile.
    pub(crate) snapshotting: bool,
}

impl CommitState {
    fn begin(&mut self, lsn: Lsn) {
        if self.snapshotting {
            return;
        }
        if let Some(c) = &mut self.control {
            c.begin(lsn.0);
        }
    }

    /// A commit that changed nothing is not in progress any more.
    fn cancel(&mut self) {
        let last = self.last.0;
        if self.snapshotting {
            return;
        }
        if let Some(c) = &mut self.control {
            c.begin(last);
        }
    }
}

impl Catalog {
    pub(crate) fn get(&self, id: DbId) -> Option<Arc<Database>> {
        let i = self.by_id.binary_search_by_key(&id, |d| d.id()).ok()?;
        Some(self.by_id[i].clone())
    }

    /// The id after the highest in use.
    pub(crate) fn next_id(&self) -> DbId {
        self.by_id.last().map_or(DbId(0), |d| DbId(d.id().0 + 1))
    }
}

#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub(crate) by_name: HashMap<String, Arc<Database>>,
    /// In increasing id order. Ids are dense on a primary; a secondary that
    /// subscribes to some databases only holds a sparse subset.
    pub(crate) by_id: Vec<Arc<Database>>,
}

impl Engine {
    /// An empty engine. With `ArenaBacking::Dir`, files an earlier process
    /// left in the directory are overwritten as databases are created; use
    /// [`Engine::open`] to reattach to them instead.
    pub fn new(config: EngineConfig) -> Self {
        let budget = MemoryBudget::new(config.memory_limit_bytes);
        let role = config.role;
        Engine {
            shared: Arc::new(Shared {
                config,
                budget,
                catalog: RwLock::default(),
                commit: Mutex::new(CommitState {
                    last: Lsn::ZERO,
                    control: None,
                    snapshotting: false,
                }),
                lsn: AtomicU64::new(0),
                role: RwLock::new(role),
                hook: HookSlot::default(),
            }),
        }
    }

    /// An engine over `config.backing`. With `ArenaBacking::Dir` and a
    /// catalog in that directory, reattaches to the blocks an earlier
    /// process left there (on tmpfs they survive the process): maps them
    /// again, rebuilds indexes from them and continues from the last LSN.
    /// Refuses (`Error::TornCommit`) if that process died while applying a
    /// commit. Otherwise, an empty engine as [`Engine::new`].
    pub fn open(config: EngineConfig) -> Result<Self, Error> {
        let ArenaBacking::Dir(dir) = &config.backing else {
            return Ok(Engine::new(config));
        };
        let Some(schemas) = catalog_file::read(dir)? else {
            return Ok(Engine::new(config));
        };
        let control = ControlPage::open(dir)?;
        let (committing, committed) = control.read();
        if committing != committed {
            return Err(Error::TornCommit { lsn: committing });
        }
        let engine = Engine::new(config.clone());
        {
            let mut commit = engine.shared.commit.lock();
            commit.last = Lsn(committed);
            commit.control = Some(control);
            engine.shared.lsn.store(committed, Ordering::Release);
            let mut catalog = engine.shared.catalog.write();
            for schema in schemas {
                let db = engine.reattach_database(dir, schema)?;
                catalog.by_name.insert(db.name().to_string(), db.clone());
                catalog.by_id.push(db);
            }
        }
        Ok(engine)
    }

    fn reattach_database(
        &self,
        dir: &std::path::Path,
        schema: Schema,
    ) -> Result<Arc<Database>, Error> {
        let arena = Arena::reattach(
            schema.block_size,
            dir,
            &arena_file(schema.id),
            self.shared.budget.clone(),
            self.shared.config.advice,
        )?;
        let db = self.wrap_database(schema, arena);
        {
            let mut state = db.state.write();
            for slot in (0..state.arena.slot_count() as u32).map(SlotId) {
                let Ok(header) = BlockHeader::read_checked(state.arena.block(slot)) else {
                    continue;
                };
                if header.db != db.id() {
                    continue;
                }
                if state.table.contains(header.block) {
                    return Err(state.corrupt(header.block, "two slots hold the block"));
                }
                state.table.insert(header.block, slot);
                state.arena.claim(slot);
            }
            state.tail = state.table.iter().last().map(|(b, _)| b);
            match state.indexes {
                Some(_) => state.rebuild(db.schema.indexes.len())?,
                None => state.recount()?,
            }
        }
        Ok(db)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Runs `f` while no commit or apply is in progress, with the LSN of the
    /// last one: blocks read inside `f` hold exactly the transactions up to
    /// that LSN (snapshots read blocks this way). Keep `f` short: commits
    /// wait meanwhile.
    pub fn at_consistent_point<R>(&self, f: impl FnOnce(Lsn) -> R) -> R {
        let commit = self.shared.commit.lock();
        f(commit.last)
    }

    /// The LSN of the last committed (or applied) transaction.
    pub fn lsn(&self) -> Lsn {
        Lsn(self.shared.lsn.load(Ordering::Acquire))
    }

    pub fn role(&self) -> Role {
        *self.shared.role.read()
    }

    /// Bytes of block memory mapped by all databases.
    pub fn memory_used_bytes(&self) -> u64 {
        self.shared.budget.used_bytes()
    }

    pub fn database(&self, name: &str) -> Result<Arc<Database>, Error> {
        self.shared
            .catalog
            .read()
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownDatabase(name.to_string()))
    }

    pub fn database_by_id(&self, id: DbId) -> Option<Arc<Database>> {
        self.shared.catalog.read().get(id)
    }

    /// Every database, in id order.
    pub fn databases(&self) -> Vec<Arc<Database>> {
        self.shared.catalog.read().by_id.clone()
    }

    /// Creates a database. Its creation is a transaction of its own, with an
    /// LSN and a delta, so followers create it too.
    pub fn create_database(
        &self,
        name: &str,
        options: DatabaseOptions,
    ) -> Result<Committed, Error> {
        self.require_primary()?;
        validate_name(name)?;
        if !options.block_size.is_power_of_two()
            || !(BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&options.block_size)
        {
            return Err(Error::InvalidBlockSize(options.block_size));
        }
        if options.indexes.len() > INDEXES_PER_DB_MAX {
            return Err(Error::TooMany {
                what: "non-unique keys per database",
                max: INDEXES_PER_DB_MAX,
            });
        }
        for (i, index) in options.indexes.iter().enumerate() {
            validate_name(index)?;
            if options.indexes[..i].contains(index) {
                return Err(Error::InvalidName {
                    name: index.clone(),
                    why: "index named twice",
                });
            }
        }
        let mut commit = self.shared.commit.lock();
        let mut catalog = self.shared.catalog.write();
        if catalog.by_name.contains_key(name) {
            return Err(Error::DatabaseExists(name.to_string()));
        }
        if catalog.by_id.len() >= DATABASES_MAX {
            return Err(Error::TooMany {
                what: "databases",
                max: DATABASES_MAX,
            });
        }
        let schema = Schema {
            id: catalog.next_id(),
            name: name.to_string(),
            block_size: options.block_size,
            indexes: options.indexes,
        };
        let db = self.open_database(schema.clone())?;
        let lsn = commit.last.next();
        if let ArenaBacking::Dir(dir) = &self.shared.config.backing {
            if commit.control.is_none() {
                commit.control = Some(ControlPage::open(dir)?);
            }
            let mut schemas: Vec<Schema> = catalog.by_id.iter().map(|d| d.schema.clone()).collect();
            schemas.push(schema.clone());
            commit.begin(lsn);
            catalog_file::write(dir, &schemas).inspect_err(|_| commit.cancel())?;
        }
        catalog.by_name.insert(schema.name.clone(), db.clone());
        catalog.by_id.push(db);
        // Published before the database can be found: whoever sees it
        // sees its LSN.
        self.publish(&mut commit, lsn);
        drop(catalog);
        let delta = Delta::from_ops(vec![
            DeltaOp::TxnBegin { db: schema.id },
            DeltaOp::DbCreate {
                db: schema.id,
                name: schema.name,
                block_size: schema.block_size as u32,
                indexes: schema.indexes,
            },
            DeltaOp::TxnCommit { lsn },
        ]);
        self.run_hook(&delta);
        Ok(Committed { lsn, delta })
    }

    pub(crate) fn open_database(&self, schema: Schema) -> Result<Arc<Database>, Error> {
        let arena = Arena::new(
            schema.block_size,
            &self.shared.config.backing,
            &arena_file(schema.id),
            self.shared.budget.clone(),
            self.shared.config.advice,
        )?;
        Ok(self.wrap_database(schema, arena))
    }

    fn wrap_database(&self, schema: Schema, arena: Arena) -> Arc<Database> {
        let indexes = match self.role() {
            Role::Follower(IndexMode::Deferred) => None,
            _ => Some(Indexes::new(schema.indexes.len())),
        };
        let state = DbState {
            db: schema.id,
            arena,
            table: Default::default(),
            indexes,
            tail: None,
            records: 0,
            used_bytes: 0,
            dead_bytes: 0,
            poisoned: false,
            stale: None,
        };
        Arc::new(Database {
            schema,
            writer: Arc::new(Mutex::new(())),
            state: RwLock::new(state),
        })
    }

    fn require_primary(&self) -> Result<(), Error> {
        match self.role() {
            Role::Primary => Ok(()),
            Role::Follower(_) => Err(Error::ReadOnly),
        }
    }

    /// Begins a write transaction on `db`, waiting while another is open on it.
    pub fn begin(&self, db: &str) -> Result<Txn, Error> {
        self.require_primary()?;
        Ok(Txn::new(self.clone(), vec![self.database(db)?]))
    }

    /// Begins one write transaction on every database of `dbs` (at least
    /// one), which commits as one: one LSN, one delta, all or nothing. It
    /// takes their writer locks in ascending id order, waiting while other
    /// transactions hold them; the first of `dbs` is selected
    /// (`Txn::select`).
    pub fn begin_across(&self, dbs: &[&str]) -> Result<Txn, Error> {
        self.require_primary()?;
        let Some(first) = dbs.first() else {
            return Err(Error::UnknownDatabase(String::new()));
        };
        let mut databases = vec![self.database(first)?];
        for name in &dbs[1..] {
            databases.push(self.database(name)?);
        }
        Ok(Txn::new(self.clone(), databases))
    }

    /// Runs `change` on the database's state under the commit lock and the
    /// state's write lock, with the LSN it will commit as. The LSN is used
    /// only if `change` succeeds.
    pub(crate) fn commit_with(
        &self,
        db: &Database,
        change: impl FnOnce(&mut DbState, Lsn) -> Result<Delta, Error>,
    ) -> Result<Committed, Error> {
        self.commit_across(&[db], |states, lsn| change(states[0], lsn))
    }

    /// `commit_with` for a transaction across `dbs`, which are in ascending
    /// id order: their state locks are taken in that order, as a follower's
    /// apply and a reader of several databases take them.
    pub(crate) fn commit_across(
        &self,
        dbs: &[&Database],
        change: impl FnOnce(&mut [&mut DbState], Lsn) -> Result<Delta, Error>,
    ) -> Result<Committed, Error> {
        debug_assert!(dbs.windows(2).all(|w| w[0].id() < w[1].id()));
        self.require_primary()?;
        let mut commit = self.shared.commit.lock();
        let mut guards: Vec<_> = dbs.iter().map(|db| db.state.write()).collect();
        if let Some(poisoned) = guards.iter().find(|s| s.poisoned) {
            return Err(Error::Poisoned(poisoned.db));
        }
        let mut states: Vec<&mut DbState> = guards.iter_mut().map(|g| &mut **g).collect();
        let lsn = commit.last.next();
        commit.begin(lsn);
        match change(&mut states, lsn) {
            Ok(delta) => {
                // The LSN is published before readers may see the change:
                // one that sees it also sees its LSN.
                self.publish(&mut commit, lsn);
                drop(states);
                drop(guards);
                self.run_hook(&delta);
                Ok(Committed { lsn, delta })
            }
            Err(e) => {
                // A poisoned database may hold part of the change: leave the
                // control page saying so. Otherwise nothing changed.
                if !states.iter().any(|s| s.poisoned) {
                    commit.cancel();
                }
                Err(e)
            }
        }
    }

    fn publish(&self, commit: &mut CommitState, lsn: Lsn) {
        debug_assert_eq!(lsn, commit.last.next());
        commit.last = lsn;
        if let Some(c) = commit.control.as_mut().filter(|_| !commit.snapshotting) {
            c.end(lsn.0);
        }
        self.shared.lsn.store(lsn.0, Ordering::Release);
    }

    /// Applies a primary's delta. It must carry the LSN after this engine's.
    /// A delta that fails its checks changes nothing.
    pub fn apply(&self, delta: &Delta) -> Result<Lsn, ApplyError> {
        let lsn = delta.lsn();
        let mut commit = self.lock_next(lsn)?;
        if let [_, DeltaOp::DbCreate {
            db,
            name,
            block_size,
            indexes,
        }, _] = delta.ops()
        {
            let mut catalog = self.shared.catalog.write();
            // Ids rise; a subscribing secondary may skip some.
            if *db < catalog.next_id() || catalog.by_name.contains_key(name) {
                return Err(ApplyError::DatabaseExists(*db));
            }
            if catalog.by_id.len() >= DATABASES_MAX {
                return Err(ApplyError::Engine(Error::TooMany {
                    what: "databases",
                    max: DATABASES_MAX,
                }));
            }
            let block_size = *block_size as usize;
            if !block_size.is_power_of_two()
                || !(BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&block_size)
            {
                return Err(ApplyError::Engine(Error::InvalidBlockSize(block_size)));
            }
            let schema = Schema {
                id: *db,
                name: name.clone(),
                block_size,
                indexes: indexes.clone(),
            };
            let database = self.open_database(schema.clone())?;
            if let ArenaBacking::Dir(dir) = &self.shared.config.backing {
                if commit.control.is_none() {
                    commit.control = Some(ControlPage::open(dir)?);
                }
                let mut schemas: Vec<Schema> =
                    catalog.by_id.iter().map(|d| d.schema.clone()).collect();
                schemas.push(schema);
                commit.begin(lsn);
                catalog_file::write(dir, &schemas).inspect_err(|_| commit.cancel())?;
            }
            catalog.by_name.insert(name.clone(), database.clone());
            catalog.by_id.push(database);
            self.publish(&mut commit, lsn);
        } else {
            // One section per database, in ascending id: the order every
            // writer and multi-database reader takes state locks in.
            let databases = delta
                .sections()
                .map(|(id, ops)| {
                    let database = self
                        .database_by_id(id)
                        .ok_or(ApplyError::UnknownDatabase(id))?;
                    Ok((database, ops))
                })
                .collect::<Result<Vec<_>, ApplyError>>()?;
            if databases.is_empty() && self.database_by_id(delta.db()).is_none() {
                return Err(ApplyError::UnknownDatabase(delta.db()));
            }
            let mut states: Vec<_> = databases.iter().map(|(d, _)| d.state.write()).collect();
            for (state, (database, ops)) in states.iter_mut().zip(&databases) {
                if state.poisoned {
                    return Err(ApplyError::Engine(Error::Poisoned(database.id())));
                }
                apply::check(state, ops)?;
            }
            commit.begin(lsn);
            for (i, (_, ops)) in databases.iter().enumerate() {
                if let Err(e) = apply::apply(&mut states[i], ops) {
                    // The sections before hold part of a transaction that
                    // never completed: every database it touched is suspect.
                    for state in states.iter_mut() {
                        state.poisoned = true;
                    }
                    return Err(e.into());
                }
            }
            // Before readers may see the change, as a commit does.
            self.publish(&mut commit, lsn);
            drop(states);
            self.run_hook(delta);
            return Ok(lsn);
        }
        self.run_hook(delta);
        Ok(lsn)
    }

    /// The commit lock of a follower about to take the delta at `lsn`, which
    /// must follow the last one.
    fn lock_next(&self, lsn: Lsn) -> Result<parking_lot::MutexGuard<'_, CommitState>, ApplyError> {
        if self.role() == Role::Primary {
            return Err(ApplyError::Engine(Error::ReadOnly));
        }
        let commit = self.shared.commit.lock();
        if lsn != commit.last.next() {
            return Err(ApplyError::LsnGap {
                applied: commit.last,
                got: lsn,
            });
        }
        Ok(commit)
    }

    /// Takes an empty transaction (`TxnBegin`, `TxnCommit`) as applied: a
    /// secondary that subscribes to some databases receives the others'
    /// transactions this way, so that its LSNs follow the primary's.
    pub fn skip(&self, delta: &Delta) -> Result<Lsn, ApplyError> {
        if self.role() == Role::Primary {
            return Err(ApplyError::Engine(Error::ReadOnly));
        }
        if delta.ops().len() != 2 {
            return Err(ApplyError::WrongDatabase(delta.db()));
        }
        let lsn = delta.lsn();
        let mut commit = self.lock_next(lsn)?;
        commit.begin(lsn);
        self.publish(&mut commit, lsn);
        self.run_hook(delta);
        Ok(lsn)
    }

    /// Calls `hook` with every delta this engine commits or applies, in LSN
    /// order, while the commit lock is held (and no database lock): the
    /// place to hand deltas to replication in order. The hook must be quick
    /// and must not call back into this engine's writers.
    pub fn set_commit_hook(&self, purpose: HookPurpose, hook: Option<CommitHook>) {
        self.shared.hook.0.write()[purpose as usize] = hook;
    }

    /// Removes `hook` from its slot if it is still there: an owner that
    /// goes away must not remove the hook of whoever replaced it (a relay
    /// dropped after the promoted engine's new primary set its own).
    pub fn remove_commit_hook(&self, purpose: HookPurpose, hook: &CommitHook) {
        let mut hooks = self.shared.hook.0.write();
        let slot = &mut hooks[purpose as usize];
        if slot.as_ref().is_some_and(|h| Arc::ptr_eq(h, hook)) {
            *slot = None;
        }
    }

    fn run_hook(&self, delta: &Delta) {
        for hook in self.shared.hook.0.read().iter().flatten() {
            hook(delta);
        }
    }

    /// Turns a follower into a primary: builds any indexes it did not keep,
    /// then accepts transactions, continuing from its applied LSN.
    pub fn promote(&self) -> Result<Lsn, Error> {
        let commit = self.shared.commit.lock();
        if let Role::Follower(IndexMode::Deferred) = self.role() {
            self.rebuild_indexes()?;
        }
        *self.shared.role.write() = Role::Primary;
        Ok(commit.last)
    }

    /// Turns a primary into a follower (an old primary rejoining as a
    /// secondary). Its blocks stay; the primary it follows decides whether
    /// they can be caught up or must be resynced.
    pub fn demote(&self, mode: IndexMode) {
        let _commit = self.shared.commit.lock();
        if mode == IndexMode::Deferred {
            for db in self.databases() {
                db.state.write().indexes = None;
            }
        }
        *self.shared.role.write() = Role::Follower(mode);
    }

    /// Rebuilds every database's indexes and counts from its blocks alone.
    pub fn rebuild_indexes(&self) -> Result<(), Error> {
        for db in self.databases() {
            let mut state = db.state.write();
            state.rebuild(db.schema.indexes.len())?;
            if state.tail.is_none() {
                state.tail = state.table.iter().last().map(|(b, _)| b);
            }
        }
        Ok(())
    }

    pub fn stats(&self, db: &str) -> Result<DbStats, Error> {
        Ok(self.database(db)?.stats())
    }
}

impl Engine {
    /// Writes every block file's pages back to it (`msync`). Only matters
    /// for a `Dir` on a disk filesystem; tmpfs is memory.
    pub fn sync(&self) -> Result<(), Error> {
        for db in self.databases() {
            db.state.read().arena.flush()?;
        }
        Ok(())
    }

    /// The memory limit, if one is configured.
    pub fn memory_limit_bytes(&self) -> Option<u64> {
        self.shared.budget.limit_bytes()
    }

    /// Changes the memory limit (`None`: no limit) while the engine runs.
    pub fn set_memory_limit_bytes(&self, limit_bytes: Option<u64>) {
        self.shared.budget.set_limit_bytes(limit_bytes)
    }
}

fn arena_file(db: DbId) -> String {
    format!("db-{}.blocks", db.0)
}

fn validate_name(name: &str) -> Result<(), Error> {
    let why = if name.is_empty() || name.len() > NAME_LEN_MAX {
        "1 to 64 bytes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    {
        "letters, digits and _ . : - only"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_string(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A relay's controller dropped after the promoted engine's new primary
    /// set its own hook must not take that hook away.
    #[test]
    fn removing_a_replaced_hook_leaves_its_replacement() {
        let engine = Engine::new(EngineConfig::default());
        let seen = Arc::new(AtomicUsize::new(0));
        let old: CommitHook = Arc::new(|_: &Delta| {});
        let counter = seen.clone();
        let new: CommitHook = Arc::new(move |_: &Delta| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        engine.set_commit_hook(HookPurpose::Replication, Some(old.clone()));
        engine.set_commit_hook(HookPurpose::Replication, Some(new.clone()));
        engine.remove_commit_hook(HookPurpose::Replication, &old);
        engine
            .create_database("t", DatabaseOptions::default())
            .unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 1, "the new hook still runs");
        engine.remove_commit_hook(HookPurpose::Replication, &new);
        engine
            .create_database("u", DatabaseOptions::default())
            .unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 1, "its own removal works");
    }
}
