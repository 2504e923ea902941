//! `WATCH`: which clients watch which keys, and the flag that makes a
//! watching client's `EXEC` fail once another write touched one of them.
//!
//! Redis's optimistic check-and-set. A client's [`Watch`] registers
//! `(database, key)` pairs here; every write transaction, while its commit
//! is being made visible (under the databases' state locks, before any
//! reader can see it: `Txn::commit_observed`), calls [`Watches::touch`],
//! which raises the flag of every client watching a key it writes. So a
//! client that registered before a write either sees the flag raised or
//! reads the value from before that write; it can never read the new value
//! with the flag down.
//!
//! `EXEC` begins its transaction on every database it writes *and* every
//! database it watches, and checks its flag holding their writers: any
//! other write to a watched key committed before (flag raised: `EXEC` runs
//! nothing) or commits after `EXEC`. A read-only `EXEC` takes its views of
//! those databases together, then checks the flag: a write its views hold
//! has raised it.
//!
//! A watched key that exists with an expiry time counts as touched once
//! that time passes (as Redis does), whether or not the primary's expiry
//! cycle has deleted it yet.
//!
//! A secondary applies its primary's blocks, not keys, so it cannot tell
//! which keys a replicated transaction wrote: a key watched on a secondary
//! counts as touched once the node's LSN has moved past the LSN at `WATCH`
//! (any replicated transaction, or any commit after a promotion), and one
//! watched on a primary that has since become a secondary counts as
//! touched. Conservative: a spurious retry, never a missed change.
//!
//! With no client watching, a write pays one atomic load.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hotblock_core::{now_ms, Lsn, Written};

/// A watched key: its database's name and the key.
type WatchedKey = (Box<str>, Box<[u8]>);

/// Every client's watched keys. The lock is held only for map operations,
/// never across a wait.
#[derive(Debug, Default)]
pub(crate) struct Watches {
    /// Registrations live; zero lets writes skip the map.
    registered: AtomicUsize,
    keys: Mutex<HashMap<WatchedKey, Vec<Arc<AtomicBool>>>>,
}

impl Watches {
    /// Raises the flag of every client watching a key `written` holds.
    /// Call from `commit_observed`, while the commit is made visible.
    pub(crate) fn touch(&self, written: &Written<'_>) {
        if self.registered.load(Ordering::Acquire) == 0 || written.is_empty() {
            return;
        }
        let keys = self.keys.lock().expect("watch lock");
        // Walk whichever side is smaller: a FLUSHDB of a million keys
        // against three watched keys asks the transaction three times.
        if keys.len() < written.len() {
            for ((watched_db, key), flags) in keys.iter() {
                if &**watched_db == written.db() && written.contains(key) {
                    raise(flags);
                }
            }
        } else {
            let mut probe: WatchedKey = (written.db().into(), Box::default());
            for key in written.keys() {
                probe.1 = key.into();
                if let Some(flags) = keys.get(&probe) {
                    raise(flags);
                }
            }
        }
    }

    fn register(&self, key: WatchedKey, flag: &Arc<AtomicBool>) {
        let mut keys = self.keys.lock().expect("watch lock");
        keys.entry(key).or_default().push(flag.clone());
        self.registered.fetch_add(1, Ordering::Release);
    }

    fn unregister(&self, key: &WatchedKey, flag: &Arc<AtomicBool>) {
        let mut keys = self.keys.lock().expect("watch lock");
        if let Some(flags) = keys.get_mut(key) {
            let before = flags.len();
            flags.retain(|f| !Arc::ptr_eq(f, flag));
            let removed = before - flags.len();
            if flags.is_empty() {
                keys.remove(key);
            }
            self.registered.fetch_sub(removed, Ordering::Release);
        }
    }
}

fn raise(flags: &[Arc<AtomicBool>]) {
    for flag in flags {
        flag.store(true, Ordering::Release);
    }
}

/// One client's watched keys, registered until `EXEC`, `DISCARD`,
/// `UNWATCH` or the connection's end drops it.
#[derive(Debug)]
pub(crate) struct Watch {
    registry: Arc<Watches>,
    /// Raised by a write to any of `keys`.
    touched: Arc<AtomicBool>,
    keys: HashSet<WatchedKey>,
    /// The earliest expiry time (ms since the Unix epoch) of a watched key
    /// that existed when it was watched.
    deadline_ms: Option<u64>,
    /// The node's LSN when a key was first watched while it followed a
    /// primary.
    follower_lsn: Option<Lsn>,
}

/// What `EXEC` knows of the node when it checks a [`Watch`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeNow {
    pub(crate) lsn: Lsn,
    pub(crate) follower: bool,
}

impl Watch {
    pub(crate) fn new(registry: Arc<Watches>) -> Watch {
        Watch {
            registry,
            touched: Arc::new(AtomicBool::new(false)),
            keys: HashSet::new(),
            deadline_ms: None,
            follower_lsn: None,
        }
    }

    /// Notes that a key is watched while the node follows a primary, at
    /// LSN `lsn`.
    pub(crate) fn watching_on_follower(&mut self, lsn: Lsn) {
        self.follower_lsn.get_or_insert(lsn);
    }

    /// Watches `key` of `db` from now on (again is a no-op).
    pub(crate) fn add(&mut self, db: &str, key: &[u8]) {
        let watched: WatchedKey = (db.into(), key.into());
        if self.keys.contains(&watched) {
            return;
        }
        self.registry.register(watched.clone(), &self.touched);
        self.keys.insert(watched);
    }

