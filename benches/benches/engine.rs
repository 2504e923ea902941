//! hotblock against `std::collections::HashMap` (the near-limit baseline) and
//! in-memory SQLite (through rusqlite), side by side, on one thread.
//!
//! Run: `cargo bench -p hotblock-benches --bench engine`
//! (`HOTBLOCK_BENCH_RECORDS=20000 ... -- --quick` for a fast check).
//!
//! **Data.** `HOTBLOCK_BENCH_RECORDS` records (1,000,000 by default) from
//! [`hotblock_benches::Dataset`]: 16-byte keys, two 8-byte non-unique values
//! (`city`: exactly 10 records per value; `team`: 10 on average) and a
//! 100-byte payload. Every system loads the same records once, before any
//! group runs; the loaded stores are shared by all groups.
//!
//! **Systems.**
//! - `hotblock`: `hotblock_primary::Db` in anonymous memory, 64 KiB blocks,
//!   indexes `city` and `team`. Writes go through `Db` (`Db::put` = one
//!   transaction); reads through the `Database` handle of `db.database(..)`,
//!   so no name lookup per read.
//! - `hashmap`: `HashMap<[u8; 16], MapRow>` with the default (SipHash) hasher,
//!   the payload boxed, plus one `HashMap<value, Vec<key>>` per non-unique
//!   key, maintained on every insert: what a hand-written in-process store
//!   with the same two secondary lookups costs.
//! - `sqlite`: `:memory:` database, `WITHOUT ROWID` table keyed by the 16-byte
//!   BLOB (one B-tree probe per key lookup, SQLite's best case for this
//!   shape), two non-unique indexes (built after the bulk load), default
//!   pragmas and 4 KiB pages, statements prepared once; writes in autocommit
//!   mode, one transaction per statement.
//!
//! Loading (untimed) writes `LOAD_BATCH` records per transaction.
//!
//! **What each benchmark returns**, identical across systems:
//! - `get_unique`: a copy of the payload into a reused buffer (so every
//!   payload byte is read, and nothing is allocated); the bench returns its
//!   length. `hotblock-owned` is hotblock's `Database::get`, which returns an
//!   owned `Record` (key, values and payload each allocated), for reference.
//! - `find_nonunique`: the unique keys matching a `city` value, as a freshly
//!   allocated `Vec<Vec<u8>>` (what `Database::find` returns), 10 per value.
//! - `put_one_txn`: one fresh record (a key never inserted before), one
//!   transaction each. Inserted records are deleted again, untimed, after
//!   every `PUT_CHUNK` puts, so each system stays at the loaded size
//!   (+ at most `PUT_CHUNK`) however many puts criterion asks of it.
//!
//! **RAM.** Before the groups run, one `ram:` line gives hotblock's
//! `DbStats` per record against the raw 132 bytes of a record (16 + 8 + 8 +
//! 100): block bytes written (`used_bytes`: record headers and fields) and
//! mapped (`mapped_bytes`: whole arena chunks), index heap bytes, and the
//! process RSS growth across hotblock's load as a cross-check. hotblock loads
//! first so that growth is its own; the `ram (others):` line gives the same
//! RSS growth for the HashMap and SQLite loads (less exact: by then the
//! allocator may reuse memory freed earlier) and SQLite's page bytes.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use hotblock_benches::{
    rss_bytes, Dataset, Row, SplitMix64, INDEXES, KEY_LEN, PAYLOAD_LEN, RAW_RECORD_LEN, VALUE_LEN,
};
use hotblock_primary::{Database, DatabaseOptions, Db};
use rusqlite::{Connection, Statement};

/// hotblock's database name.
const DB: &str = "bench";
/// Records per transaction while loading hotblock and SQLite.
const LOAD_BATCH: u64 = 1_000;
/// Precomputed random lookup keys / values, cycled through (a power of two).
const PROBES: usize = 1 << 16;
/// Puts between two untimed clean-ups in `put_one_txn`.
const PUT_CHUNK: u64 = 1_024;

// ---------------------------------------------------------------- hotblock

