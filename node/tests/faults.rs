//! Faults on the links between real processes, injected by a loopback TCP
//! proxy (a fault of docs/reliability.md).

mod cluster;

use std::time::Duration;

use cluster::proxy::{Fault, Proxy};
use cluster::{assert_all_present, raw_query, wait_until, Proc};
use redis::Commands;

/// A hot secondary that reaches its primary through `proxy`.
fn behind_proxy(dir: &std::path::Path, proxy: &Proxy, mode: &str) -> Proc {
    Proc::secondary(dir, proxy.port, &["--mode", mode, "--serve-reads"])
}

fn converged(node: &Proc, secondary: &Proc) {
    let lsn = node.lsn();
    wait_until("convergence", Duration::from_secs(60), || {
        let info = secondary.info("replication");
        info["state"] == "online" && info["lsn"] == lsn.to_string()
    });
    assert_eq!(secondary.digest(), node.digest());
}

/// Row 9: a flipped bit in a frame is caught by its checksum and never
/// applied; the secondary reconnects, resumes and ends digest-equal.
#[test]
fn a_flipped_byte_on_the_link_is_never_applied() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &[]);
    let proxy = Proxy::start(node.repl_port);
    let secondary = behind_proxy(dir.path(), &proxy, "async");
    let mut c = node.client();
    let () = c.set("warm", 1).unwrap();
    converged(&node, &secondary);
    // Well inside the stream the next writes produce, past the handshake.
    proxy.set(Fault::FlipAt(3000));
    let secondary = {
        // A fresh connection, so the offset counts from its start.
        let mut s = secondary;
        s.kill9();
        s.start();
        s
    };
    for i in 0..300 {
        let () = c
            .set(format!("k{i}"), format!("value-{i}-{}", "x".repeat(40)))
            .unwrap();
    }
    wait_until("the byte is flipped", Duration::from_secs(20), || {
        proxy.has_flipped()
    });
    converged(&node, &secondary);
    let log = secondary.log_text();
    // The frame's checksum covers its header too: the reader refuses the
    // frame ("bad frame: ...") and reconnects; a flipped length that makes
    // it wait for bytes that never come ends in the silence timeout.
    assert!(
        log.contains("bad frame") || log.contains("primary silent past the timeout"),
        "the secondary refused the corrupt frame and dropped the connection:\n{log}"
    );
    for i in [0, 150, 299] {
        let v: String = secondary.client().get(format!("k{i}")).unwrap();
        assert!(v.starts_with(&format!("value-{i}-")));
    }
}

/// Row 3: a sync primary cut off from its secondary (the link swallows
/// bytes but stays open) acknowledges nothing: every write gets an error
/// saying the outcome is unknown, never OK. Healed, writes get OK again and
/// every OK'd write reaches the secondary.
#[test]
fn a_blackholed_sync_primary_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(
        dir.path(),
        &["--sync-quorum", "1", "--sync-timeout-ms", "300"],
    );
    let proxy = Proxy::start(node.repl_port);
    let secondary = behind_proxy(dir.path(), &proxy, "sync");
    let mut c = node.client();
    wait_until("sync writes", Duration::from_secs(20), || {
        c.set::<_, _, ()>("first", 1).is_ok()
    });
    proxy.set(Fault::Blackhole);
    for i in 0..5 {
        let e = c.set::<_, _, ()>(format!("cut{i}"), i).unwrap_err();
        assert_eq!(e.code(), Some("TIMEOUT"), "{e}");
    }
    proxy.set(Fault::None);
    let mut acked = Vec::new();
    wait_until("writes get OK again", Duration::from_secs(30), || {
        let ok = c.set::<_, _, ()>("healed", 1).is_ok();
        if ok {
            acked.push("healed".to_string());
        }
        ok
    });
    for i in 0..50 {
        let () = c.set(format!("after{i}"), i).unwrap();
        acked.push(format!("after{i}"));
    }
    converged(&node, &secondary);
    assert_all_present(&mut secondary.client(), &acked);
}

