//! A plain loop over one operation, for profilers (`perf record`,
//! `valgrind --tool=callgrind`), which criterion's harness gets in the way of.
//!
//! `cargo run --release -p hotblock-benches --example profile_ops -- put 200000`
//! (operations: put, get, find; the count defaults to 200000). Loads
//! `HOTBLOCK_BENCH_RECORDS` records first (default 1,000,000).

use std::time::Instant;

use hotblock_benches::{Dataset, SplitMix64, INDEXES};
use hotblock_primary::{DatabaseOptions, Db};

fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_else(|| "put".into());
    let count: u64 = args.next().map_or(200_000, |n| n.parse().expect("a count"));
    let data = Dataset::from_env();
    let mut config = hotblock_primary::DbConfig::default();
    // HOTBLOCK_HUGE_PAGES=0 turns the default huge-page advice off, to compare.
    config.engine.advice.huge_pages =
        std::env::var("HOTBLOCK_HUGE_PAGES").map_or(true, |v| v != "0");
    let db = Db::open(config);
    db.create_database("bench", DatabaseOptions::with_indexes(INDEXES))
        .unwrap();
    for chunk in (0..data.records).collect::<Vec<_>>().chunks(1000) {
        let mut txn = db.begin("bench").unwrap();
        for &i in chunk {
            let row = data.row(i);
            txn.put(&row.key, &[Some(&row.city), Some(&row.team)], &row.payload)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let handle = db.database("bench").unwrap();
    let mut rng = SplitMix64::new(42);
    let start = Instant::now();
    let mut sink = 0usize;
    match op.as_str() {
        "put" => {
            for i in 0..count {
                let row = data.row(data.records + i);
                db.put(
                    "bench",
                    &row.key,
                    &[Some(&row.city), Some(&row.team)],
                    &row.payload,
                )
                .unwrap();
            }
        }
        "get" => {
            for _ in 0..count {
                let row = data.row(rng.below(data.records));
                sink += handle
                    .with_record(&row.key, |r| r.payload().len())
                    .unwrap()
                    .unwrap();
            }
        }
        "find" => {
            for _ in 0..count {
                let row = data.row(rng.below(data.records));
                sink += handle.find("city", &row.city, None).unwrap().len();
            }
        }
        other => panic!("unknown operation {other}: put, get or find"),
    }
    let ns = start.elapsed().as_nanos() as f64 / count as f64;
    println!(
        "{op}: {count} ops, {ns:.0} ns/op (records={}, sink={sink})",
        data.records
    );
}
