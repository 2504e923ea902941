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

use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::limits::{COMMIT_PIPE_ADMIT_WAIT_MAX, COMMIT_PIPE_DELTAS_MAX};
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
    /// Committers waiting in `admit` or `admit_async`, and what they sleep
    /// on (a thread, a task).
    admitting: AtomicUsize,
    room: (Mutex<()>, Condvar),
    room_async: tokio::sync::Notify,
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
            room_async: tokio::sync::Notify::new(),
        }
    }

    /// Queues `handoff`; never blocks (see the module doc).
    pub(crate) fn push(&self, handoff: Handoff) {
        // The receiver lives as long as the pipe: sending cannot fail.
        let _ = self.tx.send(handoff);
        // Pairs with the fence in `set_wake_per_push`: either this load
        // sees the flag set, or the controller's check sees this handoff.
        fence(Ordering::SeqCst);
        if self.wake_per_push.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Waits, outside every lock, until the pipe has room for one more
    /// transaction, or `COMMIT_PIPE_ADMIT_WAIT_MAX` passed.
    pub(crate) fn admit(&self) {
        if self.has_room() {
            return;
        }
        let deadline = Instant::now() + COMMIT_PIPE_ADMIT_WAIT_MAX;
        self.admitting.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.room.0.lock();
        while !self.has_room() {
            if self.room.1.wait_until(&mut guard, deadline).timed_out() {
                self.warn_no_room();
                break;
            }
        }
        drop(guard);
        self.admitting.fetch_sub(1, Ordering::SeqCst);
    }

    /// `admit` for an async caller (the client port's workers): waits on
    /// the task, never on the thread.
    pub(crate) async fn admit_async(&self) {
        if self.has_room() {
            return;
        }
        let deadline = tokio::time::Instant::now() + COMMIT_PIPE_ADMIT_WAIT_MAX;
        self.admitting.fetch_add(1, Ordering::SeqCst);
        loop {
            let room = self.room_async.notified();
            tokio::pin!(room);
            // Registered before the check: a drain after it wakes us.
            room.as_mut().enable();
            if self.has_room() {
                break;
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                self.warn_no_room();
                break;
            }
        }
        self.admitting.fetch_sub(1, Ordering::SeqCst);
    }

    fn has_room(&self) -> bool {
        self.rx.len() <= COMMIT_PIPE_DELTAS_MAX
    }

    fn warn_no_room(&self) {
        tracing::warn!(
            queued = self.rx.len(),
            "the replication controller is behind: a commit goes ahead without room in the pipe"
        );
    }

    /// Everything queued now, in order; tells waiting committers there is
    /// room again.
    pub(crate) fn drain(&self, into: &mut Vec<Handoff>) {
        // Empty (or, never while the pipe lives, disconnected) ends it.
        while let Ok(h) = self.rx.try_recv() {
            into.push(h);
        }
        // Pairs with the increments in `admit*`: a waiter counted after
        // this load saw the room this drain made.
        fence(Ordering::SeqCst);
        if self.admitting.load(Ordering::SeqCst) > 0 {
            let _guard = self.room.0.lock();
            self.room.1.notify_all();
            self.room_async.notify_waiters();
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Whether each push should wake the controller (false: it drains on
    /// a timer).
    pub(crate) fn set_wake_per_push(&self, wake: bool) {
        self.wake_per_push.store(wake, Ordering::SeqCst);
        // The caller checks `is_empty` next; see `push`.
        fence(Ordering::SeqCst);
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

    #[tokio::test]
    async fn async_admission_waits_on_the_task_and_a_drain_lets_it_in() {
        let pipe = std::sync::Arc::new(CommitPipe::new());
        for _ in 0..=COMMIT_PIPE_DELTAS_MAX {
            pipe.push(Handoff::Reset);
        }
        let waiter = {
            let pipe = pipe.clone();
            tokio::spawn(async move { pipe.admit_async().await })
        };
        while pipe.admitting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        pipe.drain(&mut Vec::new());
        tokio::time::timeout(COMMIT_PIPE_ADMIT_WAIT_MAX / 2, waiter)
            .await
            .expect("admitted by the drain, not by the deadline")
            .unwrap();
    }
}
