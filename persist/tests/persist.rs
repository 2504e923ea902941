//! Local persistence (`hotblock_persist`): a node that restarts from
//! its data directory comes back at the same LSN with digest-identical
//! blocks, whatever a crash did to the tail of its log, and never mixes two
//! histories.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hotblock_core::repl::{Epoch, EpochHistory, NodeId};
use hotblock_core::{
    DatabaseOptions, DbDigest, Delta, Engine, EngineConfig, IndexMode, Lsn, Record,
};
use hotblock_persist::{
    fuzz_load_log, fuzz_load_snapshot, FsyncPolicy, PersistConfig, PersistError, PersistedState,
    Persister,
};
use proptest::prelude::*;

const KEYS: u32 = 200;
const CITIES: [&[u8]; 5] = [b"london", b"paris", b"rome", b"oslo", b"lima"];

fn follower_config() -> EngineConfig {
    EngineConfig::follower(IndexMode::Maintained)
}

fn config(dir: &Path) -> PersistConfig {
    PersistConfig {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::EverySec,
        // Large: only the tests that want checkpoints get them.
        checkpoint_log_bytes: 1 << 40,
    }
}

/// Opens `dir`, promotes the engine and attaches it: a primary's start.
fn open_primary(config: PersistConfig) -> (Persister, Engine) {
    let (persister, engine, _) = Persister::open(config, follower_config()).unwrap();
    engine.promote().unwrap();
    persister.attach(&engine);
    (persister, engine)
}

fn key(i: u32) -> Vec<u8> {
    format!("k{i:03}").into_bytes()
}

/// Transactions with puts (in place and moved), deletes and a compaction
/// on a database with non-unique keys, plus a second database and a
/// transaction across both. Returns the deltas committed, in LSN order.
fn workload(engine: &Engine, round: u32) -> Vec<Delta> {
    let mut deltas = Vec::new();
    if engine.database("people").is_err() {
        let people = DatabaseOptions::with_indexes(["city", "team"]).block_size(4096);
        deltas.push(engine.create_database("people", people).unwrap().delta);
        deltas.push(
            engine
                .create_database("kv", DatabaseOptions::default())
                .unwrap()
                .delta,
        );
    }
    for t in 0..8u32 {
        let mut txn = engine.begin("people").unwrap();
        for i in 0..20u32 {
            let k = (round * 31 + t * 7 + i * 13) % KEYS;
            let city = CITIES[((k + round) % 5) as usize];
            let team: Option<&[u8]> = if i % 3 == 0 { None } else { Some(b"blue") };
            let payload = vec![(k + t) as u8; ((k * 37 + round * 11) % 600) as usize];
            txn.put(&key(k), &[Some(city), team], &payload).unwrap();
        }
        for i in 0..4u32 {
            txn.delete(&key((round * 17 + t * 5 + i * 29) % KEYS))
                .unwrap();
        }
        deltas.extend(txn.commit().unwrap().map(|c| c.delta));
    }
    if let Some(c) = engine.compact("people", 4).unwrap() {
        deltas.push(c.delta);
    }
    // One transaction across both databases: one log record, one LSN.
    let mut txn = engine.begin_across(&["kv", "people"]).unwrap();
    txn.put(format!("round{round}").as_bytes(), &[], b"done")
        .unwrap();
    txn.select("people").unwrap();
    txn.delete(&key(round % KEYS)).unwrap();
    deltas.extend(txn.commit().unwrap().map(|c| c.delta));
    deltas
}

/// Everything a client could observe, plus the digests.
#[derive(Debug, PartialEq)]
struct View {
    lsn: Lsn,
    digests: Vec<DbDigest>,
    counts: Vec<u64>,
    records: Vec<Option<Record>>,
    finds: Vec<Vec<Vec<u8>>>,
}

fn view(engine: &Engine) -> View {
    let mut counts = Vec::new();
    let mut records = Vec::new();
    let mut finds = Vec::new();
    for db in engine.databases() {
        counts.push(db.count());
    }
    if let Ok(people) = engine.database("people") {
        for i in 0..KEYS {
            records.push(people.get(&key(i)).unwrap());
        }
        for city in CITIES {
            finds.push(people.find("city", city, None).unwrap());
        }
        finds.push(people.find("team", b"blue", None).unwrap());
    }
    View {
        lsn: engine.lsn(),
        digests: engine.digests(),
        counts,
        records,
        finds,
    }
}

