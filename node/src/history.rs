//! Checking what clients saw, as Jepsen does: a history of reads and
//! writes of registers (a key's value, a record's payload), each with the
//! time it was invoked and the time its reply came, is checked for
//! linearizability: there is one order of the operations, each taking
//! effect at one instant between its invocation and its reply, in which
//! every read returns the latest write before it.
//!
//! Writes carry values unique per key (a writer id and a counter), so each
//! read names the one write it saw. For such histories linearizability is
//! decidable in O(n log n) per key (Gibbons and Korach, "Testing shared
//! memories", 1997; Golab, Li and Shah, "Analyzing consistency properties
//! for fun and profit", 2011): group each write with the reads of its value
//! (a *cluster*); let `f` be the earliest reply and `s` the latest
//! invocation in the cluster. If `f < s` the cluster's zone `[f, s]` is
//! *forward* — the write must take effect by `f` and its value must still
//! be there at `s` — else it is *backward* (`[s, f]`, a window in which the
//! write and all its reads overlap). The history is linearizable exactly
//! when no two forward zones overlap and no backward zone lies inside a
//! forward one, besides the plain checks: a read returns a value that was
//! written, by a write invoked before the read replied.
//!
//! A write whose outcome is unknown (an error, a timeout, a dropped
//! connection) may or may not have happened: if some read returns its
//! value it took effect at some instant after its invocation (its reply
//! time is taken as never), else it is left out. A read that failed is
//! left out. The key's value before any write is the *initial* cluster,
//! written before everything.
//!
//! Reads from a hot secondary are not linearizable by design (it applies
//! what the primary committed, later): [`History::check_stale_reads`]
//! checks what it does promise — every value read was written, by a write
//! invoked before the read replied, never an invented or future one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Nanoseconds since the history began.
pub type Time = u64;

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Wrote this value.
    Write(Vec<u8>),
    /// Read this value (`None`: the key was absent).
    Read(Option<Vec<u8>>),
}

/// One operation: what it did, on which key, when it was invoked and when
/// its reply came (`None`: the outcome is unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub key: Vec<u8>,
    pub kind: Kind,
    pub invoked: Time,
    pub completed: Option<Time>,
}

/// Why a history is not linearizable (or not well formed).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("key {key:?}: value {value:?} written twice (values must be unique)")]
    DuplicateWrite { key: String, value: String },
    #[error("key {key:?}: a read returned {value:?}, which no write wrote")]
    ReadOfUnwritten { key: String, value: String },
    #[error("key {key:?}: a read returned {value:?} before its write was invoked")]
    ReadFromTheFuture { key: String, value: String },
    #[error("key {key:?}: {first:?} and {second:?} must each hold the key throughout overlapping intervals")]
    OverlappingZones {
        key: String,
        first: String,
        second: String,
    },
    #[error("key {key:?}: {inner:?} was written and read entirely while {outer:?} must have held the key")]
    NestedZone {
        key: String,
        outer: String,
        inner: String,
    },
}

/// What a check looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub keys: usize,
    pub writes: usize,
    /// Writes with an unknown outcome that some read showed took effect.
    pub unknown_seen: usize,
    /// Writes with an unknown outcome no read showed: left out.
    pub unknown_unseen: usize,
    pub reads: usize,
}

/// A history being recorded by several threads.
#[derive(Debug)]
pub struct History {
    origin: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            origin: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }
}

impl History {
    /// Now, on the history's clock: call just before sending a request.
    pub fn now(&self) -> Time {
        self.origin.elapsed().as_nanos() as Time
    }

    /// Records an operation whose reply came now (`completed`: whether it
    /// succeeded; a failed read is dropped, a failed write's outcome is
    /// unknown).
    pub fn record(&self, key: &[u8], kind: Kind, invoked: Time, succeeded: bool) {
        let completed = succeeded.then(|| self.now());
        if !succeeded && matches!(kind, Kind::Read(_)) {
            return;
        }
        self.push(Op {
            key: key.to_vec(),
            kind,
            invoked,
            completed,
        });
    }

    /// Records `op` as it is.
    pub fn push(&self, op: Op) {
        self.ops.lock().expect("history lock").push(op);
    }

