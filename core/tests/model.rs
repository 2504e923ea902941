//! Model-based tests: random transactions over several databases, checked
//! against a `BTreeMap` model, with every delta applied to a hot follower
//! (indexes maintained) and a passive one (blocks only, indexes rebuilt at
//! the end). After every commit: equal digests on all three engines, and
//! every query agrees with the model. Some transactions span two
//! databases (`Engine::begin_across`): one LSN, one delta, all or nothing.

use std::collections::BTreeMap;

use bytes::Bytes;
use hotblock_core::{DatabaseOptions, Delta, Engine, EngineConfig, Error, IndexMode, Role};
use proptest::prelude::*;

const KEYS: u8 = 24;
const VALUES: u8 = 4;

/// Databases of the run: name, non-unique keys, block size.
const DBS: [(&str, &[&str], usize); 3] = [
    ("a", &["x", "y"], 4096),
    ("b", &["z"], 8192),
    ("c", &[], 4096),
];

#[derive(Clone, Debug)]
enum Write {
    Put {
        key: u8,
        values: [Option<u8>; 2],
        payload: (u8, u16),
    },
    Insert {
        key: u8,
        values: [Option<u8>; 2],
        payload: (u8, u16),
    },
    Delete {
        key: u8,
    },
}

#[derive(Clone, Debug)]
enum Step {
    Txn {
        db: usize,
        /// A second database; each write with `true` goes to it.
        other: Option<usize>,
        writes: Vec<(bool, Write)>,
        commit: bool,
    },
    Compact {
        db: usize,
    },
    Relocate {
        db: usize,
        on_follower: bool,
    },
}

