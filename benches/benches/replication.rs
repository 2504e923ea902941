//! Commit latency and throughput by sequencing mode — `none` (no
//! replication), `async` (one async secondary) and `sync` (one sync
//! secondary, quorum 1) — over an in-process pipe, TCP and QUIC on loopback,
//! with 1 and 64 writers, in one run beside a TCP ping-pong round trip (the
//! physical floor of a sync commit) and a full-resync snapshot transfer.
//!
//! Run: `cargo bench -p hotblock-benches --bench replication`
//! (`HOTBLOCK_BENCH_SECONDS=1` shortens each measured run; default 3).
//!
//! Each commit is one transaction putting one record (16-byte key, 100-byte
//! payload). Primary, secondary and writers share the machine's cores, as in
//! a single-host deployment. The table (p50/p99 from `hdrhistogram`) is
//! printed first; criterion then times single-writer commits per mode.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hdrhistogram::Histogram;
use hotblock_core::repl::{Mode, NodeId, PrimaryConfig};
use hotblock_core::IndexMode;
use hotblock_nic_transport::{ConnectTo, ListenOn, MemoryHub, Secret, TlsIdentity, Trust};
use hotblock_primary::{DatabaseOptions, Db, ReplicationConfig};
use hotblock_secondary::{SecondaryNode, SecondaryNodeConfig};

const SECRET: &[u8] = b"bench secret";
const PAYLOAD: [u8; 100] = [7; 100];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sequencing {
    None,
    Async,
    Sync,
}

struct Setup {
    db: Db,
    _secondary: Option<SecondaryNode>,
}

/// How primary and secondary are linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Memory,
    Tcp,
    Quic,
}

