//! Local persistence (`--data-dir`): a snapshot of the blocks plus a log of
//! every delta since, so that a node that crashed (kill -9) or restarted
//! comes back with its last LSN, byte-identical blocks and its replication
//! state, instead of resyncing everything from a peer (or, for a lone
//! primary, losing everything).
//!
//! **How.** The engine hands every committed or applied delta, in LSN order
//! and under its commit lock, to the persistence hook ([`Persister::attach`]),
//! which appends it to the current log with one `write(2)` — no userspace
//! buffer, so a process crash loses nothing that committed; whether a power
//! loss does depends on the [`FsyncPolicy`]. A checkpoint writes a new
//! snapshot and starts a new log after it; recovery ([`Persister::open`])
//! loads the newest readable snapshot and replays the logs after it. See
//! `recover.rs` for what recovery does with bad bytes.
//!
//! **Checkpoints pause commits** while the blocks are copied into the
//! snapshot file (through a buffer, into the page cache): the snapshot must
//! hold exactly the transactions up to its LSN. The fsync and rename happen
//! after commits resume. A checkpoint runs when the log outgrows
//! `checkpoint_log_bytes`, and after a full resync.
//!
//! **Retention.** A checkpoint keeps the two newest snapshots and every log
//! from the older of them on, so a snapshot that rots on disk still leaves
//! the previous one plus the logs to recover from. A resync's checkpoint
//! keeps only its own snapshot: the older files describe another history,
//! and chaining them with the new one would mix the two.
//!
//! **Failure.** When an append or fsync fails (disk full, EIO), the error is
//! logged and recorded, no further delta is appended (so the log never has
//! a gap), and [`Persister::check_healthy`] and [`Persister::wait_durable`]
//! return it: the node must refuse writes, as Redis does with `MISCONF`.
//! A later checkpoint that succeeds (the background thread retries every
//! `CHECKPOINT_RETRY_INTERVAL`) captures everything in a snapshot and
//! clears the failure. A delta that does not follow the log (the engine
//! was reset without [`Persister::begin_resync`]) stops persistence too,
//! but only the caller's own [`Persister::checkpoint`] resumes it, as after
//! a resync: the background thread cannot know when the engine is whole.
//!
//! # Files
//!
//! Every file starts with a 4-byte magic and format version 1
//! ([`PERSIST_FORMAT_VERSION`]); integers are little-endian; LSNs in names
//! are 20 zero-padded digits so that names sort as LSNs do. Files being
//! written end in `.tmp` and are removed on open; files recovery could not
//! use end in `.corrupt` and are kept for the operator.
//!
//! `snapshot-<lsn>.hb` — the databases at `lsn`. Written to
//! `snapshot.hb.tmp`, fsynced, renamed, directory fsynced.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HBSN"
//! 4       1     format version (1)
//! 5       3     zero
//! 8       8     lsn
//! 16      4     database count n (at most DATABASES_MAX)
//! 20      ...   n schemas, in rising id order, each:
//!                 id u32, block_size u32, name_len u8 (1..=64), name,
//!                 index_count u8 (at most 16), (name_len u8, name) * index_count
//!         ...   blocks, in rising (db id, block id) order, each:
//!                 tag u8 = 1, db id u32, block id u32, block_size bytes
//!         1     tag u8 = 0: end of blocks
//!         8     block count
//!         8     xxh3-64 of every byte before it
//! ```
//!
//! `log-<base lsn>.hb` — the deltas after `base lsn`, in LSN order without
//! a gap. Created (header only) by a checkpoint; appended to by the hook.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HBLG"
//! 4       1     format version (1)
//! 5       3     zero
//! 8       8     base lsn: the first record holds lsn base + 1
//! 16      8     xxh3-64 of bytes 0..16
//! 24      ...   records, each:
//!                 len u32 (16..=DELTA_SIZE_MAX), xxh3-64 of the delta u64,
//!                 len bytes of delta (`Delta::encode`, its own format)
//! ```
//!
//! `state.hb` — the replication state; rewritten whole like a snapshot.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HBST"
//! 4       1     format version (1)
//! 5       3     zero
//! 8       8     epoch_seen
//! 16      2     history entry count n (1..=HISTORY_LEN_MAX)
//! 18      16n   entries: epoch u64, start lsn u64 (epochs rise, starts never fall)
//! 18+16n  8     xxh3-64 of every byte before it
//! ```
//!
//! `LOCK` — empty; held with an exclusive `flock` while a [`Persister`]
//! lives, so two processes never share a directory. The kernel drops it when
//! the process dies.

