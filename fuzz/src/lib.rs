//! The bodies of hotblock's fuzz targets.
//!
//! Each target in `fuzz_targets/` is one line calling a function of this
//! file, and `node/tests/fuzz_corpus.rs` includes this same file (by
//! `#[path]`) to replay every committed corpus input under `cargo test`, so
//! the fuzzer and the test run exactly the same checks. This file therefore
//! uses only crates that `hotblock-core`'s tests also have: `hotblock_core`,
//! `bytes` and `xxhash_rust`.
//!
//! * [`delta_decode`]: `Delta::decode` on arbitrary bytes never panics, and
//!   whatever it accepts re-encodes to the very same bytes and decodes back
//!   to an equal delta.
//! * [`frame_decode`]: replication frames decoded from arbitrary bytes never
//!   panic, and whatever is accepted survives an encode/decode round trip.
//! * [`record_parse`]: `RecordRef::parse` on arbitrary bytes never panics, and
//!   every accessor of a parsed record stays inside the bytes it was given.
//! * [`delta_apply`]: a follower engine, brought to a valid state by a prefix
//!   of a primary's deltas, is handed a hostile delta (see the modes below);
//!   neither the apply nor any query afterwards may panic, a rejected delta
//!   must leave no trace, and the follower's LSN moves only on success.
//! * [`repl_session`]: the replication state machines (`Secondary` and
//!   `Primary`) fed the frames a hostile peer could send on the
//!   replication port; neither may panic, the secondary's engine stays
//!   queryable, and nothing the primary sends is unbounded.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use hotblock_core::constants::{
    BLOCK_HEADER_SIZE, BLOCK_SIZE_MAX, INDEXES_PER_DB_MAX, KEY_LEN_MAX, NAME_LEN_MAX, VALUE_LEN_MAX,
};
use hotblock_core::{
    ApplyError, BlockHeader, BlockId, Committed, DatabaseOptions, DbDigest, DbId, Delta, DeltaOp,
    EncodedRecord, Engine, EngineConfig, Error, IndexMode, Lsn, RecordRef, Role,
};
use xxhash_rust::xxh3::xxh3_64;

// ---------------------------------------------------------------------------
// delta_decode

/// Decodes `data` as a delta; on success the encoding must be canonical
/// (re-encoding gives back `data`) and must decode to an equal delta.
pub fn delta_decode(data: &[u8]) {
    let input = Bytes::copy_from_slice(data);
    let Ok(delta) = Delta::decode(&input) else {
        return;
    };
    let encoded = delta.encode();
    assert_eq!(
        encoded.len(),
        delta.encoded_len(),
        "encoded_len disagrees with encode"
    );
    assert_eq!(encoded, data, "an accepted delta re-encodes to other bytes");
    let again = Delta::decode(&Bytes::from(encoded)).expect("a re-encoded delta decodes");
    assert_eq!(again, delta, "decode(encode(d)) != d");
    // The accessors rely on the op sequence the decoder checked.
    let _ = (delta.db(), delta.lsn(), delta.write_bytes());
}

// ---------------------------------------------------------------------------
// frame_decode

/// Decodes `data` as a stream of replication frames; every frame accepted
/// re-encodes to the bytes it came from and decodes back to itself.
pub fn frame_decode(data: &[u8]) {
    use hotblock_core::repl::Frame;
    let mut buf = bytes::BytesMut::from(data);
    // Every decoded frame consumes at least a header, so this ends.
    while let Ok(Some(frame)) = Frame::decode(&mut buf) {
        let encoded = frame.to_bytes();
        let mut again = bytes::BytesMut::from(&encoded[..]);
        let decoded = Frame::decode(&mut again).expect("a re-encoded frame decodes");
        assert_eq!(decoded.as_ref(), Some(&frame), "decode(encode(f)) != f");
    }
}

// ---------------------------------------------------------------------------
// repl_session

/// Most frames taken from one input, and most frames the primary may send
/// in reply to them (its snapshot of the small engine below is far less).
const SESSION_FRAMES_MAX: usize = 64;
const SESSION_REPLIES_MAX: usize = 100_000;

/// A small primary engine, built once: what a hostile secondary's `Hello`
/// asks a snapshot or a stream of.
fn session_primary_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine = Engine::new(EngineConfig::default());
        engine
            .create_database("t", DatabaseOptions::with_indexes(["g"]).block_size(4096))
            .expect("create");
        for i in 0u32..40 {
            let mut txn = engine.begin("t").expect("begin");
            txn.put(&i.to_be_bytes(), &[Some(&[(i % 3) as u8])], &[7; 100])
                .expect("put");
            txn.commit().expect("commit");
        }
        engine
    })
}