fn setup(mode: Sequencing, transport: Transport) -> Setup {
    let db = Db::in_memory();
    db.create_database("bench", DatabaseOptions::default())
        .unwrap();
    if mode == Sequencing::None {
        return Setup {
            db,
            _secondary: None,
        };
    }
    let loopback = "127.0.0.1:0".parse().unwrap();
    let identity = TlsIdentity::self_signed().unwrap();
    let hub = MemoryHub::new();
    let listen = match transport {
        Transport::Memory => ListenOn::Memory(hub.clone()),
        Transport::Tcp => ListenOn::Tcp(loopback),
        Transport::Quic => ListenOn::Quic(loopback, identity.clone()),
    };
    let mut config = ReplicationConfig::on(listen, Secret::new(SECRET));
    config.protocol = PrimaryConfig {
        sync_quorum: usize::from(mode == Sequencing::Sync),
        sync_timeout: Duration::from_secs(10),
        ..PrimaryConfig::default()
    };
    let db = db.with_replication(config).unwrap();
    let addr = db.replicator().unwrap().local_addr().to_string();
    let primary = match transport {
        Transport::Memory => ConnectTo::Memory(hub),
        Transport::Tcp => ConnectTo::Tcp(addr.parse().unwrap()),
        Transport::Quic => {
            ConnectTo::Quic(addr.parse().unwrap(), Trust::Pinned(identity.fingerprint()))
        }
    };
    let secondary = SecondaryNode::start(SecondaryNodeConfig {
        primary,
        primary_address: "primary".into(),
        secret: Secret::new(SECRET),
        node: NodeId(1),
        mode: if mode == Sequencing::Sync {
            Mode::Sync
        } else {
            Mode::Async
        },
        indexes: IndexMode::Deferred,
        downstream: None,
        databases: Vec::new(),
        persister: None,
        progress_bar: false,
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !secondary.status().streaming {
        assert!(Instant::now() < deadline, "secondary did not come online");
        std::thread::sleep(Duration::from_millis(5));
    }
    Setup {
        db,
        _secondary: Some(secondary),
    }
}

fn commit(db: &Db, key: u64) {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&key.to_be_bytes());
    db.put("bench", &k, &[], &PAYLOAD).unwrap();
}

/// `writers` threads commit for `seconds`; returns (commits/s, p50 µs, p99 µs).
fn measure(db: &Db, writers: u64, seconds: f64) -> (f64, f64, f64) {
    static NEXT_KEY: AtomicU64 = AtomicU64::new(0);
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let histograms: Vec<Histogram<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                s.spawn(|| {
                    let mut h = Histogram::<u64>::new(3).unwrap();
                    while Instant::now() < stop {
                        let t = Instant::now();
                        commit(db, NEXT_KEY.fetch_add(1, Ordering::Relaxed));
                        h.record(t.elapsed().as_nanos() as u64).unwrap();
                    }
                    h
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = Histogram::<u64>::new(3).unwrap();
    for h in &histograms {
        all.add(h).unwrap();
    }
    let us = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    (all.len() as f64 / elapsed, us(0.5), us(0.99))
}

/// Round trips of 64 bytes over one loopback TCP connection with
/// `TCP_NODELAY`: p50 and p99 in µs.
fn tcp_ping_pong() -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..20_000 {
        let t = Instant::now();
        c.write_all(&buf).unwrap();
        c.read_exact(&mut buf).unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    drop(c);
    echo.join().unwrap();
    (
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

/// A fresh secondary joining a primary with `records` records (100-byte
/// payloads) gets them by snapshot: returns (block MB, seconds, GB/s).
fn snapshot_transfer(records: u64) -> (f64, f64, f64) {
    let db = Db::in_memory();
    db.create_database("bench", DatabaseOptions::default())
        .unwrap();
    let mut config = ReplicationConfig::new("127.0.0.1:0".parse().unwrap(), Secret::new(SECRET));
    // A small backlog: the joining secondary cannot catch up from it.
    config.protocol = PrimaryConfig {
        backlog_bytes_max: 1 << 20,
        sync_quorum: 0,
        ..PrimaryConfig::default()
    };
    let db = db.with_replication(config).unwrap();
    for chunk in 0..records / 1000 {
        let mut txn = db.begin("bench").unwrap();
        for i in 0..1000 {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&(chunk * 1000 + i).to_be_bytes());
            txn.put(&k, &[], &PAYLOAD).unwrap();
        }
        txn.commit().unwrap();
    }
    let stats = db.stats("bench").unwrap();
    let bytes = stats.blocks * 64 * 1024;
    let start = Instant::now();
    let secondary = SecondaryNode::start(SecondaryNodeConfig {
        primary: ConnectTo::Tcp(db.replicator().unwrap().local_addr().parse().unwrap()),
        primary_address: db.replicator().unwrap().local_addr().to_string(),
        secret: Secret::new(SECRET),
        node: NodeId(2),
        mode: Mode::Async,
        indexes: IndexMode::Deferred,
        downstream: None,
        databases: Vec::new(),
        persister: None,
        progress_bar: false,
    });
    while !(secondary.status().streaming && secondary.engine().lsn() == db.lsn()) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(secondary.status().snapshots, 1);
    assert_eq!(secondary.engine().digests(), db.engine().digests());
    (bytes as f64 / 1e6, seconds, bytes as f64 / seconds / 1e9)
}

fn report() {
    if std::env::var("HOTBLOCK_BENCH_ONLY").as_deref() == Ok("snapshot") {
        let (mb, secs, gbps) = snapshot_transfer(1_000_000);
        println!("snapshot: {mb:.0} MB of blocks in {secs:.2} s = {gbps:.2} GB/s");
        std::process::exit(0);
    }
    let seconds: f64 = std::env::var("HOTBLOCK_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let (rtt50, rtt99) = tcp_ping_pong();
    println!("tcp ping-pong (64 B, loopback): p50 {rtt50:.1} µs, p99 {rtt99:.1} µs");
    println!(
        "{:<6} {:<9} {:>8} {:>12} {:>10} {:>10}",
        "mode", "transport", "writers", "commits/s", "p50 µs", "p99 µs"
    );
    let mut rows = Vec::new();
    let runs = [(Sequencing::None, Transport::Memory)].into_iter().chain(
        [Transport::Memory, Transport::Tcp, Transport::Quic]
            .into_iter()
            .flat_map(|t| [(Sequencing::Async, t), (Sequencing::Sync, t)]),
    );
    for (mode, transport) in runs {
        let setup = setup(mode, transport);
        for writers in [1, 64] {
            let (ops, p50, p99) = measure(&setup.db, writers, seconds);
            let transport_name = if mode == Sequencing::None {
                "-".to_string()
            } else {
                format!("{transport:?}").to_lowercase()
            };
            println!(
                "{:<6} {:<9} {:>8} {:>12.0} {:>10.1} {:>10.1}",
                format!("{mode:?}").to_lowercase(),
                transport_name,
                writers,
                ops,
                p50,
                p99
            );
            rows.push((mode, transport, writers, ops, p50));
        }
    }
    let get = |m, t, w| {
        rows.iter()
            .find(|r| r.0 == m && (m == Sequencing::None || r.1 == t) && r.2 == w)
            .map(|r| (r.3, r.4))
            .unwrap()
    };
    for t in [Transport::Memory, Transport::Tcp, Transport::Quic] {
        println!(
            "ratios over {}: async/none (64 writers) {:.2}; sync/async (64 writers) {:.2}; sync p50 (1 writer) / tcp rtt p50 {:.2}",
            format!("{t:?}").to_lowercase(),
            get(Sequencing::Async, t, 64).0 / get(Sequencing::None, t, 64).0,
            get(Sequencing::Sync, t, 64).0 / get(Sequencing::Async, t, 64).0,
            get(Sequencing::Sync, t, 1).1 / rtt50,
        );
    }
    let (mb, secs, gbps) = snapshot_transfer(1_000_000);
    println!("snapshot: {mb:.0} MB of blocks in {secs:.2} s = {gbps:.2} GB/s");
}

fn commits(c: &mut Criterion) {
    report();
    let mut group = c.benchmark_group("commit_1_writer");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for mode in [Sequencing::None, Sequencing::Async, Sequencing::Sync] {
        let setup = setup(mode, Transport::Tcp);
        let mut key = 1u64 << 40;
        group.bench_function(format!("{mode:?}").to_lowercase(), |b| {
            b.iter(|| {
                key += 1;
                commit(&setup.db, key);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, commits);
criterion_main!(benches);