mod codec;
mod error;
mod files;
mod log;
mod recover;
mod snapshot;
mod state;

use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

pub use error::PersistError;
pub use state::PersistedState;

use files::{log_name, SNAPSHOT_TMP, STATE_FILE, TMP_SUFFIX};
use hotblock_core::Delta;
use hotblock_core::Lsn;
use hotblock_core::{Engine, EngineConfig, HookPurpose, Role};
use recover::OpenLog;

/// Format version of every file in a data directory.
pub const PERSIST_FORMAT_VERSION: u8 = 1;
/// A log larger than this triggers a checkpoint, unless configured otherwise.
pub const CHECKPOINT_LOG_BYTES_DEFAULT: u64 = 256 * 1024 * 1024;
/// How often the background thread wakes: the `everysec` fsync interval.
const TICK: Duration = Duration::from_secs(1);
/// How often the background thread retries a checkpoint after a failure.
const CHECKPOINT_RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// Snapshots a checkpoint keeps: the new one and one to fall back to.
const SNAPSHOTS_KEPT: usize = 2;
/// Buffers for streaming snapshots and logs: a few blocks of the largest size.
const READ_BUFFER_BYTES: usize = 1024 * 1024;
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
const THREAD_NAME: &str = "hotblock-persist";

/// When the log is fsynced, and so what a power loss or OS crash may cost.
/// A process crash (kill -9) costs nothing under any policy: each delta is
/// in the kernel once its commit returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// [`Persister::wait_durable`] returns once the delta is fsynced (one
    /// fdatasync covers every waiter: group commit). Risks nothing.
    Always,
    /// The background thread fsyncs once a second. A power loss or OS crash
    /// may lose up to about a second of commits.
    #[default]
    EverySec,
    /// Never fsynced except at checkpoints: a power loss or OS crash loses
    /// whatever the OS had not yet written back (often up to 30 s).
    No,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::No => "no",
        })
    }
}

/// A name that is not an fsync policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fsync policy '{0}': always, everysec or no")]
pub struct ParseFsyncPolicyError(String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "no" => Ok(FsyncPolicy::No),
            other => Err(ParseFsyncPolicyError(other.to_string())),
        }
    }
}

/// Where and how a node persists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistConfig {
    /// The data directory. It must exist.
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// A log larger than this triggers a checkpoint. Smaller means faster
    /// recovery and more snapshot writing.
    pub checkpoint_log_bytes: u64,
}

impl PersistConfig {
    /// `dir` with the default policy (`everysec`) and checkpoint size.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PersistConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            checkpoint_log_bytes: CHECKPOINT_LOG_BYTES_DEFAULT,
        }
    }
}

/// What [`Persister::status`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistStatus {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Every delta up to here is fsynced.
    pub durable_lsn: Lsn,
    /// Every delta up to here is in the log (in the kernel, at least).
    pub logged_lsn: Lsn,
    /// Size of the current log file.
    pub log_bytes: u64,
    /// LSN of the newest snapshot (the one recovered from, before any
    /// checkpoint).
    pub last_checkpoint_lsn: Lsn,
    /// Checkpoints written by this persister.
    pub checkpoints: u64,
    /// A resync is in progress: deltas are not logged until it checkpoints.
    pub resyncing: bool,
    /// Set while persistence is stopped by a failure.
    pub last_error: Option<String>,
}

/// Keeps an engine's state in a data directory. Clones share it; the
/// directory stays locked, and the background thread ("hotblock-persist")
/// runs, until the last clone drops. Deltas committed after that are not
/// logged.
#[derive(Clone, Debug)]
pub struct Persister {
    inner: Arc<Inner>,
    _worker: Arc<Worker>,
}

struct Inner {
    config: PersistConfig,
    _lock: File,
    log: Mutex<LogState>,
    sync: Mutex<SyncState>,
    /// Signalled when a sync finishes.
    synced: Condvar,
    /// One checkpoint at a time.
    checkpointing: Mutex<()>,
    /// The engine `attach`ed, for background checkpoints.
    engine: Mutex<Option<Engine>>,
    health: Mutex<Health>,
    last_checkpoint: AtomicU64,
    checkpoints: AtomicU64,
}