/// Input layout: `[flags, k, frames...]`. The frames (decoded as on the
/// wire, at most [`SESSION_FRAMES_MAX`]) go to a connected `Secondary`
/// whose engine applied the first `k` fixture deltas, then to a `Primary`
/// session. Unless `flags & 1`, each frame's sequence number is made the
/// expected one, so that the messages themselves are explored; `flags & 2`
/// makes the secondary sync and the primary wait for a sync quorum of 1.
/// Time moves 1 ms per frame and timeouts are run as they fall due.
pub fn repl_session(data: &[u8]) {
    use hotblock_core::repl::{
        EpochHistory, Frame, Mode, NodeId, Primary, PrimaryConfig, Secondary, SecondaryConfig,
    };
    use std::time::{Duration, Instant};
    let [flags, k, rest @ ..] = data else {
        return;
    };
    let mut buf = bytes::BytesMut::from(rest);
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = Frame::decode(&mut buf) {
        frames.push(frame);
        if frames.len() == SESSION_FRAMES_MAX {
            break;
        }
    }
    let fix_seq = flags & 1 == 0;
    let mode = if flags & 2 != 0 {
        Mode::Sync
    } else {
        Mode::Async
    };
    let t0 = Instant::now();

    let fx = fixture();
    let engine = follower_at(*k as usize % (fx.deltas.len() + 1));
    let mut sec = Secondary::new(
        engine.clone(),
        EpochHistory::default(),
        SecondaryConfig::new(NodeId(1), mode),
        t0,
    );
    if sec.connect(t0).is_ok() {
        for (i, frame) in frames.iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64);
            let mut frame = frame.clone();
            if fix_seq {
                frame.seq = i as u64;
            }
            sec.handle_frame(now, frame);
            if sec.poll_timeout().is_some_and(|t| t <= now) {
                sec.handle_timeout(now);
            }
            while sec.poll_transmit(now).is_some() {}
            while sec.poll_event().is_some() {}
        }
    }
    // Whatever it took, the engine answers queries.
    let _ = engine.digests();
    query_all(&engine, &[]);

    let primary_engine = session_primary_engine();
    let mut p = Primary::new(
        primary_engine.clone(),
        EpochHistory::default(),
        PrimaryConfig {
            sync_quorum: usize::from(mode == Mode::Sync),
            ..PrimaryConfig::default()
        },
    );
    let session = p.connect(t0);
    let mut replies = 0;
    for (i, frame) in frames.into_iter().enumerate() {
        let now = t0 + Duration::from_millis(i as u64);
        let mut frame = frame;
        if fix_seq {
            frame.seq = i as u64;
        }
        p.handle_frame(now, session, frame);
        if p.poll_timeout().is_some_and(|t| t <= now) {
            p.handle_timeout(now);
        }
        while p.poll_transmit(now).is_some() {
            replies += 1;
            assert!(
                replies <= SESSION_REPLIES_MAX,
                "the primary sends without end"
            );
        }
        while p.poll_event().is_some() {}
    }
    let _ = p.status(t0);
}

// ---------------------------------------------------------------------------
// persist_snapshot, persist_log

/// Decodes `data` as a data directory's snapshot file: an error or a
/// snapshot, never a panic or an allocation beyond the declared limits.
pub fn persist_snapshot(data: &[u8]) {
    hotblock_persist::fuzz_load_snapshot(data);
}

/// Decodes `data` as a data directory's log file (and as its state file).
pub fn persist_log(data: &[u8]) {
    hotblock_persist::fuzz_load_log(data);
}

// ---------------------------------------------------------------------------
// record_parse

/// Parses `data` as a record; on success touches every accessor, and checks
/// that an encodable record re-encodes to the same fields.
pub fn record_parse(data: &[u8]) {
    let Ok(rec) = RecordRef::parse(data) else {
        return;
    };
    assert!(rec.slot_len() <= data.len(), "slot runs past the input");
    let key = rec.key();
    let values: Vec<Option<&[u8]>> = (0..rec.value_count()).map(|i| rec.value(i)).collect();
    assert_eq!(
        rec.value(rec.value_count()),
        None,
        "a value past value_count"
    );
    assert_eq!(rec.value(usize::MAX), None);
    let payload = rec.payload();
    let _ = rec.is_live();
    let owned = rec.to_record();
    assert_eq!(owned.key, key);
    assert_eq!(owned.payload, payload);
    assert_eq!(
        owned.values,
        values
            .iter()
            .map(|v| v.map(<[u8]>::to_vec))
            .collect::<Vec<_>>()
    );
    let used = key.len() + payload.len() + values.iter().flatten().map(|v| v.len()).sum::<usize>();
    assert!(used <= rec.slot_len(), "fields longer than the slot");

    // Within the encoder's limits, encode → parse gives the same fields.
    let encodable = !key.is_empty()
        && key.len() <= KEY_LEN_MAX
        && values.iter().flatten().all(|v| v.len() <= VALUE_LEN_MAX);
    if encodable {
        let enc = EncodedRecord::encode(key, &values, payload, usize::MAX)
            .expect("a record within the limits encodes");
        assert_eq!(enc.as_ref().to_record(), owned, "re-encoded record differs");
    }
}

// ---------------------------------------------------------------------------
// delta_apply: the primary's history every input starts from

/// Names of the non-unique keys of the `users` database.
pub const USERS_INDEXES: [&str; 2] = ["city", "team"];
const CITIES: [&str; 3] = ["london", "paris", "oslo"];
const TEAMS: [&str; 2] = ["red", "blue"];