/// Row 10: latency, a bandwidth cap and a link cut every few kilobytes
/// slow the secondary down or make it reconnect, but never corrupt it:
/// once the link is healthy it converges to equal digests.
#[test]
fn latency_bandwidth_and_cuts_end_in_convergence() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &[]);
    let proxy = Proxy::start(node.repl_port);
    let secondary = behind_proxy(dir.path(), &proxy, "async");
    let mut c = node.client();
    let () = redis::cmd("DB.CREATE")
        .arg("t")
        .arg("g")
        .query(&mut c)
        .unwrap();
    for (round, fault) in [
        Fault::Latency(Duration::from_millis(5)),
        Fault::Bandwidth(256 * 1024),
        Fault::CutAfter(4096),
    ]
    .into_iter()
    .enumerate()
    {
        proxy.set(fault);
        for i in 0..200 {
            let () = redis::cmd("REC.PUT")
                .arg("t")
                .arg(format!("{round}-{i}"))
                .arg("p".repeat(200))
                .arg("g")
                .arg(i % 5)
                .query(&mut c)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        proxy.set(Fault::None);
        converged(&node, &secondary);
    }
    let found: Vec<String> = redis::cmd("REC.FIND")
        .arg("t")
        .arg("g")
        .arg("3")
        .query(&mut secondary.client())
        .unwrap();
    assert_eq!(found.len(), 3 * 40);
}

/// Row 10 in sync mode: under latency past the sync timeout, a bandwidth
/// cap and cuts every few kilobytes, every write gets OK or TIMEOUT (never
/// anything else), some of each; every OK'd write is on the secondary once
/// the link heals, and no partial frame was applied (equal digests).
#[test]
fn sync_writes_under_latency_bandwidth_and_cuts_get_ok_or_timeout_and_keep_every_ok() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(
        dir.path(),
        &["--sync-quorum", "1", "--sync-timeout-ms", "300"],
    );
    let proxy = Proxy::start(node.repl_port);
    let secondary = behind_proxy(dir.path(), &proxy, "sync");
    let mut c = node.client();
    wait_until("sync writes", Duration::from_secs(20), || {
        c.set::<_, _, ()>("first", 1).is_ok()
    });
    let mut acked = Vec::new();
    let mut timeouts = 0;
    for fault in [
        Fault::Latency(Duration::from_millis(400)),
        Fault::Bandwidth(64 * 1024),
        Fault::CutAfter(4096),
    ] {
        proxy.set(fault);
        for i in 0..40 {
            let key = format!("{fault:?}-{i}");
            match c.set::<_, _, ()>(&key, "p".repeat(500)) {
                Ok(()) => acked.push(key),
                Err(e) => {
                    assert_eq!(e.code(), Some("TIMEOUT"), "{fault:?}: {e}");
                    timeouts += 1;
                }
            }
        }
        proxy.set(Fault::None);
        wait_until("sync writes again", Duration::from_secs(30), || {
            c.set::<_, _, ()>("heal", 1).is_ok()
        });
    }
    assert!(timeouts > 0, "no fault delayed an acknowledgement");
    assert!(acked.len() > 10, "{} writes acknowledged", acked.len());
    converged(&node, &secondary);
    assert_all_present(&mut secondary.client(), &acked);
}

/// Row 4 and guarantee 2: an async primary with `--min-secondaries 1
/// --max-lag-ms 1000` refuses writes (`NOREPLICAS`) with no secondary, and
/// again once its only secondary is cut off (blackholed link) for longer
/// than the lag allowed. Then the primary dies and the secondary is
/// promoted: what is lost is only what was acknowledged during the cut
/// (above the promoted node's LSN, which it logs), never a write from
/// before it.
#[test]
fn an_async_primary_refuses_writes_past_max_lag_and_a_failover_loses_only_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Proc::node(
        dir.path(),
        &["--min-secondaries", "1", "--max-lag-ms", "1000"],
    );
    let mut c = node.client();
    let e = c.set::<_, _, ()>("alone", 1).unwrap_err();
    assert_eq!(e.code(), Some("NOREPLICAS"), "{e}");
    let proxy = Proxy::start(node.repl_port);
    let secondary = behind_proxy(dir.path(), &proxy, "async");
    wait_until("writes accepted", Duration::from_secs(20), || {
        c.set::<_, _, ()>("first", 1).is_ok()
    });
    let mut before = vec!["first".to_string()];
    for i in 0..50 {
        // An acknowledgement late past the lag allowed (a loaded machine)
        // refuses a write for a moment: retried.
        let key = format!("before{i}");
        wait_until("a write accepted", Duration::from_secs(20), || {
            match c.set::<_, _, ()>(&key, i) {
                Ok(()) => true,
                Err(e) => {
                    assert_eq!(e.code(), Some("NOREPLICAS"), "{e}");
                    false
                }
            }
        });
        before.push(key);
    }
    converged(&node, &secondary);
    proxy.set(Fault::Blackhole);
    let mut window = Vec::new();
    wait_until("writes refused", Duration::from_secs(20), || {
        let key = format!("window{}", window.len());
        match c.set::<_, _, ()>(&key, 1) {
            Ok(()) => {
                window.push(key);
                std::thread::sleep(Duration::from_millis(20));
                false
            }
            Err(e) => {
                assert_eq!(e.code(), Some("NOREPLICAS"), "{e}");
                true
            }
        }
    });
    assert_eq!(node.info("replication")["writable"], "0");
    node.kill9();
    secondary.promote();
    let lsn = secondary.lsn();
    assert!(
        secondary.log_text().contains(&format!("lsn={lsn}")),
        "the promoted LSN is logged:\n{}",
        secondary.log_text()
    );
    // Every write from before the cut is there.
    assert_all_present(&mut secondary.client(), &before);
    // Only writes from the window can be lost, and the window is short:
    // the primary stopped taking writes once the lag passed 1000 ms (about
    // 50 writes 20 ms apart).
    assert!(
        window.len() < 400,
        "{} writes taken while cut off",
        window.len()
    );
}