fn write() -> impl Strategy<Value = Write> {
    let key = 0..KEYS;
    let values = [prop::option::of(0..VALUES), prop::option::of(0..VALUES)];
    // Payload sizes cover in-place updates, growth (tombstone + append) and
    // records near a 4 KiB block's capacity.
    let payload = (
        any::<u8>(),
        prop_oneof![0u16..64, 64u16..1200, 3000u16..4000],
    );
    prop_oneof![
        4 => (key.clone(), values.clone(), payload.clone())
            .prop_map(|(key, values, payload)| Write::Put { key, values, payload }),
        1 => (key.clone(), values, payload)
            .prop_map(|(key, values, payload)| Write::Insert { key, values, payload }),
        2 => key.prop_map(|key| Write::Delete { key }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (
            0..DBS.len(),
            prop::option::weighted(0.25, 0..DBS.len()),
            prop::collection::vec((any::<bool>(), write()), 1..8),
            prop::bool::weighted(0.85),
        )
            .prop_map(|(db, other, writes, commit)| Step::Txn { db, other, writes, commit }),
        1 => (0..DBS.len()).prop_map(|db| Step::Compact { db }),
        1 => (0..DBS.len(), any::<bool>()).prop_map(|(db, on_follower)| Step::Relocate { db, on_follower }),
    ]
}

type Row = (Vec<Option<Vec<u8>>>, Vec<u8>);
type Model = Vec<BTreeMap<Vec<u8>, Row>>;

fn key_bytes(k: u8) -> Vec<u8> {
    format!("key-{k:03}").into_bytes()
}

fn value_bytes(v: u8) -> Vec<u8> {
    format!("v{v}").into_bytes()
}

fn row(db: usize, values: [Option<u8>; 2], (fill, len): (u8, u16)) -> Row {
    let n = DBS[db].1.len();
    let values = values[..n].iter().map(|v| v.map(value_bytes)).collect();
    // Big payloads only fit the bigger blocks' databases; cap them for "a" and "c".
    let cap = if DBS[db].2 == 4096 { 3800 } else { 4000 };
    (values, vec![fill; (len as usize).min(cap)])
}

struct Cluster {
    primary: Engine,
    hot: Engine,
    passive: Engine,
    model: Model,
}

impl Cluster {
    fn new() -> Self {
        let follower = |mode| {
            Engine::new(EngineConfig {
                role: Role::Follower(mode),
                ..Default::default()
            })
        };
        let c = Cluster {
            primary: Engine::new(EngineConfig::default()),
            hot: follower(IndexMode::Maintained),
            passive: follower(IndexMode::Deferred),
            model: vec![BTreeMap::new(); DBS.len()],
        };
        for (name, indexes, block_size) in DBS {
            let committed = c
                .primary
                .create_database(
                    name,
                    DatabaseOptions::with_indexes(indexes.iter().copied()).block_size(block_size),
                )
                .unwrap();
            c.ship(&committed.delta);
        }
        c
    }

    /// Applies a delta to both followers, through its encoding.
    fn ship(&self, delta: &Delta) {
        let decoded = Delta::decode(&Bytes::from(delta.encode())).expect("own deltas decode");
        assert_eq!(&decoded, delta);
        for follower in [&self.hot, &self.passive] {
            let lsn = follower.apply(&decoded).expect("own deltas apply");
            assert_eq!(lsn, self.primary.lsn());
        }
    }

    fn run_txn(
        &mut self,
        first: usize,
        other: Option<usize>,
        writes: &[(bool, Write)],
        commit: bool,
    ) -> Result<(), TestCaseError> {
        let other = other.unwrap_or(first);
        let mut txn = self
            .primary
            .begin_across(&[DBS[first].0, DBS[other].0])
            .unwrap();
        let mut staged = self.model.clone();
        for (to_other, w) in writes {
            let db = if *to_other { other } else { first };
            txn.select(DBS[db].0).unwrap();
            let staged = &mut staged[db];
            match *w {
                Write::Put {
                    key,
                    values,
                    payload,
                } => {
                    let (vals, payload) = row(db, values, payload);
                    let refs: Vec<Option<&[u8]>> = vals.iter().map(|v| v.as_deref()).collect();
                    txn.put(&key_bytes(key), &refs, &payload).unwrap();
                    staged.insert(key_bytes(key), (vals, payload));
                }
                Write::Insert {
                    key,
                    values,
                    payload,
                } => {
                    let (vals, payload) = row(db, values, payload);
                    let refs: Vec<Option<&[u8]>> = vals.iter().map(|v| v.as_deref()).collect();
                    let result = txn.insert(&key_bytes(key), &refs, &payload);
                    match staged.entry(key_bytes(key)) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            prop_assert!(matches!(result, Err(Error::DuplicateKey)), "{result:?}");
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            result.unwrap();
                            slot.insert((vals, payload));
                        }
                    }
                }
                Write::Delete { key } => {
                    let existed = txn.delete(&key_bytes(key)).unwrap();
                    prop_assert_eq!(existed, staged.remove(&key_bytes(key)).is_some());
                }
            }
            // The transaction sees its own writes.
            prop_assert_eq!(txn.count().unwrap(), staged.len() as u64);
        }
        // Each database of the transaction, as it sees it.
        for db in [first, other] {
            txn.select(DBS[db].0).unwrap();
            let staged = &staged[db];
            for k in 0..KEYS {
                let got = txn
                    .get(&key_bytes(k))
                    .unwrap()
                    .map(|r| (r.values, r.payload));
                prop_assert_eq!(got.as_ref(), staged.get(&key_bytes(k)));
            }
            for (i, index) in DBS[db].1.iter().enumerate() {
                for v in 0..VALUES {
                    let mut got = txn.find(index, &value_bytes(v), None).unwrap();
                    got.sort();
                    prop_assert_eq!(got, expected_find(staged, i, v));
                }
            }
        }
        if let Some(outside) = (0..DBS.len()).find(|i| ![first, other].contains(i)) {
            let refused = txn.select(DBS[outside].0);
            prop_assert!(matches!(refused, Err(Error::NotInTransaction(_))));
        }
        let lsn_before = self.primary.lsn();
        if commit {
            match txn.commit().unwrap() {
                Some(committed) => {
                    prop_assert_eq!(committed.lsn, lsn_before.next());
                    let touched: Vec<_> = committed.delta.sections().map(|(db, _)| db).collect();
                    prop_assert!(touched.windows(2).all(|w| w[0] < w[1]), "{:?}", touched);
                    self.ship(&committed.delta);
                    self.model = staged;
                }
                // Only a transaction that changed nothing.
                None => prop_assert_eq!(&staged, &self.model),
            }
        } else {
            txn.abort();
            prop_assert_eq!(self.primary.lsn(), lsn_before);
        }
        Ok(())
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let digests = self.primary.digests();
        prop_assert_eq!(&digests, &self.hot.digests(), "hot follower digests");
        prop_assert_eq!(
            &digests,
            &self.passive.digests(),
            "passive follower digests"
        );
        for engine in [&self.primary, &self.hot] {
            check_queries(engine, &self.model)?;
        }
        // The passive follower keeps no indexes.
        let passive = self.passive.database("a").unwrap();
        prop_assert!(matches!(
            passive.get(b"key-000"),
            Err(Error::IndexesNotBuilt)
        ));
        Ok(())
    }
}

fn expected_find(rows: &BTreeMap<Vec<u8>, Row>, index: usize, v: u8) -> Vec<Vec<u8>> {
    rows.iter()
        .filter(|(_, (values, _))| values[index].as_deref() == Some(&value_bytes(v)[..]))
        .map(|(k, _)| k.clone())
        .collect()
}