/// A primary's deltas, built once, and what the follower should look like
/// after each prefix of them.
#[derive(Debug)]
pub struct Fixture {
    /// Encoded deltas; `deltas[i]` carries LSN `i + 1`.
    pub deltas: Vec<Bytes>,
    /// `digests[k]`: the primary's digests after its first `k` deltas.
    pub digests: Vec<Vec<DbDigest>>,
    /// Unique keys worth looking up (present, deleted and never written).
    pub keys: Vec<Vec<u8>>,
    /// Non-unique values worth finding.
    pub values: Vec<Vec<u8>>,
}

/// The fixture shared by every `delta_apply` input.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn user_key(i: usize) -> Vec<u8> {
    format!("user-{i:02}").into_bytes()
}

fn build_fixture() -> Fixture {
    let primary = Engine::new(EngineConfig::default());
    let mut deltas = Vec::new();
    let mut digests = vec![primary.digests()];
    let mut keep = |c: Committed| {
        deltas.push(Bytes::from(c.delta.encode()));
        digests.push(primary.digests());
    };

    // LSN 1: a database with two non-unique keys and small blocks, so a few
    // records span several blocks and offsets stay in a range a fuzzer hits.
    let options = DatabaseOptions::with_indexes(USERS_INDEXES).block_size(4096);
    keep(
        primary
            .create_database("users", options)
            .expect("create users"),
    );

    // LSN 2: 40 records over two blocks (BlockAlloc, BlockWrite).
    let mut txn = primary.begin("users").expect("begin");
    for i in 0..40 {
        let team = (i % 4 != 0).then(|| TEAMS[i % 2].as_bytes());
        let payload = vec![b'a' + (i % 26) as u8; 40 + 3 * i];
        txn.put(
            &user_key(i),
            &[Some(CITIES[i % 3].as_bytes()), team],
            &payload,
        )
        .expect("put");
    }
    keep(txn.commit().expect("commit").expect("a delta"));

    // LSN 3: update in place, replace by a larger record, delete, insert.
    let mut txn = primary.begin("users").expect("begin");
    txn.put(&user_key(1), &[Some(b"paris"), None], b"short")
        .expect("put");
    txn.put(&user_key(2), &[Some(b"oslo"), Some(b"blue")], &[b'z'; 300])
        .expect("put");
    txn.delete(&user_key(3)).expect("delete");
    txn.put(&user_key(99), &[None, Some(b"red")], b"new")
        .expect("put");
    keep(txn.commit().expect("commit").expect("a delta"));

    // LSN 4: empty the first block, which the commit frees (BlockFree).
    let mut txn = primary.begin("users").expect("begin");
    for i in 0..36 {
        txn.delete(&user_key(i)).expect("delete");
    }
    keep(txn.commit().expect("commit").expect("a delta"));

    // LSN 5: a second database: another block size, no non-unique key.
    let options = DatabaseOptions::default().block_size(8192);
    keep(
        primary
            .create_database("events", options)
            .expect("create events"),
    );

    // LSN 6: records in it.
    let mut txn = primary.begin("events").expect("begin");
    for i in 0..3u8 {
        txn.put(&[b'e', b'v', b'-', b'0' + i], &[], &[i; 24])
            .expect("put");
    }
    keep(txn.commit().expect("commit").expect("a delta"));

    // LSN 7: a large record that opens a new block of `users`.
    let mut txn = primary.begin("users").expect("begin");
    txn.put(b"big", &[Some(b"london"), Some(b"red")], &[b'b'; 2500])
        .expect("put");
    keep(txn.commit().expect("commit").expect("a delta"));

    let mut keys: Vec<Vec<u8>> = [0, 1, 2, 3, 30, 36, 39, 99]
        .iter()
        .map(|&i| user_key(i))
        .collect();
    keys.extend([b"big".to_vec(), b"ev-0".to_vec(), b"nope".to_vec()]);
    let mut values: Vec<Vec<u8>> = CITIES
        .iter()
        .chain(&TEAMS)
        .map(|v| v.as_bytes().to_vec())
        .collect();
    values.push(b"nowhere".to_vec());
    Fixture {
        deltas,
        digests,
        keys,
        values,
    }
}

/// A follower that applied the first `k` deltas of the fixture.
pub fn follower_at(k: usize) -> Engine {
    let fx = fixture();
    let follower = Engine::new(EngineConfig {
        role: Role::Follower(IndexMode::Maintained),
        ..Default::default()
    });
    for bytes in &fx.deltas[..k] {
        let delta = Delta::decode(bytes).expect("a primary's delta decodes");
        follower
            .apply(&delta)
            .expect("a primary's delta applies in order");
    }
    follower
}

/// [`follower_at`], checked block for block against the primary. Hashing
/// every block is too slow to do for every fuzz input; the corpus test
/// does it.
pub fn checked_follower_at(k: usize) -> Engine {
    let follower = follower_at(k);
    let expected = &fixture().digests[k];
    assert_eq!(
        &follower.digests(),
        expected,
        "follower differs from primary after {k} deltas"
    );
    follower
}

