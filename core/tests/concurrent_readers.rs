//! Readers on other threads, during writes and during applies, see only
//! whole committed transactions.
//!
//! Each transaction moves amounts between accounts (the total never changes)
//! and inserts a batch of records sharing one non-unique value. A reader
//! that saw part of a transaction would see a wrong total or a partial batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use hotblock_core::{DatabaseOptions, Delta, Engine, EngineConfig, IndexMode, Role};

const ACCOUNTS: u32 = 16;
const START_BALANCE: u64 = 1_000;
const BATCH: usize = 7;
const TXNS: u32 = 1_500;

fn account(i: u32) -> Vec<u8> {
    format!("acct-{i:02}").into_bytes()
}

fn balance(payload: &[u8]) -> u64 {
    u64::from_le_bytes(payload[..8].try_into().unwrap())
}

/// Runs writer transactions on `engine`; returns every delta.
fn write_load(engine: &Engine) -> Vec<Delta> {
    let mut deltas = Vec::new();
    let mut txn = engine.begin("bank").unwrap();
    for i in 0..ACCOUNTS {
        txn.put(
            &account(i),
            &[Some(b"account")],
            &START_BALANCE.to_le_bytes(),
        )
        .unwrap();
    }
    deltas.push(txn.commit().unwrap().unwrap().delta);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for t in 0..TXNS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (from, to) = (
            (x % ACCOUNTS as u64) as u32,
            ((x >> 8) % ACCOUNTS as u64) as u32,
        );
        let mut txn = engine.begin("bank").unwrap();
        let a = balance(&txn.get(&account(from)).unwrap().unwrap().payload);
        let amount = a.min(x >> 40 & 0xff);
        txn.put(
            &account(from),
            &[Some(b"account")],
            &(a - amount).to_le_bytes(),
        )
        .unwrap();
        let b = balance(&txn.get(&account(to)).unwrap().unwrap().payload);
        // Growing payloads force some updates out of place (tombstone + append).
        let mut payload = (b + amount).to_le_bytes().to_vec();
        payload.resize(8 + (t as usize % 5) * 40, 0);
        txn.put(&account(to), &[Some(b"account")], &payload)
            .unwrap();
        let batch = format!("batch-{t}");
        for i in 0..BATCH {
            txn.put(
                format!("rec-{t}-{i}").as_bytes(),
                &[Some(batch.as_bytes())],
                &[1; 64],
            )
            .unwrap();
        }
        // Drop an older batch, so deletes and block frees run too.
        if t >= 10 {
            for i in 0..BATCH {
                txn.delete(format!("rec-{}-{i}", t - 10).as_bytes())
                    .unwrap();
            }
        }
        deltas.push(txn.commit().unwrap().unwrap().delta);
    }
    deltas
}

/// Reads `engine` until `done`; panics on any torn state. Returns the number
/// of consistent snapshots seen.
fn read_until(engine: Engine, done: Arc<AtomicBool>) -> u64 {
    let mut seen = 0;
    let mut t = 0u32;
    while !done.load(Ordering::Relaxed) {
        let Ok(bank) = engine.database("bank") else {
            continue;
        };
        let view = bank.read();
        let accounts = view.find("tag", b"account", None).unwrap();
        if !accounts.is_empty() {
            assert_eq!(
                accounts.len(),
                ACCOUNTS as usize,
                "a partial first transaction"
            );
            let total: u64 = accounts
                .iter()
                .map(|k| balance(&view.get(k).unwrap().unwrap().payload))
                .sum();
            assert_eq!(total, ACCOUNTS as u64 * START_BALANCE, "torn transfer");
        }
        drop(view);
        // Single queries, each atomic: a batch is all there or not at all.
        t = (t + 13) % TXNS;
        let n = bank
            .find("tag", format!("batch-{t}").as_bytes(), None)
            .unwrap()
            .len();
        assert!(
            n == 0 || n == BATCH,
            "batch {t} seen with {n} of {BATCH} records"
        );
        seen += 1;
    }
    seen
}

#[test]
fn readers_see_whole_transactions_on_primary_and_follower() {
    let primary = Engine::new(EngineConfig::default());
    let follower = Engine::new(EngineConfig {
        role: Role::Follower(IndexMode::Maintained),
        ..Default::default()
    });
    let create = primary
        .create_database(
            "bank",
            DatabaseOptions::with_indexes(["tag"]).block_size(4096),
        )
        .unwrap();
    follower.apply(&create.delta).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [primary.clone(), follower.clone()]
        .into_iter()
        .map(|e| {
            let done = done.clone();
            thread::spawn(move || read_until(e, done))
        })
        .collect();

    let applier = {
        let (tx, rx) = std::sync::mpsc::channel::<Delta>();
        let follower = follower.clone();
        let handle = thread::spawn(move || {
            for delta in rx {
                follower.apply(&delta).unwrap();
            }
        });
        (tx, handle)
    };
    for delta in write_load(&primary) {
        applier.0.send(delta).unwrap();
    }
    drop(applier.0);
    applier.1.join().unwrap();
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0, "a reader never ran");
    }
    assert_eq!(primary.digests(), follower.digests());
}