    /// Notes the expiry time of a key just watched, if it exists and has
    /// one: once it passes, the watch counts as touched.
    pub(crate) fn expires_at(&mut self, expires_at_ms: Option<u64>) {
        if let Some(at) = expires_at_ms {
            self.deadline_ms = Some(self.deadline_ms.map_or(at, |d| d.min(at)));
        }
    }

    /// The databases with watched keys.
    pub(crate) fn databases(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(db, _)| &**db)
    }

    /// Whether a write touched a watched key since it was watched, or one
    /// has expired since, or (see the module doc) the node's role or LSN
    /// says one may have been.
    pub(crate) fn touched(&self, node: NodeNow) -> bool {
        self.touched.load(Ordering::Acquire)
            || self.deadline_ms.is_some_and(|at| at <= now_ms())
            || match self.follower_lsn {
                Some(at) => node.lsn > at,
                None => node.follower,
            }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for key in &self.keys {
            self.registry.unregister(key, &self.touched);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotblock_core::{DatabaseOptions, Engine, EngineConfig};

    fn engine() -> Engine {
        let engine = Engine::new(EngineConfig::default());
        engine
            .create_database("a", DatabaseOptions::default())
            .unwrap();
        engine
            .create_database("b", DatabaseOptions::default())
            .unwrap();
        engine
    }

    fn write(engine: &Engine, watches: &Watches, db: &str, keys: &[&[u8]]) {
        let mut txn = engine.begin(db).unwrap();
        for key in keys {
            txn.put(key, &[], b"v").unwrap();
        }
        txn.commit_observed(|w| watches.touch(&w)).unwrap();
    }

    #[test]
    fn a_write_to_a_watched_key_raises_only_its_watchers_flags() {
        let engine = engine();
        let watches = Arc::new(Watches::default());
        let mut on_k = Watch::new(watches.clone());
        on_k.add("a", b"k");
        on_k.add("a", b"k");
        let mut on_other = Watch::new(watches.clone());
        on_other.add("a", b"other");
        on_other.add("b", b"k");
        write(&engine, &watches, "a", &[b"x", b"y"]);
        write(&engine, &watches, "b", &[b"other"]);
        assert!(!on_k.touched(PRIMARY) && !on_other.touched(PRIMARY));
        write(&engine, &watches, "a", &[b"x", b"k"]);
        assert!(on_k.touched(PRIMARY));
        assert!(!on_other.touched(PRIMARY));
        // More written keys than watched ones walks the watched side.
        let many: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
        let mut keys: Vec<&[u8]> = many.iter().map(|k| &k[..]).collect();
        keys.push(b"k");
        write(&engine, &watches, "b", &keys);
        assert!(on_other.touched(PRIMARY));
    }

    const PRIMARY: NodeNow = NodeNow {
        lsn: Lsn(1),
        follower: false,
    };

    #[test]
    fn on_a_follower_any_replicated_transaction_counts_as_touched() {
        let watches = Arc::new(Watches::default());
        let follower = |lsn| NodeNow {
            lsn: Lsn(lsn),
            follower: true,
        };
        let mut w = Watch::new(watches.clone());
        w.add("a", b"k");
        w.watching_on_follower(Lsn(7));
        assert!(!w.touched(follower(7)));
        assert!(w.touched(follower(8)));
        // Promoted, then a commit.
        assert!(w.touched(NodeNow {
            lsn: Lsn(8),
            follower: false
        }));
        // Watched on a primary that then became a follower.
        let mut p = Watch::new(watches);
        p.add("a", b"k");
        assert!(!p.touched(PRIMARY));
        assert!(p.touched(follower(1)));
    }

    /// The race a review found: the flag was raised before the commit, so a
    /// client could watch between the two, read the old value, and miss
    /// the write. Raised inside the commit, a watch registered at any point
    /// before the write is visible sees it.
    #[test]
    fn a_watch_registered_while_a_write_is_in_flight_sees_it() {
        let engine = engine();
        let watches = Arc::new(Watches::default());
        write(&engine, &watches, "a", &[b"k"]);
        let mut txn = engine.begin("a").unwrap();
        txn.put(b"k", &[], b"new").unwrap();
        let mut w = Watch::new(watches.clone());
        w.add("a", b"k");
        let db = engine.database("a").unwrap();
        assert_eq!(db.get(b"k").unwrap().unwrap().payload, b"v");
        txn.commit_observed(|x| watches.touch(&x)).unwrap();
        assert!(w.touched(PRIMARY));
    }

    #[test]
    fn a_watched_key_that_expires_counts_as_touched() {
        let watches = Arc::new(Watches::default());
        let mut w = Watch::new(watches.clone());
        w.add("a", b"forever");
        assert!(!w.touched(PRIMARY));
        w.add("a", b"later");
        w.expires_at(Some(now_ms() + 60_000));
        assert!(!w.touched(PRIMARY));
        w.add("a", b"gone");
        w.expires_at(Some(now_ms() - 1));
        assert!(w.touched(PRIMARY));
    }

    #[test]
    fn dropped_watches_leave_nothing_registered() {
        let watches = Arc::new(Watches::default());
        let mut one = Watch::new(watches.clone());
        let mut two = Watch::new(watches.clone());
        one.add("a", b"k");
        two.add("a", b"k");
        two.add("a", b"j");
        assert_eq!(watches.registered.load(Ordering::Relaxed), 3);
        drop(one);
        assert_eq!(watches.keys.lock().unwrap().len(), 2);
        drop(two);
        assert_eq!(watches.registered.load(Ordering::Relaxed), 0);
        assert!(watches.keys.lock().unwrap().is_empty());
    }
}