/// Row 2: the primary dies after its sync secondary acknowledged a
/// transaction but before the client got the reply (the client's link
/// drops everything the node sends). After promotion the transaction is
/// there.
#[test]
fn a_transaction_acknowledged_but_never_replied_survives_the_failover() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let mut node = Proc::node(
        dir.path(),
        &["--sync-quorum", "1", "--sync-timeout-ms", "5000"],
    );
    let secondary = Proc::secondary(dir.path(), node.repl_port, &["--mode", "sync"]);
    let mut c = node.client();
    wait_until("sync writes", Duration::from_secs(20), || {
        c.set::<_, _, ()>("first", 1).is_ok()
    });
    let client_proxy = Proxy::start(node.port);
    client_proxy.set(Fault::DropFromTarget);
    let base = node.lsn();
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", client_proxy.port)).unwrap();
    raw.write_all(b"*3\r\n$3\r\nSET\r\n$9\r\nunreplied\r\n$1\r\n1\r\n")
        .unwrap();
    // Acknowledged: the primary has the secondary's ack for it.
    wait_until(
        "the secondary acknowledged it",
        Duration::from_secs(20),
        || {
            node.info("replication")
                .get("secondary0")
                .and_then(|l| l.split("acked_lsn=").nth(1))
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|acked| acked > base)
        },
    );
    raw.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut reply = [0u8; 64];
    assert!(
        !matches!(raw.read(&mut reply), Ok(n) if n > 0),
        "the reply was not to arrive"
    );
    node.kill9();
    secondary.promote();
    let v: Option<i64> = secondary.client().get("unreplied").unwrap();
    assert_eq!(v, Some(1));
}

/// Row 13 against real processes: a byte changed in a secondary's block
/// (behind every check, as a memory fault) is found by digest verification
/// — on `VERIFY`, and by the background verifier — and repaired.
#[test]
fn a_changed_byte_in_a_secondary_is_found_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    for background in [false, true] {
        let flags: &[&str] = match background {
            false => &[],
            true => &["--verify-interval-ms", "200"],
        };
        let node = Proc::node(dir.path(), flags);
        let secondary = Proc::secondary_with_faults(dir.path(), node.repl_port, &["--serve-reads"]);
        let mut c = node.client();
        for i in 0..100 {
            let () = c.set(format!("k{i}"), i).unwrap();
        }
        converged(&node, &secondary);
        let flipped: i64 = redis::cmd("DEBUG")
            .arg("FLIPBYTE")
            .arg(0)
            .arg(0)
            .arg(200)
            .query(&mut secondary.client())
            .unwrap();
        assert_eq!(flipped, 1);
        assert_ne!(secondary.digest(), node.digest(), "the byte changed");
        if !background {
            wait_until(
                "VERIFY reaches the secondary",
                Duration::from_secs(20),
                || redis::cmd("VERIFY").query::<i64>(&mut c).unwrap() == 1,
            );
        }
        wait_until("the divergence is found", Duration::from_secs(30), || {
            secondary.info("replication")["blocks_diverged"] != "0"
        });
        converged(&node, &secondary);
    }
    // Off unless asked for: a production node refuses to corrupt itself.
    let node = Proc::node(dir.path(), &[]);
    let e = redis::cmd("DEBUG")
        .arg("FLIPBYTE")
        .arg(0)
        .arg(0)
        .arg(200)
        .query::<i64>(&mut node.client())
        .unwrap_err();
    assert!(e.to_string().contains("DIGEST only"), "{e}");
}