struct Hotblock {
    db: Db,
    /// The handle reads go through.
    database: Arc<Database>,
}

impl Hotblock {
    fn load(data: &Dataset) -> Hotblock {
        let db = Db::in_memory();
        db.create_database(DB, DatabaseOptions::with_indexes(INDEXES))
            .unwrap();
        let mut i = 0;
        while i < data.records {
            let end = (i + LOAD_BATCH).min(data.records);
            let mut txn = db.begin(DB).unwrap();
            for j in i..end {
                let row = data.row(j);
                txn.put(
                    &row.key,
                    &[Some(&row.city[..]), Some(&row.team[..])],
                    &row.payload,
                )
                .unwrap();
            }
            txn.commit().unwrap();
            i = end;
        }
        let database = db.database(DB).unwrap();
        assert_eq!(database.count(), data.records);
        Hotblock { db, database }
    }

    fn copy_payload(&self, key: &[u8], buf: &mut Vec<u8>) -> usize {
        self.database
            .with_record(key, |r| {
                buf.clear();
                buf.extend_from_slice(r.payload());
                buf.len()
            })
            .unwrap()
            .expect("probe key exists")
    }

    fn find_city(&self, city: &[u8]) -> Vec<Vec<u8>> {
        self.database.find(INDEXES[0], city, None).unwrap()
    }
}

impl FreshPuts for Hotblock {
    fn put(&mut self, row: &Row) {
        black_box(self.db.put(
            DB,
            &row.key,
            &[Some(&row.city[..]), Some(&row.team[..])],
            &row.payload,
        ))
        .unwrap();
    }

    fn remove(&mut self, rows: &[Row]) {
        let mut txn = self.db.begin(DB).unwrap();
        for row in rows {
            assert!(txn.delete(&row.key).unwrap());
        }
        txn.commit().unwrap();
    }
}

// ----------------------------------------------------------------- HashMap

struct MapRow {
    city: [u8; VALUE_LEN],
    team: [u8; VALUE_LEN],
    payload: Box<[u8]>,
}

#[derive(Default)]
struct MapStore {
    rows: HashMap<[u8; KEY_LEN], MapRow>,
    by_city: HashMap<[u8; VALUE_LEN], Vec<[u8; KEY_LEN]>>,
    by_team: HashMap<[u8; VALUE_LEN], Vec<[u8; KEY_LEN]>>,
}

impl MapStore {
    fn load(data: &Dataset) -> MapStore {
        let mut map = MapStore::default();
        for i in 0..data.records {
            map.insert(&data.row(i));
        }
        assert_eq!(map.rows.len() as u64, data.records);
        map
    }

    /// Inserts or replaces, keeping both secondary maps right.
    fn insert(&mut self, row: &Row) {
        let new = MapRow {
            city: row.city,
            team: row.team,
            payload: row.payload.into(),
        };
        if let Some(old) = self.rows.insert(row.key, new) {
            unlink(&mut self.by_city, &old.city, &row.key);
            unlink(&mut self.by_team, &old.team, &row.key);
        }
        self.by_city.entry(row.city).or_default().push(row.key);
        self.by_team.entry(row.team).or_default().push(row.key);
    }

    fn delete(&mut self, key: &[u8; KEY_LEN]) -> bool {
        let Some(old) = self.rows.remove(key) else {
            return false;
        };
        unlink(&mut self.by_city, &old.city, key);
        unlink(&mut self.by_team, &old.team, key);
        true
    }

    fn copy_payload(&self, key: &[u8; KEY_LEN], buf: &mut Vec<u8>) -> usize {
        let row = self.rows.get(key).expect("probe key exists");
        buf.clear();
        buf.extend_from_slice(&row.payload);
        buf.len()
    }

    fn find_city(&self, city: &[u8; VALUE_LEN]) -> Vec<Vec<u8>> {
        self.by_city
            .get(city)
            .map_or_else(Vec::new, |keys| keys.iter().map(|k| k.to_vec()).collect())
    }
}