/// A fresh follower that applied `deltas`: what a node at their last LSN holds.
fn replay(deltas: &[Delta]) -> Engine {
    let engine = Engine::new(follower_config());
    for d in deltas {
        engine.apply(d).unwrap();
    }
    engine
}

fn files_named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.starts_with(prefix) && name.ends_with(suffix)
        })
        .collect();
    out.sort();
    out
}

fn newest_log(dir: &Path) -> PathBuf {
    files_named(dir, "log-", ".hb").pop().unwrap()
}

/// Start offsets of a log's records (header: 24 bytes; record: u32 length,
/// u64 checksum, bytes).
fn record_starts(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    let mut at = 24;
    let mut starts = Vec::new();
    while at + 12 <= bytes.len() {
        starts.push(at as u64);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 12 + len;
    }
    assert_eq!(at, bytes.len(), "the log parses whole");
    starts
}

fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}

#[test]
fn reopen_recovers_lsn_records_and_digests() {
    let dir = tempfile::tempdir().unwrap();
    let (persister, engine) = open_primary(config(dir.path()));
    for round in 0..4 {
        workload(&engine, round);
    }
    let before = view(&engine);
    assert!(before.lsn.0 > 30);
    assert!(before.counts[0] > 50);
    drop((persister, engine));

    let (_persister, engine, state) =
        Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(state, PersistedState::default());
    assert_eq!(engine.lsn(), before.lsn);
    assert_eq!(engine.digests(), before.digests);
    engine.promote().unwrap();
    assert_eq!(view(&engine), before);
}