// ---------------------------------------------------------------------------
// delta_apply: the target

/// Input layout: `[mode, k, rest...]`. The follower first applies the first
/// `k % (deltas + 1)` fixture deltas, then by `mode % 4`:
///
/// * 0, raw: `rest` is decoded as a delta and applied.
/// * 1, xor: `rest[0]` picks a fixture delta; `rest[1..]` is xored into its
///   body (after the 8-byte prefix), then the checksum is recomputed so that
///   the mutation reaches apply; the fixture deltas after it are then
///   applied too (on top of whatever the mutated one left).
/// * 2, structured: `rest` is a small program (see [`Program`]) that
///   generates up to four well-framed deltas from the follower's current
///   state: appends, tombstones, rewrites, headers, allocs, frees, creates,
///   at hostile offsets, unknown blocks, wrong LSNs.
/// * 3, resealed raw: like raw, but the body length and the checksum are
///   overwritten to match `rest`'s length and bytes first.
///
/// After every hostile delta (not after the fixture deltas of mode 1), and
/// again after `rebuild_indexes` and `relocate`, every database is queried
/// (get, with_record, contains, find, count, stats).
pub fn delta_apply(data: &[u8]) {
    run_delta_apply(data);
}

/// [`delta_apply`], returning how many deltas the follower accepted after
/// the fixture prefix (for tests of the seeds).
pub fn run_delta_apply(data: &[u8]) -> usize {
    let fx = fixture();
    let mut input = Cursor::new(data);
    let mode = input.u8() % 4;
    let k = input.u8() as usize % (fx.deltas.len() + 1);
    let follower = follower_at(k);
    let mut terms = Vec::new();
    let mut applied = 0;
    match mode {
        0 => {
            applied += usize::from(try_apply(&follower, input.rest(), &mut terms, true));
        }
        1 => {
            let t = input.u8() as usize % fx.deltas.len();
            let mut bytes = fx.deltas[t].to_vec();
            let body_end = bytes.len() - 8;
            for (b, x) in bytes[8..body_end].iter_mut().zip(input.rest()) {
                *b ^= x;
            }
            reseal(&mut bytes);
            applied += usize::from(try_apply(&follower, &bytes, &mut terms, true));
            for next in &fx.deltas[t + 1..] {
                applied += usize::from(try_apply(&follower, next, &mut terms, false));
            }
        }
        2 => {
            let deltas = 1 + input.u8() % 4;
            for _ in 0..deltas {
                let program = Program::generate(&follower, &mut input, &mut terms);
                let bytes = program.encode();
                if let Some(ops) = &program.expected {
                    // The format doc, implemented independently here, and the
                    // decoder must agree on well-formed deltas.
                    let decoded = Delta::decode(&Bytes::copy_from_slice(&bytes))
                        .expect("a well-formed delta decodes");
                    assert_eq!(
                        decoded.ops(),
                        &ops[..],
                        "decoder disagrees with the format doc"
                    );
                }
                applied += usize::from(try_apply(&follower, &bytes, &mut terms, true));
                if input.is_empty() {
                    break;
                }
            }
        }
        _ => {
            let mut bytes = input.rest().to_vec();
            if bytes.len() >= 16 {
                reseal(&mut bytes);
            }
            applied += usize::from(try_apply(&follower, &bytes, &mut terms, true));
        }
    }
    let _ = follower.rebuild_indexes();
    query_all(&follower, &terms);
    for db in follower.databases() {
        let _ = follower.relocate(db.name());
    }
    query_all(&follower, &terms);
    applied
}

/// Sets a delta's body length and checksum to match its bytes.
pub fn reseal(bytes: &mut [u8]) {
    let n = bytes.len();
    assert!(n >= 16);
    bytes[4..8].copy_from_slice(&((n - 16) as u32).to_le_bytes());
    let sum = xxh3_64(&bytes[..n - 8]);
    bytes[n - 8..].copy_from_slice(&sum.to_le_bytes());
}

/// Most extra lookup terms one input collects.
const TERMS_MAX: usize = 16;

fn add_term(terms: &mut Vec<Vec<u8>>, term: &[u8]) {
    if terms.len() < TERMS_MAX && !terms.iter().any(|t| t == term) {
        terms.push(term.to_vec());
    }
}