fn check_queries(engine: &Engine, model: &Model) -> Result<(), TestCaseError> {
    for (db, (name, indexes, _)) in DBS.iter().enumerate() {
        let handle = engine.database(name).unwrap();
        let view = handle.read();
        prop_assert_eq!(view.count(), model[db].len() as u64, "count of {}", name);
        for k in 0..KEYS {
            let got = view
                .get(&key_bytes(k))
                .unwrap()
                .map(|r| (r.values, r.payload));
            prop_assert_eq!(
                got.as_ref(),
                model[db].get(&key_bytes(k)),
                "get {} {}",
                name,
                k
            );
        }
        for (i, index) in indexes.iter().enumerate() {
            for v in 0..VALUES {
                let found = view.find(index, &value_bytes(v), None).unwrap();
                let mut sorted = found.clone();
                sorted.sort();
                prop_assert_eq!(
                    &sorted,
                    &expected_find(&model[db], i, v),
                    "find {} {}={}",
                    name,
                    index,
                    v
                );
                prop_assert!(view
                    .find(index, &value_bytes(v), Some(0))
                    .unwrap()
                    .is_empty());
                let limited = view.find(index, &value_bytes(v), Some(1)).unwrap();
                prop_assert_eq!(limited.len(), found.len().min(1));
            }
        }
    }
    Ok(())
}

/// Query answers in the engine's own order, to compare engines exactly.
fn answers(engine: &Engine) -> Vec<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (name, indexes, _) in DBS {
        let db = engine.database(name).unwrap();
        for index in indexes {
            for v in 0..VALUES {
                out.push(db.find(index, &value_bytes(v), None).unwrap());
            }
        }
    }
    out
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut c = Cluster::new();
    c.check()?;
    for step in steps {
        match step {
            Step::Txn {
                db,
                other,
                writes,
                commit,
            } => c.run_txn(db, other, &writes, commit)?,
            Step::Compact { db } => {
                if let Some(committed) = c.primary.compact(DBS[db].0, 8).unwrap() {
                    c.ship(&committed.delta);
                }
            }
            Step::Relocate { db, on_follower } => {
                let engine = if on_follower { &c.hot } else { &c.primary };
                engine.relocate(DBS[db].0).unwrap();
            }
        }
        c.check()?;
    }
    // Indexes rebuilt from blocks answer exactly as the live ones, in the
    // same order; the promoted passive follower then takes writes.
    let live = answers(&c.primary);
    prop_assert_eq!(&answers(&c.hot), &live);
    c.passive.promote().unwrap();
    prop_assert_eq!(&answers(&c.passive), &live);
    check_queries(&c.passive, &c.model)?;
    c.primary.rebuild_indexes().unwrap();
    prop_assert_eq!(&answers(&c.primary), &live);
    let mut txn = c.passive.begin("a").unwrap();
    txn.put(b"after-promotion", &[None, None], b"p").unwrap();
    let committed = txn.commit().unwrap().unwrap();
    prop_assert_eq!(committed.lsn, c.primary.lsn().next());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engines_agree_with_the_model(steps in prop::collection::vec(step(), 1..60)) {
        run(steps)?;
    }
}

#[test]
fn compaction_reclaims_space_and_followers_agree() {
    let mut c = Cluster::new();
    // Fill several blocks of "c" with records that grow each round (so each
    // round tombstones the last), then delete most: compaction must free
    // blocks, and followers must free the same.
    for round in 0..3u8 {
        let len = 900 + 10 * round as usize;
        let mut txn = c.primary.begin("c").unwrap();
        for k in 0..KEYS {
            txn.put(&key_bytes(k), &[], &vec![round; len]).unwrap();
        }
        let committed = txn.commit().unwrap().unwrap();
        c.ship(&committed.delta);
        for k in 0..KEYS {
            c.model[2].insert(key_bytes(k), (vec![], vec![round; len]));
        }
    }
    // Keep keys 0 and 12, which sit in different (non-tail) blocks.
    for k in (0..KEYS).filter(|k| *k != 0 && *k != 12) {
        let mut txn = c.primary.begin("c").unwrap();
        txn.delete(&key_bytes(k)).unwrap();
        c.ship(&txn.commit().unwrap().unwrap().delta);
        c.model[2].remove(&key_bytes(k));
    }
    c.check().unwrap();
    let before = c.primary.stats("c").unwrap();
    assert!(
        before.dead_bytes > 0 && c.primary.needs_compaction("c").unwrap(),
        "{before:?}"
    );
    let mut compactions = 0;
    while let Some(committed) = c.primary.compact("c", 1).unwrap() {
        c.ship(&committed.delta);
        c.check().unwrap();
        compactions += 1;
    }
    let after = c.primary.stats("c").unwrap();
    assert!(compactions > 0);
    assert!(after.blocks < before.blocks, "{before:?} -> {after:?}");
    assert!(
        after.dead_bytes < before.dead_bytes,
        "{before:?} -> {after:?}"
    );
    assert_eq!(after.records, 2);
    c.primary.relocate("c").unwrap();
    c.hot.relocate("c").unwrap();
    c.check().unwrap();
}