fn unlink(
    index: &mut HashMap<[u8; VALUE_LEN], Vec<[u8; KEY_LEN]>>,
    value: &[u8; VALUE_LEN],
    key: &[u8; KEY_LEN],
) {
    if let Some(keys) = index.get_mut(value) {
        keys.retain(|k| k != key);
        if keys.is_empty() {
            index.remove(value);
        }
    }
}

impl FreshPuts for MapStore {
    fn put(&mut self, row: &Row) {
        self.insert(black_box(row));
    }

    fn remove(&mut self, rows: &[Row]) {
        for row in rows {
            assert!(self.delete(&row.key));
        }
    }
}

// ------------------------------------------------------------------ SQLite

const SQLITE_SCHEMA: &str = "
    CREATE TABLE bench (
        key BLOB PRIMARY KEY NOT NULL,
        city BLOB NOT NULL,
        team BLOB NOT NULL,
        payload BLOB NOT NULL
    ) WITHOUT ROWID;
";
/// Created after the bulk load, as a bulk loader would: at 1M records that
/// loads in about a third of the time of maintaining them row by row, and
/// leaves them a little denser. Puts then maintain them.
const SQLITE_INDEXES: &str = "
    CREATE INDEX bench_city ON bench (city);
    CREATE INDEX bench_team ON bench (team);
";
const SQLITE_INSERT: &str = "INSERT INTO bench (key, city, team, payload) VALUES (?1, ?2, ?3, ?4)";

fn sqlite_load(data: &Dataset) -> Connection {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(SQLITE_SCHEMA).unwrap();
    let mut i = 0;
    while i < data.records {
        let end = (i + LOAD_BATCH).min(data.records);
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut insert = tx.prepare_cached(SQLITE_INSERT).unwrap();
            for j in i..end {
                let row = data.row(j);
                insert
                    .execute((&row.key[..], &row.city[..], &row.team[..], &row.payload[..]))
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        i = end;
    }
    conn.execute_batch(SQLITE_INDEXES).unwrap();
    let count: u64 = conn
        .query_row("SELECT count(*) FROM bench", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, data.records);
    conn
}

/// Bytes of pages the SQLite database holds.
fn sqlite_bytes(conn: &Connection) -> u64 {
    let pages: u64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let page_size: u64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    pages * page_size
}

fn sqlite_copy_payload(get: &mut Statement<'_>, key: &[u8], buf: &mut Vec<u8>) -> usize {
    get.query_row([key], |row| {
        buf.clear();
        buf.extend_from_slice(row.get_ref(0)?.as_blob()?);
        Ok(buf.len())
    })
    .unwrap()
}

fn sqlite_find(find: &mut Statement<'_>, value: &[u8]) -> Vec<Vec<u8>> {
    find.query_map([value], |row| row.get::<_, Vec<u8>>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

struct SqlitePuts<'c> {
    conn: &'c Connection,
    insert: Statement<'c>,
}

impl FreshPuts for SqlitePuts<'_> {
    fn put(&mut self, row: &Row) {
        let params = (&row.key[..], &row.city[..], &row.team[..], &row.payload[..]);
        black_box(self.insert.execute(black_box(params))).unwrap();
    }

    fn remove(&mut self, rows: &[Row]) {
        let tx = self.conn.unchecked_transaction().unwrap();
        {
            let mut delete = tx
                .prepare_cached("DELETE FROM bench WHERE key = ?1")
                .unwrap();
            for row in rows {
                assert_eq!(delete.execute([&row.key[..]]).unwrap(), 1);
            }
        }
        tx.commit().unwrap();
    }
}

// --------------------------------------------------------------- the bench

/// A system that `put_one_txn` inserts fresh records into.
trait FreshPuts {
    /// Inserts `row` (whose key is not present) in a transaction of its own.
    fn put(&mut self, row: &Row);
    /// Deletes rows put before (untimed clean-up).
    fn remove(&mut self, rows: &[Row]);
}

/// Times `iters` puts of fresh records (indexes from `*next` on), in chunks
/// of `PUT_CHUNK`: generating a chunk and deleting it afterwards are untimed.
fn time_fresh_puts(
    store: &mut impl FreshPuts,
    data: &Dataset,
    next: &mut u64,
    iters: u64,
) -> Duration {
    let mut rows = Vec::with_capacity(PUT_CHUNK as usize);
    let mut elapsed = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(PUT_CHUNK);
        rows.clear();
        rows.extend((*next..*next + n).map(|i| data.row(i)));
        *next += n;
        left -= n;
        let start = Instant::now();
        for row in &rows {
            store.put(row);
        }
        elapsed += start.elapsed();
        store.remove(&rows);
    }
    elapsed
}