/// Decodes and applies one delta, then queries if asked. Returns whether
/// it applied.
fn try_apply(engine: &Engine, bytes: &[u8], terms: &mut Vec<Vec<u8>>, query: bool) -> bool {
    let Ok(delta) = Delta::decode(&Bytes::copy_from_slice(bytes)) else {
        return false;
    };
    // Keys and values of records a write starts with: worth looking up.
    for op in delta.ops() {
        if let DeltaOp::BlockWrite { bytes, .. } = op {
            if let Ok(rec) = RecordRef::parse(bytes) {
                add_term(terms, rec.key());
                for i in 0..rec.value_count() {
                    if let Some(v) = rec.value(i) {
                        add_term(terms, v);
                    }
                }
            }
        }
    }
    let lsn_before = engine.lsn();
    let digests_before = engine.digests();
    let result = engine.apply(&delta);
    match &result {
        Ok(lsn) => {
            assert_eq!(*lsn, delta.lsn());
            assert_eq!(engine.lsn(), *lsn);
        }
        Err(e) => {
            assert_eq!(
                engine.lsn(),
                lsn_before,
                "a rejected delta moved the LSN ({e})"
            );
            // Only a delta whose bytes were written and then found corrupt
            // (which poisons the database) may leave a trace.
            if !matches!(e, ApplyError::Engine(Error::Corrupt { .. })) {
                assert_eq!(
                    engine.digests(),
                    digests_before,
                    "rejected delta left a trace: {e}"
                );
            }
        }
    }
    if query {
        query_all(engine, terms);
    }
    result.is_ok()
}

/// Every read API on every database, with the fixture's terms and `extra`.
/// (Digests, which hash every block, run once per apply in `try_apply`.)
fn query_all(engine: &Engine, extra: &[Vec<u8>]) {
    let fx = fixture();
    let _ = engine.lsn();
    for db in engine.databases() {
        let _ = db.count();
        let _ = db.stats();
        let _ = engine.stats(db.name());
        let _ = engine.needs_compaction(db.name());
        for key in fx.keys.iter().chain(extra) {
            if let Ok(Some(rec)) = db.get(key) {
                assert_eq!(&rec.key, key, "get returned another key's record");
            }
            let _ = db.with_record(key, |r| (r.is_live(), r.to_record()));
        }
        {
            let view = db.read();
            let _ = view.count();
            for key in fx.keys.iter().chain(extra) {
                let _ = view.contains(key);
                let _ = view.get(key);
            }
        }
        let indexes = db.schema().indexes.clone();
        for index in &indexes {
            for value in fx.values.iter().chain(extra) {
                let _ = db.find(index, value, None);
                let _ = db.read().find(index, value, Some(1));
            }
        }
        let _ = db.find("no-such-index", b"london", None);
    }
}

// ---------------------------------------------------------------------------
// delta_apply: structured deltas

/// Reads fuzz input; past its end every read gives zeros, so any input is a
/// complete program.
#[derive(Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor { data, at: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at = (self.at + 1).min(self.data.len());
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// `n` bytes, zero-padded past the end of the input.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let have = self.data.len() - self.at;
        let take = n.min(have);
        let mut out = self.data[self.at..self.at + take].to_vec();
        self.at += take;
        out.resize(n, 0);
        out
    }

    pub fn rest(&mut self) -> &'a [u8] {
        let rest = &self.data[self.at..];
        self.at = self.data.len();
        rest
    }
}

/// One piece of a generated delta: a real op, or raw bytes in the op stream.
#[derive(Debug)]
enum Piece {
    Op(DeltaOp),
    Raw(Vec<u8>),
}

/// A generated delta. Every op names the database of its `TxnBegin`.
#[derive(Debug)]
pub struct Program {
    pieces: Vec<Piece>,
    /// The ops the decoder must return, when the delta is well formed by the
    /// format doc (no raw piece, names and write ranges within the limits).
    pub expected: Option<Vec<DeltaOp>>,
}

/// Op kinds of a structured delta, picked by one input byte.
const OP_KINDS: u8 = 10;

/// What a generated delta knows about one database and its blocks.
struct Target<'e> {
    engine: &'e Engine,
    db: DbId,
    name: Option<String>,
    block_size: usize,
    value_count: usize,
    lsn: Lsn,
    /// Blocks the follower holds now.
    existing: Vec<BlockId>,
    /// The bytes each touched block will hold if the delta applies.
    shadow: HashMap<BlockId, Vec<u8>>,
}