/// Whether the peer closed `c` within `wait` (EOF or reset), reading past
/// whatever it sent first.
fn closed_within(mut c: &std::net::TcpStream, wait: Duration) -> bool {
    use std::io::{ErrorKind, Read};
    c.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// A flood of connections to the replication port that never prove the
/// secret: at most `--repl-max-pending-handshakes` are held (each up to
/// the handshake timeout), the rest are closed at once, and a real
/// secondary still gets in once the held ones time out.
#[test]
fn a_handshake_flood_holds_a_bounded_number_of_connections() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &["--repl-max-pending-handshakes", "4"]);
    let silent: Vec<std::net::TcpStream> = (0..12)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", node.repl_port)).unwrap())
        .collect();
    let closed = silent
        .iter()
        .filter(|c| closed_within(c, Duration::from_millis(200)))
        .count();
    assert!(
        closed >= 8,
        "{closed} of 12 silent connections closed at once; 4 may be held"
    );
    let secondary = Proc::secondary(dir.path(), node.repl_port, &[]);
    cluster::wait_secondaries_online(&node, 1);
    drop((secondary, silent));
}

/// Row 61: writers (through a proxy that sometimes drops the node's
/// replies) and readers of a few shared keys, while the link to the sync
/// secondary is cut, slowed and healed: the history of what the clients
/// saw through the primary is linearizable (a write whose reply was lost
/// may or may not have happened, never partly), and the hot secondary
/// shows only values that were written.
#[test]
fn a_history_under_link_faults_is_linearizable() {
    use hotblock_node::history::{History, Kind};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const REGISTERS: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(
        dir.path(),
        &["--sync-quorum", "1", "--sync-timeout-ms", "300"],
    );
    let repl = Proxy::start(node.repl_port);
    let secondary = behind_proxy(dir.path(), &repl, "sync");
    let clients = Proxy::start(node.port);
    wait_until("the secondary is online", Duration::from_secs(20), || {
        node.info("replication")["connected_secondaries"] == "1"
    });
    let history = Arc::new(History::default());
    let stale = Arc::new(History::default());
    let stop = Arc::new(AtomicBool::new(false));
    // A fresh connection per operation, every step under a timeout: a reply
    // the proxy drops must not hang a client (the `redis` crate's own
    // connection set-up reads without one).
    let timeout = Duration::from_millis(500);
    let mut threads = Vec::new();
    for w in 0..3 {
        let (history, stop) = (history.clone(), stop.clone());
        let port = clients.port;
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("reg{}", (i + w) % REGISTERS);
                let value = format!("w{w}-{i}");
                let invoked = history.now();
                let reply = raw_query(port, &["SET", &key, &value], timeout);
                let ok = matches!(reply, Some(redis::Value::Okay));
                history.record(key.as_bytes(), Kind::Write(value.into()), invoked, ok);
            }
        }));
    }
    for (r, port, into) in [
        (0, node.port, history.clone()),
        (1, node.port, history.clone()),
        (2, secondary.port, stale.clone()),
    ] {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let key = format!("reg{}", i % REGISTERS);
                let invoked = into.now();
                let value = match raw_query(port, &["GET", &key], timeout) {
                    Some(redis::Value::Nil) => None,
                    Some(redis::Value::BulkString(v)) => Some(v),
                    _ => continue,
                };
                into.record(key.as_bytes(), Kind::Read(value), invoked, true);
            }
        }));
    }
    for fault in [
        (Some(Fault::Blackhole), None),
        (Some(Fault::None), None),
        (Some(Fault::Latency(Duration::from_millis(20))), None),
        (None, Some(Fault::DropFromTarget)),
        (Some(Fault::None), Some(Fault::None)),
        (Some(Fault::CutAfter(20_000)), None),
        (Some(Fault::None), None),
    ] {
        if let Some(f) = fault.0 {
            repl.set(f);
        }
        if let Some(f) = fault.1 {
            clients.set(f);
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let checked = history
        .check()
        .unwrap_or_else(|e| panic!("not linearizable: {e}"));
    let secondary_reads = history
        .check_stale_reads(&stale)
        .unwrap_or_else(|e| panic!("the secondary showed an unwritten value: {e}"));
    println!("{checked:?}; {secondary_reads} reads on the secondary");
    assert!(checked.writes > 20, "{checked:?}");
    assert!(checked.reads > 20, "{checked:?}");
    assert!(
        checked.unknown_seen + checked.unknown_unseen > 0,
        "some writes had an unknown outcome: {checked:?}"
    );
    assert!(secondary_reads > 0);
}
