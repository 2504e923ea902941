//! The crate's one thread, `hotblock-persist`: it wakes every
//! `EVERYSEC_INTERVAL_MS` to fsync the log under `everysec`, to checkpoint
//! a log that outgrew `checkpoint_log_bytes`, and, after a failure, to
//! retry a checkpoint every `CHECKPOINT_RETRY_INTERVAL_MS`.
//!
//! Apart from the handle because of its lifetime: it holds the persister
//! weakly, so it never keeps it alive, and is stopped and joined when the
//! last `Persister` clone drops. It never ends a resync or a divergence:
//! only the caller knows when its engine is whole again.

use std::fmt;
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::checkpoint::Trigger;
use crate::limits::{CHECKPOINT_RETRY_INTERVAL_MS, EVERYSEC_INTERVAL_MS};
use crate::persister::Inner;
use crate::FsyncPolicy;

const THREAD_NAME: &str = "hotblock-persist";

/// The background thread, stopped and joined when dropped.
pub(crate) struct Worker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Worker")
    }
}

impl Worker {
    pub(crate) fn spawn(inner: Weak<Inner>) -> std::io::Result<Worker> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = stop.clone();
        let tick = Duration::from_millis(EVERYSEC_INTERVAL_MS);
        let thread = thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || {
                let mut last_retry = Instant::now();
                loop {
                    {
                        let (flag, wake) = &*thread_stop;
                        let mut stopped = flag.lock();
                        if !*stopped {
                            wake.wait_for(&mut stopped, tick);
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

impl Inner {
    /// One wake of the background thread. Errors are recorded where they
    /// happen (the sync, the checkpoint), so none is returned.
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
            let retry = Duration::from_millis(CHECKPOINT_RETRY_INTERVAL_MS);
            if last_retry.elapsed() >= retry {
                *last_retry = Instant::now();
                let _ = self.checkpoint(&engine, Trigger::Background);
            }
        } else if bytes > self.config.checkpoint_log_bytes {
            let _ = self.checkpoint(&engine, Trigger::Background);
        }
    }
}
