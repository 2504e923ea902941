//! The embedded `Db`: one-shot writes, transactions, queries, and automatic
//! compaction after heavy deletes.

use hotblock_core::Error;
use hotblock_primary::{DatabaseOptions, Db};

#[test]
fn one_shot_writes_and_queries() {
    let db = Db::in_memory();
    db.create_database("users", DatabaseOptions::with_indexes(["city", "team"]))
        .unwrap();
    let l1 = db
        .put(
            "users",
            b"ada",
            &[Some(b"london"), Some(b"engines")],
            b"1815",
        )
        .unwrap();
    let l2 = db
        .put("users", b"alan", &[Some(b"london"), None], b"1912")
        .unwrap();
    assert_eq!(l2, l1.next());
    assert_eq!(db.find("users", "city", b"london", None).unwrap().len(), 2);
    assert_eq!(
        db.find("users", "team", b"engines", None).unwrap(),
        vec![b"ada".to_vec()]
    );
    assert!(db.delete("users", b"ada").unwrap());
    assert!(!db.delete("users", b"ada").unwrap());
    assert_eq!(db.count("users").unwrap(), 1);
    assert!(matches!(
        db.get("nope", b"x"),
        Err(Error::UnknownDatabase(_))
    ));
}

#[test]
fn transaction_commit_returns_its_delta_and_abort_leaves_nothing() {
    let db = Db::in_memory();
    db.create_database("t", DatabaseOptions::default()).unwrap();
    let mut txn = db.begin("t").unwrap();
    txn.put(b"a", &[], b"1").unwrap();
    txn.put(b"b", &[], b"2").unwrap();
    let committed = txn.commit().unwrap().unwrap();
    assert_eq!(committed.lsn, db.lsn());
    assert_eq!(committed.delta.lsn(), committed.lsn);
    let before = db.lsn();
    let mut txn = db.begin("t").unwrap();
    txn.delete(b"a").unwrap();
    txn.abort();
    assert_eq!(db.lsn(), before);
    assert!(db.get("t", b"a").unwrap().is_some());
    // A transaction that writes nothing commits nothing.
    assert!(db.begin("t").unwrap().commit().unwrap().is_none());
}

#[test]
fn heavy_deletes_are_compacted_automatically() {
    let db = Db::in_memory();
    db.create_database("t", DatabaseOptions::with_indexes(["v"]).block_size(4096))
        .unwrap();
    let mut txn = db.begin("t").unwrap();
    for i in 0..2000u32 {
        txn.put(&i.to_be_bytes(), &[Some(&[(i % 7) as u8])], &[0u8; 100])
            .unwrap();
    }
    txn.commit().unwrap();
    let full = db.stats("t").unwrap();
    // Delete three of every four records, one transaction each.
    for i in (0..2000u32).filter(|i| i % 4 != 0) {
        db.delete("t", &i.to_be_bytes()).unwrap();
    }
    let after = db.stats("t").unwrap();
    assert_eq!(after.records, 500);
    assert!(after.blocks * 2 < full.blocks, "{full:?} -> {after:?}");
    assert!(
        after.dead_bytes * 100 <= after.used_bytes * 25 + 4096 * 100,
        "{after:?}"
    );
    for v in 0..7u8 {
        let expect = (0..2000u32)
            .filter(|i| i % 4 == 0 && i % 7 == v as u32)
            .count();
        assert_eq!(db.find("t", "v", &[v], None).unwrap().len(), expect);
    }
}

/// A transaction begun while the write lease held, committed after it ran
/// out, is not applied: the next primary never has it, so no reader here
/// may see it either.
#[test]
fn a_transaction_is_not_applied_once_the_lease_has_run_out() {
    use hotblock_primary::{WriteError, WriteLease};
    use std::time::{Duration, Instant};
    let lease = std::sync::Arc::new(WriteLease::new());
    lease.extend_until(Instant::now() + Duration::from_secs(60));
    let db = Db::in_memory().with_lease(lease.clone());
    db.create_database("t", DatabaseOptions::default()).unwrap();
    let lsn = db.lsn();
    let mut txn = db.begin("t").unwrap();
    txn.put(b"k", &[], b"v").unwrap();
    lease.revoke();
    assert!(matches!(txn.commit(), Err(WriteError::NoLease)));
    assert_eq!(db.lsn(), lsn, "nothing applied");
    assert!(db.get("t", b"k").unwrap().is_none());
}
