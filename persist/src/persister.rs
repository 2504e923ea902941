//! [`Persister`], the handle the node holds: opening (and recovering) a
//! data directory, attaching the commit hook, waiting for durability,
//! resyncs, checkpoints on demand, the replication state and the status.
//!
//! Apart from the code it calls because it is the crate's whole public
//! surface and owns the shared state ([`Inner`]) that the append path
//! (`log_writer.rs`), checkpoints (`checkpoint.rs`) and the background
//! thread (`worker.rs`) each extend with their own methods; and the health
//! record every one of them reports failures to.

use std::fmt;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::checkpoint::Trigger;
use crate::error::PersistError;
use crate::log_writer::{LogState, SyncState};
use crate::state::{self, PersistedState};
use crate::worker::Worker;
use crate::{files, recover};
use crate::{FsyncPolicy, PersistConfig, PersistStatus};
use hotblock_core::{Delta, Engine, EngineConfig, HookPurpose, Lsn, Role};

/// Keeps an engine's state in a data directory. Clones share it; the
/// directory stays locked, and the background thread ("hotblock-persist")
/// runs, until the last clone drops. Deltas committed after that are not
/// logged.
#[derive(Clone, Debug)]
pub struct Persister {
    inner: Arc<Inner>,
    _worker: Arc<Worker>,
}

/// What the handle, the commit hook and the background thread share.
/// Lock order: see [`LogState`].
pub(crate) struct Inner {
    pub(crate) config: PersistConfig,
    _lock: File,
    pub(crate) log: Mutex<LogState>,
    pub(crate) sync: Mutex<SyncState>,
    /// Signalled when a sync finishes.
    pub(crate) synced: Condvar,
    /// One checkpoint at a time.
    pub(crate) checkpointing: Mutex<()>,
    /// The engine `attach`ed, for background checkpoints.
    pub(crate) engine: Mutex<Option<Engine>>,
    pub(crate) health: Mutex<Health>,
    pub(crate) last_checkpoint: AtomicU64,
    /// When the newest checkpoint was written (at open: when the data
    /// directory was opened), in seconds since the Unix epoch.
    pub(crate) last_checkpoint_unix_secs: AtomicU64,
    pub(crate) checkpoints: AtomicU64,
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_secs_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Default)]
pub(crate) struct Health {
    /// Why persistence stopped, until a checkpoint succeeds.
    pub(crate) error: Option<Arc<PersistError>>,
    /// Failures so far: a checkpoint clears `error` only if none happened
    /// while it ran.
    pub(crate) failures: u64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Persister")
            .field("dir", &self.config.dir)
            .field("fsync", &self.config.fsync)
            .finish_non_exhaustive()
    }
}

impl Persister {
    /// Locks and reads `config.dir`, recovering the newest readable snapshot
    /// and the logs after it into a new follower engine built from
    /// `engine_config` (which must be a follower's: recovery applies deltas;
    /// promote the engine for a primary). Returns the persister, the engine
    /// (not yet attached: call [`Persister::attach`]) and the saved
    /// replication state (the default if none was saved). An empty
    /// directory gives an empty engine at LSN 0.
    pub fn open(
        config: PersistConfig,
        engine_config: EngineConfig,
    ) -> Result<(Persister, Engine, PersistedState), PersistError> {
        if !matches!(engine_config.role, Role::Follower(_)) {
            return Err(PersistError::NotFollower);
        }
        let dir = config.dir.clone();
        let lock = files::open_and_lock(&dir)?;
        // Read first: a bad state file fails the open before any log is cut.
        let state = state::load(&dir)?;
        let recovered = recover::recover(&dir, &engine_config)?;
        // What recovery read may sit in the page cache only (the last
        // process died before its fsync): make it durable now.
        let log = recovered.log;
        log.file
            .sync_all()
            .map_err(PersistError::io("fsyncing", &log.path))?;
        tracing::info!(
            dir = %dir.display(), lsn = recovered.lsn.0, snapshot = recovered.snapshot.0,
            log = %log.path.display(), "recovered"
        );
        let inner = Arc::new(Inner {
            _lock: lock,
            log: Mutex::new(LogState::new(log, recovered.lsn)),
            sync: Mutex::new(SyncState::new(recovered.lsn)),
            synced: Condvar::new(),
            checkpointing: Mutex::new(()),
            engine: Mutex::new(None),
            health: Mutex::new(Health::default()),
            last_checkpoint: AtomicU64::new(recovered.snapshot.0),
            last_checkpoint_unix_secs: AtomicU64::new(unix_secs_now()),
            checkpoints: AtomicU64::new(0),
            config,
        });
        let worker = Worker::spawn(Arc::downgrade(&inner)).map_err(PersistError::io(
            "starting the hotblock-persist thread for",
            &dir,
        ))?;
        let persister = Persister {
            inner,
            _worker: Arc::new(worker),
        };
        Ok((persister, recovered.engine, state))
    }

