//! `hotblock-bench failover`: how long writes are unavailable when the
//! primary is killed, whether any acknowledged write is lost, and how the
//! old primary comes back, for hotblock on etcd and, in the same run, for
//! Redis with Sentinel.
//!
//! Each round starts a fresh cluster: hotblock, a primary and two sync
//! secondaries (`--sync-quorum 1`) on one etcd, each round under a cluster
//! name of its own, for each `--leases` value (a lease under 2 s needs an
//! etcd with faster timing: see `EtcdTiming`); Redis, a master and two replicas watched by three
//! Sentinels (quorum 2), writes acknowledged only once `WAIT 1 100` says a
//! replica has them. Writers find the primary as a Sentinel-aware client
//! would (`SENTINEL get-master-addr-by-name`), write fresh keys, and ask
//! again on any error. The primary is killed (`SIGKILL`) after a warm-up.
//!
//! - **unavailable**: from the kill to the first write acknowledged by
//!   another node;
//! - **lost**: writes acknowledged (before or after) that the new primary
//!   lacks;
//! - **rejoin**: from the old primary's restart (same ports and data) to
//!   it being a secondary of the new primary, caught up (hotblock: same
//!   LSN, link up; Redis: `master_link_status:up`);
//! - **old took writes**: writes the restarted old primary accepted before
//!   it became a secondary (a probe writes to it every 20 ms);
//! - **switchover** (hotblock): then `FAILOVER TO` the old primary, from
//!   the command to the first write the target acknowledges (the writes
//!   held meanwhile are answered `-READONLY` and retried there).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procs::{on_path, EtcdServer, EtcdTiming, Server};

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Rounds per system (a fresh cluster each).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Writer connections.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Write the rounds as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Draw each round's unavailability here (SVG).
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// Skip Redis even if redis-server and redis-sentinel are installed.
    #[arg(long)]
    no_redis: bool,
    /// hotblock's `--failover-timeout-ms` values, one set of rounds each.
    /// Below 2000, etcd runs with a faster heartbeat (see `EtcdTiming`):
    /// with its default timing it grants no lease under 2 s.
    #[arg(long, value_delimiter = ',', default_values_t = [2000u64, 1000])]
    leases: Vec<u64>,
}

/// One round's outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Round {
    pub system: String,
    pub round: usize,
    pub unavailable_ms: f64,
    pub acked: usize,
    pub lost: usize,
    pub rejoin_ms: f64,
    pub old_took_writes: usize,
    /// hotblock: a planned `FAILOVER TO` after the rejoin, from the command
    /// to the first write acknowledged by the target.
    pub switchover_ms: Option<f64>,
}

/// How long a round waits for a failover or a rejoin before it fails.
const ROUND_LIMIT: Duration = Duration::from_secs(60);
const WARM_UP: Duration = Duration::from_secs(1);

pub fn run(a: FailoverArgs) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut rounds = Vec::new();
    if !on_path("etcd") {
        return Err("etcd (Debian's etcd-server) is needed on the PATH".into());
    }
    for &lease_ms in &a.leases {
        let timing = match lease_ms {
            0..2000 => EtcdTiming::Fast,
            _ => EtcdTiming::Default,
        };
        let etcd = EtcdServer::start(work.path(), timing)?;
        for i in 0..a.rounds {
            let r = hotblock_round(work.path(), &etcd, lease_ms, i, a.writers)?;
            eprintln!("{}", line(&r));
            rounds.push(r);
        }
    }
    let redis = !a.no_redis && on_path("redis-server") && on_path("redis-sentinel");
    if redis {
        for down_after in [5000u64, 1000] {
            for i in 0..a.rounds {
                let r = sentinel_round(work.path(), down_after, i, a.writers)?;
                eprintln!("{}", line(&r));
                rounds.push(r);
            }
        }
    } else if !a.no_redis {
        eprintln!("redis-server or redis-sentinel not on the PATH: hotblock only");
    }
    print!("{}", table(&rounds));
    if let Some(path) = &a.json {
        let json = serde_json::to_string_pretty(&rounds).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &a.svg {
        svg(&rounds, path)?;
    }
    Ok(())
}

fn line(r: &Round) -> String {
    let switch = r
        .switchover_ms
        .map_or(String::new(), |s| format!(", switchover {s:.0} ms"));
    format!(
        "{} round {}: unavailable {:.0} ms, {} acked, {} lost, rejoin {:.0} ms, old primary took {} writes{switch}",
        r.system, r.round, r.unavailable_ms, r.acked, r.lost, r.rejoin_ms, r.old_took_writes
    )
}