/// Lock order: the engine's commit lock, then `log`, then `sync`, then
/// `health`. Nothing takes `log` while holding `sync`.
struct LogState {
    file: Arc<File>,
    path: PathBuf,
    base: Lsn,
    logged: Lsn,
    /// Size of the log file: everything appended whole.
    bytes: u64,
    /// After a failed write or fsync: nothing more is appended until a
    /// checkpoint starts a new log, so the log never has a gap.
    stopped: bool,
    /// A resync is in progress: deltas are ignored until it checkpoints.
    resyncing: bool,
    /// The engine changed without the log (a delta that does not follow
    /// it): its blocks may belong to another history, so only an explicit
    /// checkpoint, which starts the directory afresh, resumes logging.
    diverged: bool,
    /// A checkpoint started a new history but has not yet removed the old
    /// one's files: the next checkpoint must finish that, whoever calls it.
    new_history_pending: bool,
    /// Logs a checkpoint replaced, until a sync has covered their tails.
    retired: Vec<Arc<File>>,
}

struct SyncState {
    durable: Lsn,
    /// A sync is in progress; others wait on `synced` for it.
    syncing: bool,
    /// Rises when a resync's checkpoint starts a new history: a sync begun
    /// before says nothing about it.
    generation: u64,
}

/// What a sync made durable.
struct Synced {
    /// Every delta up to here.
    durable: Lsn,
    /// The log belongs to a new history whose checkpoint has not finished.
    new_history_pending: bool,
}

/// Who asked for a checkpoint: only the caller's own may end a resync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Explicit,
    Background,
}

/// What a checkpoint's switch to a new log did.
struct Switched {
    /// The old files belong to another history and are all removed.
    new_history: bool,
    /// The sync generation from here on.
    generation: u64,
}

#[derive(Default)]
struct Health {
    error: Option<String>,
    /// Failures so far: a checkpoint clears `error` only if none happened
    /// while it ran.
    failures: u64,
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
        let state = load_state(&dir)?;
        let recovered = recover::recover(&dir, &engine_config)?;
        let OpenLog {
            file,
            path,
            base,
            len,
        } = recovered.log;
        // What recovery read may sit in the page cache only (the last
        // process died before its fsync): make it durable now.
        file.sync_all().map_err(PersistError::io(&path))?;
        tracing::info!(
            dir = %dir.display(), lsn = recovered.lsn.0, snapshot = recovered.snapshot.0,
            log = %path.display(), "recovered"
        );
        let inner = Arc::new(Inner {
            _lock: lock,
            log: Mutex::new(LogState {
                file: Arc::new(file),
                path,
                base,
                logged: recovered.lsn,
                bytes: len,
                stopped: false,
                resyncing: false,
                diverged: false,
                new_history_pending: false,
                retired: Vec::new(),
            }),
            sync: Mutex::new(SyncState {
                durable: recovered.lsn,
                syncing: false,
                generation: 0,
            }),
            synced: Condvar::new(),
            checkpointing: Mutex::new(()),
            engine: Mutex::new(None),
            health: Mutex::new(Health::default()),
            last_checkpoint: AtomicU64::new(recovered.snapshot.0),
            checkpoints: AtomicU64::new(0),
            config,
        });
        let worker = Worker::spawn(Arc::downgrade(&inner)).map_err(PersistError::io(&dir))?;
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
                let why = format!(
                    "attached to an engine at {lsn}, but the log ends at {}",
                    log.logged
                );
                log.diverged = true;
                self.inner.stop_locked(&mut log, why);
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
    /// older files (see Retention in the module doc). Ends a resync (or a
    /// divergence, see Failure): call it once the engine holds the whole
    /// snapshot (`finish_snapshot`) and every delta up to the primary's
    /// snapshot LSN; every older file is then removed. Returns the
    /// snapshot's LSN.
    pub fn checkpoint(&self, engine: &Engine) -> Result<Lsn, PersistError> {
        let lsn = self.inner.checkpoint(engine, Trigger::Explicit)?;
        Ok(lsn.expect("an explicit checkpoint is never skipped"))
    }

    /// Writes the replication state, atomically and durably.
    pub fn save_state(&self, state: &PersistedState) -> Result<(), PersistError> {
        files::write_atomically(&self.inner.config.dir, STATE_FILE, &state::encode(state))
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
            resyncing,
            last_error: inner.health.lock().error.clone(),
        }
    }
}

