//! Faults on the replication link between real processes, injected by a
//! loopback TCP proxy (RELIABILITY rows 3, 9 and 10).

mod cluster;

use std::time::Duration;

use cluster::proxy::{Fault, Proxy};
use cluster::{wait_until, Proc};
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
    assert!(
        log.contains("checksum") || log.contains("replication session ended"),
        "the secondary saw the corrupt frame and dropped the connection:\n{log}"
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
    let mut s = secondary.client();
    for k in &acked {
        assert!(
            s.exists::<_, bool>(k).unwrap(),
            "{k} acknowledged but missing"
        );
    }
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
