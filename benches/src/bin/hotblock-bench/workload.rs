//! The write workload, the same for every system: `writers` connections,
//! each sending `SET` of a fresh key and a fixed-size value and waiting for
//! the reply (optionally followed by `WAIT 1 0`, Redis's sync-like mode),
//! for a fixed time. Latency is per operation (the `SET`, and the `WAIT`
//! when there is one), in `hdrhistogram`s merged at the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Bytes of each value written.
pub const VALUE_LEN: usize = 100;

/// What one cell of the run measured.
#[derive(Debug)]
pub struct Measured {
    pub ops: u64,
    pub elapsed: Duration,
    /// Nanoseconds per operation.
    pub latency: Histogram<u64>,
    pub errors: u64,
    pub lag_ms_max: Option<u64>,
}

impl Measured {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

/// How a secondary's lag is read while the writers run.
#[derive(Clone, Copy, Debug)]
pub enum Lag {
    None,
    /// `lag_ms=` of `secondary0` in hotblock's `INFO replication`.
    Hotblock,
    /// `lag=` (seconds) of `slave0` in Redis's `INFO replication`.
    Redis,
}

/// Runs the workload against `port` for `warmup + duration`; only the last
/// `duration` is measured.
pub fn run(
    port: u16,
    writers: usize,
    warmup: Duration,
    duration: Duration,
    wait_one: bool,
    lag: Lag,
) -> Result<Measured, String> {
    let flags = Flags::default();
    let value = vec![b'v'; VALUE_LEN];
    static RUN: AtomicU64 = AtomicU64::new(0);
    let run_id = RUN.fetch_add(1, Ordering::Relaxed);
    let mut threads = Vec::new();
    for w in 0..writers {
        let c = connect(port)?;
        let (flags, value) = (flags.clone(), value.clone());
        let key_prefix = format!("r{run_id}-w{w}");
        threads.push(std::thread::spawn(move || {
            write_loop(c, &key_prefix, &value, wait_one, &flags)
        }));
    }
    let lag_max = Arc::new(AtomicU64::new(0));
    let sampler = match lag {
        Lag::None => None,
        _ => Some(spawn_lag_sampler(
            connect(port)?,
            lag,
            flags.stop.clone(),
            lag_max.clone(),
        )),
    };
    let elapsed = measure(warmup, duration, &flags);
    let (ops, latency) = join_writers(threads)?;
    if let Some(s) = sampler {
        let _ = s.join();
    }
    Ok(Measured {
        ops,
        elapsed,
        latency,
        errors: flags.errors.load(Ordering::Relaxed),
        lag_ms_max: match lag {
            Lag::None => None,
            _ => Some(lag_max.load(Ordering::Relaxed)),
        },
    })
}

/// What the writer threads share with the run.
#[derive(Clone, Debug, Default)]
struct Flags {
    /// Operations count (and are timed) only while set.
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
}

fn connect(port: u16) -> Result<redis::Connection, String> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .map_err(|e| format!("connecting to 127.0.0.1:{port}: {e}"))
}

/// Nanoseconds, up to a minute.
fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("bounds")
}

/// One writer: `SET` of fresh keys (each followed by `WAIT 1 0` when
/// `wait_one`) until told to stop. Returns the operations measured and
/// their latencies.
fn write_loop(
    mut c: redis::Connection,
    key_prefix: &str,
    value: &[u8],
    wait_one: bool,
    flags: &Flags,
) -> (u64, Histogram<u64>) {
    let mut hist = new_histogram();
    let mut ops = 0u64;
    let mut i = 0u64;
    while !flags.stop.load(Ordering::Relaxed) {
        let key = format!("{key_prefix}-{i}");
        i += 1;
        let start = Instant::now();
        let mut ok = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .query::<()>(&mut c)
            .is_ok();
        if ok && wait_one {
            ok = redis::cmd("WAIT")
                .arg(1)
                .arg(0)
                .query::<i64>(&mut c)
                .is_ok();
        }
        let took = start.elapsed();
        if !ok {
            flags.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if flags.measuring.load(Ordering::Relaxed) {
            ops += 1;
            let _ = hist.record(took.as_nanos().max(1) as u64);
        }
    }
    (ops, hist)
}

/// Reads the secondary's lag every 50 ms until `stop`, keeping the largest
/// in `lag_max`.
fn spawn_lag_sampler(
    mut c: redis::Connection,
    lag: Lag,
    stop: Arc<AtomicBool>,
    lag_max: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(text) = redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut c)
            {
                if let Some(ms) = lag_of(&text, lag) {
                    lag_max.fetch_max(ms, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Lets the writers warm up, measures for `duration`, then stops them.
/// Returns the time measured.
fn measure(warmup: Duration, duration: Duration, flags: &Flags) -> Duration {
    std::thread::sleep(warmup);
    flags.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(duration);
    flags.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    flags.stop.store(true, Ordering::Relaxed);
    elapsed
}

/// The writers' operations and latencies, summed.
fn join_writers(
    threads: Vec<std::thread::JoinHandle<(u64, Histogram<u64>)>>,
) -> Result<(u64, Histogram<u64>), String> {
    let mut latency = new_histogram();
    let mut ops = 0;
    for t in threads {
        let (n, h) = t
            .join()
            .map_err(|_| "a writer thread panicked".to_string())?;
        ops += n;
        latency.add(&h).map_err(|e| e.to_string())?;
    }
    Ok((ops, latency))
}

/// The first secondary's lag in ms from `INFO replication`.
fn lag_of(info: &str, lag: Lag) -> Option<u64> {
    let (line, field, scale) = match lag {
        Lag::None => return None,
        Lag::Hotblock => ("secondary0:", "lag_ms=", 1),
        Lag::Redis => ("slave0:", "lag=", 1000),
    };
    let line = info.lines().find(|l| l.starts_with(line))?;
    let at = line.find(field)? + field.len();
    let n: u64 = line[at..].split(',').next()?.trim().parse().ok()?;
    Some(n * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_read_from_either_info() {
        let hb = "# Replication\r\nrole:primary\r\nsecondary0:id=1,addr=x,mode=async,state=online,acked_lsn=5,lag_lsn=2,lag_ms=17\r\n";
        assert_eq!(lag_of(hb, Lag::Hotblock), Some(17));
        let redis = "role:master\r\nslave0:ip=127.0.0.1,port=1,state=online,offset=10,lag=1\r\n";
        assert_eq!(lag_of(redis, Lag::Redis), Some(1000));
        assert_eq!(lag_of("role:master\r\n", Lag::Redis), None);
    }
}