    /// The operations recorded so far.
    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("history lock").clone()
    }

    /// Checks the history for linearizability, key by key.
    pub fn check(&self) -> Result<Checked, Violation> {
        check(&self.ops())
    }

    /// Checks reads from a secondary (`reads`) against the writes of this
    /// history: each value read was written, and not later than the read.
    pub fn check_stale_reads(&self, reads: &History) -> Result<usize, Violation> {
        let writes = self.ops();
        let mut written: HashMap<(&[u8], &[u8]), Time> = HashMap::new();
        for op in &writes {
            if let Kind::Write(v) = &op.kind {
                written.insert((&op.key, v), op.invoked);
            }
        }
        let reads = reads.ops();
        for op in &reads {
            let Kind::Read(Some(v)) = &op.kind else {
                continue;
            };
            let completed = op.completed.unwrap_or(Time::MAX);
            match written.get(&(&op.key[..], &v[..])) {
                None => return Err(unwritten(&op.key, v)),
                Some(&invoked) if invoked > completed => return Err(future(&op.key, v)),
                Some(_) => {}
            }
        }
        Ok(reads.len())
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn unwritten(key: &[u8], value: &[u8]) -> Violation {
    Violation::ReadOfUnwritten {
        key: text(key),
        value: text(value),
    }
}

fn future(key: &[u8], value: &[u8]) -> Violation {
    Violation::ReadFromTheFuture {
        key: text(key),
        value: text(value),
    }
}

/// Checks `ops` for linearizability, key by key.
pub fn check(ops: &[Op]) -> Result<Checked, Violation> {
    let mut by_key: HashMap<&[u8], Vec<&Op>> = HashMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut checked = Checked {
        keys: by_key.len(),
        ..Checked::default()
    };
    for (key, ops) in by_key {
        check_key(key, &ops, &mut checked)?;
    }
    Ok(checked)
}

/// One value's write and reads: the earliest reply, the latest invocation.
#[derive(Clone, Copy, Debug)]
struct Cluster {
    write_invoked: Time,
    first_reply: Time,
    last_invocation: Time,
    /// Some read returned it.
    read: bool,
    /// The write's outcome is unknown.
    unknown: bool,
}

fn check_key(key: &[u8], ops: &[&Op], checked: &mut Checked) -> Result<(), Violation> {
    // The initial value: written and acknowledged before everything.
    let mut clusters: HashMap<Option<&[u8]>, Cluster> = HashMap::new();
    clusters.insert(
        None,
        Cluster {
            write_invoked: 0,
            first_reply: 0,
            last_invocation: 0,
            read: false,
            unknown: false,
        },
    );
    for op in ops {
        if let Kind::Write(v) = &op.kind {
            checked.writes += 1;
            let cluster = Cluster {
                write_invoked: op.invoked,
                first_reply: op.completed.unwrap_or(Time::MAX),
                last_invocation: op.invoked,
                read: false,
                unknown: op.completed.is_none(),
            };
            if clusters.insert(Some(v), cluster).is_some() {
                return Err(Violation::DuplicateWrite {
                    key: text(key),
                    value: text(v),
                });
            }
        }
    }
    for op in ops {
        let Kind::Read(v) = &op.kind else {
            continue;
        };
        let Some(completed) = op.completed else {
            continue;
        };
        checked.reads += 1;
        let value = v.as_deref();
        let cluster = clusters
            .get_mut(&value)
            .ok_or_else(|| unwritten(key, value.unwrap_or_default()))?;
        if cluster.write_invoked > completed {
            return Err(future(key, value.unwrap_or_default()));
        }
        cluster.read = true;
        cluster.first_reply = cluster.first_reply.min(completed);
        cluster.last_invocation = cluster.last_invocation.max(op.invoked);
    }
    let mut forward: Vec<(Time, Time, Option<&[u8]>)> = Vec::new();
    let mut backward: Vec<(Time, Time, Option<&[u8]>)> = Vec::new();
    for (value, c) in &clusters {
        if c.unknown {
            if !c.read {
                checked.unknown_unseen += 1;
                continue;
            }
            checked.unknown_seen += 1;
        }
        if c.first_reply < c.last_invocation {
            forward.push((c.first_reply, c.last_invocation, *value));
        } else {
            backward.push((c.last_invocation, c.first_reply, *value));
        }
    }
    let name = |v: Option<&[u8]>| v.map_or("(absent)".to_string(), text);
    forward.sort_unstable();
    for pair in forward.windows(2) {
        // Sorted by start: any two that overlap include two neighbours
        // that do.
        if pair[1].0 < pair[0].1 {
            return Err(Violation::OverlappingZones {
                key: text(key),
                first: name(pair[0].2),
                second: name(pair[1].2),
            });
        }
    }
    for &(start, end, value) in &backward {
        // The one forward zone that could hold it: the last starting no
        // later (the initial value's zone starts at 0, with the history).
        let i = forward.partition_point(|z| z.0 <= start);
        if let Some(outer) = i.checked_sub(1).map(|i| forward[i]) {
            if end <= outer.1 {
                return Err(Violation::NestedZone {
                    key: text(key),
                    outer: name(outer.2),
                    inner: name(value),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(v: &str, invoked: Time, completed: Option<Time>) -> Op {
        Op {
            key: b"k".to_vec(),
            kind: Kind::Write(v.as_bytes().to_vec()),
            invoked,
            completed,
        }
    }

    fn read(v: Option<&str>, invoked: Time, completed: Time) -> Op {
        Op {
            key: b"k".to_vec(),
            kind: Kind::Read(v.map(|v| v.as_bytes().to_vec())),
            invoked,
            completed: Some(completed),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let ok = [
            read(None, 1, 2),
            write("a", 10, Some(20)),
            read(Some("a"), 30, 40),
            // Concurrent with the write of b: either value is fine.
            write("b", 50, Some(100)),
            read(Some("a"), 60, 70),
            read(Some("b"), 80, 90),
            read(Some("b"), 110, 120),
        ];
        let checked = check(&ok).unwrap();
        assert_eq!((checked.writes, checked.reads), (2, 5));
        // A read concurrent with the first write may see nothing yet.
        check(&[write("a", 10, Some(20)), read(None, 15, 25)]).unwrap();
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_fails() {
        let stale = [
            write("a", 0, Some(10)),
            write("b", 20, Some(30)),
            read(Some("a"), 40, 50),
        ];
        assert!(matches!(check(&stale), Err(Violation::NestedZone { .. })));
        // Reading nothing after a write was acknowledged, likewise.
        let lost = [write("a", 0, Some(10)), read(None, 20, 30)];
        assert!(check(&lost).is_err());
    }

    #[test]
    fn values_flipping_back_and_forth_fail() {
        // Two concurrent writes; readers after each other see a, b, a.
        let flip = [
            write("a", 0, Some(100)),
            write("b", 0, Some(100)),
            read(Some("a"), 10, 20),
            read(Some("b"), 30, 40),
            read(Some("a"), 50, 60),
        ];
        assert!(check(&flip).is_err());
        // a, b, b is fine.
        let fine = [
            write("a", 0, Some(100)),
            write("b", 0, Some(100)),
            read(Some("a"), 10, 20),
            read(Some("b"), 30, 40),
            read(Some("b"), 50, 60),
        ];
        check(&fine).unwrap();
    }

    #[test]
    fn reads_of_unwritten_or_future_values_fail() {
        assert!(matches!(
            check(&[read(Some("x"), 0, 10)]),
            Err(Violation::ReadOfUnwritten { .. })
        ));
        assert!(matches!(
            check(&[read(Some("a"), 0, 10), write("a", 20, Some(30))]),
            Err(Violation::ReadFromTheFuture { .. })
        ));
        assert!(matches!(
            check(&[write("a", 0, Some(1)), write("a", 2, Some(3))]),
            Err(Violation::DuplicateWrite { .. })
        ));
    }

    #[test]
    fn a_write_of_unknown_outcome_may_or_may_not_have_happened() {
        // Seen: it happened, some time after its invocation.
        let seen = [
            write("a", 0, Some(10)),
            write("b", 20, None),
            read(Some("b"), 1000, 1010),
        ];
        let checked = check(&seen).unwrap();
        assert_eq!(checked.unknown_seen, 1);
        // Not seen: left out.
        let unseen = [
            write("a", 0, Some(10)),
            write("b", 20, None),
            read(Some("a"), 30, 40),
        ];
        assert_eq!(check(&unseen).unwrap().unknown_unseen, 1);
        // Seen, then gone back to the older value: not linearizable.
        let back = [
            write("a", 0, Some(10)),
            write("b", 20, None),
            read(Some("b"), 30, 40),
            read(Some("a"), 50, 60),
        ];
        assert!(check(&back).is_err());
    }

    #[test]
    fn stale_reads_from_a_secondary_must_still_be_written_values() {
        let primary = History::default();
        primary.push(write("a", 0, Some(10)));
        primary.push(write("b", 20, Some(30)));
        let secondary = History::default();
        // Stale is allowed.
        secondary.push(read(Some("a"), 40, 50));
        secondary.push(read(None, 40, 50));
        assert_eq!(primary.check_stale_reads(&secondary), Ok(2));
        secondary.push(read(Some("z"), 40, 50));
        assert!(primary.check_stale_reads(&secondary).is_err());
        let early = History::default();
        early.push(read(Some("b"), 5, 15));
        assert!(matches!(
            primary.check_stale_reads(&early),
            Err(Violation::ReadFromTheFuture { .. })
        ));
    }
}