fn load_state(dir: &std::path::Path) -> Result<PersistedState, PersistError> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PersistedState::default()),
        Err(e) => return Err(PersistError::io(&path)(e)),
    };
    state::decode(&bytes).map_err(|e| match e {
        state::StateError::Version(version) => PersistError::UnsupportedVersion { path, version },
        state::StateError::Bad { offset, why } => PersistError::Corrupt {
            path,
            offset,
            why: why.to_string(),
        },
    })
}

impl Inner {
    /// The hook: appends one delta. Runs under the engine's commit lock;
    /// never panics, never blocks on anything but the log file.
    fn append(&self, delta: &Delta) {
        let mut log = self.log.lock();
        if log.resyncing || log.stopped {
            return;
        }
        let lsn = delta.lsn();
        if lsn != log.logged.next() {
            let why = format!(
                "{lsn} follows {} in the log: the engine changed without the persister \
                 (a resync without begin_resync?)",
                log.logged
            );
            log.diverged = true;
            self.stop_locked(&mut log, why);
            return;
        }
        let record = match log::encode_record(delta) {
            Ok(record) => record,
            Err(len) => {
                let why = format!("{lsn} encodes to {len} bytes, more than a log record holds");
                self.stop_locked(&mut log, why);
                return;
            }
        };
        let file = log.file.clone();
        match std::io::Write::write_all(&mut &*file, &record) {
            Ok(()) => {
                log.logged = lsn;
                log.bytes += record.len() as u64;
            }
            Err(e) => {
                // Cut what part of the record reached the file, so the log
                // ends whole if a checkpoint later retires it mid-chain.
                let _ = file.set_len(log.bytes);
                let why = format!("appending {lsn} to {}: {e}", log.path.display());
                self.stop_locked(&mut log, why);
            }
        }
    }

    /// Stops logging after a failure and records it.
    fn stop(&self, why: String) {
        let mut log = self.log.lock();
        self.stop_locked(&mut log, why);
    }

    fn stop_locked(&self, log: &mut LogState, why: String) {
        log.stopped = true;
        self.fail(why);
    }

    /// Records a failure: unhealthy until a checkpoint succeeds.
    fn fail(&self, why: String) {
        tracing::error!(dir = %self.config.dir.display(), error = %why,
            "persistence failed: writes must be refused until a checkpoint succeeds");
        let mut health = self.health.lock();
        health.error = Some(why);
        health.failures += 1;
    }

    fn check_healthy(&self) -> Result<(), PersistError> {
        match &self.health.lock().error {
            None => Ok(()),
            Some(cause) => Err(PersistError::Stopped {
                dir: self.config.dir.clone(),
                cause: cause.clone(),
            }),
        }
    }

    /// Returns once every delta up to `lsn` is fsynced: group commit. The
    /// first caller to find no sync running starts one, covering everything
    /// logged by then; the others wait for it and check again.
    fn sync_through(&self, lsn: Lsn) -> Result<(), PersistError> {
        {
            let log = self.log.lock();
            if log.resyncing {
                return Ok(());
            }
            if lsn > log.logged {
                drop(log);
                self.check_healthy()?;
                let logged = self.log.lock().logged;
                return Err(PersistError::NotLogged { lsn, logged });
            }
        }
        let mut st = self.sync.lock();
        loop {
            self.check_healthy()?;
            if st.durable >= lsn {
                return Ok(());
            }
            if st.syncing {
                self.synced.wait(&mut st);
                continue;
            }
            st.syncing = true;
            let generation = st.generation;
            let result = MutexGuard::unlocked(&mut st, || self.sync_files());
            st.syncing = false;
            self.synced.notify_all();
            let synced = result?;
            if st.generation == generation {
                st.durable = st.durable.max(synced.durable);
            }
            if st.durable < lsn {
                if !synced.new_history_pending {
                    return Err(PersistError::NotLogged {
                        lsn,
                        logged: synced.durable,
                    });
                }
                // The new log is durable only once the checkpoint that
                // started it has removed the old history; it notifies.
                self.synced.wait_for(&mut st, TICK);
            }
        }
    }

