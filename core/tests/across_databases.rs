//! Transactions across databases (`Engine::begin_across`): writers that
//! name the same databases in opposite orders never deadlock, and readers
//! of several databases (`Database::read_across`), on the primary and on a
//! follower applying the deltas, see each such transaction whole or not
//! at all.
//!
//! Two accounts, one in each database, trade amounts back and forth; their
//! sum never changes. A reader that saw one side of a transfer would see
//! another sum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use hotblock_core::{
    Database, DatabaseOptions, Delta, DeltaOp, Engine, EngineConfig, HookPurpose, IndexMode, Role,
};

const TOTAL: u64 = 1_000_000;
const TRANSFERS: u64 = 1_500;

fn follower() -> Engine {
    Engine::new(EngineConfig {
        role: Role::Follower(IndexMode::Maintained),
        ..Default::default()
    })
}

fn amount(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().unwrap())
}

fn setup() -> Engine {
    setup_sending(None)
}

/// `setup`, every delta from the first sent to `deltas`.
fn setup_sending(deltas: Option<mpsc::Sender<Delta>>) -> Engine {
    let engine = Engine::new(EngineConfig::default());
    if let Some(tx) = deltas {
        let tx = Mutex::new(tx);
        engine.set_commit_hook(
            HookPurpose::Replication,
            Some(Arc::new(move |d: &Delta| {
                let _ = tx.lock().unwrap().send(d.clone());
            })),
        );
    }
    for name in ["a", "b"] {
        engine
            .create_database(name, DatabaseOptions::default())
            .unwrap();
    }
    let mut txn = engine.begin_across(&["a", "b"]).unwrap();
    txn.put(b"acct", &[], &TOTAL.to_le_bytes()).unwrap();
    txn.select("b").unwrap();
    txn.put(b"acct", &[], &0u64.to_le_bytes()).unwrap();
    let committed = txn.commit().unwrap().unwrap();
    assert!(committed.delta.spans_databases());
    engine
}

/// Moves `n` from one database's account to the other's, naming the
/// databases in the order given.
fn transfer(engine: &Engine, order: [&str; 2], n: u64) {
    let mut txn = engine.begin_across(&order).unwrap();
    let read = |txn: &mut hotblock_core::Txn, db: &str| {
        txn.select(db).unwrap();
        amount(&txn.get(b"acct").unwrap().unwrap().payload)
    };
    let (from, to) = (read(&mut txn, order[0]), read(&mut txn, order[1]));
    let n = n.min(from);
    txn.select(order[0]).unwrap();
    txn.put(b"acct", &[], &(from - n).to_le_bytes()).unwrap();
    txn.select(order[1]).unwrap();
    txn.put(b"acct", &[], &(to + n).to_le_bytes()).unwrap();
    txn.commit().unwrap();
}

/// The sum of both accounts, from views taken together.
fn sum(engine: &Engine) -> u64 {
    let (a, b) = (engine.database("a").unwrap(), engine.database("b").unwrap());
    // Asked in descending id order: taken in ascending order all the same.
    let views = Database::read_across(&[&b, &a]);
    views
        .iter()
        .map(|v| amount(&v.get(b"acct").unwrap().unwrap().payload))
        .sum()
}

#[test]
fn transfers_across_databases_are_whole_on_the_primary_and_a_follower() {
    let (tx, rx) = mpsc::channel::<Delta>();
    let primary = setup_sending(Some(tx));
    let follower = follower();
    let done = Arc::new(AtomicBool::new(false));
    let applier = {
        let follower = follower.clone();
        thread::spawn(move || {
            for delta in rx {
                follower.apply(&delta).unwrap();
            }
        })
    };
    let readers: Vec<_> = [primary.clone(), follower.clone()]
        .into_iter()
        .map(|engine| {
            let done = done.clone();
            thread::spawn(move || {
                let mut reads = 0u64;
                while !done.load(Ordering::Acquire) {
                    assert_eq!(sum(&engine), TOTAL, "a reader saw half a transfer");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = [["a", "b"], ["b", "a"]]
        .into_iter()
        .enumerate()
        .map(|(i, order)| {
            let engine = primary.clone();
            thread::spawn(move || {
                for t in 0..TRANSFERS {
                    transfer(&engine, order, 1 + (t * 7919 + i as u64) % 5_000);
                    // A single-database writer in between.
                    let mut txn = engine.begin(order[0]).unwrap();
                    txn.put(b"other", &[], &t.to_le_bytes()).unwrap();
                    txn.commit().unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    primary.set_commit_hook(HookPurpose::Replication, None);
    applier.join().unwrap();
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(sum(&primary), TOTAL);
    assert_eq!(primary.lsn(), follower.lsn());
    assert_eq!(primary.digests(), follower.digests());
}

#[test]
fn an_aborted_transaction_across_databases_leaves_no_trace() {
    let engine = setup();
    let lsn = engine.lsn();
    let digests = engine.digests();
    let mut txn = engine.begin_across(&["a", "b"]).unwrap();
    txn.put(b"x", &[], b"1").unwrap();
    txn.select("b").unwrap();
    txn.delete(b"acct").unwrap();
    drop(txn);
    assert_eq!(engine.lsn(), lsn);
    assert_eq!(engine.digests(), digests);
    // Locks released: both databases take a transaction again.
    engine.begin_across(&["b", "a"]).unwrap().abort();
}

#[test]
fn a_delta_across_databases_is_refused_whole_when_one_part_is_bad() {
    let (tx, rx) = mpsc::channel::<Delta>();
    let primary = setup_sending(Some(tx));
    let mut txn = primary.begin_across(&["a", "b"]).unwrap();
    txn.put(b"y", &[], b"2").unwrap();
    txn.select("b").unwrap();
    txn.put(b"y", &[], b"3").unwrap();
    txn.commit().unwrap();
    primary.set_commit_hook(HookPurpose::Replication, None);
    let mut deltas: Vec<Delta> = rx.iter().collect();
    let last = deltas.pop().unwrap();
    let follower = follower();
    for d in &deltas {
        follower.apply(d).unwrap();
    }
    // The second database's part writes past its block: the first's part,
    // good on its own, must not land either.
    let (_, b_ops) = last.sections().nth(1).unwrap();
    let bad_at = last.ops().len() - 1 - b_ops.len()
        + b_ops
            .iter()
            .position(|op| matches!(op, DeltaOp::BlockWrite { .. }))
            .unwrap();
    let mut ops = last.ops().to_vec();
    if let DeltaOp::BlockWrite { offset, .. } = &mut ops[bad_at] {
        *offset = 1 << 30;
    }
    let bad = Delta::from_checked_ops(ops).unwrap();
    let (before, lsn) = (follower.digests(), follower.lsn());
    assert!(follower.apply(&bad).is_err());
    assert_eq!(follower.digests(), before);
    assert_eq!(follower.lsn(), lsn);
    // The real one applies.
    follower.apply(&last).unwrap();
    assert_eq!(follower.digests(), primary.digests());
}