fn per_record(bytes: u64, records: u64) -> f64 {
    bytes as f64 / records as f64
}

fn engine(c: &mut Criterion) {
    let data = Dataset::from_env();
    let n = data.records;
    println!(
        "dataset: records={n} key={KEY_LEN} B values=2x{VALUE_LEN} B ({} distinct each) payload={PAYLOAD_LEN} B",
        data.distinct_values
    );

    // hotblock first, so the RSS growth around its load is its own.
    let rss_before = rss_bytes();
    let start = Instant::now();
    let mut hot = Hotblock::load(&data);
    let hot_load = start.elapsed();
    let rss_after = rss_bytes();
    let stats = hot.database.stats();
    let raw = RAW_RECORD_LEN as f64;
    let used = per_record(stats.used_bytes, stats.records);
    let mapped = per_record(stats.mapped_bytes, stats.records);
    let index = per_record(stats.index_bytes, stats.records);
    let rss_hot = match (rss_before, rss_after) {
        (Some(b), Some(a)) => format!("{:.1}", per_record(a.saturating_sub(b), n)),
        _ => "n/a".to_string(),
    };
    println!(
        "ram: records={} raw={RAW_RECORD_LEN} B/rec blocks_used={used:.1} B/rec ({:.2} raw) \
         blocks_mapped={mapped:.1} B/rec ({:.2} raw) index={index:.1} B/rec \
         total={:.1} B/rec ({:.2} raw) rss={rss_hot} B/rec",
        stats.records,
        used / raw,
        mapped / raw,
        mapped + index,
        (mapped + index) / raw,
    );
    println!("ram: hotblock stats {stats:?}");

    let rss_before = rss_bytes();
    let start = Instant::now();
    let mut map = MapStore::load(&data);
    let map_load = start.elapsed();
    let rss_map = rss_bytes()
        .zip(rss_before)
        .map(|(a, b)| per_record(a.saturating_sub(b), n));

    let rss_before = rss_bytes();
    let start = Instant::now();
    let conn = sqlite_load(&data);
    let sqlite_load_time = start.elapsed();
    let rss_sqlite = rss_bytes()
        .zip(rss_before)
        .map(|(a, b)| per_record(a.saturating_sub(b), n));
    let fmt_rss = |r: Option<f64>| r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.1}"));
    println!(
        "ram (others): hashmap rss={} B/rec; sqlite pages={:.1} B/rec rss={} B/rec",
        fmt_rss(rss_map),
        per_record(sqlite_bytes(&conn), n),
        fmt_rss(rss_sqlite),
    );
    println!(
        "load ({LOAD_BATCH} records per txn): hotblock {:.2} s, hashmap {:.2} s, sqlite {:.2} s",
        hot_load.as_secs_f64(),
        map_load.as_secs_f64(),
        sqlite_load_time.as_secs_f64(),
    );

    let mut rng = SplitMix64::new(0x5eed);
    let probe_keys: Vec<[u8; KEY_LEN]> = (0..PROBES).map(|_| data.key(rng.below(n))).collect();
    let probe_cities: Vec<[u8; VALUE_LEN]> = (0..PROBES)
        .map(|_| data.city(rng.below(data.distinct_values)))
        .collect();

    let mut sql_get = conn
        .prepare("SELECT payload FROM bench WHERE key = ?1")
        .unwrap();
    let mut sql_find = conn
        .prepare("SELECT key FROM bench WHERE city = ?1")
        .unwrap();

    // The three systems answer the same.
    let mut buf = Vec::with_capacity(PAYLOAD_LEN);
    for (key, city) in probe_keys.iter().zip(&probe_cities).take(100) {
        let len = hot.copy_payload(key, &mut buf);
        let expected = buf.clone();
        assert_eq!(len, PAYLOAD_LEN);
        assert_eq!(map.copy_payload(key, &mut buf), len);
        assert_eq!(buf, expected);
        assert_eq!(sqlite_copy_payload(&mut sql_get, key, &mut buf), len);
        assert_eq!(buf, expected);
        let mut keys = hot.find_city(city);
        keys.sort();
        let mut map_keys = map.find_city(city);
        map_keys.sort();
        let mut sql_keys = sqlite_find(&mut sql_find, city);
        sql_keys.sort();
        assert!(!keys.is_empty());
        assert_eq!(keys, map_keys);
        assert_eq!(keys, sql_keys);
    }

    let mut group = c.benchmark_group("get_unique");
    group.bench_function("hotblock", |b| {
        let (mut at, mut buf) = (0, Vec::with_capacity(PAYLOAD_LEN));
        b.iter(|| {
            at += 1;
            hot.copy_payload(black_box(&probe_keys[at & (PROBES - 1)]), &mut buf)
        })
    });
    group.bench_function("hotblock-owned", |b| {
        let mut at = 0;
        b.iter(|| {
            at += 1;
            let key = black_box(&probe_keys[at & (PROBES - 1)]);
            hot.database
                .get(key)
                .unwrap()
                .expect("probe key exists")
                .payload
                .len()
        })
    });
    group.bench_function("hashmap", |b| {
        let (mut at, mut buf) = (0, Vec::with_capacity(PAYLOAD_LEN));
        b.iter(|| {
            at += 1;
            map.copy_payload(black_box(&probe_keys[at & (PROBES - 1)]), &mut buf)
        })
    });
    group.bench_function("sqlite", |b| {
        let (mut at, mut buf) = (0, Vec::with_capacity(PAYLOAD_LEN));
        b.iter(|| {
            at += 1;
            sqlite_copy_payload(
                &mut sql_get,
                black_box(&probe_keys[at & (PROBES - 1)]),
                &mut buf,
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("find_nonunique");
    group.bench_function("hotblock", |b| {
        let mut at = 0;
        b.iter(|| {
            at += 1;
            hot.find_city(black_box(&probe_cities[at & (PROBES - 1)]))
        })
    });
    group.bench_function("hashmap", |b| {
        let mut at = 0;
        b.iter(|| {
            at += 1;
            map.find_city(black_box(&probe_cities[at & (PROBES - 1)]))
        })
    });
    group.bench_function("sqlite", |b| {
        let mut at = 0;
        b.iter(|| {
            at += 1;
            sqlite_find(&mut sql_find, black_box(&probe_cities[at & (PROBES - 1)]))
        })
    });
    group.finish();
    drop((sql_get, sql_find));

    // Writes last: the read groups run on the stores exactly as loaded.
    let mut group = c.benchmark_group("put_one_txn");
    group.sampling_mode(SamplingMode::Flat);
    let mut next = n;
    group.bench_function("hotblock", |b| {
        b.iter_custom(|iters| time_fresh_puts(&mut hot, &data, &mut next, iters))
    });
    let mut next = n;
    group.bench_function("hashmap", |b| {
        b.iter_custom(|iters| time_fresh_puts(&mut map, &data, &mut next, iters))
    });
    let mut sqlite = SqlitePuts {
        conn: &conn,
        insert: conn.prepare(SQLITE_INSERT).unwrap(),
    };
    let mut next = n;
    group.bench_function("sqlite", |b| {
        b.iter_custom(|iters| time_fresh_puts(&mut sqlite, &data, &mut next, iters))
    });
    group.finish();

    assert_eq!(hot.database.count(), n);
    assert_eq!(map.rows.len() as u64, n);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = engine
}
criterion_main!(benches);
