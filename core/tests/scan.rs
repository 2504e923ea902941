//! Scans by unique key (`ReadView::scan`, behind `SCAN` and `REC.SCAN`):
//! a key present from a scan's first step to its last is returned, whatever
//! is inserted, overwritten or deleted between steps, and a scan ends.

use std::collections::{BTreeSet, HashSet};

use hotblock_core::{DatabaseOptions, Engine, EngineConfig, SCAN_STEPS_MAX};

fn key(i: u64) -> Vec<u8> {
    format!("key:{i}").into_bytes()
}

fn engine_with(keys: impl IntoIterator<Item = u64>) -> Engine {
    let engine = Engine::new(EngineConfig::default());
    engine
        .create_database("d", DatabaseOptions::default().block_size(4096))
        .unwrap();
    let mut txn = engine.begin("d").unwrap();
    for i in keys {
        txn.put(&key(i), &[], b"v").unwrap();
    }
    txn.commit().unwrap();
    engine
}

#[test]
fn a_scan_returns_every_key_present_throughout_despite_writes_between_steps() {
    let engine = engine_with(0..3_000);
    let db = engine.database("d").unwrap();
    // Keys 0..1000 stay, 1000..2000 are overwritten (with longer values,
    // so records move), 2000..3000 are deleted; 3000.. are inserted.
    let mut seen = HashSet::new();
    let (mut cursor, mut steps, mut next_new) = (0, 0, 3_000u64);
    loop {
        let step = db.read().scan(cursor, 10).unwrap();
        seen.extend(step.keys);
        steps += 1;
        let mut txn = engine.begin("d").unwrap();
        for _ in 0..5 {
            let i = 1_000 + (steps * 7 + next_new) % 1_000;
            txn.put(&key(i), &[], &[b'x'; 200]).unwrap();
            txn.delete(&key(2_000 + (steps * 13 + next_new) % 1_000))
                .unwrap();
            txn.put(&key(next_new), &[], b"new").unwrap();
            next_new += 1;
        }
        txn.commit().unwrap();
        cursor = step.next;
        if cursor == 0 {
            break;
        }
        assert!(steps < 100_000, "the scan does not end");
    }
    for i in 0..2_000 {
        assert!(
            seen.contains(&key(i)),
            "key {i} was present throughout and skipped"
        );
    }
}

#[test]
fn a_large_database_is_scanned_in_a_bounded_number_of_steps() {
    let n = 20_000u64;
    let engine = engine_with(0..n);
    let db = engine.database("d").unwrap();
    let (mut cursor, mut steps) = (0, 0);
    let mut seen = BTreeSet::new();
    loop {
        let step = db.read().scan(cursor, 1).unwrap();
        for k in step.keys {
            assert!(seen.insert(k), "a key came back twice with no writes");
        }
        steps += 1;
        cursor = step.next;
        if cursor == 0 {
            break;
        }
    }
    assert_eq!(seen.len() as u64, n);
    assert!(steps <= SCAN_STEPS_MAX + 1, "{steps} steps");
}

#[test]
fn an_empty_database_scans_in_one_step_and_has_no_random_key() {
    let engine = engine_with(std::iter::empty());
    let db = engine.database("d").unwrap();
    let step = db.read().scan(0, 10).unwrap();
    assert_eq!((step.next, step.keys.len()), (0, 0));
    assert_eq!(db.read().random_key(12345).unwrap(), None);
}

#[test]
fn random_keys_are_keys_and_vary() {
    let engine = engine_with(0..100);
    let db = engine.database("d").unwrap();
    let mut seen = HashSet::new();
    for r in 0..200u64 {
        let k = db
            .read()
            .random_key(r.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .unwrap()
            .expect("a key");
        assert!(db.read().contains(&k).unwrap());
        seen.insert(k);
    }
    assert!(seen.len() > 20, "only {} distinct keys", seen.len());
}
