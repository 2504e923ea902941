//! The writing side of the current log: the commit hook's append, and the
//! group-commit fsync that [`Persister::wait_durable`](crate::Persister::wait_durable)
//! (under `always`), the `everysec` tick and checkpoints share.
//!
//! Apart from the rest because it is the hot path: the append runs under
//! the engine's commit lock for every committed or applied delta, so it
//! does one `write(2)` and nothing that could block on anything but the log
//! file, and never panics. A failure stops appending (the log must never
//! have a gap) and is recorded for `check_healthy` (see Failure in the
//! crate doc).

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::MutexGuard;

use crate::error::PersistError;
use crate::limits::NEW_HISTORY_RECHECK_INTERVAL_MS;
use crate::log::{self, OpenLog};
use crate::persister::Inner;
use hotblock_core::{Delta, Lsn};

/// The current log and what has been appended to it.
///
/// Lock order: the engine's commit lock, then `Inner::log`, then
/// `Inner::sync`, then `Inner::health`. Nothing takes `log` while holding
/// `sync`.
pub(crate) struct LogState {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) base: Lsn,
    pub(crate) logged: Lsn,
    /// Size of the log file: everything appended whole.
    pub(crate) bytes: u64,
    /// After a failed write or fsync: nothing more is appended until a
    /// checkpoint starts a new log, so the log never has a gap.
    pub(crate) stopped: bool,
    /// A resync is in progress: deltas are ignored until it checkpoints.
    pub(crate) resyncing: bool,
    /// The engine changed without the log (a delta that does not follow
    /// it): its blocks may belong to another history, so only an explicit
    /// checkpoint, which starts the directory afresh, resumes logging.
    pub(crate) diverged: bool,
    /// A checkpoint started a new history but has not yet removed the old
    /// one's files: the next checkpoint must finish that, whoever calls it.
    pub(crate) new_history_pending: bool,
    /// Logs a checkpoint replaced, until a sync has covered their tails.
    pub(crate) retired: Vec<(Arc<File>, PathBuf)>,
}

impl LogState {
    /// Appending to `log`, which ends at `logged`.
    pub(crate) fn new(log: OpenLog, logged: Lsn) -> Self {
        LogState {
            file: Arc::new(log.file),
            path: log.path,
            base: log.base,
            logged,
            bytes: log.len,
            stopped: false,
            resyncing: false,
            diverged: false,
            new_history_pending: false,
            retired: Vec::new(),
        }
    }
}

/// What is durable, and the one sync in flight.
pub(crate) struct SyncState {
    pub(crate) durable: Lsn,
    /// A sync is in progress; others wait on `Inner::synced` for it.
    pub(crate) syncing: bool,
    /// Rises when a resync's checkpoint starts a new history: a sync begun
    /// before says nothing about it.
    pub(crate) generation: u64,
}

impl SyncState {
    pub(crate) fn new(durable: Lsn) -> Self {
        SyncState {
            durable,
            syncing: false,
            generation: 0,
        }
    }
}

/// What a sync made durable.
pub(crate) struct Synced {
    /// Every delta up to here.
    pub(crate) durable: Lsn,
    /// The log it synced.
    pub(crate) path: PathBuf,
    /// The log belongs to a new history whose checkpoint has not finished.
    pub(crate) new_history_pending: bool,
}

impl Inner {
    /// The hook: appends one delta. Runs under the engine's commit lock;
    /// never panics, never blocks on anything but the log file.
    pub(crate) fn append(&self, delta: &Delta) {
        let mut log = self.log.lock();
        if log.resyncing || log.stopped {
            return;
        }
        let lsn = delta.lsn();
        if lsn != log.logged.next() {
            let cause = PersistError::Diverged {
                path: log.path.clone(),
                engine: lsn,
                logged: log.logged,
            };
            log.diverged = true;
            self.stop_locked(&mut log, cause);
            return;
        }
        let record = match log::encode_record(delta) {
            Ok(record) => record,
            Err(size) => {
                let cause = PersistError::RecordTooLarge {
                    path: log.path.clone(),
                    lsn,
                    size,
                };
                self.stop_locked(&mut log, cause);
                return;
            }
        };
        let file = log.file.clone();
        match (&*file).write_all(&record) {
            Ok(()) => {
                #[cfg(test)]
                crate::files::trace::record(crate::files::trace::Step::Appended, &log.path);
                log.logged = lsn;
                log.bytes += record.len() as u64;
            }
            Err(source) => {
                // Cut what part of the record reached the file, so the log
                // ends whole if a checkpoint later retires it mid-chain.
                let _ = file.set_len(log.bytes);
                let cause = PersistError::Append {
                    path: log.path.clone(),
                    lsn,
                    source,
                };
                self.stop_locked(&mut log, cause);
            }
        }
    }

    /// Stops logging after a failure and records it.
    fn stop(&self, cause: PersistError) -> Arc<PersistError> {
        let mut log = self.log.lock();
        self.stop_locked(&mut log, cause)
    }

    pub(crate) fn stop_locked(&self, log: &mut LogState, cause: PersistError) -> Arc<PersistError> {
        log.stopped = true;
        self.fail(cause)
    }

    /// Returns once every delta up to `lsn` is fsynced: group commit. The
    /// first caller to find no sync running starts one, covering everything
    /// logged by then; the others wait for it and check again.
    pub(crate) fn sync_through(&self, lsn: Lsn) -> Result<(), PersistError> {
        {
            let log = self.log.lock();
            if log.resyncing {
                return Ok(());
            }
            if lsn > log.logged {
                drop(log);
                self.check_healthy()?;
                let log = self.log.lock();
                return Err(PersistError::NotLogged {
                    path: log.path.clone(),
                    lsn,
                    logged: log.logged,
                });
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
                        path: synced.path,
                        lsn,
                        logged: synced.durable,
                    });
                }
                // The new log is durable only once the checkpoint that
                // started it has removed the old history; it notifies.
                self.synced.wait_for(
                    &mut st,
                    Duration::from_millis(NEW_HISTORY_RECHECK_INTERVAL_MS),
                );
            }
        }
    }

    /// fdatasyncs the current log and any retired one; returns what is
    /// durable now. Stops logging on failure: after a failed fsync the
    /// kernel may have dropped the dirty pages, so the file's contents are
    /// unknown.
    pub(crate) fn sync_files(&self) -> Result<Synced, PersistError> {
        let (files, synced) = {
            let log = self.log.lock();
            let mut files = log.retired.clone();
            files.push((log.file.clone(), log.path.clone()));
            // A new history's log is a temporary file until its checkpoint
            // finishes: a crash before then removes it.
            let synced = Synced {
                durable: match log.new_history_pending {
                    true => Lsn::ZERO,
                    false => log.logged,
                },
                path: log.path.clone(),
                new_history_pending: log.new_history_pending,
            };
            (files, synced)
        };
        for (file, path) in &files {
            if let Err(source) = file.sync_data() {
                let cause = self.stop(PersistError::Io {
                    what: "fsyncing the log",
                    path: path.clone(),
                    source,
                });
                return Err(PersistError::Stopped {
                    dir: self.config.dir.clone(),
                    cause,
                });
            }
        }
        self.log
            .lock()
            .retired
            .retain(|(r, _)| !files.iter().any(|(f, _)| Arc::ptr_eq(f, r)));
        Ok(synced)
    }
}
