//! `hotblock-bench`: hotblock's modes side by side with the systems a user
//! would otherwise pick, measured in one run on one machine.
//!
//! `sync-vs-async` starts a hotblock primary (and, for `async` and `sync`, a
//! secondary) as processes on loopback, runs the same write workload through
//! the same Redis client code for each mode and writer count, and, when
//! `redis-server` is on the PATH, the same against Redis alone, Redis with a
//! replica, and Redis with `WAIT 1 0` after each write. It then compares the
//! embedded `Db` with SQLite in memory, and, with `redis-benchmark` on the
//! PATH, runs `redis-benchmark -c 50 -P 16` against both servers. Results
//! go to stdout as a table, and to `--json` and `--svg`.

mod failover;
mod procs;
mod report;
mod soak;
mod workload;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use hotblock_benches::{Dataset, INDEXES};
use procs::Server;
use report::Row;
use workload::Lag;

#[derive(Debug, Parser)]
#[command(name = "hotblock-bench", version)]
/// Benchmarks hotblock's replication modes against Redis and SQLite, in
/// one run on this machine. Figures are only comparable within one run.
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Throughput, latency and lag of none / async / sync replication by
    /// writer count, beside Redis (alone, with a replica, with WAIT 1 0)
    /// and SQLite.
    SyncVsAsync(SyncVsAsync),
    /// Minutes of sync writes under random faults (kill -9 and restart of
    /// the primary or the secondary, a SIGSTOPped secondary), then a check
    /// that no acknowledged write was lost and the copies are equal.
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Replays a fault schedule.
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
    },
    /// Time from kill -9 of the primary to the first write acknowledged
    /// by the new one, acknowledged writes lost, and the old primary's
    /// return, for hotblock on etcd and, in the same run, Redis with three
    /// Sentinels (down-after 5000 and 1000 ms).
    Failover(failover::FailoverArgs),
    /// Runs `hotblock-node` (used by this benchmark to start nodes).
    #[command(name = "__node", hide = true)]
    Node {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Runs `hotblock-secondary` (used by this benchmark).
    #[command(name = "__secondary", hide = true)]
    Secondary {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Transport {
    Tcp,
    Tls,
    Quic,
}

#[derive(Debug, clap::Args)]
struct SyncVsAsync {
    /// About a second per measurement: the whole run in under a minute.
    #[arg(long)]
    quick: bool,
    /// How the secondary connects to the primary.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// Writer connections, comma-separated.
    #[arg(long, value_delimiter = ',')]
    writers: Option<Vec<usize>>,
    /// Seconds measured per cell (after a warm-up of a fifth of it).
    #[arg(long)]
    seconds: Option<f64>,
    /// Write the rows as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the throughput and latency chart here (SVG).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Skip Redis even if it is installed.
    #[arg(long)]
    no_redis: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Cmd::Node { args } => {
            return hotblock_node::cmd::primary::main_from(
                std::iter::once(OsString::from("hotblock-node"))
                    .chain(args)
                    .collect(),
            )
        }
        Cmd::Secondary { args } => {
            return hotblock_node::cmd::secondary::main_from(
                std::iter::once(OsString::from("hotblock-secondary"))
                    .chain(args)
                    .collect(),
            )
        }
        Cmd::SyncVsAsync(a) => sync_vs_async(a),
        Cmd::Soak { minutes, seed } => soak::run(minutes, seed),
        Cmd::Failover(a) => failover::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hotblock-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One networked system setup: how to start it and how to drive it.
#[derive(Clone, Copy, Debug)]
enum Setup {
    Hotblock(&'static str),
    Redis(&'static str),
}

fn sync_vs_async(a: SyncVsAsync) -> Result<(), String> {
    let writers = a.writers.clone().unwrap_or_else(|| {
        if a.quick {
            vec![1, 16, 64]
        } else {
            vec![1, 4, 16, 64]
        }
    });
    let seconds = a.seconds.unwrap_or(if a.quick { 0.8 } else { 4.0 });
    let measure = Duration::from_secs_f64(seconds);
    let plan = Plan {
        writers,
        warmup: measure / 5,
        measure,
        transport: a.transport.name(),
    };
    let redis = !a.no_redis && procs::on_path("redis-server");
    if !redis {
        println!("redis-server is not on the PATH (or --no-redis): skipping the Redis rows");
    }
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let setups = setups(redis);
    let bench_tool = redis && procs::on_path("redis-benchmark");
    let cells = setups.len() * plan.writers.len() + 2 + if bench_tool { 2 } else { 0 };
    let bar = indicatif::ProgressBar::new(cells as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    for setup in setups {
        rows.extend(measure_setup(setup, work.path(), &plan, &bar)?);
    }
    if bench_tool {
        bar.set_message("redis-benchmark -c 50 -P 16 against each server");
        rows.extend(redis_benchmark(work.path(), a.quick)?);
        bar.inc(2);
    }
    bar.set_message("embedded: hotblock Db and SQLite in memory");
    rows.extend(embedded(if a.quick { 50_000 } else { 200_000 })?);
    bar.inc(2);
    bar.finish_and_clear();

    println!("{}", report::table(&rows));
    println!("{}", ratios(&rows));
    println!("measured in {:.0} s", started.elapsed().as_secs_f64());
    write_outputs(&a, &rows, plan.transport)
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
        }
    }
}

/// How each networked setup is measured.
#[derive(Debug)]
struct Plan {
    /// Writer counts, one cell each.
    writers: Vec<usize>,
    warmup: Duration,
    measure: Duration,
    /// How a hotblock secondary connects.
    transport: &'static str,
}

/// hotblock's three modes, then Redis's when it is installed.
fn setups(redis: bool) -> Vec<Setup> {
    let mut setups = vec![
        Setup::Hotblock("none"),
        Setup::Hotblock("async"),
        Setup::Hotblock("sync"),
    ];
    if redis {
        setups.extend([
            Setup::Redis("none"),
            Setup::Redis("async"),
            Setup::Redis("sync"),
        ]);
    }
    setups
}

/// Starts `setup` and runs the write workload against it at each writer
/// count of `plan`, one row each; its servers stop when it returns.
fn measure_setup(
    setup: Setup,
    work: &std::path::Path,
    plan: &Plan,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Row>, String> {
    let (system, mode, servers) = start(setup, work, plan.transport)?;
    let primary = &servers[0];
    let mut rows = Vec::new();
    for &n in &plan.writers {
        bar.set_message(format!("{system} {mode}, {n} writers"));
        let lag = match (system, mode) {
            (_, "none") => Lag::None,
            ("hotblock", _) => Lag::Hotblock,
            _ => Lag::Redis,
        };
        let wait_one = system == "redis" && mode == "sync";
        let m = workload::run(primary.port, n, plan.warmup, plan.measure, wait_one, lag)
            .map_err(|e| format!("{e}\n{}", primary.log_text()))?;
        rows.push(Row {
            system: system.into(),
            mode: mode.into(),
            transport: if system == "redis" {
                "tcp".into()
            } else {
                plan.transport.into()
            },
            workload: "set".into(),
            writers: n,
            ops_per_sec: m.ops_per_sec(),
            p50_us: m.percentile_us(0.5),
            p99_us: m.percentile_us(0.99),
            p999_us: m.percentile_us(0.999),
            lag_ms_max: m.lag_ms_max,
            errors: m.errors,
        });
        bar.inc(1);
    }
    Ok(rows)
}

/// Writes `--json` and `--svg`, when asked for.
fn write_outputs(a: &SyncVsAsync, rows: &[Row], transport: &str) -> Result<(), String> {
    if let Some(path) = &a.json {
        std::fs::write(path, report::json(rows)).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("JSON: {}", path.display());
    }
    if let Some(path) = &a.svg {
        report::svg(
            rows,
            path,
            &format!("hotblock sync vs async ({transport}), one run"),
        )?;
        println!("SVG: {}", path.display());
    }
    Ok(())
}

/// Starts the processes of `setup`; the first is the one clients write to.
fn start(
    setup: Setup,
    work: &std::path::Path,
    transport: &str,
) -> Result<(&'static str, &'static str, Vec<Server>), String> {
    Ok(match setup {
        Setup::Hotblock(mode) => {
            let flags: Vec<String> = match mode {
                "sync" => vec!["--sync-quorum".into(), "1".into()],
                _ => vec![],
            };
            let node = Server::hotblock_node(work, transport, &flags)?;
            let mut servers = vec![];
            let secondary = match mode {
                "none" => None,
                _ => Some(Server::hotblock_secondary(
                    work,
                    &node,
                    transport,
                    mode,
                    &[],
                )?),
            };
            if secondary.is_some() {
                wait_secondary_online(&node)?;
            }
            servers.push(node);
            servers.extend(secondary);
            ("hotblock", mode, servers)
        }
        Setup::Redis(mode) => {
            let primary = Server::redis(work, None)?;
            let replica = match mode {
                "none" => None,
                _ => Some(Server::redis(work, Some(primary.port))?),
            };
            let mut servers = vec![primary];
            servers.extend(replica);
            ("redis", mode, servers)
        }
    })
}

fn wait_secondary_online(node: &Server) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = node.connect() {
            if let Ok(info) = redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut c)
            {
                if info.contains("state=online") {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the secondary never came online:\n{}",
                node.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `redis-benchmark -c 50 -P 16 -t set,get` against a hotblock node and a
/// Redis server, both alone.
fn redis_benchmark(work: &std::path::Path, quick: bool) -> Result<Vec<Row>, String> {
    let requests = if quick { "300000" } else { "2000000" };
    let mut rows = Vec::new();
    let node = Server::hotblock_node(work, "tcp", &[])?;
    let redis = Server::redis(work, None)?;
    for (system, server) in [("hotblock", &node), ("redis", &redis)] {
        let out = std::process::Command::new("redis-benchmark")
            .args(["-p", &server.port.to_string(), "-c", "50", "-P", "16"])
            .args([
                "-n", requests, "-r", "1000000", "-d", "100", "-t", "set,get", "--csv",
            ])
            .output()
            .map_err(|e| format!("redis-benchmark: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').map(|f| f.trim_matches('"')).collect();
            let (Some(test), Some(rps)) = (
                fields.first(),
                fields.get(1).and_then(|r| r.parse::<f64>().ok()),
            ) else {
                continue;
            };
            let ms = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    * 1000.0
            };
            rows.push(Row {
                system: system.into(),
                mode: "none".into(),
                transport: "redis-benchmark".into(),
                workload: test.to_ascii_lowercase(),
                writers: 50,
                ops_per_sec: rps,
                // --csv columns: test, rps, avg, min, p50, p95, p99, max.
                p50_us: ms(4),
                p99_us: ms(6),
                p999_us: ms(7),
                lag_ms_max: None,
                errors: 0,
            });
        }
    }
    Ok(rows)
}

/// The embedded engine against SQLite in memory, one thread, on the same
/// records: inserts (a transaction each) and lookups by non-unique key.
fn embedded(records: u64) -> Result<Vec<Row>, String> {
    let data = Dataset::new(records);
    let lookups = records.min(20_000);
    let mut rows = embedded_hotblock(&data, records, lookups)?;
    rows.extend(embedded_sqlite(&data, records, lookups)?);
    Ok(rows)
}

/// One row of the embedded comparison: `hist` holds each operation's
/// nanoseconds, over `elapsed` in all.
fn embedded_row(system: &str, workload: &str, hist: &Histogram<u64>, elapsed: Duration) -> Row {
    Row {
        system: system.into(),
        mode: "none".into(),
        transport: "embedded".into(),
        workload: workload.into(),
        writers: 1,
        ops_per_sec: hist.len() as f64 / elapsed.as_secs_f64(),
        p50_us: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_us: hist.value_at_quantile(0.99) as f64 / 1000.0,
        p999_us: hist.value_at_quantile(0.999) as f64 / 1000.0,
        lag_ms_max: None,
        errors: 0,
    }
}

/// Nanoseconds, up to a minute.
fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds")
}

/// `records` inserts into an in-memory `Db`, then `lookups` finds by city.
fn embedded_hotblock(data: &Dataset, records: u64, lookups: u64) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let db = hotblock_primary::Db::in_memory();
    db.create_database(
        "t",
        hotblock_primary::DatabaseOptions::with_indexes(INDEXES),
    )
    .map_err(|e| e.to_string())?;
    let (mut hist, start) = (new_histogram(), Instant::now());
    for i in 0..records {
        let r = data.row(i);
        let t = Instant::now();
        db.put("t", &r.key, &[Some(&r.city), Some(&r.team)], &r.payload)
            .map_err(|e| e.to_string())?;
        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
    }
    rows.push(embedded_row("hotblock", "insert", &hist, start.elapsed()));
    let (mut hist, start) = (new_histogram(), Instant::now());
    for i in 0..lookups {
        let city = data.city(data.city_class(i * 7919 % records));
        let t = Instant::now();
        let found = db
            .find("t", "city", &city, None)
            .map_err(|e| e.to_string())?;
        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
        std::hint::black_box(found);
    }
    rows.push(embedded_row("hotblock", "find", &hist, start.elapsed()));
    Ok(rows)
}

/// The same inserts and finds against SQLite in memory, with an index on
/// each of the two non-unique columns.
fn embedded_sqlite(data: &Dataset, records: u64, lookups: u64) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let conn = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
    conn.execute_batch(
        "CREATE TABLE t (key BLOB PRIMARY KEY, city BLOB, team BLOB, payload BLOB);
         CREATE INDEX t_city ON t(city); CREATE INDEX t_team ON t(team);",
    )
    .map_err(|e| e.to_string())?;
    let mut insert = conn
        .prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4)")
        .map_err(|e| e.to_string())?;
    let (mut hist, start) = (new_histogram(), Instant::now());
    for i in 0..records {
        let r = data.row(i);
        let t = Instant::now();
        insert
            .execute(rusqlite::params![
                &r.key[..],
                &r.city[..],
                &r.team[..],
                &r.payload[..]
            ])
            .map_err(|e| e.to_string())?;
        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
    }
    rows.push(embedded_row("sqlite", "insert", &hist, start.elapsed()));
    let mut find = conn
        .prepare("SELECT key FROM t WHERE city = ?1")
        .map_err(|e| e.to_string())?;
    let (mut hist, start) = (new_histogram(), Instant::now());
    for i in 0..lookups {
        let city = data.city(data.city_class(i * 7919 % records));
        let t = Instant::now();
        let keys: Vec<Vec<u8>> = find
            .query_map([&city[..]], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| e.to_string())?;
        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
        std::hint::black_box(keys);
    }
    rows.push(embedded_row("sqlite", "find", &hist, start.elapsed()));
    Ok(rows)
}

/// The issue's targets, as ratios of rows measured in this run.
fn ratios(rows: &[Row]) -> String {
    let mut out = String::from("ratios (same run):\n");
    let bench = Some("redis-benchmark");
    for w in ["set", "get"] {
        ratio_line(
            &mut out,
            format!(
                "hotblock-node / redis-server, redis-benchmark {}",
                w.to_uppercase()
            ),
            ops_per_sec(rows, "hotblock", "none", bench, w, 50),
            ops_per_sec(rows, "redis", "none", bench, w, 50),
            1.0,
        );
    }
    replication_ratios(rows, &mut out);
    let embedded = Some("embedded");
    for (workload, what) in [("insert", "inserts"), ("find", "non-unique lookups")] {
        ratio_line(
            &mut out,
            format!("embedded hotblock / SQLite, {what}"),
            ops_per_sec(rows, "hotblock", "none", embedded, workload, 1),
            ops_per_sec(rows, "sqlite", "none", embedded, workload, 1),
            1.0,
        );
    }
    out
}

/// The ratios of the networked write workload, by writer count.
fn replication_ratios(rows: &[Row], out: &mut String) {
    let writers: Vec<usize> = {
        let mut w: Vec<usize> = rows
            .iter()
            .filter(|r| r.workload == "set")
            .map(|r| r.writers)
            .collect();
        w.sort();
        w.dedup();
        w.retain(|&n| n != 50);
        w
    };
    let set = |system: &str, mode: &str, n: usize| ops_per_sec(rows, system, mode, None, "set", n);
    for &n in &writers {
        ratio_line(
            out,
            format!("hotblock async / redis + replica, {n} writers"),
            set("hotblock", "async", n),
            set("redis", "async", n),
            1.0,
        );
    }
    for &n in writers.iter().filter(|&&n| n >= 16) {
        ratio_line(
            out,
            format!("hotblock sync / redis + WAIT 1 0, {n} writers"),
            set("hotblock", "sync", n),
            set("redis", "sync", n),
            2.0,
        );
    }
    if let Some(&n) = writers.iter().max() {
        ratio_line(
            out,
            format!("hotblock sync / hotblock async, {n} writers"),
            set("hotblock", "sync", n),
            set("hotblock", "async", n),
            0.5,
        );
    }
}

/// The throughput of the row measured for these, if any (`transport`
/// `None`: any).
fn ops_per_sec(
    rows: &[Row],
    system: &str,
    mode: &str,
    transport: Option<&str>,
    workload: &str,
    writers: usize,
) -> Option<f64> {
    rows.iter()
        .find(|r| {
            r.system == system
                && r.mode == mode
                && transport.is_none_or(|t| r.transport == t)
                && r.workload == workload
                && r.writers == writers
        })
        .map(|r| r.ops_per_sec)
}

/// Appends `what`'s ratio `a / b` against `target`, when both were measured.
fn ratio_line(out: &mut String, what: String, a: Option<f64>, b: Option<f64>, target: f64) {
    if let (Some(a), Some(b)) = (a, b) {
        let r = a / b;
        out.push_str(&format!(
            "  {what}: {r:.2}x (target {target:.1}x: {})\n",
            if r >= target { "met" } else { "MISSED" }
        ));
    }
}
