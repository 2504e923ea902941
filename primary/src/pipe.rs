//! The commit pipe: how each committed transaction's delta, and a relay's
//! news of its upstream, reach the primary controller, in order.
//!
//! ```text
//!  committer (any thread)                        controller task
//!  Db::begin ── admit() ─ waits while full ─┐
//!  engine commit (commit lock held)         │
//!    └─ replication hook ── push(Commit) ──►│ crossbeam channel ──► drain()
//!  relay follow loop ─ push(Reset|History|Available)                 │
//!                       wake (only when asked for) ───────────────► Notify
//! ```
//!
//! - **Nothing blocks under the commit lock.** The engine runs the hook
//!   while it holds its commit lock, and the controller may need that lock
//!   itself (a snapshot starts at a consistent point): a committer waiting
//!   inside the lock for room in the pipe could deadlock the two. So
//!   [`CommitPipe::push`] never waits.
//! - **Bounded at admission.** Backpressure is applied before a
//!   transaction begins, outside every lock: [`CommitPipe::admit`] waits
//!   while more than [`COMMIT_PIPE_DELTAS_MAX`] handoffs are queued (a
//!   controller that far behind is stalled or starved). The pipe holds at
//!   most that many plus one per transaction already admitted. A relay
//!   admits before it reads more of its upstream's stream, so there the
//!   bound slows the upstream link instead.
//! - **A wake-up only when someone waits for it.** With a secondary
//!   connected or a sync quorum configured, every push wakes the
//!   controller; otherwise it drains the pipe on a timer and a commit costs
//!   no wake-up (see `IDLE_DRAIN` in the controller).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

pub use crate::limits::{COMMIT_PIPE_ADMIT_WAIT_MAX, COMMIT_PIPE_DELTAS_MAX};
use crossbeam::channel::{self, Receiver, Sender};
use hotblock_core::repl::EpochHistory;
use hotblock_core::Delta;
use parking_lot::{Condvar, Mutex};

/// What travels through the pipe, in the order it happened.
#[derive(Debug)]
pub(crate) enum Handoff {
    /// A committed (or, on a relay, applied) transaction.
    Commit(Delta),
    /// A relay's upstream history changed.
    History(EpochHistory),
    /// A relay's copy restarted (it loads a snapshot).
    Reset,
    /// A relay's copy is whole (true) or loading (false).
    Available(bool),
}

/// The bounded, ordered handoff from committers to the controller.
#[derive(Debug)]
pub(crate) struct CommitPipe {
    tx: Sender<Handoff>,
    rx: Receiver<Handoff>,
    /// Wakes the controller; pushes notify it only while `wake_per_push`.
    wake: tokio::sync::Notify,
    wake_per_push: AtomicBool,
    /// Committers waiting in `admit`, and what they sleep on.
    admitting: AtomicUsize,
    room: (Mutex<()>, Condvar),
}

impl CommitPipe {
    pub(crate) fn new() -> Self {
        let (tx, rx) = channel::unbounded();
        CommitPipe {
            tx,
            rx,
            wake: tokio::sync::Notify::new(),
            wake_per_push: AtomicBool::new(true),
            admitting: AtomicUsize::new(0),
            room: (Mutex::new(()), Condvar::new()),
        }
    }

    /// Queues `handoff`; never blocks (see the module doc).
    pub(crate) fn push(&self, handoff: Handoff) {
        // The receiver lives as long as the pipe: sending cannot fail.
        let _ = self.tx.send(handoff);
        if self.wake_per_push.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }

    /// Waits, outside every lock, until the pipe has room for one more
    /// transaction, or `COMMIT_PIPE_ADMIT_WAIT_MAX` passed.
    pub(crate) fn admit(&self) {
        if self.rx.len() <= COMMIT_PIPE_DELTAS_MAX {
            return;
        }
        let deadline = Instant::now() + COMMIT_PIPE_ADMIT_WAIT_MAX;
        self.admitting.fetch_add(1, Ordering::AcqRel);
        let mut guard = self.room.0.lock();
        while self.rx.len() > COMMIT_PIPE_DELTAS_MAX {
            if self.room.1.wait_until(&mut guard, deadline).timed_out() {
                tracing::warn!(
                    queued = self.rx.len(),
                    "the replication controller is behind: a commit goes ahead without room in the pipe"
                );
                break;
            }
        }
        drop(guard);
        self.admitting.fetch_sub(1, Ordering::AcqRel);
    }

    /// Everything queued now, in order; tells waiting committers there is
    /// room again.
    pub(crate) fn drain(&self, into: &mut Vec<Handoff>) {
        // Empty (or, never while the pipe lives, disconnected) ends it.
        while let Ok(h) = self.rx.try_recv() {
            into.push(h);
        }
        if self.admitting.load(Ordering::Acquire) > 0 {
            let _guard = self.room.0.lock();
            self.room.1.notify_all();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Whether each push should wake the controller (false: it drains on
    /// a timer).
    pub(crate) fn set_wake_per_push(&self, wake: bool) {
        self.wake_per_push.store(wake, Ordering::Release);
    }

    /// Resolves after a push that woke the controller.
    pub(crate) async fn woken(&self) {
        self.wake.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoffs_drain_in_order() {
        let pipe = CommitPipe::new();
        pipe.push(Handoff::Reset);
        pipe.push(Handoff::Available(true));
        let mut out = Vec::new();
        pipe.drain(&mut out);
        assert!(matches!(
            out[..],
            [Handoff::Reset, Handoff::Available(true)]
        ));
        assert!(pipe.is_empty());
    }

    #[test]
    fn admission_waits_for_room_and_a_drain_lets_it_in() {
        let pipe = std::sync::Arc::new(CommitPipe::new());
        for _ in 0..=COMMIT_PIPE_DELTAS_MAX {
            pipe.push(Handoff::Reset);
        }
        let admitted = std::sync::Arc::new(AtomicBool::new(false));
        let waiter = {
            let (pipe, admitted) = (pipe.clone(), admitted.clone());
            std::thread::spawn(move || {
                pipe.admit();
                admitted.store(true, Ordering::Release);
            })
        };
        // The waiter is parked on a full pipe until the drain.
        while pipe.admitting.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }
        assert!(!admitted.load(Ordering::Acquire));
        pipe.drain(&mut Vec::new());
        waiter.join().unwrap();
        assert!(admitted.load(Ordering::Acquire));
    }
}