impl Target<'_> {
    fn pick_block(&self, c: &mut Cursor<'_>) -> BlockId {
        let s = c.u8();
        match s {
            0..=159 if !self.existing.is_empty() => self.existing[s as usize % self.existing.len()],
            0..=199 => BlockId((self.existing.len() + s as usize % 3) as u32),
            200..=247 => BlockId(u32::from(s % 16)),
            // Sparse ids, refused by apply (`SparseBlock`); once they cost
            // the location table ~86 MB each (corpus/delta_apply/regress-slow-*).
            248..=253 => BlockId(c.u32() % (1 << 16)),
            // Mostly past BLOCKS_PER_DB_MAX (rejected as DatabaseFull).
            _ => BlockId(c.u32() | (1 << 22)),
        }
    }

    fn pick_offset(&self, c: &mut Cursor<'_>) -> u32 {
        let bs = self.block_size as u32;
        match c.u8() {
            0..=63 => 0,
            64..=127 => BLOCK_HEADER_SIZE as u32 + u32::from(c.u8()),
            128..=199 => u32::from(c.u16()) % bs,
            200..=239 => bs.saturating_sub(1 + u32::from(c.u8() % 64)),
            240..=247 => bs,
            _ => c.u32(),
        }
    }

    /// The block as the delta so far leaves it (zeros for a block unknown
    /// to the follower).
    fn view(&mut self, block: BlockId) -> &mut Vec<u8> {
        let (engine, name, size) = (self.engine, &self.name, self.block_size);
        self.shadow.entry(block).or_insert_with(|| {
            name.as_deref()
                .and_then(|n| engine.block_bytes(n, block).ok().flatten())
                .unwrap_or_else(|| vec![0; size])
        })
    }

    /// Header of a shadow block, or an empty one where it holds none.
    fn header(&mut self, block: BlockId) -> BlockHeader {
        let (db, lsn, size) = (self.db, self.lsn, self.block_size);
        let h = BlockHeader::read_checked(self.view(block));
        match h {
            Ok(h) if (h.free_offset as usize) <= size => h,
            _ => BlockHeader::empty(db, block, lsn),
        }
    }

    /// A write, applied to the shadow where it fits.
    fn write(&mut self, block: BlockId, offset: u32, bytes: Vec<u8>, out: &mut Vec<Piece>) {
        let view = self.view(block);
        let at = offset as usize;
        if let Some(dst) = view.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(&bytes);
        }
        out.push(Piece::Op(DeltaOp::BlockWrite {
            db: self.db,
            block,
            offset,
            bytes: Bytes::from(bytes),
        }));
    }

    fn write_header(&mut self, block: BlockId, h: BlockHeader, out: &mut Vec<Piece>) {
        let mut bytes = vec![0u8; BLOCK_HEADER_SIZE];
        h.write(&mut bytes);
        self.write(block, 0, bytes, out);
    }

    /// Records of a shadow block, walked from the header to its free offset.
    fn records(&mut self, block: BlockId) -> Vec<(u32, usize, bool)> {
        let free = self.header(block).free_offset as usize;
        let view = self.view(block);
        let used = &view[..free.min(view.len())];
        let mut at = BLOCK_HEADER_SIZE;
        let mut out = Vec::new();
        while at < used.len() && out.len() < 64 {
            let Ok(rec) = RecordRef::parse(&used[at..]) else {
                break;
            };
            out.push((at as u32, rec.slot_len(), rec.is_live()));
            at += rec.slot_len();
        }
        out
    }
}

impl Program {
    /// Generates one delta for `engine`'s current state from `c`. Keys and
    /// values it writes are added to `terms`.
    pub fn generate(engine: &Engine, c: &mut Cursor<'_>, terms: &mut Vec<Vec<u8>>) -> Program {
        let dbs = engine.databases();
        let sel = c.u8();
        let next = engine.lsn().next();
        let lsn = match c.u8() {
            0..=239 => next,
            s @ 240..=251 => Lsn(next.0.wrapping_add(u64::from(s)).wrapping_sub(245)),
            _ => Lsn(c.u64()),
        };
        let mut t = match dbs.get(sel as usize % dbs.len().max(1)) {
            Some(db) if sel < 248 => Target {
                engine,
                db: db.id(),
                name: Some(db.name().to_string()),
                block_size: db.schema().block_size,
                value_count: db.schema().indexes.len(),
                lsn,
                existing: engine
                    .digest(db.name())
                    .map(|d| d.blocks.iter().map(|b| b.0).collect())
                    .unwrap_or_default(),
                shadow: HashMap::new(),
            },
            _ => Target {
                engine,
                db: DbId(u32::from(sel % 8)),
                name: None,
                block_size: 4096,
                value_count: 2,
                lsn,
                existing: Vec::new(),
                shadow: HashMap::new(),
            },
        };
        let mut pieces = vec![Piece::Op(DeltaOp::TxnBegin { db: t.db })];
        let ops = c.u8() % 10;
        for i in 0..ops {
            let kind = c.u8() % OP_KINDS;
            if kind == 9 && i == 0 {
                // A schema transaction: the create alone.
                let (db, create) = db_create(c, dbs.len());
                let mut pieces = vec![Piece::Op(DeltaOp::TxnBegin { db }), create];
                pieces.push(Piece::Op(DeltaOp::TxnCommit { lsn }));
                return Program::finish(pieces);
            }
            op(&mut t, kind, c, terms, &mut pieces);
        }
        pieces.push(Piece::Op(DeltaOp::TxnCommit { lsn }));
        Program::finish(pieces)
    }

    fn finish(pieces: Vec<Piece>) -> Program {
        let mut expected = Vec::new();
        for piece in &pieces {
            match piece {
                Piece::Op(op) if well_formed(op) => expected.push(op.clone()),
                _ => {
                    return Program {
                        pieces,
                        expected: None,
                    }
                }
            }
        }
        Program {
            pieces,
            expected: Some(expected),
        }
    }

    /// The delta's bytes, encoded from the format doc in `delta.rs` (not by
    /// `Delta::encode`, which only takes deltas the engine made).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = b"HD\x01\x00\0\0\0\0".to_vec();
        for piece in &self.pieces {
            match piece {
                Piece::Raw(bytes) => out.extend_from_slice(bytes),
                Piece::Op(op) => encode_op(op, &mut out),
            }
        }
        out.extend_from_slice(&[0; 8]);
        reseal(&mut out);
        out
    }
}