#[test]
fn empty_directory_gives_an_empty_engine_and_a_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (persister, engine, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(engine.lsn(), Lsn(0));
    assert!(engine.databases().is_empty());
    assert_eq!(files_named(dir.path(), "snapshot-", ".hb").len(), 1);
    assert_eq!(files_named(dir.path(), "log-", ".hb").len(), 1);
    assert!(dir.path().join("LOCK").exists());
    drop((persister, engine));
    let (_p, engine, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(engine.lsn(), Lsn(0));
}

/// Damages the last record of the newest log with `damage`, reopens, and
/// checks recovery stops one transaction short, cuts the file there, and
/// carries on appending.
fn last_record_damaged(damage: impl FnOnce(&Path, u64, u64), expect_cut_copy: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (persister, engine) = open_primary(config(dir.path()));
    let mut deltas = workload(&engine, 0);
    deltas.extend(workload(&engine, 1));
    let lsn = engine.lsn();
    drop((persister, engine));

    let log = newest_log(dir.path());
    let last_start = *record_starts(&log).last().unwrap();
    let len = fs::metadata(&log).unwrap().len();
    damage(&log, last_start, len);

    let (persister, engine, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(engine.lsn(), Lsn(lsn.0 - 1));
    let expected = replay(&deltas[..deltas.len() - 1]);
    assert_eq!(engine.digests(), expected.digests());
    assert_eq!(
        fs::metadata(&log).unwrap().len(),
        last_start,
        "cut after the last good record"
    );
    assert_eq!(
        files_named(dir.path(), "log-", ".corrupt").len(),
        usize::from(expect_cut_copy),
        "bytes past a bad checksum are kept aside; a torn tail is not"
    );

    engine.promote().unwrap();
    persister.attach(&engine);
    workload(&engine, 2);
    let before = view(&engine);
    drop((persister, engine));
    let (_p, engine, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    engine.promote().unwrap();
    assert_eq!(view(&engine), before);
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    last_record_damaged(
        |log, last_start, len| {
            let mid = last_start + (len - last_start) / 2;
            fs::OpenOptions::new()
                .write(true)
                .open(log)
                .unwrap()
                .set_len(mid)
                .unwrap();
        },
        false,
    );
}

#[test]
fn flipped_byte_in_last_record_is_cut_like_a_torn_tail() {
    last_record_damaged(
        |log, last_start, len| flip_byte(log, last_start + 12 + (len - last_start - 12) / 2),
        true,
    );
}

#[test]
fn checkpoints_run_in_the_background_and_keep_two_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.checkpoint_log_bytes = 16 * 1024;
    let (persister, engine) = open_primary(cfg.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut round = 0;
    while persister.status().checkpoints < 3 {
        assert!(
            Instant::now() < deadline,
            "no checkpoints: {:?}",
            persister.status()
        );
        workload(&engine, round);
        round += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    workload(&engine, round);
    let status = persister.status();
    assert!(status.last_checkpoint_lsn.0 > 0);
    assert!(status.last_error.is_none());
    let snapshots = files_named(dir.path(), "snapshot-", ".hb");
    assert_eq!(snapshots.len(), 2, "{snapshots:?}");
    let oldest =
        snapshots[0].file_name().unwrap().to_str().unwrap()["snapshot-".len()..].to_string();
    for log in files_named(dir.path(), "log-", ".hb") {
        let base = &log.file_name().unwrap().to_str().unwrap()["log-".len()..];
        assert!(
            base >= oldest.as_str(),
            "log {log:?} older than the snapshots kept"
        );
    }
    let before = view(&engine);
    drop((persister, engine));
    let (_p, engine, _) = Persister::open(cfg, follower_config()).unwrap();
    engine.promote().unwrap();
    assert_eq!(view(&engine), before);
}

#[test]
fn corrupt_newest_snapshot_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let (persister, engine) = open_primary(config(dir.path()));
    workload(&engine, 0);
    let first = persister.checkpoint(&engine).unwrap();
    workload(&engine, 1);
    let second = persister.checkpoint(&engine).unwrap();
    assert!(second > first);
    workload(&engine, 2);
    let before = view(&engine);
    drop((persister, engine));

    let snapshots = files_named(dir.path(), "snapshot-", ".hb");
    assert_eq!(snapshots.len(), 2);
    let newest = snapshots[1].clone();
    let len = fs::metadata(&newest).unwrap().len();
    flip_byte(&newest, len / 2);

    let (_p, engine, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    engine.promote().unwrap();
    assert_eq!(view(&engine), before);
    assert!(!newest.exists());
    assert_eq!(files_named(dir.path(), "snapshot-", ".corrupt").len(), 1);
}

#[test]
fn a_bad_record_before_the_last_log_ends_recovery_there() {
    let dir = tempfile::tempdir().unwrap();
    let (persister, engine) = open_primary(config(dir.path()));
    let mut deltas = workload(&engine, 0);
    persister.checkpoint(&engine).unwrap();
    deltas.extend(workload(&engine, 1));
    persister.checkpoint(&engine).unwrap();
    deltas.extend(workload(&engine, 2));
    drop((persister, engine));

    // Recovery must fall back to the older snapshot, whose log then has a
    // bad record in its middle: nothing after it may be applied.
    let snapshots = files_named(dir.path(), "snapshot-", ".hb");
    flip_byte(&snapshots[1], 30);
    let logs = files_named(dir.path(), "log-", ".hb");
    assert_eq!(logs.len(), 2);
    let starts = record_starts(&logs[0]);
    assert!(starts.len() > 4);
    flip_byte(&logs[0], starts[3] + 20);

    let (_p, engine, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    let first_in_log = deltas
        .iter()
        .position(|d| {
            format!("{:020}", d.lsn().0 - 1)
                == logs[0].file_name().unwrap().to_str().unwrap()[4..24]
        })
        .unwrap();
    let reached = &deltas[..first_in_log + 3];
    assert_eq!(engine.lsn(), reached.last().unwrap().lsn());
    assert_eq!(engine.digests(), replay(reached).digests());
    assert!(!logs[1].exists(), "the later log is set aside");
    assert_eq!(fs::metadata(&logs[0]).unwrap().len(), starts[3]);
}

#[test]
fn every_snapshot_corrupt_is_an_error_not_an_empty_start() {
    let dir = tempfile::tempdir().unwrap();
    let (persister, engine) = open_primary(config(dir.path()));
    workload(&engine, 0);
    persister.checkpoint(&engine).unwrap();
    drop((persister, engine));
    for snapshot in files_named(dir.path(), "snapshot-", ".hb") {
        flip_byte(&snapshot, 30);
    }
    let err = Persister::open(config(dir.path()), follower_config()).unwrap_err();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("snapshot-"), "{err}");
}

/// A primary without persistence, and the deltas it committed.
fn primary_history(rounds: u32) -> (Engine, Vec<Delta>) {
    let primary = Engine::new(EngineConfig::default());
    let deltas = (0..rounds).flat_map(|r| workload(&primary, r)).collect();
    (primary, deltas)
}

/// Installs `primary`'s state on `follower` the way a full resync does.
fn resync_from(follower: &Engine, primary: &Engine) {
    let schemas: Vec<_> = primary
        .databases()
        .iter()
        .map(|d| d.schema().clone())
        .collect();
    follower.reset_to_snapshot(&schemas, primary.lsn()).unwrap();
    for db in primary.databases() {
        let mut from = hotblock_core::BlockId(0);
        while let Some((block, bytes)) = db.block_at_or_after(from) {
            follower.install_block(db.id(), block, &bytes).unwrap();
            from = hotblock_core::BlockId(block.0 + 1);
        }
    }
    follower.finish_snapshot().unwrap();
}

#[test]
fn resync_keeps_the_old_state_until_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_, deltas) = primary_history(3);
    let half = deltas.len() / 2;

    let (persister, follower, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    persister.attach(&follower);
    for d in &deltas[..half] {
        follower.apply(d).unwrap();
    }
    let consistent = follower.digests();
    persister.begin_resync();
    assert!(persister.status().resyncing);
    for d in &deltas[half..] {
        follower.apply(d).unwrap();
    }
    drop((persister, follower));

    // The deltas applied during the resync were not logged: the state
    // before it, whole.
    let (persister, follower, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(follower.lsn(), deltas[half - 1].lsn());
    assert_eq!(follower.digests(), consistent);

    // A real resync, onto another history, to a snapshot below the LSN
    // this node had reached; then deltas after the snapshot.
    persister.attach(&follower);
    persister.begin_resync();
    let (other, mut other_deltas) = primary_history(2);
    let mut txn = other.begin("kv").unwrap();
    txn.put(b"other", &[], b"history").unwrap();
    other_deltas.push(txn.commit().unwrap().unwrap().delta);
    let k = half / 2;
    let snapshot_lsn = other_deltas[k - 1].lsn();
    assert!(snapshot_lsn < follower.lsn());
    resync_from(&follower, &replay(&other_deltas[..k]));
    assert_eq!(persister.checkpoint(&follower).unwrap(), snapshot_lsn);
    assert!(!persister.status().resyncing);
    for d in &other_deltas[k..] {
        follower.apply(d).unwrap();
    }
    assert_eq!(follower.digests(), other.digests());
    assert_eq!(
        files_named(dir.path(), "snapshot-", ".hb").len(),
        1,
        "old history removed"
    );
    assert_eq!(files_named(dir.path(), "log-", ".hb").len(), 1);
    drop((persister, follower));

    let (_p, follower, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(follower.lsn(), other.lsn());
    assert_eq!(follower.digests(), other.digests());
}

#[test]
fn a_change_the_persister_did_not_see_stops_it_until_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (primary, deltas) = primary_history(2);
    let (half, k) = (deltas.len() / 2, deltas.len() / 4);
    let (persister, follower, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    persister.attach(&follower);
    for d in &deltas[..half] {
        follower.apply(d).unwrap();
    }
    persister.check_healthy().unwrap();

    // A resync to an older LSN without begin_resync: the next delta does
    // not follow the log.
    resync_from(&follower, &replay(&deltas[..k]));
    follower.apply(&deltas[k]).unwrap();
    let err = persister.check_healthy().unwrap_err();
    assert!(matches!(err, PersistError::Stopped { .. }), "{err}");
    assert!(persister.wait_durable(Lsn(1)).is_err());
    assert!(persister.status().last_error.is_some());

    // The background thread leaves a diverged directory alone.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(persister.status().checkpoints, 0);
    assert!(persister.check_healthy().is_err());

    assert_eq!(persister.checkpoint(&follower).unwrap(), deltas[k].lsn());
    persister.check_healthy().unwrap();
    assert_eq!(
        files_named(dir.path(), "snapshot-", ".hb").len(),
        1,
        "old history removed"
    );
    for d in &deltas[k + 1..] {
        follower.apply(d).unwrap();
    }
    persister.check_healthy().unwrap();
    drop((persister, follower));
    let (_p, follower, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(follower.lsn(), primary.lsn());
    assert_eq!(follower.digests(), primary.digests());
}

#[test]
fn state_round_trips_and_a_corrupt_state_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (persister, _engine, state) =
        Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(state, PersistedState::default());
    let mut history = EpochHistory::default();
    history.promote(Lsn(10), NodeId(3), Epoch(0));
    let e = history.promote(Lsn(25), NodeId(7), Epoch(0));
    let saved = PersistedState {
        history,
        epoch_seen: Epoch(e.0 + (5 << 16)),
    };
    persister.save_state(&saved).unwrap();
    drop(persister);

    let (persister, _engine, state) =
        Persister::open(config(dir.path()), follower_config()).unwrap();
    assert_eq!(state, saved);
    drop(persister);

    let path = dir.path().join("state.hb");
    flip_byte(&path, 20);
    let err = Persister::open(config(dir.path()), follower_config()).unwrap_err();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("state.hb"), "{err}");
}

#[test]
fn a_directory_is_locked_while_its_persister_lives() {
    let dir = tempfile::tempdir().unwrap();
    let (first, clone_of_first) = {
        let (p, _, _) = Persister::open(config(dir.path()), follower_config()).unwrap();
        (p.clone(), p)
    };
    let err = Persister::open(config(dir.path()), follower_config()).unwrap_err();
    assert!(matches!(err, PersistError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains(dir.path().to_str().unwrap()),
        "{err}"
    );
    drop(first);
    // A clone still holds it.
    assert!(Persister::open(config(dir.path()), follower_config()).is_err());
    drop(clone_of_first);
    Persister::open(config(dir.path()), follower_config()).unwrap();
}

#[test]
fn bad_directories_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Persister::open(config(&missing), follower_config()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    let file = dir.path().join("plain");
    fs::write(&file, b"x").unwrap();
    for path in [file.clone(), file.join("sub")] {
        let err = Persister::open(config(&path), follower_config()).unwrap_err();
        assert!(matches!(err, PersistError::NotADirectory { .. }), "{err}");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    let err = Persister::open(config(dir.path()), EngineConfig::default()).unwrap_err();
    assert!(matches!(err, PersistError::NotFollower), "{err}");
}

#[test]
fn wait_durable_under_always_returns_for_every_concurrent_committer() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.fsync = FsyncPolicy::Always;
    let (persister, engine) = open_primary(cfg.clone());
    const THREADS: usize = 4;
    for t in 0..THREADS {
        engine
            .create_database(&format!("t{t}"), DatabaseOptions::default())
            .unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (engine, persister) = (&engine, &persister);
            s.spawn(move || {
                for i in 0..25u32 {
                    let mut txn = engine.begin(&format!("t{t}")).unwrap();
                    txn.put(&i.to_le_bytes(), &[], &[t as u8; 100]).unwrap();
                    let lsn = txn.commit().unwrap().unwrap().lsn;
                    persister.wait_durable(lsn).unwrap();
                    assert!(persister.status().durable_lsn >= lsn);
                }
            });
        }
    });
    let status = persister.status();
    assert_eq!(status.durable_lsn, engine.lsn());
    assert_eq!(status.logged_lsn, engine.lsn());
    let digests = engine.digests();
    drop((persister, engine));
    let (_p, engine, _) = Persister::open(cfg, follower_config()).unwrap();
    assert_eq!(engine.lsn().0, (THREADS * 26) as u64);
    assert_eq!(engine.digests(), digests);
}

#[test]
fn fsync_policy_names_round_trip() {
    for p in [FsyncPolicy::Always, FsyncPolicy::EverySec, FsyncPolicy::No] {
        assert_eq!(p.to_string().parse::<FsyncPolicy>().unwrap(), p);
    }
    assert!("sometimes".parse::<FsyncPolicy>().is_err());
}

/// A snapshot and a log from a real directory, as seeds for mutation.
fn sample_files() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (persister, engine) = open_primary(config(dir.path()));
    workload(&engine, 0);
    persister.checkpoint(&engine).unwrap();
    workload(&engine, 1);
    drop((persister, engine));
    let snapshot = fs::read(files_named(dir.path(), "snapshot-", ".hb").pop().unwrap()).unwrap();
    let log = fs::read(newest_log(dir.path())).unwrap();
    (snapshot, log)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn decoders_survive_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        fuzz_load_snapshot(&data);
        fuzz_load_log(&data);
        // Past the magic, so the decoders reach their later checks.
        let mut snapshot = b"HBSN\x01\0\0\0".to_vec();
        snapshot.extend(&data);
        fuzz_load_snapshot(&snapshot);
        let mut log = b"HBLG\x01\0\0\0".to_vec();
        log.extend(&data);
        fuzz_load_log(&log);
    }
}

#[test]
fn decoders_survive_truncated_and_mutated_files() {
    let (snapshot, log) = sample_files();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    for file in [&snapshot, &log] {
        for _ in 0..200 {
            let mut bytes = file.clone();
            match rand(3) {
                0 => bytes.truncate(rand(file.len())),
                1 => {
                    for _ in 0..1 + rand(4) {
                        let at = rand(bytes.len());
                        bytes[at] ^= 1 << rand(8);
                    }
                }
                _ => {
                    // A huge declared length or count where one is read.
                    let at = rand(bytes.len().saturating_sub(4));
                    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
                }
            }
            fuzz_load_snapshot(&bytes);
            fuzz_load_log(&bytes);
        }
    }
}
