//! Bad input gets a typed error and leaves no trace: oversize records,
//! duplicate keys, unknown names, wrong value counts, the memory limit,
//! corrupted and hostile deltas.

use bytes::Bytes;
use hotblock_core::constants::ARENA_CHUNK_SIZE;
use hotblock_core::{
    ApplyError, DatabaseOptions, Delta, DeltaDecodeError, Engine, EngineConfig, Error, IndexMode,
    Lsn, Role,
};
use xxhash_rust::xxh3::xxh3_64;

fn primary() -> Engine {
    let engine = Engine::new(EngineConfig::default());
    engine
        .create_database(
            "users",
            DatabaseOptions::with_indexes(["city", "team"]).block_size(4096),
        )
        .unwrap();
    engine
}

fn follower() -> Engine {
    Engine::new(EngineConfig {
        role: Role::Follower(IndexMode::Maintained),
        ..Default::default()
    })
}

#[test]
fn oversize_record_names_record_and_block_sizes() {
    let engine = primary();
    let mut txn = engine.begin("users").unwrap();
    let err = txn.put(b"k", &[None, None], &[0u8; 5000]).unwrap_err();
    match &err {
        Error::RecordTooLarge {
            record_bytes,
            block_capacity,
            block_size,
        } => {
            assert_eq!(
                (*record_bytes, *block_capacity, *block_size),
                (5017, 4048, 4096)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("5017") && err.to_string().contains("4096"),
        "{err}"
    );
    // The transaction is still usable, and a fitting record commits.
    txn.put(b"k", &[None, None], &[0u8; 4000]).unwrap();
    txn.commit().unwrap();
}

#[test]
fn key_and_value_limits() {
    let engine = primary();
    let mut txn = engine.begin("users").unwrap();
    assert!(matches!(
        txn.put(b"", &[None, None], b""),
        Err(Error::EmptyKey)
    ));
    let long = vec![b'k'; hotblock_core::constants::KEY_LEN_MAX + 1];
    assert!(matches!(
        txn.put(&long, &[None, None], b""),
        Err(Error::KeyTooLong { .. })
    ));
    let value = vec![b'v'; hotblock_core::constants::VALUE_LEN_MAX + 1];
    assert!(matches!(
        txn.put(b"k", &[Some(&value), None], b""),
        Err(Error::ValueTooLong { .. })
    ));
    assert!(txn.is_empty());
}

#[test]
fn duplicate_unique_key_on_insert() {
    let engine = primary();
    let mut txn = engine.begin("users").unwrap();
    txn.insert(b"ada", &[Some(b"london"), None], b"1").unwrap();
    assert!(matches!(
        txn.insert(b"ada", &[None, None], b"2"),
        Err(Error::DuplicateKey)
    ));
    txn.commit().unwrap();
    let mut txn = engine.begin("users").unwrap();
    assert!(matches!(
        txn.insert(b"ada", &[None, None], b"3"),
        Err(Error::DuplicateKey)
    ));
    // Deleted in this transaction: insert is fine again.
    assert!(txn.delete(b"ada").unwrap());
    txn.insert(b"ada", &[None, None], b"4").unwrap();
    txn.commit().unwrap();
    assert_eq!(
        engine
            .database("users")
            .unwrap()
            .get(b"ada")
            .unwrap()
            .unwrap()
            .payload,
        b"4"
    );
}

#[test]
fn unknown_names_and_wrong_value_counts() {
    let engine = primary();
    assert!(matches!(engine.begin("nope"), Err(Error::UnknownDatabase(n)) if n == "nope"));
    assert!(matches!(
        engine.database("nope"),
        Err(Error::UnknownDatabase(_))
    ));
    assert!(matches!(
        engine.create_database("users", DatabaseOptions::default()),
        Err(Error::DatabaseExists(_))
    ));
    assert!(matches!(
        engine.create_database("bad name", DatabaseOptions::default()),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        engine.create_database("dup", DatabaseOptions::with_indexes(["a", "a"])),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        engine.create_database("odd", DatabaseOptions::default().block_size(5000)),
        Err(Error::InvalidBlockSize(5000))
    ));
    assert!(matches!(
        engine.create_database("big", DatabaseOptions::default().block_size(2 << 20)),
        Err(Error::InvalidBlockSize(_))
    ));
    let users = engine.database("users").unwrap();
    assert!(matches!(
        users.find("country", b"x", None),
        Err(Error::UnknownIndex { .. })
    ));
    let mut txn = engine.begin("users").unwrap();
    assert!(matches!(
        txn.put(b"k", &[Some(b"one")], b""),
        Err(Error::ValueCount {
            expected: 2,
            got: 1,
            ..
        })
    ));
    assert!(matches!(
        txn.find("country", b"x", None),
        Err(Error::UnknownIndex { .. })
    ));
}

#[test]
fn memory_limit_is_a_typed_error_and_the_failed_commit_leaves_no_trace() {
    let engine = Engine::new(EngineConfig {
        memory_limit_bytes: Some(ARENA_CHUNK_SIZE as u64),
        ..Default::default()
    });
    engine
        .create_database("t", DatabaseOptions::with_indexes(["v"]).block_size(65536))
        .unwrap();
    let t = engine.database("t").unwrap();
    let mut n = 0u32;
    let err = loop {
        let mut txn = engine.begin("t").unwrap();
        for _ in 0..100 {
            txn.put(&n.to_be_bytes(), &[Some(b"x")], &[7u8; 1000])
                .unwrap();
            n += 1;
        }
        let (lsn, count, digest) = (engine.lsn(), t.count(), engine.digest("t").unwrap());
        match txn.commit() {
            Ok(_) => assert!(n < 100_000, "the limit never hit"),
            Err(e) => {
                assert_eq!((engine.lsn(), t.count()), (lsn, count));
                assert_eq!(engine.digest("t").unwrap(), digest);
                break e;
            }
        }
    };
    assert!(
        matches!(err, Error::MemoryLimit { limit_bytes, .. } if limit_bytes == ARENA_CHUNK_SIZE as u64)
    );
    assert!(err.to_string().contains("memory limit"), "{err}");
    assert!(engine.memory_used_bytes() <= ARENA_CHUNK_SIZE as u64);
    // Reads still served, and smaller writes that fit still commit.
    let committed = t.count();
    assert!(committed > 0);
    assert_eq!(t.find("v", b"x", None).unwrap().len() as u64, committed);
    let mut txn = engine.begin("t").unwrap();
    txn.delete(&0u32.to_be_bytes()).unwrap();
    txn.commit().unwrap();
    assert_eq!(t.count(), committed - 1);
}

/// A committed delta with several ops, encoded.
fn sample_delta() -> (Engine, Vec<Delta>) {
    let engine = primary();
    let mut deltas = vec![];
    for batch in 0..3u8 {
        let mut txn = engine.begin("users").unwrap();
        for i in 0..4u8 {
            txn.put(
                &[b'k', batch, i],
                &[Some(b"london"), Some(&[i])],
                &[batch; 900],
            )
            .unwrap();
        }
        txn.delete(&[b'k', 0, 1]).unwrap();
        deltas.push(txn.commit().unwrap().unwrap().delta);
    }
    (engine, deltas)
}

#[test]
fn every_single_byte_corruption_of_a_delta_is_rejected() {
    // A small multi-op delta (alloc, header and record writes), so that all
    // 255 corruptions of every byte stay quick to check.
    let engine = primary();
    let mut txn = engine.begin("users").unwrap();
    txn.put(b"ada", &[Some(b"london"), None], b"payload")
        .unwrap();
    let delta = &txn.commit().unwrap().unwrap().delta;
    assert!(delta.ops().len() >= 4, "{delta:?}");
    let encoded = delta.encode();
    let mut rejected = 0;
    for at in 0..encoded.len() {
        for flip in 1..=255u8 {
            let mut bad = encoded.clone();
            bad[at] ^= flip;
            match Delta::decode(&Bytes::from(bad)) {
                Err(_) => rejected += 1,
                Ok(decoded) => {
                    assert_eq!(&decoded, delta, "corruption at {at} ^ {flip:#x} accepted")
                }
            }
        }
    }
    assert_eq!(rejected, encoded.len() * 255);
    // Appended or missing bytes are rejected too.
    let mut longer = encoded.clone();
    longer.push(0);
    assert!(Delta::decode(&Bytes::from(longer)).is_err());
    assert!(Delta::decode(&Bytes::from(encoded[..encoded.len() - 1].to_vec())).is_err());
    assert!(Delta::decode(&Bytes::new()).is_err());
}

/// Encodes ops by hand, in the documented format, with a valid checksum:
/// what a hostile or buggy primary could send.
struct RawDelta(Vec<u8>);

impl RawDelta {
    fn new() -> Self {
        RawDelta(Vec::new())
    }
    fn op(mut self, tag: u8, fields: &[u32]) -> Self {
        self.0.push(tag);
        for f in fields {
            self.0.extend_from_slice(&f.to_le_bytes());
        }
        self
    }
    fn write(mut self, db: u32, block: u32, offset: u32, bytes: &[u8]) -> Self {
        self = self.op(3, &[db, block, offset, bytes.len() as u32]);
        self.0.extend_from_slice(bytes);
        self
    }
    fn commit(mut self, lsn: u64) -> Self {
        self.0.push(5);
        self.0.extend_from_slice(&lsn.to_le_bytes());
        self
    }
    fn encode(self) -> Bytes {
        let mut out = b"HD\x01\x00".to_vec();
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.0);
        let sum = xxh3_64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        Bytes::from(out)
    }
}

#[test]
fn hostile_deltas_are_rejected_without_a_trace() {
    let (primary, deltas) = sample_delta();
    let f = follower();
    f.apply(&Delta::decode(&Bytes::from(primary_create_delta())).unwrap())
        .unwrap();
    for d in &deltas {
        f.apply(d).unwrap();
    }
    assert_eq!(f.digests(), primary.digests());
    let lsn = f.lsn().0;
    let users = f.database("users").unwrap();
    let block0 = 0u32;

    let cases: Vec<(&str, Bytes)> = vec![
        (
            "lsn gap",
            RawDelta::new().op(1, &[0]).commit(lsn + 2).encode(),
        ),
        (
            "lsn regression",
            RawDelta::new().op(1, &[0]).commit(lsn).encode(),
        ),
        (
            "unknown database",
            RawDelta::new().op(1, &[7]).commit(lsn + 1).encode(),
        ),
        (
            "unknown block",
            RawDelta::new()
                .op(1, &[0])
                .write(0, 99, 48, b"x")
                .commit(lsn + 1)
                .encode(),
        ),
        (
            "past the block",
            RawDelta::new()
                .op(1, &[0])
                .write(0, block0, 4090, b"0123456789")
                .commit(lsn + 1)
                .encode(),
        ),
        (
            "alloc of an existing block",
            RawDelta::new()
                .op(1, &[0])
                .op(2, &[0, block0])
                .commit(lsn + 1)
                .encode(),
        ),
        (
            "free of an unknown block",
            RawDelta::new()
                .op(1, &[0])
                .op(4, &[0, 42])
                .commit(lsn + 1)
                .encode(),
        ),
        (
            "write after free",
            RawDelta::new()
                .op(1, &[0])
                .op(4, &[0, block0])
                .write(0, block0, 48, b"x")
                .commit(lsn + 1)
                .encode(),
        ),
        (
            "op for another database",
            RawDelta::new()
                .op(1, &[0])
                .op(2, &[1, 5])
                .commit(lsn + 1)
                .encode(),
        ),
        (
            "sparse block id (would grow the location table)",
            RawDelta::new()
                .op(1, &[0])
                .op(2, &[0, 100_000])
                .commit(lsn + 1)
                .encode(),
        ),
        (
            "overlapping writes",
            RawDelta::new()
                .op(1, &[0])
                .write(0, block0, 48, b"abcd")
                .write(0, block0, 50, b"xy")
                .commit(lsn + 1)
                .encode(),
        ),
        (
            "alloc past the block limit",
            RawDelta::new()
                .op(1, &[0])
                .op(2, &[0, u32::MAX])
                .commit(lsn + 1)
                .encode(),
        ),
    ];
    let digests = f.digests();
    for (what, bytes) in cases {
        let result = Delta::decode(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|d| f.apply(&d).map_err(|e| e.to_string()));
        assert!(result.is_err(), "{what}: accepted");
        assert_eq!(f.lsn().0, lsn, "{what}: moved the LSN");
        assert_eq!(f.digests(), digests, "{what}: changed blocks");
    }
    // Decoder-level rejections: offset + length overflow, length beyond the
    // bytes left, nested begin.
    let overflow = RawDelta::new()
        .op(1, &[0])
        .op(3, &[0, 0, u32::MAX, 16])
        .commit(lsn + 1)
        .encode();
    assert!(matches!(
        Delta::decode(&overflow),
        Err(DeltaDecodeError::Malformed(_))
    ));
    let huge_len = RawDelta::new()
        .op(1, &[0])
        .op(3, &[0, 0, 48, 1 << 19])
        .commit(lsn + 1)
        .encode();
    assert!(matches!(
        Delta::decode(&huge_len),
        Err(DeltaDecodeError::Truncated { .. })
    ));
    let nested = RawDelta::new()
        .op(1, &[0])
        .op(1, &[0])
        .commit(lsn + 1)
        .encode();
    assert!(matches!(
        Delta::decode(&nested),
        Err(DeltaDecodeError::Malformed(_))
    ));
    // Still a working follower: queries answer, and the next real delta applies.
    assert!(users.get(&[b'k', 2, 3]).unwrap().is_some());
    let mut txn = primary.begin("users").unwrap();
    txn.put(b"next", &[None, None], b"").unwrap();
    f.apply(&txn.commit().unwrap().unwrap().delta).unwrap();
    assert_eq!(f.digests(), primary.digests());
}

#[test]
fn followers_refuse_local_writes_and_primaries_refuse_deltas() {
    let (primary, deltas) = sample_delta();
    assert!(matches!(
        primary.apply(&deltas[0]),
        Err(ApplyError::Engine(Error::ReadOnly))
    ));
    let f = follower();
    assert!(matches!(f.begin("users"), Err(Error::ReadOnly)));
    assert!(matches!(
        f.apply(&deltas[1]),
        Err(ApplyError::LsnGap {
            applied: Lsn(0),
            got: Lsn(3)
        })
    ));
}

fn primary_create_delta() -> Vec<u8> {
    let engine = Engine::new(EngineConfig::default());
    engine
        .create_database(
            "users",
            DatabaseOptions::with_indexes(["city", "team"]).block_size(4096),
        )
        .unwrap()
        .delta
        .encode()
}