fn well_formed(op: &DeltaOp) -> bool {
    let name_ok = |n: &String| (1..=NAME_LEN_MAX).contains(&n.len());
    match op {
        DeltaOp::BlockWrite { offset, bytes, .. } => {
            !bytes.is_empty() && *offset as usize + bytes.len() <= BLOCK_SIZE_MAX
        }
        DeltaOp::DbCreate { name, indexes, .. } => {
            name_ok(name) && indexes.len() <= INDEXES_PER_DB_MAX && indexes.iter().all(name_ok)
        }
        _ => true,
    }
}

fn encode_op(op: &DeltaOp, out: &mut Vec<u8>) {
    let name = |out: &mut Vec<u8>, n: &str| {
        out.push(n.len() as u8);
        out.extend_from_slice(n.as_bytes());
    };
    match op {
        DeltaOp::TxnBegin { db } => {
            out.push(1);
            out.extend_from_slice(&db.0.to_le_bytes());
        }
        DeltaOp::BlockAlloc { db, block } | DeltaOp::BlockFree { db, block } => {
            out.push(if matches!(op, DeltaOp::BlockAlloc { .. }) {
                2
            } else {
                4
            });
            out.extend_from_slice(&db.0.to_le_bytes());
            out.extend_from_slice(&block.0.to_le_bytes());
        }
        DeltaOp::BlockWrite {
            db,
            block,
            offset,
            bytes,
        } => {
            out.push(3);
            for field in [db.0, block.0, *offset, bytes.len() as u32] {
                out.extend_from_slice(&field.to_le_bytes());
            }
            out.extend_from_slice(bytes);
        }
        DeltaOp::TxnCommit { lsn } => {
            out.push(5);
            out.extend_from_slice(&lsn.0.to_le_bytes());
        }
        DeltaOp::DbCreate {
            db,
            name: db_name,
            block_size,
            indexes,
        } => {
            out.push(6);
            out.extend_from_slice(&db.0.to_le_bytes());
            out.extend_from_slice(&block_size.to_le_bytes());
            name(out, db_name);
            out.push(indexes.len() as u8);
            for index in indexes {
                name(out, index);
            }
        }
    }
}

/// A `DbCreate`, most often of the next database id with a valid schema.
fn db_create(c: &mut Cursor<'_>, db_count: usize) -> (DbId, Piece) {
    const NAMES: [&str; 5] = ["users", "events", "extra", "x", "city"];
    const SIZES: [u32; 8] = [4096, 8192, 65536, 1 << 20, 0, 4097, 1 << 21, 2048];
    let db = match c.u8() {
        0..=223 => DbId(db_count as u32),
        s => DbId(u32::from(s % 4)),
    };
    let block_size = match c.u8() {
        s @ 0..=191 => SIZES[s as usize % 4],
        s @ 192..=247 => SIZES[s as usize % SIZES.len()],
        _ => c.u32(),
    };
    let raw_name = |c: &mut Cursor<'_>| -> Vec<u8> {
        match c.u8() {
            s @ 0..=223 => NAMES[s as usize % NAMES.len()].as_bytes().to_vec(),
            _ => {
                let len = c.u8() % 72;
                c.bytes(len as usize)
            }
        }
    };
    let name = raw_name(c);
    let count = match c.u8() {
        s @ 0..=239 => s % 4,
        s => s % 20,
    };
    let indexes: Vec<Vec<u8>> = (0..count).map(|_| raw_name(c)).collect();
    let all_utf8 = std::iter::once(&name)
        .chain(&indexes)
        .all(|n| std::str::from_utf8(n).is_ok());
    let short = std::iter::once(&name)
        .chain(&indexes)
        .all(|n| n.len() <= u8::MAX as usize);
    if all_utf8 && short {
        let s = |n: &Vec<u8>| String::from_utf8(n.clone()).expect("checked");
        let op = DeltaOp::DbCreate {
            db,
            name: s(&name),
            block_size,
            indexes: indexes.iter().map(s).collect(),
        };
        return (db, Piece::Op(op));
    }
    // Names the decoder must refuse (not UTF-8, or too long for a length
    // byte, which is cut): encoded by hand.
    let mut raw = vec![6];
    raw.extend_from_slice(&db.0.to_le_bytes());
    raw.extend_from_slice(&block_size.to_le_bytes());
    raw.push(name.len() as u8);
    raw.extend_from_slice(&name);
    raw.push(count);
    for index in &indexes {
        raw.push(index.len() as u8);
        raw.extend_from_slice(index);
    }
    (db, Piece::Raw(raw))
}

