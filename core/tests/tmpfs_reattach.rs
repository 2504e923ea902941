//! A directory-backed arena (tmpfs in production) outlives the engine that
//! made it: a new engine reattaches to the same blocks, with the same
//! digests, answers and LSN, and refuses blocks left by a torn commit.

use std::path::Path;

use hotblock_core::{ArenaBacking, DatabaseOptions, Engine, EngineConfig, Error};

fn config(dir: &Path) -> EngineConfig {
    EngineConfig {
        backing: ArenaBacking::Dir(dir.to_path_buf()),
        ..Default::default()
    }
}

fn scratch_dir() -> tempfile::TempDir {
    // tmpfs where there is one, as in production.
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

fn fill(engine: &Engine) {
    engine
        .create_database(
            "users",
            DatabaseOptions::with_indexes(["city"]).block_size(4096),
        )
        .unwrap();
    engine
        .create_database("kv", DatabaseOptions::default())
        .unwrap();
    for batch in 0..20u32 {
        let mut txn = engine.begin("users").unwrap();
        for i in 0..10u32 {
            let city: &[u8] = if i % 2 == 0 { b"london" } else { b"paris" };
            txn.put(
                format!("u{batch}-{i}").as_bytes(),
                &[Some(city)],
                &[batch as u8; 300],
            )
            .unwrap();
        }
        txn.commit().unwrap();
    }
    // Empty some blocks entirely, so freed slots hold stale bytes.
    let mut txn = engine.begin("users").unwrap();
    for batch in 0..5u32 {
        for i in 0..10u32 {
            txn.delete(format!("u{batch}-{i}").as_bytes()).unwrap();
        }
    }
    txn.commit().unwrap();
    let mut txn = engine.begin("kv").unwrap();
    txn.put(b"greeting", &[], b"hello").unwrap();
    txn.commit().unwrap();
}

#[test]
fn reopened_engine_has_the_same_blocks_answers_and_lsn() {
    let dir = scratch_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    fill(&engine);
    let (digests, lsn) = (engine.digests(), engine.lsn());
    let london = engine
        .database("users")
        .unwrap()
        .find("city", b"london", None)
        .unwrap();
    assert_eq!(london.len(), 75);
    drop(engine);

    let again = Engine::open(config(dir.path())).unwrap();
    assert_eq!(again.lsn(), lsn);
    assert_eq!(again.digests(), digests);
    let users = again.database("users").unwrap();
    assert_eq!(users.count(), 150);
    assert_eq!(users.find("city", b"london", None).unwrap(), london);
    assert!(users.get(b"u0-0").unwrap().is_none());
    assert_eq!(
        again
            .database("kv")
            .unwrap()
            .get(b"greeting")
            .unwrap()
            .unwrap()
            .payload,
        b"hello"
    );
    // It goes on committing from the next LSN.
    let mut txn = again.begin("users").unwrap();
    txn.put(b"new", &[None], b"x").unwrap();
    assert_eq!(txn.commit().unwrap().unwrap().lsn, lsn.next());
}

#[test]
fn a_torn_commit_is_refused() {
    let dir = scratch_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    fill(&engine);
    let lsn = engine.lsn();
    drop(engine);
    // What a process killed half-way through applying the next commit
    // leaves: `committing` ahead of `committed`.
    let control = dir.path().join("control.hb");
    let mut bytes = std::fs::read(&control).unwrap();
    bytes[8..16].copy_from_slice(&(lsn.0 + 1).to_le_bytes());
    std::fs::write(&control, bytes).unwrap();
    match Engine::open(config(dir.path())) {
        Err(Error::TornCommit { lsn: torn }) => assert_eq!(torn, lsn.0 + 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_corrupt_catalog_or_missing_block_file_is_an_error() {
    let dir = scratch_dir();
    let engine = Engine::open(config(dir.path())).unwrap();
    fill(&engine);
    drop(engine);
    std::fs::remove_file(dir.path().join("db-1.blocks")).unwrap();
    let err = Engine::open(config(dir.path())).unwrap_err();
    assert!(err.to_string().contains("db-1.blocks"), "{err}");
    std::fs::write(
        dir.path().join("catalog.hb"),
        "hotblock-catalog 1\ndb 0 4096 users\n",
    )
    .unwrap();
    assert!(Engine::open(config(dir.path())).is_err());
}