    /// fdatasyncs the current log and any retired one; returns what is
    /// durable now. Stops logging on failure: after a failed fsync the
    /// kernel may have dropped the dirty pages, so the file's contents are
    /// unknown.
    fn sync_files(&self) -> Result<Synced, PersistError> {
        let (files, synced) = {
            let log = self.log.lock();
            let mut files = log.retired.clone();
            files.push(log.file.clone());
            // A new history's log is a temporary file until its checkpoint
            // finishes: a crash before then removes it.
            let synced = Synced {
                durable: match log.new_history_pending {
                    true => Lsn::ZERO,
                    false => log.logged,
                },
                new_history_pending: log.new_history_pending,
            };
            (files, synced)
        };
        for file in &files {
            if let Err(e) = file.sync_data() {
                self.stop(format!(
                    "fsync of the log in {}: {e}",
                    self.config.dir.display()
                ));
                return Err(PersistError::Stopped {
                    dir: self.config.dir.clone(),
                    cause: e.to_string(),
                });
            }
        }
        self.log
            .lock()
            .retired
            .retain(|r| !files.iter().any(|f| Arc::ptr_eq(f, r)));
        Ok(synced)
    }

    /// Returns `None` if a background checkpoint was skipped because a
    /// resync began (or the log diverged) while it copied the blocks.
    fn checkpoint(&self, engine: &Engine, trigger: Trigger) -> Result<Option<Lsn>, PersistError> {
        let _one = self.checkpointing.lock();
        let failures = self.health.lock().failures;
        let started = Instant::now();
        match self.checkpoint_once(engine, trigger) {
            Ok(Some(lsn)) => {
                let mut health = self.health.lock();
                if health.failures == failures && health.error.take().is_some() {
                    tracing::info!(dir = %self.config.dir.display(), lsn = lsn.0,
                        "checkpoint succeeded: persistence resumed");
                }
                drop(health);
                self.last_checkpoint.store(lsn.0, Ordering::Release);
                self.checkpoints.fetch_add(1, Ordering::AcqRel);
                tracing::info!(dir = %self.config.dir.display(), lsn = lsn.0,
                    ms = started.elapsed().as_millis() as u64, "checkpoint written");
                Ok(Some(lsn))
            }
            Ok(None) => {
                let _ = std::fs::remove_file(self.config.dir.join(SNAPSHOT_TMP));
                Ok(None)
            }
            Err(e) => {
                let _ = std::fs::remove_file(self.config.dir.join(SNAPSHOT_TMP));
                self.fail(format!("checkpoint: {e}"));
                Err(e)
            }
        }
    }

    fn checkpoint_once(
        &self,
        engine: &Engine,
        trigger: Trigger,
    ) -> Result<Option<Lsn>, PersistError> {
        let dir = &self.config.dir;
        let (snapshot, lsn, switched) =
            recover::write_snapshot_tmp(dir, engine, |lsn| self.switch_log(lsn, trigger))?;
        let Some(Switched {
            new_history,
            generation,
        }) = switched
        else {
            return Ok(None);
        };
        // Commits run again from here: the new log takes them.
        self.sync_files()?;
        if new_history {
            // The old files describe another history. Logs go first: a
            // crash midway then leaves old snapshots without logs (an older
            // consistent state), never new logs next to old snapshots.
            let old = files::list(dir)?;
            for (_, path) in old.logs.iter().chain(&old.snapshots) {
                files::remove(path)?;
            }
            files::sync_dir(dir)?;
            recover::publish_snapshot(dir, &snapshot, lsn)?;
            let mut log = self.log.lock();
            let final_path = dir.join(log_name(lsn));
            if log.path.to_str().is_some_and(|p| p.ends_with(TMP_SUFFIX)) {
                std::fs::rename(&log.path, &final_path).map_err(PersistError::io(&final_path))?;
                log.path = final_path;
            }
            drop(log);
            files::sync_dir(dir)?;
            self.log.lock().new_history_pending = false;
        } else {
            recover::publish_snapshot(dir, &snapshot, lsn)?;
            self.remove_old_files()?;
        }
        let mut st = self.sync.lock();
        if st.generation == generation {
            st.durable = st.durable.max(lsn);
        }
        self.synced.notify_all();
        Ok(Some(lsn))
    }