/// One hotblock round: a fresh cluster of three on `etcd`.
fn hotblock_round(
    work: &Path,
    etcd: &EtcdServer,
    lease_ms: u64,
    round: usize,
    writers: usize,
) -> Result<Round, String> {
    let dir = work.join(format!("hotblock-{lease_ms}-{round}"));
    let cluster = format!("bench-{lease_ms}-{round}");
    let common = |name: &str| -> Result<Vec<String>, String> {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        Ok([
            "--coordinator",
            &etcd.url(),
            "--cluster",
            &cluster,
            "--sync-quorum",
            "1",
            "--failover-timeout-ms",
            &lease_ms.to_string(),
            "--data-dir",
            data.to_str().unwrap_or("."),
        ]
        .map(String::from)
        .into())
    };
    let mut primary = Server::hotblock_node(work, "tcp", &common("n0")?)?;
    wait("the first primary", || {
        info_field(primary.port, "cluster_primary_id").is_some_and(|id| id != "0")
    })?;
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let mut extra = common(name)?;
        extra.extend(["--mode", "sync", "--serve-reads"].map(String::from));
        nodes.push(Server::hotblock_member(work, &extra)?);
    }
    wait("two secondaries online", || {
        info_field(primary.port, "connected_secondaries").as_deref() == Some("2")
    })?;
    let ports: Vec<u16> = [primary.port]
        .into_iter()
        .chain(nodes.iter().map(|n| n.port))
        .collect();
    let find = {
        let (ports, cluster) = (ports.clone(), cluster.clone());
        move || sentinel_primary(&ports, &cluster)
    };
    let outcome = measure(
        primary.port,
        || primary.kill(),
        find.clone(),
        writers,
        Ack::Plain,
    )?;
    // The old primary again, from its data directory: it must join as a
    // secondary by itself and catch up.
    let probe = Probe::start(primary.port);
    let restarted = Instant::now();
    primary.restart()?;
    let new_port = outcome.new_primary;
    wait("the old primary caught up", || {
        info_field(primary.port, "role").as_deref() == Some("slave")
            && info_field(primary.port, "primary_link_status").as_deref() == Some("up")
            && info_field(primary.port, "lsn") == info_field(new_port, "lsn")
    })?;
    let rejoin = restarted.elapsed();
    let old_took_writes = probe.stop();
    // A planned switchover back to the old primary, now a caught-up
    // secondary.
    wait("the new primary sees both secondaries online", || {
        info_field(new_port, "connected_secondaries").as_deref() == Some("2")
    })?;
    let old_port = primary.port;
    let switch = measure(
        new_port,
        || {
            let asked = connect(new_port).and_then(|mut c| {
                redis::cmd("FAILOVER")
                    .arg("TO")
                    .arg("127.0.0.1")
                    .arg(old_port)
                    .query::<()>(&mut c)
                    .ok()
            });
            if asked.is_none() {
                eprintln!("FAILOVER TO was refused");
            }
        },
        find,
        writers,
        Ack::Plain,
    )?;
    Ok(Round {
        system: format!("hotblock (etcd, lease {lease_ms} ms)"),
        round,
        unavailable_ms: ms(outcome.unavailable),
        acked: outcome.acked.len(),
        lost: missing(new_port, &outcome.acked),
        rejoin_ms: ms(rejoin),
        old_took_writes,
        switchover_ms: Some(ms(switch.unavailable)),
    })
}

