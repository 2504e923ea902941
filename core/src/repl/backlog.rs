//! The primary's backlog: the latest committed deltas, bounded in bytes.
//!
//! A secondary that reconnects at an LSN the backlog still holds catches up
//! from it (partial resync); one that fell further behind needs a snapshot.
//! Live streaming reads from here too, so a session is a cursor in it.

use std::collections::VecDeque;
use std::time::Instant;

use crate::delta::Delta;
use crate::ids::Lsn;

#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) delta: Delta,
    pub(crate) committed_at: Instant,
    pub(crate) bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Backlog {
    entries: VecDeque<Entry>,
    bytes: usize,
    bytes_max: usize,
}

impl Backlog {
    pub(crate) fn new(bytes_max: usize) -> Self {
        Backlog {
            entries: VecDeque::new(),
            bytes: 0,
            bytes_max,
        }
    }

    /// Appends the next delta; drops the oldest while over the byte bound,
    /// but always keeps the newest.
    pub(crate) fn push(&mut self, delta: Delta, now: Instant) {
        // Deltas arrive in LSN order; after a gap (a relay that resynced)
        // the old entries no longer lead to the new ones.
        if self.last().is_some_and(|l| delta.lsn() != l.next()) {
            self.entries.clear();
            self.bytes = 0;
        }
        let bytes = delta.encoded_len();
        self.entries.push_back(Entry {
            delta,
            committed_at: now,
            bytes,
        });
        self.bytes += bytes;
        while self.bytes > self.bytes_max && self.entries.len() > 1 {
            let old = self.entries.pop_front().expect("non-empty");
            self.bytes -= old.bytes;
        }
    }

    pub(crate) fn first(&self) -> Option<Lsn> {
        self.entries.front().map(|e| e.delta.lsn())
    }

    pub(crate) fn last(&self) -> Option<Lsn> {
        self.entries.back().map(|e| e.delta.lsn())
    }

    /// The entry with this LSN, if still held.
    pub(crate) fn get(&self, lsn: Lsn) -> Option<&Entry> {
        let first = self.first()?;
        let i = lsn.0.checked_sub(first.0)? as usize;
        self.entries.get(i)
    }

    /// Whether a node at `lsn` (at most `head`, the controller's head) can
    /// catch up from here alone: nothing after `lsn` has been evicted.
    /// Entries past the last one held are commits the controller has yet
    /// to be handed (it may lag the engine); they will arrive in order.
    pub(crate) fn covers_after(&self, lsn: Lsn, head: Lsn) -> bool {
        lsn == head || self.first().is_some_and(|first| lsn.next() >= first)
    }

    /// Asserts the backlog's shape: LSNs consecutive (`push` starts over
    /// after a gap), none past `head` (the controller's head: the last LSN
    /// it was handed), and over `bytes_max` only to keep the newest entry.
    /// Not asserted: that the last entry *is* `head` — commits the engine
    /// made before the controller started (or before a relay's reset) may
    /// still be on their way, and reach the backlog after `head` was set
    /// past them. O(1), plus a walk over every entry (each LSN, the byte
    /// count) while there are at most `walk_max`.
    pub(crate) fn check_invariants(&self, head: Lsn, walk_max: usize) {
        if let (Some(first), Some(last)) = (self.first(), self.last()) {
            assert_eq!(
                last.0 - first.0 + 1,
                self.entries.len() as u64,
                "backlog from {first} to {last} in {} entries",
                self.entries.len()
            );
            assert!(last <= head, "backlog holds {last}, past the head {head}");
        }
        assert!(
            self.bytes <= self.bytes_max || self.entries.len() == 1,
            "backlog of {} bytes in {} entries, over its bound of {}",
            self.bytes,
            self.entries.len(),
            self.bytes_max
        );
        if self.entries.len() > walk_max {
            return;
        }
        for (a, b) in self.entries.iter().zip(self.entries.iter().skip(1)) {
            let (a, b) = (a.delta.lsn(), b.delta.lsn());
            assert_eq!(b, a.next(), "backlog not contiguous: {a} then {b}");
        }
        let bytes: usize = self.entries.iter().map(|e| e.bytes).sum();
        assert_eq!(bytes, self.bytes, "backlog byte count");
    }

    /// Bytes of the entries after `lsn`: a session's unacknowledged bytes.
    pub(crate) fn bytes_after(&self, lsn: Lsn) -> usize {
        self.entries
            .iter()
            .rev()
            .take_while(|e| e.delta.lsn() > lsn)
            .map(|e| e.bytes)
            .sum()
    }
}
