//! The write lease: how long this primary may go on accepting and
//! acknowledging writes without hearing from whoever decides who is
//! primary (the coordinator, in `hotblock-node`).
//!
//! **Why here, on the write path.** Two writable primaries must never
//! overlap. The coordinator elects a new primary only once the old one's
//! lease has expired there; so the old one must stop before that moment,
//! measured on its own monotonic clock. The holder of the lease extends it
//! after each renewal the coordinator confirmed ([`WriteLease::extend_until`]);
//! a [`Db`](crate::Db) with a lease refuses to begin a transaction once it
//! has run out, and does not acknowledge one that completes after it ran
//! out (its outcome is then unknown: the next primary may not hold it).
//! Time, not a message, closes the gate: a process paused or cut off
//! closes it without running any code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A deadline on writes, shared by the coordinator's thread (which extends
/// it) and every writer (which reads it). Closed until first extended.
#[derive(Debug)]
pub struct WriteLease {
    /// The instant the deadline counts from.
    base: Instant,
    /// Nanoseconds after `base` until which writes are allowed; 0: closed.
    until_ns: AtomicU64,
}

impl Default for WriteLease {
    fn default() -> Self {
        WriteLease {
            base: Instant::now(),
            until_ns: AtomicU64::new(0),
        }
    }
}

impl WriteLease {
    /// A closed lease: no writes until it is extended.
    pub fn new() -> WriteLease {
        WriteLease::default()
    }

    /// Allows writes until `until` (never moves the deadline back: an
    /// answer to an older renewal that arrives late extends nothing).
    pub fn extend_until(&self, until: Instant) {
        let ns = until.saturating_duration_since(self.base).as_nanos() as u64;
        self.until_ns.fetch_max(ns.max(1), Ordering::SeqCst);
    }

    /// Closes the gate now (the lease is known lost, or handed over).
    pub fn revoke(&self) {
        self.until_ns.store(0, Ordering::SeqCst);
    }

    /// How long writes are still allowed; `None` once closed.
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until_ns.load(Ordering::SeqCst);
        let now = self.base.elapsed().as_nanos() as u64;
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Whether a write may begin, or be acknowledged, now.
    pub fn is_valid(&self) -> bool {
        self.remaining().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_closed_until_extended_and_closes_by_itself() {
        let lease = WriteLease::new();
        assert!(!lease.is_valid());
        lease.extend_until(Instant::now() + Duration::from_millis(50));
        assert!(lease.is_valid());
        // A late answer to an older renewal does not shorten it.
        lease.extend_until(Instant::now());
        assert!(lease.remaining().unwrap() > Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!lease.is_valid(), "time alone closes it");
        lease.extend_until(Instant::now() + Duration::from_secs(5));
        lease.revoke();
        assert!(!lease.is_valid());
    }
}