/// One Redis round: a master, a replica, three Sentinels.
fn sentinel_round(
    work: &Path,
    down_after_ms: u64,
    round: usize,
    writers: usize,
) -> Result<Round, String> {
    let mut master = Server::redis(work, None)?;
    // Two replicas, as hotblock has two secondaries: after the failover,
    // the new master still has one for `WAIT 1`.
    let _replicas = [
        Server::redis(work, Some(master.port))?,
        Server::redis(work, Some(master.port))?,
    ];
    let sentinels: Vec<Server> = (0..3)
        .map(|_| Server::redis_sentinel(work, master.port, down_after_ms))
        .collect::<Result<_, _>>()?;
    let sentinel_ports: Vec<u16> = sentinels.iter().map(|s| s.port).collect();
    wait("the sentinels see each other and the replica", || {
        sentinel_ports.iter().all(|&p| {
            let state = sentinel_master(p);
            state.get("num-other-sentinels").map(String::as_str) == Some("2")
                && state.get("num-slaves").map(String::as_str) == Some("2")
        })
    })?;
    let find = {
        let ports = sentinel_ports.clone();
        move || sentinel_primary(&ports, "mymaster")
    };
    let outcome = measure(master.port, || master.kill(), find, writers, Ack::Wait)?;
    let probe = Probe::start(master.port);
    let restarted = Instant::now();
    master.restart_redis()?;
    wait("the old master is a replica, link up", || {
        info_field(master.port, "role").as_deref() == Some("slave")
            && info_field(master.port, "master_link_status").as_deref() == Some("up")
    })?;
    let rejoin = restarted.elapsed();
    let old_took_writes = probe.stop();
    Ok(Round {
        system: format!("Redis + 3 Sentinels (down-after {down_after_ms} ms, WAIT 1 100)"),
        round,
        unavailable_ms: ms(outcome.unavailable),
        acked: outcome.acked.len(),
        lost: missing(outcome.new_primary, &outcome.acked),
        rejoin_ms: ms(rejoin),
        old_took_writes,
        switchover_ms: None,
    })
}

/// What a writer counts as acknowledged.
#[derive(Clone, Copy, Debug)]
enum Ack {
    /// `OK` (hotblock: sync quorum 1 already waits for a secondary).
    Plain,
    /// `OK`, then `WAIT 1 100` answering at least 1.
    Wait,
}

struct Outcome {
    unavailable: Duration,
    acked: Vec<String>,
    new_primary: u16,
}