    /// At the checkpoint's consistent point, with the snapshot written:
    /// deltas after `lsn` go to a new log. `None`: skipped (a background
    /// checkpoint never ends a resync: the engine may be half-installed).
    fn switch_log(&self, lsn: Lsn, trigger: Trigger) -> Result<Option<Switched>, PersistError> {
        let mut log = self.log.lock();
        let engine_may_be_partial = log.resyncing || log.diverged;
        if engine_may_be_partial && trigger == Trigger::Background {
            return Ok(None);
        }
        let new_history = engine_may_be_partial || log.new_history_pending;
        if !new_history && log.base == lsn {
            // Nothing was logged since the log began (`logged` is between
            // the base and the engine's LSN): it stays, whole.
            log.stopped = false;
            return Ok(Some(Switched {
                new_history,
                generation: self.sync.lock().generation,
            }));
        }
        let name = match new_history {
            // Renamed once the old history is gone (see `checkpoint_once`).
            true => format!("{}{TMP_SUFFIX}", log_name(lsn)),
            false => log_name(lsn),
        };
        let new = recover::create_log(&self.config.dir, &name, lsn)?;
        let old = std::mem::replace(&mut log.file, Arc::new(new.file));
        if !new_history {
            log.retired.push(old);
        }
        log.path = new.path;
        log.base = lsn;
        log.logged = lsn;
        log.bytes = new.len;
        log.stopped = false;
        log.resyncing = false;
        log.diverged = false;
        log.new_history_pending = new_history;
        let mut st = self.sync.lock();
        if new_history {
            st.generation += 1;
            st.durable = Lsn::ZERO;
        }
        Ok(Some(Switched {
            new_history,
            generation: st.generation,
        }))
    }

    /// Keeps the `SNAPSHOTS_KEPT` newest snapshots and the logs from the
    /// oldest of them on.
    fn remove_old_files(&self) -> Result<(), PersistError> {
        let dir = &self.config.dir;
        let listing = files::list(dir)?;
        let keep = listing.snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        let Some((oldest_kept, _)) = listing.snapshots.get(keep) else {
            return Ok(());
        };
        let mut removed = false;
        for (lsn, path) in listing.snapshots.iter().chain(&listing.logs) {
            if lsn < oldest_kept {
                files::remove(path)?;
                removed = true;
            }
        }
        if removed {
            files::sync_dir(dir)?;
        }
        Ok(())
    }

    /// One wake of the background thread.
    fn tick(&self, last_retry: &mut Instant) {
        let (logged, bytes, resyncing, stopped, diverged) = {
            let log = self.log.lock();
            (
                log.logged,
                log.bytes,
                log.resyncing,
                log.stopped,
                log.diverged,
            )
        };
        if self.config.fsync == FsyncPolicy::EverySec && !stopped && !resyncing {
            let durable = self.sync.lock().durable;
            if logged > durable {
                // Errors are recorded by the sync itself.
                let _ = self.sync_through(logged);
            }
        }
        let Some(engine) = self.engine.lock().clone() else {
            return;
        };
        if resyncing || diverged {
            // Only the caller knows when the engine is whole again.
            return;
        }
        let unhealthy = self.health.lock().error.is_some();
        if unhealthy {
            if last_retry.elapsed() >= CHECKPOINT_RETRY_INTERVAL {
                *last_retry = Instant::now();
                let _ = self.checkpoint(&engine, Trigger::Background);
            }
        } else if bytes > self.config.checkpoint_log_bytes {
            let _ = self.checkpoint(&engine, Trigger::Background);
        }
    }
}

/// The background thread, stopped and joined when the last `Persister`
/// clone drops. It holds the persister weakly, so it never keeps it alive.
struct Worker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Worker")
    }
}

impl Worker {
    fn spawn(inner: Weak<Inner>) -> std::io::Result<Worker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = stop.clone();
        let thread = thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let mut last_retry = Instant::now();
                loop {
                    {
                        let (flag, wake) = &*thread_stop;
                        let mut stopped = flag.lock();
                        if !*stopped {
                            wake.wait_for(&mut stopped, TICK);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    let Some(inner) = inner.upgrade() else {
                        return;
                    };
                    inner.tick(&mut last_retry);
                }
            })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock() = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // The thread never holds a `Persister`, so this never runs on it.
            let _ = thread.join();
        }
    }
}

/// Runs the snapshot decoder over arbitrary bytes (fuzzing): it must return,
/// without panicking, hanging or allocating past its limits.
#[doc(hidden)]
pub fn fuzz_load_snapshot(data: &[u8]) {
    let _ = snapshot::read_snapshot(data, &mut snapshot::Discard);
}

/// Runs the log decoder over arbitrary bytes (fuzzing), record by record to
/// the first bad one; and the `state.hb` decoder over the same bytes.
#[doc(hidden)]
pub fn fuzz_load_log(data: &[u8]) {
    let Ok(mut reader) = log::LogReader::new(data) else {
        return;
    };
    while let Ok(Some(_)) = reader.next_delta() {}
    let _ = state::decode(data);
}