    /// Installs the persistence hook on `engine` (the one `open` returned,
    /// or it promoted), so that every later delta is appended to the log.
    /// If `engine` is not at the LSN the log ends at, persistence stops with
    /// an error rather than log a gap.
    pub fn attach(&self, engine: &Engine) {
        let weak = Arc::downgrade(&self.inner);
        engine.at_consistent_point(|lsn| {
            let mut log = self.inner.log.lock();
            if lsn != log.logged && !log.resyncing {
                let cause = PersistError::Diverged {
                    path: log.path.clone(),
                    engine: lsn,
                    logged: log.logged,
                };
                log.diverged = true;
                self.inner.stop_locked(&mut log, cause);
            }
            drop(log);
            // No commit runs meanwhile, so none slips between the check and
            // the hook.
            engine.set_commit_hook(
                HookPurpose::Persistence,
                Some(Arc::new(move |delta: &Delta| {
                    if let Some(inner) = weak.upgrade() {
                        inner.append(delta);
                    }
                })),
            );
        });
        *self.inner.engine.lock() = Some(engine.clone());
    }

    /// Under [`FsyncPolicy::Always`], returns once every delta up to `lsn`
    /// is fsynced; concurrent callers share one fdatasync. Under the other
    /// policies returns at once. Errs if persistence has stopped after a
    /// failure. During a resync, returns at once: nothing is logged then.
    pub fn wait_durable(&self, lsn: Lsn) -> Result<(), PersistError> {
        match self.inner.config.fsync {
            FsyncPolicy::Always => self.inner.sync_through(lsn),
            FsyncPolicy::EverySec | FsyncPolicy::No => self.check_healthy(),
        }
    }

    /// Whether `wait_durable(lsn)` would wait (fsync `always` and `lsn` not
    /// yet on disk): lets async callers skip a thread hop.
    pub fn needs_wait(&self, lsn: Lsn) -> bool {
        self.inner.config.fsync == FsyncPolicy::Always && self.inner.sync.lock().durable < lsn
    }

    /// fsyncs everything logged so far, whatever the policy (a clean
    /// shutdown).
    pub fn sync_all(&self) -> Result<(), PersistError> {
        let logged = self.inner.log.lock().logged;
        self.inner.sync_through(logged)
    }

    /// A full resync is starting on this follower: deltas are not logged
    /// until [`Persister::checkpoint`] is called once it has finished, so
    /// the directory keeps the last consistent state meanwhile.
    pub fn begin_resync(&self) {
        let mut log = self.inner.log.lock();
        log.resyncing = true;
        tracing::info!(dir = %self.inner.config.dir.display(), kept = log.logged.0,
            "resync: logging paused, the directory keeps the state before it");
    }

    /// Writes a snapshot of `engine` at a consistent point (commits wait
    /// while its blocks are copied), starts a new log after it and removes
    /// older files (see Retention in the crate doc). Ends a resync (or a
    /// divergence, see Failure): call it once the engine holds the whole
    /// snapshot (`finish_snapshot`) and every delta up to the primary's
    /// snapshot LSN; every older file is then removed. Returns the
    /// snapshot's LSN.
    pub fn checkpoint(&self, engine: &Engine) -> Result<Lsn, PersistError> {
        let lsn = self.inner.checkpoint(engine, Trigger::Explicit)?;
        Ok(lsn.expect("an explicit checkpoint is never skipped"))
    }

    /// This node's id as kept in the directory (`node-id`), made with
    /// `new` and saved the first time.
    pub fn node_id(
        &self,
        new: impl FnOnce() -> hotblock_core::repl::NodeId,
    ) -> Result<hotblock_core::repl::NodeId, PersistError> {
        crate::identity::load_or_create(&self.inner.config.dir, new)
    }

    /// Writes the replication state, atomically and durably.
    pub fn save_state(&self, state: &PersistedState) -> Result<(), PersistError> {
        state::save(&self.inner.config.dir, state)
            .inspect_err(|e| tracing::error!(error = %e, "saving the replication state failed"))
    }

    /// Errs once a write or fsync has failed, until a checkpoint succeeds:
    /// the caller must refuse writes meanwhile.
    pub fn check_healthy(&self) -> Result<(), PersistError> {
        self.inner.check_healthy()
    }

    pub fn status(&self) -> PersistStatus {
        let inner = &self.inner;
        let (logged_lsn, log_bytes, resyncing) = {
            let log = inner.log.lock();
            (log.logged, log.bytes, log.resyncing)
        };
        PersistStatus {
            dir: inner.config.dir.clone(),
            fsync: inner.config.fsync,
            durable_lsn: inner.sync.lock().durable,
            logged_lsn,
            log_bytes,
            last_checkpoint_lsn: Lsn(inner.last_checkpoint.load(Ordering::Acquire)),
            checkpoints: inner.checkpoints.load(Ordering::Acquire),
            last_checkpoint_unix_secs: inner.last_checkpoint_unix_secs.load(Ordering::Acquire),
            resyncing,
            last_error: inner.health.lock().error.as_ref().map(|e| e.to_string()),
        }
    }
}

impl Inner {
    /// Records a failure: unhealthy until a checkpoint succeeds. Returns
    /// the cause, shared with every later `check_healthy`.
    pub(crate) fn fail(&self, cause: PersistError) -> Arc<PersistError> {
        let cause = Arc::new(cause);
        tracing::error!(dir = %self.config.dir.display(), error = %cause,
            "persistence failed: writes must be refused until a checkpoint succeeds");
        let mut health = self.health.lock();
        health.error = Some(cause.clone());
        health.failures += 1;
        cause
    }

    pub(crate) fn check_healthy(&self) -> Result<(), PersistError> {
        match &self.health.lock().error {
            None => Ok(()),
            Some(cause) => Err(PersistError::Stopped {
                dir: self.config.dir.clone(),
                cause: cause.clone(),
            }),
        }
    }
}
