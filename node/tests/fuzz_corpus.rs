//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/*`) through the
//! same code the cargo-fuzz targets run, so every seed and every regression
//! input found by fuzzing is checked by a plain `cargo test`, on stable.
//!
//! The target bodies live in `fuzz/src/lib.rs`, included here as a module:
//! one copy of the checks for the fuzzer and for this test.
//!
//! `write_seed_corpus` (ignored) regenerates the `seed-*` files:
//! `cargo test -p hotblock-node --test fuzz_corpus -- --ignored write_seed_corpus`.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use hotblock_core::{BlockHeader, BlockId, Delta, DeltaOp, EncodedRecord, Lsn, RecordRef};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every input of a target's corpus, by file name. Fails when the corpus is
/// missing or empty, so that a moved directory cannot make the test pass
/// vacuously.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} is missing: {e}", dir.display()));
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.expect("read corpus entry").path())
        .filter(|path| path.is_file())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_string();
            (!name.starts_with('.')).then(|| (name, fs::read(&path).expect("read corpus file")))
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "fuzz corpus {} is empty", dir.display());
    inputs
}

/// Runs `body` on every input of `target`'s corpus; fails naming every
/// input that panicked.
fn replay(target: &str, body: fn(&[u8])) {
    let inputs = corpus(target);
    let failed: Vec<&str> = inputs
        .iter()
        .filter(|(_, data)| catch_unwind(AssertUnwindSafe(|| body(data))).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs of fuzz/corpus/{target} panicked: {failed:?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn delta_decode_corpus_replays() {
    replay("delta_decode", harness::delta_decode);
}

#[test]
fn frame_decode_corpus_replays() {
    replay("frame_decode", harness::frame_decode);
}

#[test]
fn record_parse_corpus_replays() {
    replay("record_parse", harness::record_parse);
}

#[test]
fn delta_apply_corpus_replays() {
    replay("delta_apply", harness::delta_apply);
}

#[test]
fn persist_snapshot_corpus_replays() {
    replay("persist_snapshot", harness::persist_snapshot);
}

#[test]
fn persist_log_corpus_replays() {
    replay("persist_log", harness::persist_log);
}

#[test]
fn repl_session_corpus_replays() {
    replay("repl_session", harness::repl_session);
}

/// Regenerates the `seed-*` files of `repl_session` from a real session
/// between a `Primary` and a `Secondary`: a snapshot, then streamed
/// commits, as the frames each side sent.
/// `cargo test -p hotblock-node --test fuzz_corpus -- --ignored write_repl_session_seed_corpus`
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_repl_session_seed_corpus() {
    use hotblock_core::repl::{
        EpochHistory, Frame, Mode, NodeId, Primary, PrimaryConfig, Secondary, SecondaryConfig,
    };
    use hotblock_core::{DatabaseOptions, Engine, EngineConfig, IndexMode, Role};
    use std::time::Instant;
    let now = Instant::now();
    let engine = Engine::new(EngineConfig::default());
    engine
        .create_database("t", DatabaseOptions::with_indexes(["g"]).block_size(4096))
        .unwrap();
    let put = |i: u32| {
        let mut txn = engine.begin("t").unwrap();
        txn.put(&i.to_be_bytes(), &[Some(&[i as u8 % 3])], &[1; 64])
            .unwrap();
        txn.commit().unwrap().unwrap().delta
    };
    for i in 0..5 {
        put(i);
    }
    let mut p = Primary::new(
        engine.clone(),
        EpochHistory::default(),
        PrimaryConfig::default(),
    );
    let follower = Engine::new(EngineConfig {
        role: Role::Follower(IndexMode::Maintained),
        ..Default::default()
    });
    let mut sec = Secondary::new(
        follower,
        EpochHistory::default(),
        SecondaryConfig::new(NodeId(1), Mode::Async),
        now,
    );
    let session = p.connect(now);
    sec.connect(now).unwrap();
    let (mut down, mut up): (Vec<Frame>, Vec<Frame>) = (Vec::new(), Vec::new());
    let mut pump = |p: &mut Primary, sec: &mut Secondary| loop {
        let mut moved = false;
        while let Some((_, f)) = p.poll_transmit(now) {
            down.push(f.clone());
            sec.handle_frame(now, f);
            moved = true;
        }
        while let Some(f) = sec.poll_transmit(now) {
            up.push(f.clone());
            p.handle_frame(now, session, f);
            moved = true;
        }
        if !moved {
            break;
        }
    };
    pump(&mut p, &mut sec);
    for i in 5..10 {
        let delta = put(i);
        p.on_commit(now, delta, false);
        pump(&mut p, &mut sec);
    }
    assert_eq!(sec.engine().lsn(), engine.lsn(), "the session converged");
    let encode = |flags: u8, frames: &[Frame]| {
        let mut out = vec![flags, 0];
        for f in frames.iter().take(64) {
            f.encode(&mut out);
        }
        out
    };
    let dir = corpus_dir("repl_session");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("seed-to-secondary-async"), encode(0, &down)).unwrap();
    fs::write(dir.join("seed-to-secondary-sync"), encode(2, &down)).unwrap();
    fs::write(dir.join("seed-to-primary"), encode(0, &up)).unwrap();
    fs::write(dir.join("seed-to-primary-sync"), encode(2, &up)).unwrap();
    let streamed = &down[down.len().saturating_sub(20)..];
    fs::write(dir.join("seed-stream-tail"), encode(1, streamed)).unwrap();
}

/// Writes real data-directory files (a snapshot, a log, a state file) as
/// seeds of the `persist_*` targets, with a torn and a flipped variant.
/// `cargo test -p hotblock-node --test fuzz_corpus -- --ignored write_persist_seed_corpus`
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_persist_seed_corpus() {
    use hotblock_core::{DatabaseOptions, EngineConfig, IndexMode, Role};
    use hotblock_persist::{PersistConfig, Persister};
    let dir = tempfile::tempdir().unwrap();
    let (persister, engine, _) = Persister::open(
        PersistConfig::new(dir.path()),
        EngineConfig {
            role: Role::Follower(IndexMode::Deferred),
            ..EngineConfig::default()
        },
    )
    .unwrap();
    engine.promote().unwrap();
    persister.attach(&engine);
    engine
        .create_database(
            "users",
            DatabaseOptions::with_indexes(["city"]).block_size(4096),
        )
        .unwrap();
    let put = |key: &str, city: &str| {
        let mut txn = engine.begin("users").unwrap();
        txn.put(key.as_bytes(), &[Some(city.as_bytes())], b"{}")
            .unwrap();
        txn.commit().unwrap();
    };
    put("ada", "london");
    put("alan", "london");
    persister.checkpoint(&engine).unwrap();
    put("grace", "nyc");
    let mut txn = engine.begin("users").unwrap();
    txn.delete(b"ada").unwrap();
    txn.commit().unwrap();
    persister.wait_durable(engine.lsn()).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        fs::write(dir.join(name), data).expect("write seed");
    };
    for (name, bytes) in &files {
        let target = match name {
            n if n.starts_with("snapshot-") => "persist_snapshot",
            n if n.starts_with("log-") || n == "state.hb" => "persist_log",
            _ => continue,
        };
        let stem = name.split('-').next().unwrap().trim_end_matches(".hb");
        let lsn = name
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .trim_end_matches(".hb");
        let lsn = match lsn.trim_start_matches('0') {
            "" => "0",
            n => n,
        };
        let base = format!("seed-{stem}-lsn{lsn}");
        write(target, &base, bytes);
        if bytes.len() > 8 {
            write(target, &format!("{base}-torn"), &bytes[..bytes.len() - 3]);
            let mut flipped = bytes.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x40;
            write(target, &format!("{base}-flipped"), &flipped);
        }
    }
}

/// The harness's fixture covers every kind of op, so mutating its deltas
/// reaches every branch of apply.
#[test]
fn fixture_deltas_cover_every_op() {
    let fx = harness::fixture();
    let ops: Vec<DeltaOp> = fx
        .deltas
        .iter()
        .flat_map(|bytes| {
            Delta::decode(bytes)
                .expect("fixture delta decodes")
                .ops()
                .to_vec()
        })
        .collect();
    assert!(ops.iter().any(|op| matches!(op, DeltaOp::DbCreate { .. })));
    assert!(ops
        .iter()
        .any(|op| matches!(op, DeltaOp::BlockAlloc { .. })));
    assert!(ops
        .iter()
        .any(|op| matches!(op, DeltaOp::BlockWrite { .. })));
    assert!(ops.iter().any(|op| matches!(op, DeltaOp::BlockFree { .. })));
    // Every prefix applies and matches the primary (checked inside).
    for k in 0..=fx.deltas.len() {
        harness::checked_follower_at(k);
    }
}

// ---------------------------------------------------------------------------
// Seeds

/// Structured (`mode 2`) seeds for `delta_apply`, each with the number of
/// deltas it must get applied. Bytes as `Program::generate` reads them:
/// deltas, then per delta `db, lsn, op count`, then per op its kind and
/// fields (see `fuzz/src/lib.rs`). Missing bytes read as zero.
fn structured_seeds() -> Vec<(&'static str, Vec<u8>, usize)> {
    let all = harness::fixture().deltas.len() as u8;
    vec![
        // Append a live record (key "user-02", values from the pool) to the
        // first block of `users`, with its header update.
        (
            "seed-s-append",
            vec![2, all, 0, 0, 0, 1, 0, 0, 2, 0, 100, 130, 10],
            1,
        ),
        // Tombstone the first record of a block, with its header update.
        ("seed-s-tombstone", vec![2, all, 0, 0, 0, 1, 2, 0, 0], 1),
        // Rewrite a record in place.
        (
            "seed-s-rewrite",
            vec![2, all, 0, 0, 0, 1, 3, 0, 0, 8, 0, 70, 70, 0],
            1,
        ),
        // Allocate a new block, then append to it (header from scratch).
        (
            "seed-s-alloc-append",
            vec![2, all, 0, 0, 0, 2, 6, 160, 0, 160, 1, 0, 80, 90, 4],
            1,
        ),
        // Create a database with one index (next id, 4 KiB, "extra", "city").
        (
            "seed-s-create",
            vec![2, all, 0, 0, 0, 1, 9, 0, 0, 2, 1, 4],
            1,
        ),
        // Create, then append into it: two deltas.
        (
            "seed-s-create-then-append",
            vec![
                2, all, 1, 0, 0, 1, 9, 0, 0, 2, 1, 4, 2, 0, 2, 6, 160, 0, 160, 1, 0, 80,
            ],
            2,
        ),
        // Free the first block of `users` (emptied or not).
        ("seed-s-free", vec![2, all, 0, 0, 0, 1, 7, 0], 1),
        // A header write with a smaller free offset: accepted.
        (
            "seed-s-header",
            vec![2, all, 0, 0, 0, 1, 4, 0, 0, 64, 200],
            1,
        ),
        // An LSN gap.
        ("seed-s-lsn-gap", vec![2, all, 0, 0, 250, 1, 0, 0], 0),
        // A raw write past the end of a block.
        (
            "seed-s-out-of-block",
            vec![2, all, 0, 0, 0, 1, 5, 0, 220, 0, 63],
            0,
        ),
        // Unknown block.
        (
            "seed-s-unknown-block",
            vec![2, all, 0, 0, 0, 1, 5, 215, 0, 8],
            0,
        ),
    ]
}

/// Writes the `seed-*` inputs of every target. Run once after changing the
/// formats or the harness; the files are committed.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpus() {
    let fx = harness::fixture();
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("create corpus dir");
        fs::write(dir.join(name), data).expect("write seed");
    };
    for target in ["delta_decode", "record_parse", "delta_apply"] {
        if let Ok(entries) = fs::read_dir(corpus_dir(target)) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("seed-") {
                    fs::remove_file(entry.path()).expect("remove old seed");
                }
            }
        }
    }

    // delta_decode: every fixture delta, and a few near misses.
    for (i, delta) in fx.deltas.iter().enumerate() {
        write("delta_decode", &format!("seed-lsn{}", i + 1), delta);
    }
    let first = fx.deltas[1].to_vec();
    write("delta_decode", "seed-truncated", &first[..first.len() - 1]);
    let mut bad_sum = first.clone();
    *bad_sum.last_mut().unwrap() ^= 1;
    write("delta_decode", "seed-bad-checksum", &bad_sum);
    write("delta_decode", "seed-empty", b"");

    // record_parse: encoder output of several shapes, and real block bytes.
    let rec = |key: &[u8], values: &[Option<&[u8]>], payload: &[u8]| {
        EncodedRecord::encode(key, values, payload, usize::MAX)
            .unwrap()
            .bytes()
            .to_vec()
    };
    write(
        "record_parse",
        "seed-two-values",
        &rec(b"user-01", &[Some(b"paris"), Some(b"red")], b"{}"),
    );
    write(
        "record_parse",
        "seed-absent-value",
        &rec(b"k", &[None, Some(b"")], b"payload"),
    );
    write(
        "record_parse",
        "seed-no-values",
        &rec(b"ev-0", &[], &[7; 24]),
    );
    let sixteen: Vec<Option<&[u8]>> = (0..16).map(|i| (i % 3 != 0).then_some(&b"v"[..])).collect();
    write(
        "record_parse",
        "seed-sixteen-values",
        &rec(b"many", &sixteen, b""),
    );
    let mut tomb = rec(b"gone", &[Some(b"oslo")], b"x");
    tomb[0] = 2;
    write("record_parse", "seed-tombstone", &tomb);
    let mut padded = rec(b"pad", &[Some(b"a"), None], b"yy");
    let slot = padded.len() as u32 + 5;
    padded[4..8].copy_from_slice(&slot.to_le_bytes());
    padded.extend_from_slice(&[0, 0, 0, 0, 0, 1, 2, 3]);
    write("record_parse", "seed-padded-slot", &padded);
    let follower = harness::checked_follower_at(fx.deltas.len());
    for db in ["users", "events"] {
        for block in 0..4 {
            if let Some(bytes) = follower.block_bytes(db, BlockId(block)).unwrap() {
                let free = BlockHeader::read(&bytes).free_offset as usize;
                write(
                    "record_parse",
                    &format!("seed-block-{db}-{block}"),
                    &bytes[48..free],
                );
            }
        }
    }

    // delta_apply: raw and resealed next deltas, identity xors, programs.
    for (k, delta) in fx.deltas.iter().enumerate() {
        let mut raw = vec![0, k as u8];
        raw.extend_from_slice(delta);
        assert_eq!(harness::run_delta_apply(&raw), 1, "raw seed {k} applies");
        write("delta_apply", &format!("seed-raw-{k}"), &raw);
        let xor = vec![1, k as u8, k as u8];
        assert_eq!(
            harness::run_delta_apply(&xor),
            fx.deltas.len() - k,
            "xor seed {k} applies with the rest"
        );
        write("delta_apply", &format!("seed-xor-{k}"), &xor);
    }
    let mut resealed = vec![3, 1];
    resealed.extend_from_slice(&fx.deltas[1]);
    write("delta_apply", "seed-resealed-1", &resealed);
    for (name, data, applies) in structured_seeds() {
        assert_eq!(harness::run_delta_apply(&data), applies, "{name}");
        write("delta_apply", name, &data);
    }
}

