//! `WATCH`: which clients watch which keys, and the flag that makes a
//! watching client's `EXEC` fail once another write touched one of them.
//!
//! Redis's optimistic check-and-set. A client's [`Watch`] registers
//! `(database, key)` pairs here; every write transaction, *before* it
//! commits and while it still holds its database's writer, calls
//! [`Watches::touch`], which raises the flag of every client watching a key
//! it writes. `EXEC` checks its flag while holding the writer of the
//! database it runs on, so on that database a write is either before the
//! check (flag raised, `EXEC` fails) or after `EXEC`'s commit. A key
//! watched on another database than the one `EXEC` writes is checked
//! without that database's writer: a write racing the `EXEC` there may go
//! unnoticed (documented in `docs/design.md`).
//!
//! Raising flags before the commit means a transaction that then fails
//! still fails the watchers' `EXEC`: a spurious retry, never a missed
//! change. With no client watching, a write pays one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hotblock_core::Txn;

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
    /// Raises the flag of every client watching a key `txn` writes on `db`.
    /// Call before the commit, while `txn` holds the database's writer.
    pub(crate) fn touch(&self, db: &str, txn: &Txn) {
        if self.registered.load(Ordering::Acquire) == 0 || txn.is_empty() {
            return;
        }
        let keys = self.keys.lock().expect("watch lock");
        // Walk whichever side is smaller: a FLUSHDB of a million keys
        // against three watched keys asks the transaction three times.
        if keys.len() < txn.len() {
            for ((watched_db, key), flags) in keys.iter() {
                if &**watched_db == db && txn.writes_key(key) {
                    raise(flags);
                }
            }
        } else {
            let mut probe: WatchedKey = (db.into(), Box::default());
            for key in txn.written_keys() {
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
    keys: Vec<WatchedKey>,
}

impl Watch {
    pub(crate) fn new(registry: Arc<Watches>) -> Watch {
        Watch {
            registry,
            touched: Arc::new(AtomicBool::new(false)),
            keys: Vec::new(),
        }
    }

    /// Watches `key` of `db` from now on (again is a no-op).
    pub(crate) fn add(&mut self, db: &str, key: &[u8]) {
        let watched: WatchedKey = (db.into(), key.into());
        if self.keys.contains(&watched) {
            return;
        }
        self.registry.register(watched.clone(), &self.touched);
        self.keys.push(watched);
    }

    /// Whether a write touched a watched key since it was watched.
    pub(crate) fn touched(&self) -> bool {
        self.touched.load(Ordering::Acquire)
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
        watches.touch(db, &txn);
        txn.commit().unwrap();
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
        assert!(!on_k.touched() && !on_other.touched());
        write(&engine, &watches, "a", &[b"x", b"k"]);
        assert!(on_k.touched());
        assert!(!on_other.touched());
        // More written keys than watched ones walks the watched side.
        let many: Vec<Vec<u8>> = (0..50).map(|i| format!("m{i}").into_bytes()).collect();
        let mut keys: Vec<&[u8]> = many.iter().map(|k| &k[..]).collect();
        keys.push(b"k");
        write(&engine, &watches, "b", &keys);
        assert!(on_other.touched());
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
