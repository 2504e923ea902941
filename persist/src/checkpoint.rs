//! Checkpoints: writing a snapshot of the engine, starting a new log after
//! it, and retention — which older files go.
//!
//! Apart from the append path because it is its opposite in cost: it copies
//! every block (commits paused while it does, see Checkpoints in the crate
//! doc), then fsyncs, renames and removes files with commits running. It is
//! also the only way out of a failure, a resync or a divergence, so it
//! decides when old files may go: a normal checkpoint keeps
//! `SNAPSHOTS_KEPT` snapshots and the logs from the oldest of them on; a
//! checkpoint that starts a new history removes every older file first.
//! One runs at a time; the caller's ([`Persister::checkpoint`]) and the
//! background thread's (`worker.rs`) share this code.
//!
//! [`Persister::checkpoint`]: crate::Persister::checkpoint

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::error::PersistError;
use crate::files::{self, log_name, snapshot_name, SNAPSHOT_TMP, TMP_SUFFIX};
use crate::limits::{SNAPSHOTS_KEPT, WRITE_BUFFER_BYTES};
use crate::log;
use crate::persister::Inner;
use crate::snapshot;
use hotblock_core::{Engine, Lsn};

/// Who asked for a checkpoint: only the caller's own may end a resync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Trigger {
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

/// Writes `engine`'s blocks at a consistent point to the temporary snapshot
/// file, then runs `at_point` there, before commits resume; returns the
/// file (written, not fsynced), the LSN and what `at_point` returned.
/// Commits wait while the blocks are copied.
pub(crate) fn write_snapshot_tmp<T>(
    dir: &Path,
    engine: &Engine,
    at_point: impl FnOnce(Lsn) -> Result<T, PersistError>,
) -> Result<(File, Lsn, T), PersistError> {
    let path = dir.join(SNAPSHOT_TMP);
    let file = File::create(&path).map_err(PersistError::io("creating", &path))?;
    let (lsn, then) = engine.at_consistent_point(|lsn| {
        let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, &file);
        snapshot::write_snapshot(&mut w, engine, lsn)
            .map_err(PersistError::io("writing the snapshot to", &path))?;
        drop(w);
        Ok::<_, PersistError>((lsn, at_point(lsn)?))
    })?;
    Ok((file, lsn, then))
}

/// Makes the temporary snapshot durable under its final name.
pub(crate) fn publish_snapshot(dir: &Path, file: &File, lsn: Lsn) -> Result<(), PersistError> {
    let tmp = dir.join(SNAPSHOT_TMP);
    file.sync_all()
        .map_err(PersistError::io("fsyncing", &tmp))?;
    let path = dir.join(snapshot_name(lsn));
    fs::rename(&tmp, &path).map_err(PersistError::io("renaming the .tmp snapshot to", &path))?;
    files::sync_dir(dir)
}