// ---------------------------------------------------------------------------
// Known bugs found while writing the fuzz harness, not panics (so the fuzz
// targets do not assert them). Each asserts the correct behaviour; remove
// the `#[ignore]` with the fix.

fn encode_delta(db: u32, lsn: u64, writes: &[(u32, u32, &[u8])]) -> Delta {
    let mut out = b"HD\x01\x00\0\0\0\0".to_vec();
    out.push(1);
    out.extend_from_slice(&db.to_le_bytes());
    for &(block, offset, bytes) in writes {
        out.push(3);
        for field in [db, block, offset, bytes.len() as u32] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(bytes);
    }
    out.push(5);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    harness::reseal(&mut out);
    Delta::decode(&out.into()).expect("well formed")
}

/// A delta that writes the same record twice (overlapping writes, which a
/// primary never emits) once indexed the record twice in the unique index,
/// so that a later delete left `get` returning the tombstoned record. Such a
/// delta is now refused, and the delete works.
#[test]
fn overlapping_writes_do_not_resurrect_deleted_records() {
    let fx = harness::fixture();
    let k = fx.deltas.len() as u64;
    let follower = harness::follower_at(fx.deltas.len());
    let users = follower.database("users").unwrap();
    let (block, bytes) = follower
        .digest("users")
        .unwrap()
        .blocks
        .iter()
        .map(|(b, _)| (*b, follower.block_bytes("users", *b).unwrap().unwrap()))
        .find(|(_, bytes)| RecordRef::parse(&bytes[48..]).is_ok_and(|r| r.key() == b"big"))
        .expect("the fixture's last delta puts `big` first in a new block");
    let slot = RecordRef::parse(&bytes[48..]).unwrap().slot_len();
    let record = &bytes[48..48 + slot];
    follower
        .apply(&encode_delta(
            0,
            k + 1,
            &[(block.0, 48, record), (block.0, 48, record)],
        ))
        .expect_err("overlapping writes are refused");
    // The delete a primary would send: state byte and header.
    let mut header = BlockHeader::read(&bytes);
    header.record_count -= 1;
    header.dead_bytes += slot as u32;
    header.lsn = Lsn(k + 1);
    let mut header_bytes = [0u8; 48];
    header.write(&mut header_bytes);
    follower
        .apply(&encode_delta(
            0,
            k + 1,
            &[(block.0, 0, &header_bytes), (block.0, 48, &[2])],
        ))
        .expect("accepted");
    let found = users
        .get(b"big")
        .unwrap()
        .map(|r| String::from_utf8_lossy(&r.key).into_owned());
    assert_eq!(found, None, "a deleted record is still found");
}
