//! `hotblock-bench soak`: minutes of sync-mode writes against a primary and
//! a sync secondary, both with data directories, under random faults
//! (`kill -9` and restart of either, a `SIGSTOP`ped secondary), then the
//! checkers: every write that got `OK` is on the primary; the secondary
//! converges to the same blocks; and the history of writes and reads of a
//! few shared keys (registers), through the primary, is linearizable, while
//! reads of them from the hot secondary return only values written
//! ([`hotblock_node::history`]). Opt-in (not in CI); a seed replays the
//! fault schedule.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotblock_node::history::{History, Kind};

use crate::procs::Server;

/// Writer connections.
const WRITERS: usize = 4;
/// Reader connections to the primary, and to the secondary.
const READERS: usize = 2;
/// Keys every writer and reader shares: the registers the history checks.
const REGISTERS: u64 = 16;
/// Seconds between faults, at most (a random fraction of it each time).
const FAULT_GAP_MAX_MS: u64 = 3000;

#[derive(Debug, Default)]
struct Counts {
    node_kills: u64,
    secondary_kills: u64,
    secondary_stops: u64,
}

pub fn run(minutes: f64, seed: u64) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (mut node, mut secondary) = start_servers(work.path())?;
    println!(
        "soak: {minutes} min, seed {seed}; primary 127.0.0.1:{}, secondary 127.0.0.1:{}; logs in {}",
        node.port,
        secondary.port,
        work.path().display()
    );

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let unknown = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(History::default());
    let stale = Arc::new(History::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (acked, unknown, stop, port, history) = (
                acked.clone(),
                unknown.clone(),
                stop.clone(),
                node.port,
                history.clone(),
            );
            std::thread::spawn(move || writer(w, port, &acked, &unknown, &stop, &history))
        })
        .collect();
    let readers: Vec<_> = (0..2 * READERS)
        .map(|r| {
            // Half read the primary (linearizable), half the secondary.
            let (port, into) = match r % 2 {
                0 => (node.port, history.clone()),
                _ => (secondary.port, stale.clone()),
            };
            let stop = stop.clone();
            std::thread::spawn(move || reader(r, port, &stop, &into))
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
    let bar = indicatif::ProgressBar::new((minutes * 60.0) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let show = |counts: &Counts| {
        bar.set_position(started.elapsed().as_secs());
        bar.set_message(format!(
            "{} acked, {counts:?}",
            acked.lock().map_or(0, |a| a.len())
        ));
    };
    let counts = inject_faults(&mut node, &mut secondary, seed, deadline, show)?;
    stop.store(true, Ordering::Relaxed);
    for t in writers.into_iter().chain(readers) {
        let _ = t.join();
    }
    bar.finish_and_clear();
    let linearizable = history.check();
    let stale_reads = history.check_stale_reads(&stale);

    // The checker.
    let acked = acked.lock().map_err(|_| "a writer panicked")?.clone();
    let lost = lost_writes(&node, &acked)?;
    let lsn = wait_converged(&node, &secondary)?;
    let digests = (digest(&node)?, digest(&secondary)?);
    println!(
        "soak: {:.0} s, seed {seed}: {} writes acknowledged, {} with an unknown outcome; faults: {} kill -9 of the primary, {} of the secondary, {} SIGSTOPs of the secondary",
        started.elapsed().as_secs_f64(),
        acked.len(),
        unknown.load(Ordering::Relaxed),
        counts.node_kills,
        counts.secondary_kills,
        counts.secondary_stops
    );
    match (&linearizable, &stale_reads) {
        (Ok(c), Ok(n)) => println!(
            "history: linearizable over {} registers: {} writes ({} of unknown outcome seen, {} not), {} reads on the primary; {n} reads on the secondary, every one of a written value",
            c.keys, c.writes, c.unknown_seen, c.unknown_unseen, c.reads
        ),
        (Err(e), _) | (_, Err(e)) => println!("history: NOT LINEARIZABLE: {e}"),
    }
    verdict(seed, &lost, lsn, &digests)?;
    linearizable
        .and(stale_reads)
        .map(|_| ())
        .map_err(|e| format!("soak failed (seed {seed}): {e}"))
}

/// Prints what the checker found; `Err` when a write was lost or the copies
/// differ.
fn verdict(seed: u64, lost: &[String], lsn: u64, digests: &(String, String)) -> Result<(), String> {
    println!(
        "checker: {} acknowledged writes lost; primary and secondary at LSN {lsn}, digests {}",
        lost.len(),
        if digests.0 == digests.1 {
            "equal"
        } else {
            "DIFFERENT"
        }
    );
    if !lost.is_empty() || digests.0 != digests.1 {
        return Err(format!(
            "soak failed (seed {seed}): lost {:?}; digests {digests:?}",
            &lost[..lost.len().min(10)]
        ));
    }
    Ok(())
}

/// A primary and a sync secondary, both with data directories under `work`.
fn start_servers(work: &std::path::Path) -> Result<(Server, Server), String> {
    let (node_dir, sec_dir) = (work.join("node"), work.join("sec"));
    for d in [&node_dir, &sec_dir] {
        std::fs::create_dir(d).map_err(|e| e.to_string())?;
    }
    let arg = |s: &str| s.to_string();
    let node = Server::hotblock_node(
        work,
        "tcp",
        &[
            arg("--data-dir"),
            node_dir.display().to_string(),
            arg("--sync-quorum"),
            arg("1"),
            arg("--sync-timeout-ms"),
            arg("500"),
        ],
    )?;
    let secondary = Server::hotblock_secondary(
        work,
        &node,
        "tcp",
        "sync",
        &[
            arg("--data-dir"),
            sec_dir.display().to_string(),
            arg("--serve-reads"),
        ],
    )?;
    Ok((node, secondary))
}

/// Until `deadline`, at random gaps, one random fault: `kill -9` and
/// restart of the primary or the secondary, or a `SIGSTOP` of the
/// secondary. Calls `show` before each; returns the faults injected.
fn inject_faults(
    node: &mut Server,
    secondary: &mut Server,
    seed: u64,
    deadline: Instant,
    show: impl Fn(&Counts),
) -> Result<Counts, String> {
    let mut rng = seed | 1;
    let mut counts = Counts::default();
    while Instant::now() < deadline {
        let gap = Duration::from_millis(next(&mut rng) % FAULT_GAP_MAX_MS);
        std::thread::sleep(gap.min(deadline.saturating_duration_since(Instant::now())));
        show(&counts);
        if Instant::now() >= deadline {
            break;
        }
        match next(&mut rng) % 3 {
            0 => {
                node.kill_and_restart()?;
                counts.node_kills += 1;
            }
            1 => {
                secondary.kill_and_restart()?;
                counts.secondary_kills += 1;
            }
            _ => {
                secondary.signal("STOP")?;
                std::thread::sleep(Duration::from_millis(next(&mut rng) % 1500));
                secondary.signal("CONT")?;
                counts.secondary_stops += 1;
            }
        }
    }
    Ok(counts)
}

/// The acknowledged keys the primary does not have.
fn lost_writes(node: &Server, acked: &[String]) -> Result<Vec<String>, String> {
    let mut c = node.connect().map_err(|e| e.to_string())?;
    let mut lost = Vec::new();
    for key in acked {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut c)
            .map_err(|e| e.to_string())?;
        if !exists {
            lost.push(key.clone());
        }
    }
    Ok(lost)
}

/// Waits (a minute at most) for the secondary to reach the primary's LSN;
/// returns it.
fn wait_converged(node: &Server, secondary: &Server) -> Result<u64, String> {
    let lsn = lsn_of(node)?;
    let converge_by = Instant::now() + Duration::from_secs(60);
    while lsn_of(secondary)? != lsn {
        if Instant::now() > converge_by {
            return Err(format!("the secondary did not converge to LSN {lsn}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(lsn)
}

/// Connects when not connected; `None` (after a short pause) while the
/// server is down.
fn connected<'a>(
    conn: &'a mut Option<redis::Connection>,
    url: &str,
) -> Option<&'a mut redis::Connection> {
    if conn.is_none() {
        match redis::Client::open(url).and_then(|c| c.get_connection()) {
            Ok(c) => *conn = Some(c),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(20));
                return None;
            }
        }
    }
    conn.as_mut()
}

/// Writes, alternately, a key of its own (checked for loss) and a register
/// shared with every writer and reader, with a value no other write has
/// (recorded in `history`).
fn writer(
    w: usize,
    port: u16,
    acked: &Mutex<Vec<String>>,
    unknown: &AtomicU64,
    stop: &AtomicBool,
    history: &History,
) {
    let url = format!("redis://127.0.0.1:{port}/");
    let mut conn: Option<redis::Connection> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = connected(&mut conn, &url) else {
            continue;
        };
        i += 1;
        let result = if i % 2 == 0 {
            let key = format!("w{w}-{i}");
            let result = redis::cmd("SET").arg(&key).arg(i).query::<()>(c);
            if result.is_ok() {
                acked.lock().expect("acked lock").push(key);
            }
            result
        } else {
            let key = format!("reg{}", (i / 2 + w as u64) % REGISTERS);
            let value = format!("w{w}-{i}");
            let invoked = history.now();
            let result = redis::cmd("SET").arg(&key).arg(&value).query::<()>(c);
            let kind = Kind::Write(value.into_bytes());
            history.record(key.as_bytes(), kind, invoked, result.is_ok());
            result
        };
        if let Err(e) = result {
            unknown.fetch_add(1, Ordering::Relaxed);
            if e.is_io_error() || e.is_connection_dropped() {
                conn = None;
            }
        }
    }
}

/// Reads the registers in turn, recording each read in `history`.
fn reader(r: usize, port: u16, stop: &AtomicBool, history: &History) {
    let url = format!("redis://127.0.0.1:{port}/");
    let mut conn: Option<redis::Connection> = None;
    let mut i = r as u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = connected(&mut conn, &url) else {
            continue;
        };
        i += 1;
        let key = format!("reg{}", i % REGISTERS);
        let invoked = history.now();
        match redis::cmd("GET").arg(&key).query::<Option<Vec<u8>>>(c) {
            Ok(value) => history.record(key.as_bytes(), Kind::Read(value), invoked, true),
            Err(e) => {
                if e.is_io_error() || e.is_connection_dropped() {
                    conn = None;
                }
            }
        }
    }
}

fn lsn_of(server: &Server) -> Result<u64, String> {
    let mut c = server.connect().map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut c)
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|l| l.strip_prefix("lsn:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no lsn in INFO".to_string())
}

fn digest(server: &Server) -> Result<String, String> {
    let mut c = server.connect().map_err(|e| e.to_string())?;
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query(&mut c)
        .map_err(|e| e.to_string())
}

/// xorshift64: the fault schedule, replayable from the seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