impl Inner {
    /// Returns `None` if a background checkpoint was skipped because a
    /// resync began (or the log diverged) while it copied the blocks. A
    /// failure is recorded (unhealthy until a checkpoint succeeds); a
    /// success clears the failure, unless another happened meanwhile.
    pub(crate) fn checkpoint(
        &self,
        engine: &Engine,
        trigger: Trigger,
    ) -> Result<Option<Lsn>, PersistError> {
        let _one = self.checkpointing.lock();
        let failures = self.health.lock().failures;
        let started = Instant::now();
        let dir = &self.config.dir;
        match self.checkpoint_once(engine, trigger) {
            Ok(Some(lsn)) => {
                let mut health = self.health.lock();
                if health.failures == failures && health.error.take().is_some() {
                    tracing::info!(dir = %dir.display(), lsn = lsn.0,
                        "checkpoint succeeded: persistence resumed");
                }
                drop(health);
                self.last_checkpoint.store(lsn.0, Ordering::Release);
                self.checkpoints.fetch_add(1, Ordering::AcqRel);
                self.last_checkpoint_unix_secs
                    .store(crate::persister::unix_secs_now(), Ordering::Release);
                tracing::info!(dir = %dir.display(), lsn = lsn.0,
                    ms = started.elapsed().as_millis() as u64, "checkpoint written");
                Ok(Some(lsn))
            }
            Ok(None) => {
                let _ = fs::remove_file(dir.join(SNAPSHOT_TMP));
                Ok(None)
            }
            Err(e) => {
                let _ = fs::remove_file(dir.join(SNAPSHOT_TMP));
                let source = Arc::new(e);
                self.fail(PersistError::Checkpoint {
                    dir: dir.clone(),
                    source: source.clone(),
                });
                Err(PersistError::Checkpoint {
                    dir: dir.clone(),
                    source,
                })
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
            write_snapshot_tmp(dir, engine, |lsn| self.switch_log(lsn, trigger))?;
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
            self.replace_history(&snapshot, lsn)?;
        } else {
            publish_snapshot(dir, &snapshot, lsn)?;
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
            // Renamed once the old history is gone (see `replace_history`).
            true => format!("{}{TMP_SUFFIX}", log_name(lsn)),
            false => log_name(lsn),
        };
        let new = log::create(&self.config.dir, &name, lsn)?;
        if !new_history {
            // Its records count as soon as the file is fsynced (`--fsync
            // always` acknowledges then): its directory entry must be
            // durable first, or a power cut can take the file. Under the
            // log lock, so before any record goes in. (A new history's log
            // is a temporary file; its checkpoint syncs the directory.)
            files::sync_dir(&self.config.dir)?;
        }
        let old = std::mem::replace(&mut log.file, Arc::new(new.file));
        let old_path = std::mem::replace(&mut log.path, new.path);
        if !new_history {
            log.retired.push((old, old_path));
        }
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

    /// A checkpoint that starts a new history: removes every older file
    /// (they describe another history), publishes the snapshot and gives
    /// the new log its final name.
    fn replace_history(&self, snapshot: &File, lsn: Lsn) -> Result<(), PersistError> {
        let dir = &self.config.dir;
        // Logs go first: a crash midway then leaves old snapshots without
        // logs (an older consistent state), never new logs next to old
        // snapshots.
        let old = files::list(dir)?;
        for (_, path) in old.logs.iter().chain(&old.snapshots) {
            files::remove(path)?;
        }
        files::sync_dir(dir)?;
        publish_snapshot(dir, snapshot, lsn)?;
        let mut log = self.log.lock();
        let final_path = dir.join(log_name(lsn));
        if log.path.to_str().is_some_and(|p| p.ends_with(TMP_SUFFIX)) {
            fs::rename(&log.path, &final_path)
                .map_err(PersistError::io("renaming the new log to", &final_path))?;
            log.path = final_path;
        }
        drop(log);
        files::sync_dir(dir)?;
        self.log.lock().new_history_pending = false;
        Ok(())
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
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use hotblock_core::{DatabaseOptions, EngineConfig, IndexMode};

    use crate::files::trace::{Step, STEPS};
    use crate::files::TMP_SUFFIX;
    use crate::{FsyncPolicy, PersistConfig, Persister};

    /// With `--fsync always` a commit is acknowledged once its log is
    /// fsynced; a log file whose directory entry is not yet durable can
    /// vanish in a power cut, acknowledged records and all. So nothing is
    /// appended to a new log before the directory is fsynced after its
    /// creation, whatever commits run while checkpoints switch logs.
    #[test]
    fn a_new_log_is_in_a_durable_directory_entry_before_its_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let config = PersistConfig {
            dir: dir.path().to_path_buf(),
            fsync: FsyncPolicy::Always,
            checkpoint_log_bytes: 1 << 40,
        };
        let (persister, engine, _) =
            Persister::open(config, EngineConfig::follower(IndexMode::Maintained)).unwrap();
        engine.promote().unwrap();
        persister.attach(&engine);
        engine
            .create_database("t", DatabaseOptions::default())
            .unwrap();
        let writer = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                for i in 0..4000u32 {
                    let mut txn = engine.begin("t").unwrap();
                    txn.put(&i.to_be_bytes(), &[], &[7; 100]).unwrap();
                    txn.commit().unwrap();
                }
            })
        };
        for _ in 0..40 {
            persister.checkpoint(&engine).unwrap();
        }
        writer.join().unwrap();
        let steps: Vec<(Step, PathBuf)> = STEPS
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| p.starts_with(dir.path()))
            .cloned()
            .collect();
        let mut entry_not_durable: HashSet<PathBuf> = HashSet::new();
        let mut appended_to_new = 0;
        for (step, path) in &steps {
            match step {
                Step::Created => {
                    entry_not_durable.insert(path.clone());
                }
                Step::DirSynced => entry_not_durable.clear(),
                // A new history's log is a temporary file, made durable
                // with its checkpoint before anything in it counts.
                Step::Appended if path.to_string_lossy().ends_with(TMP_SUFFIX) => {}
                Step::Appended => {
                    assert!(
                        !entry_not_durable.contains(path),
                        "a record appended to {path:?} before its directory entry was durable"
                    );
                    appended_to_new += 1;
                }
            }
        }
        assert!(appended_to_new > 0);
    }
}
