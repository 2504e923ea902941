//! `hotblock-bench soak`: minutes of sync-mode writes against a primary and
//! a sync secondary, both with data directories, under random faults
//! (`kill -9` and restart of either, a `SIGSTOP`ped secondary), then a
//! checker: every write that got `OK` is on the primary, and the secondary
//! converges to the same blocks. Opt-in (not in CI); a seed replays the
//! fault schedule.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::procs::Server;

/// Writer connections.
const WRITERS: usize = 4;
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
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (acked, unknown, stop, port) =
                (acked.clone(), unknown.clone(), stop.clone(), node.port);
            std::thread::spawn(move || writer(w, port, &acked, &unknown, &stop))
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
    for w in writers {
        let _ = w.join();
    }
    bar.finish_and_clear();

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
    verdict(seed, &lost, lsn, &digests)
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
        &[arg("--data-dir"), sec_dir.display().to_string()],
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

fn writer(w: usize, port: u16, acked: &Mutex<Vec<String>>, unknown: &AtomicU64, stop: &AtomicBool) {
    let url = format!("redis://127.0.0.1:{port}/");
    let mut conn: Option<redis::Connection> = None;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let c = match &mut conn {
            Some(c) => c,
            None => match redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            },
        };
        let key = format!("w{w}-{i}");
        i += 1;
        match redis::cmd("SET").arg(&key).arg(i).query::<()>(c) {
            Ok(()) => acked.lock().expect("acked lock").push(key),
            Err(e) => {
                unknown.fetch_add(1, Ordering::Relaxed);
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