/// Writers through `find`; after a warm-up, does `event` to the primary on
/// port `old` (a kill, a `FAILOVER`); measures until a write is
/// acknowledged elsewhere, then writes a second more.
fn measure(
    old: u16,
    event: impl FnOnce(),
    find: impl Fn() -> Option<u16> + Clone + Send + 'static,
    writers: usize,
    ack: Ack,
) -> Result<Outcome, String> {
    let acked: Arc<Mutex<Vec<(String, u16, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (acked, stop, find) = (acked.clone(), stop.clone(), find.clone());
            std::thread::spawn(move || write_loop(w, &find, ack, &acked, &stop))
        })
        .collect();
    std::thread::sleep(WARM_UP);
    let killed = Instant::now();
    event();
    let first_elsewhere = || {
        acked
            .lock()
            .expect("acked")
            .iter()
            .filter(|(_, port, at)| *port != old && *at > killed)
            .map(|(_, port, at)| (*port, *at))
            .min_by_key(|(_, at)| *at)
    };
    let deadline = killed + ROUND_LIMIT;
    let (new_primary, at) = loop {
        if let Some(found) = first_elsewhere() {
            break found;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            return Err("no write was acknowledged by a new primary".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let acked = acked
        .lock()
        .expect("acked")
        .iter()
        .map(|a| a.0.clone())
        .collect();
    Ok(Outcome {
        unavailable: at - killed,
        acked,
        new_primary,
    })
}

fn write_loop(
    w: usize,
    find: &dyn Fn() -> Option<u16>,
    ack: Ack,
    acked: &Mutex<Vec<(String, u16, Instant)>>,
    stop: &AtomicBool,
) {
    let mut conn: Option<(u16, redis::Connection)> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if conn.is_none() {
            conn = find().and_then(|port| Some((port, connect(port)?)));
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        }
        let (port, c) = conn.as_mut().expect("connected");
        i += 1;
        let key = format!("w{w}-{i}");
        let done = redis::cmd("SET")
            .arg(&key)
            .arg(i)
            .query::<()>(c)
            .and_then(|()| match ack {
                Ack::Plain => Ok(true),
                Ack::Wait => redis::cmd("WAIT")
                    .arg(1)
                    .arg(100)
                    .query::<i64>(c)
                    .map(|n| n >= 1),
            });
        match done {
            Ok(true) => acked
                .lock()
                .expect("acked")
                .push((key, *port, Instant::now())),
            // Not on a replica: not acknowledged, and the master may be
            // on its own; ask the Sentinels again.
            Ok(false) | Err(_) => {
                conn = None;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// A connection whose every wait is bounded (a dead or paused server must
/// not hang a writer).
fn connect(port: u16) -> Option<redis::Connection> {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .ok()?
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    c.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    Some(c)
}

/// Writes to one server every 20 ms; counts the writes it accepts.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Probe {
    fn start(port: u16) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut accepted = 0;
            let mut conn = None;
            while !flag.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = connect(port);
                }
                if let Some(c) = &mut conn {
                    match redis::cmd("SET").arg("probe").arg(1).query::<()>(c) {
                        Ok(()) => accepted += 1,
                        Err(e) if e.is_io_error() || e.is_connection_dropped() => conn = None,
                        Err(_) => {}
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            accepted
        });
        Probe { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// The primary's port as the first Sentinel (or hotblock node) of `ports`
/// that answers says.
fn sentinel_primary(ports: &[u16], name: &str) -> Option<u16> {
    ports.iter().find_map(|&port| {
        let mut c = connect(port)?;
        c.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        let addr: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(name)
            .query(&mut c)
            .ok()?;
        addr?.1.parse().ok()
    })
}

/// `SENTINEL master mymaster` as field → value.
fn sentinel_master(port: u16) -> std::collections::HashMap<String, String> {
    let Some(mut c) = connect(port) else {
        return Default::default();
    };
    redis::cmd("SENTINEL")
        .arg("master")
        .arg("mymaster")
        .query(&mut c)
        .unwrap_or_default()
}

/// One field of `INFO replication`.
fn info_field(port: u16, field: &str) -> Option<String> {
    let mut c = connect(port)?;
    let text: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// How many of `keys` the server on `port` lacks.
fn missing(port: u16, keys: &[String]) -> usize {
    let Some(mut c) = connect(port) else {
        return keys.len();
    };
    keys.iter()
        .filter(|k| {
            !redis::cmd("EXISTS")
                .arg(k.as_str())
                .query::<bool>(&mut c)
                .unwrap_or(false)
        })
        .count()
}

fn wait(what: &str, mut ready: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + ROUND_LIMIT;
    while !ready() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and max of each system's rounds.
fn table(rounds: &[Round]) -> String {
    let mut systems: Vec<&str> = Vec::new();
    for r in rounds {
        if !systems.contains(&r.system.as_str()) {
            systems.push(&r.system);
        }
    }
    let mut out = String::from(
        "| system | rounds | unavailable p50 / max (ms) | acked | lost | rejoin p50 / max (ms) | old primary took writes | switchover p50 / max (ms) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for s in systems {
        let of: Vec<&Round> = rounds.iter().filter(|r| r.system == s).collect();
        let stat = |f: fn(&Round) -> f64| {
            let mut v: Vec<f64> = of.iter().map(|r| f(r)).collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[v.len() - 1])
        };
        let (u50, umax) = stat(|r| r.unavailable_ms);
        let (r50, rmax) = stat(|r| r.rejoin_ms);
        let switch = match of.iter().all(|r| r.switchover_ms.is_some()) {
            true => {
                let (s50, smax) = stat(|r| r.switchover_ms.unwrap_or(0.0));
                format!("{s50:.0} / {smax:.0}")
            }
            false => "n/a".into(),
        };
        out.push_str(&format!(
            "| {s} | {} | {u50:.0} / {umax:.0} | {} | {} | {r50:.0} / {rmax:.0} | {} | {switch} |\n",
            of.len(),
            of.iter().map(|r| r.acked).sum::<usize>(),
            of.iter().map(|r| r.lost).sum::<usize>(),
            of.iter().map(|r| r.old_took_writes).sum::<usize>(),
        ));
    }
    out
}

/// Each round's unavailability, one series per system.
fn svg(rounds: &[Round], path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let max_ms = rounds.iter().map(|r| r.unavailable_ms).fold(1.0, f64::max);
    let max_round = rounds.iter().map(|r| r.round).max().unwrap_or(0) as f64 + 1.0;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "writes unavailable after kill -9 of the primary (ms)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0f64..max_round, 0.0f64..max_ms * 1.15)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("round")
        .y_desc("ms")
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| e.to_string())?;
    let mut systems: Vec<&str> = Vec::new();
    for r in rounds {
        if !systems.contains(&r.system.as_str()) {
            systems.push(&r.system);
        }
    }
    for (i, s) in systems.iter().enumerate() {
        let style = ShapeStyle::from(&Palette99::pick(i).to_rgba()).stroke_width(2);
        let points: Vec<(f64, f64)> = rounds
            .iter()
            .filter(|r| r.system == *s)
            .map(|r| (r.round as f64, r.unavailable_ms))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| e.to_string())?
            .label(*s)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, style.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