/// A record as a primary would write it, or a damaged one.
fn gen_record(t: &Target<'_>, c: &mut Cursor<'_>, terms: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let fx = fixture();
    let key = match c.u8() {
        s @ 0..=199 => fx.keys[s as usize % fx.keys.len()].clone(),
        s => c.bytes(1 + s as usize % 12),
    };
    let value_count = match c.u8() {
        0..=223 => t.value_count,
        s => s as usize % (INDEXES_PER_DB_MAX + 1),
    };
    let values: Vec<Option<Vec<u8>>> = (0..value_count)
        .map(|_| match c.u8() {
            0..=63 => None,
            s @ 64..=191 => Some(fx.values[s as usize % fx.values.len()].clone()),
            s => Some(c.bytes(s as usize % 8)),
        })
        .collect();
    let payload_len = c.u8() % 48;
    let payload = c.bytes(payload_len as usize);
    let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
    let enc = EncodedRecord::encode(&key, &refs, &payload, usize::MAX).expect("within limits");
    add_term(terms, &key);
    for v in values.iter().flatten() {
        add_term(terms, v);
    }
    let mut bytes = enc.bytes().to_vec();
    bytes[0] = match c.u8() {
        0..=223 => 1,
        224..=247 => 2,
        _ => c.u8(),
    };
    let slot_len = bytes.len() + (c.u8() % 8) as usize;
    bytes[4..8].copy_from_slice(&(slot_len as u32).to_le_bytes());
    bytes.resize(slot_len, 0);
    if c.u8() >= 240 {
        let at = c.u8() as usize % bytes.len();
        bytes[at] ^= c.u8();
    }
    bytes
}

/// Adds one op (or a few that belong together) of `kind` to `out`.
fn op(
    t: &mut Target<'_>,
    kind: u8,
    c: &mut Cursor<'_>,
    terms: &mut Vec<Vec<u8>>,
    out: &mut Vec<Piece>,
) {
    let db = t.db;
    match kind {
        // Append a record at the block's free offset and bump its header, as
        // a primary's commit does.
        0 | 1 => {
            let block = t.pick_block(c);
            let mut h = t.header(block);
            let rec = gen_record(t, c, terms);
            let live = rec[0] == 1;
            let at = h.free_offset;
            let len = rec.len() as u32;
            t.write(block, at, rec, out);
            if c.u8() < 240 {
                h.db = db;
                h.block = block;
                h.lsn = t.lsn;
                h.free_offset = h.free_offset.wrapping_add(len);
                h.record_count = h.record_count.wrapping_add(u32::from(live));
                t.write_header(block, h, out);
            }
        }
        // Tombstone a record, or rewrite it in place, with or without the
        // header update.
        2 | 3 => {
            let block = t.pick_block(c);
            let records = t.records(block);
            let pick = c.u8() as usize;
            let (at, slot_len, live) = records
                .get(pick % records.len().max(1))
                .copied()
                .unwrap_or((t.pick_offset(c), 16, true));
            let mut h = t.header(block);
            if kind == 2 {
                t.write(block, at, vec![2], out);
                if live {
                    h.record_count = h.record_count.wrapping_sub(1);
                    h.dead_bytes = h.dead_bytes.wrapping_add(slot_len as u32);
                }
            } else {
                let mut rec = gen_record(t, c, terms);
                if rec.len() <= slot_len {
                    rec.resize(slot_len, 0);
                    rec[4..8].copy_from_slice(&(slot_len as u32).to_le_bytes());
                }
                t.write(block, at, rec, out);
            }
            if c.u8() < 224 {
                h.lsn = t.lsn;
                t.write_header(block, h, out);
            }
        }
        // A header with fields of the input's choosing.
        4 => {
            let block = t.pick_block(c);
            let mut h = t.header(block);
            match c.u8() % 8 {
                0 => h.free_offset = t.pick_offset(c),
                1 => h.record_count = u32::from(c.u8()),
                2 => h.dead_bytes = c.u32(),
                3 => h.block = BlockId(u32::from(c.u8() % 4)),
                4 => h.db = DbId(u32::from(c.u8() % 4)),
                5 => h.lsn = Lsn(c.u64()),
                _ => {}
            }
            let mut bytes = vec![0u8; BLOCK_HEADER_SIZE];
            h.write(&mut bytes);
            if c.u8() >= 224 {
                let at = c.u8() as usize % BLOCK_HEADER_SIZE;
                bytes[at] ^= 1 | c.u8();
            }
            t.write(block, 0, bytes, out);
        }
        // Raw bytes at any offset.
        5 => {
            let block = t.pick_block(c);
            let offset = t.pick_offset(c);
            let len = c.u8() % 64;
            let bytes = c.bytes(len as usize);
            t.write(block, offset, bytes, out);
        }
        6 => {
            let block = t.pick_block(c);
            t.shadow.insert(block, vec![0; t.block_size]);
            out.push(Piece::Op(DeltaOp::BlockAlloc { db, block }));
        }
        7 => {
            let block = t.pick_block(c);
            t.shadow.remove(&block);
            out.push(Piece::Op(DeltaOp::BlockFree { db, block }));
        }
        // Raw op bytes: unknown tags, short fields, another database.
        _ => {
            let mut raw = vec![c.u8() % 8];
            let len = c.u8() % 24;
            raw.extend(c.bytes(len as usize));
            out.push(Piece::Raw(raw));
        }
    }
}
