//! Automatic failover with a real etcd (started by the test on loopback
//! ports) and real node processes: the primary killed, paused or cut off
//! from etcd; what a client acknowledged must survive, and the old primary
//! must come back as a secondary by itself.

mod cluster;

use std::time::{Duration, Instant};

use cluster::etcd::EtcdProcess;
use cluster::{assert_all_present, data_dir, primary_port, wait_until, FollowingWriters, Proc};

/// How long a failover may take in these tests: the 2 s lease, the
/// election, and a loaded CI machine's slack.
const FAILOVER_LIMIT: Duration = Duration::from_secs(20);

fn coordinated(etcd: &EtcdProcess, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--coordinator".to_string(),
        etcd.flag(),
        "--failover-timeout-ms".into(),
        "2000".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn role(p: &Proc) -> Option<String> {
    // A paused node must not hang the question.
    let reply = cluster::raw_query(p.port, &["INFO", "replication"], Duration::from_millis(500))?;
    let text: String = redis::from_redis_value(&reply).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("hotblock_role:"))
        .map(|r| r.trim().to_string())
}

/// Three nodes: a primary and two sync secondaries, all on etcd.
struct Trio {
    etcd: EtcdProcess,
    nodes: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl Trio {
    fn start(quorum: usize) -> Trio {
        Trio::start_with(quorum, &[])
    }

    /// As `start`, with `n1_extra` on the first secondary's command line.
    fn start_with(quorum: usize, n1_extra: &[&str]) -> Trio {
        let etcd = EtcdProcess::start();
        let dir = tempfile::tempdir().unwrap();
        let q = quorum.to_string();
        let primary_args = coordinated(
            &etcd,
            &[
                "--sync-quorum",
                &q,
                "--data-dir",
                &data_dir(dir.path(), "n0"),
            ],
        );
        let primary = Proc::node(dir.path(), &strs(&primary_args));
        wait_until("the first primary is elected", FAILOVER_LIMIT, || {
            primary.info("replication").get("cluster_primary_id") != Some(&"0".to_string())
        });
        let mut nodes = vec![primary];
        for name in ["n1", "n2"] {
            let data = data_dir(dir.path(), name);
            let mut extra = vec![
                "--mode",
                "sync",
                "--serve-reads",
                "--sync-quorum",
                &q,
                "--data-dir",
                &data,
            ];
            if name == "n1" {
                extra.extend(n1_extra);
            }
            let args = coordinated(&etcd, &extra);
            nodes.push(Proc::member(dir.path(), &strs(&args)));
        }
        cluster::wait_secondaries_online(&nodes[0], 2);
        Trio {
            etcd,
            nodes,
            _dir: dir,
        }
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    fn primary_index(&self) -> Option<usize> {
        let port = primary_port(&self.ports())?;
        let i = self.nodes.iter().position(|n| n.port == port)?;
        (role(&self.nodes[i]).as_deref() == Some("primary")).then_some(i)
    }
}

/// `kill -9` of the primary under sync writers: a secondary takes over by
/// itself, the other follows it, no write that got `OK` is missing, and the
/// old primary, restarted, rejoins as a secondary with equal digests.
fn kill9_failover(quorum: usize) {
    let mut trio = Trio::start(quorum);
    let writers = FollowingWriters::start(trio.ports(), 4);
    wait_until("writes before the failure", FAILOVER_LIMIT, || {
        writers.acked() > 200
    });
    trio.nodes[0].kill9();
    let killed = Instant::now();
    let before = writers.acked();
    wait_until("a secondary takes over", FAILOVER_LIMIT, || {
        trio.primary_index().is_some_and(|i| i != 0)
    });
    let elected = killed.elapsed();
    let new = trio.primary_index().expect("a new primary");
    let other = 3 - new;
    cluster::wait_secondaries_online(&trio.nodes[new], 1);
    if quorum == 2 {
        // Two sync acknowledgements need two secondaries: writes wait for
        // the old primary to come back as one.
        trio.nodes[0].start();
    }
    wait_until("writes on the new primary", FAILOVER_LIMIT, || {
        writers.acked() > before + 200
    });
    let took = killed.elapsed();
    let acked = writers.stop();
    assert_all_present(&mut trio.nodes[new].client(), &acked);
    if quorum == 1 {
        // The old primary, restarted from its data directory, rejoins as
        // a secondary of the new one by itself.
        trio.nodes[0].start();
    }
    wait_until("the old primary rejoins", FAILOVER_LIMIT, || {
        role(&trio.nodes[0]).as_deref() == Some("secondary")
    });
    cluster::wait_secondaries_online(&trio.nodes[new], 2);
    let lsn = trio.nodes[new].lsn();
    for i in [0, other] {
        wait_until("caught up", FAILOVER_LIMIT, || trio.nodes[i].lsn() == lsn);
        assert_eq!(trio.nodes[i].digest(), trio.nodes[new].digest(), "node {i}");
    }
    let writes: Result<(), redis::RedisError> = redis::cmd("SET")
        .arg("on-the-old-primary")
        .arg(1)
        .query(&mut trio.nodes[0].client());
    let e = writes.unwrap_err();
    assert_eq!(e.code(), Some("READONLY"), "{e}");
    eprintln!(
        "quorum {quorum}: new primary {elected:?}, writes resumed {took:?} after kill -9; {} acknowledged writes all present",
        acked.len()
    );
    drop(trio.etcd);
}

/// A sync secondary comes back with its data directory wiped while the
/// primary and the other secondary are down. It holds none of the writes
/// it acknowledged, so it must not take over (with W = N = 2 it alone would
/// meet N - W + 1); once the other secondary is back, that one takes over
/// and nothing acknowledged is lost. `same_id`: the wiped node keeps its id
/// (`--node-id`); otherwise it gets a new one, says that the old member at
/// its address should go, and the operator removes it.
fn a_wiped_secondary_stays_out_of_the_election(same_id: bool) {
    let n1_extra: &[&str] = if same_id { &["--node-id", "7"] } else { &[] };
    let mut trio = Trio::start_with(2, n1_extra);
    let writers = FollowingWriters::start(trio.ports(), 4);
    wait_until("writes before the failure", FAILOVER_LIMIT, || {
        writers.acked() > 200
    });
    let acked = writers.stop();
    for i in [0, 1, 2] {
        trio.nodes[i].kill9();
    }
    let data = trio._dir.path().join("n1");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::create_dir(&data).unwrap();
    trio.nodes[1].start();
    // Past the dead primary's lease, and then some: nobody takes over.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(role(&trio.nodes[1]).as_deref(), Some("secondary"));
    let replication = trio.nodes[1].info("replication");
    let why = replication.get("election").cloned().unwrap_or_default();
    assert!(why.contains("started from nothing"), "{replication:?}");
    if !same_id {
        // Under a new id it is a new member. The old one will never stand
        // again, but only an operator can know that: the node says so, and
        // the operator removes it (else the election waits for it).
        let log = trio.nodes[1].log_text();
        assert!(
            log.contains("etcdctl del /hotblock/hotblock/members/"),
            "{log}"
        );
        let etcd = trio.etcd.client();
        let repl = format!("\"repl\":\"127.0.0.1:{}\"", trio.nodes[1].repl_port);
        let mut same: Vec<_> = etcd
            .get_prefix(b"/hotblock/hotblock/members/")
            .unwrap()
            .into_iter()
            .filter(|kv| String::from_utf8_lossy(&kv.value).contains(&repl))
            .collect();
        assert_eq!(same.len(), 2, "the old id and the new one");
        same.sort_by_key(|kv| kv.create_revision);
        etcd.delete(&same[0].key).unwrap();
    }
    trio.nodes[2].start();
    wait_until(
        "the secondary that kept its data takes over",
        FAILOVER_LIMIT,
        || trio.primary_index() == Some(2),
    );
    assert_all_present(&mut trio.nodes[2].client(), &acked);
    wait_until("the wiped secondary catches up", FAILOVER_LIMIT, || {
        trio.nodes[1].lsn() == trio.nodes[2].lsn()
    });
    assert_all_present(&mut trio.nodes[1].client(), &acked);
    drop(trio.etcd);
}

#[test]
fn a_wiped_secondary_with_its_old_id_does_not_take_over_empty() {
    a_wiped_secondary_stays_out_of_the_election(true);
}

#[test]
fn a_wiped_secondary_with_a_new_id_names_the_member_to_remove() {
    a_wiped_secondary_stays_out_of_the_election(false);
}

#[test]
fn kill9_of_the_primary_with_quorum_one_loses_no_acknowledged_write() {
    kill9_failover(1);
}

#[test]
fn kill9_of_the_primary_with_quorum_two_loses_no_acknowledged_write() {
    kill9_failover(2);
}

/// A probe that writes to every node at once, over and over, and keeps
/// when each write that got `OK` was sent and answered.
struct Probe {
    oks: std::sync::Arc<std::sync::Mutex<Vec<(usize, Instant, Instant)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Probe {
    fn start(ports: Vec<u16>) -> Probe {
        use std::sync::atomic::Ordering;
        let oks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = ports
            .into_iter()
            .enumerate()
            .map(|(node, port)| {
                let (oks, stop) = (oks.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut conn: Option<redis::Connection> = None;
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if conn.is_none() {
                            conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                                .unwrap()
                                .get_connection_with_timeout(Duration::from_millis(300))
                                .ok();
                            if let Some(c) = &conn {
                                let _ = c.set_read_timeout(Some(Duration::from_millis(300)));
                            }
                        }
                        let Some(c) = &mut conn else {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        };
                        i += 1;
                        let sent = Instant::now();
                        match redis::cmd("SET")
                            .arg(format!("probe-{node}-{i}"))
                            .arg(i)
                            .query::<()>(c)
                        {
                            Ok(()) => oks.lock().unwrap().push((node, sent, Instant::now())),
                            Err(e)
                                if e.is_io_error()
                                    || e.is_timeout()
                                    || e.is_connection_dropped() =>
                            {
                                conn = None
                            }
                            Err(_) => {}
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        Probe { oks, stop, threads }
    }

    /// Stops; fails if two nodes' accepted writes interleave (one node
    /// accepted a write sent after another's was acknowledged, and the
    /// other way round): two writable primaries at once. Returns the
    /// nodes that accepted writes, in order.
    fn stop(self) -> Vec<usize> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let oks = self.oks.lock().unwrap().clone();
        let nodes: std::collections::BTreeSet<usize> = oks.iter().map(|o| o.0).collect();
        for &x in &nodes {
            for &y in &nodes {
                if x >= y {
                    continue;
                }
                let of = |n: usize| oks.iter().filter(move |o| o.0 == n);
                let max_sent = |n| of(n).map(|o| o.1).max().unwrap();
                let min_answered = |n| of(n).map(|o| o.2).min().unwrap();
                assert!(
                    !(max_sent(x) > min_answered(y) && max_sent(y) > min_answered(x)),
                    "nodes {x} and {y} both accepted writes at once"
                );
            }
        }
        let mut order: Vec<(Instant, usize)> = nodes
            .iter()
            .map(|&n| {
                (
                    oks.iter().filter(|o| o.0 == n).map(|o| o.2).min().unwrap(),
                    n,
                )
            })
            .collect();
        order.sort();
        order.into_iter().map(|(_, n)| n).collect()
    }
}

/// Waits for a primary other than node 0, then checks the old primary
/// steps down by itself and catches up.
fn wait_failover_and_rejoin(trio: &Trio) -> usize {
    let deadline = Instant::now() + FAILOVER_LIMIT;
    loop {
        if let Some(i) = trio.primary_index().filter(|&i| i != 0) {
            return i;
        }
        if Instant::now() > deadline {
            let infos: Vec<String> = trio.nodes[1..]
                .iter()
                .map(|n| format!("{:?}\n{}", n.info("replication"), n.log_text()))
                .collect();
            panic!("no secondary took over:\n{}", infos.join("\n\n"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `SIGSTOP` of the primary past its lease, then `SIGCONT`: another node
/// takes over, and the old primary steps down in place (no restart) and
/// rejoins; no write acknowledged is lost, and no two nodes take writes
/// at once.
#[test]
fn a_primary_paused_past_its_lease_steps_down_in_place() {
    let trio = Trio::start(1);
    let probe = Probe::start(trio.ports());
    let writers = FollowingWriters::start(trio.ports(), 4);
    wait_until("writes", FAILOVER_LIMIT, || writers.acked() > 200);
    cluster::signal("-STOP", trio.nodes[0].pid());
    let new = wait_failover_and_rejoin(&trio);
    let before = writers.acked();
    wait_until("writes on the new primary", FAILOVER_LIMIT, || {
        writers.acked() > before + 100
    });
    cluster::signal("-CONT", trio.nodes[0].pid());
    wait_until("the old primary steps down", FAILOVER_LIMIT, || {
        role(&trio.nodes[0]).as_deref() == Some("secondary")
    });
    cluster::wait_secondaries_online(&trio.nodes[new], 2);
    std::thread::sleep(Duration::from_millis(300));
    let acked = writers.stop();
    let order = probe.stop();
    assert_eq!(
        order.first(),
        Some(&0),
        "node 0 took writes first: {order:?}"
    );
    assert_all_present(&mut trio.nodes[new].client(), &acked);
    let info = trio.nodes[0].info("replication");
    assert_eq!(info["demotions"], "1", "{info:?}");
    let lsn = trio.nodes[new].lsn();
    wait_until("caught up", FAILOVER_LIMIT, || trio.nodes[0].lsn() == lsn);
    assert_eq!(trio.nodes[0].digest(), trio.nodes[new].digest());
}

/// The primary cut off from etcd (its link black-holed) but not from its
/// clients: it stops taking writes before another node is elected; a
/// probe writing to every node at once never sees two take writes; healed,
/// it steps down and rejoins.
#[test]
fn a_primary_cut_off_from_etcd_stops_writes_before_another_is_elected() {
    let etcd = EtcdProcess::start();
    let proxy = cluster::proxy::Proxy::start(etcd.client_port);
    let dir = tempfile::tempdir().unwrap();
    let via_proxy = format!("etcd://127.0.0.1:{}", proxy.port);
    let primary_dir = data_dir(dir.path(), "n0");
    let primary_args = [
        "--coordinator",
        &via_proxy,
        "--failover-timeout-ms",
        "2000",
        "--sync-quorum",
        "1",
        "--data-dir",
        &primary_dir,
    ];
    let primary = Proc::node(dir.path(), &primary_args);
    wait_until("the first primary is elected", FAILOVER_LIMIT, || {
        primary.info("replication").get("cluster_primary_id") != Some(&"0".to_string())
    });
    let mut nodes = vec![primary];
    for name in ["n1", "n2"] {
        let args = coordinated(
            &etcd,
            &[
                "--mode",
                "sync",
                "--serve-reads",
                "--sync-quorum",
                "1",
                "--data-dir",
                &data_dir(dir.path(), name),
            ],
        );
        nodes.push(Proc::member(dir.path(), &strs(&args)));
    }
    cluster::wait_secondaries_online(&nodes[0], 2);
    let trio = Trio {
        etcd,
        nodes,
        _dir: dir,
    };
    let probe = Probe::start(trio.ports());
    let writers = FollowingWriters::start(trio.ports(), 4);
    wait_until("writes", FAILOVER_LIMIT, || writers.acked() > 200);
    proxy.set(cluster::proxy::Fault::Blackhole);
    let new = wait_failover_and_rejoin(&trio);
    let before = writers.acked();
    wait_until("writes on the new primary", FAILOVER_LIMIT, || {
        writers.acked() > before + 100
    });
    proxy.set(cluster::proxy::Fault::None);
    wait_until("the old primary steps down", FAILOVER_LIMIT, || {
        role(&trio.nodes[0]).as_deref() == Some("secondary")
    });
    cluster::wait_secondaries_online(&trio.nodes[new], 2);
    let acked = writers.stop();
    let order = probe.stop();
    assert_eq!(order.first(), Some(&0), "{order:?}");
    assert_all_present(&mut trio.nodes[new].client(), &acked);
}

/// etcd itself down: the primary stops taking writes within its lease (it
/// cannot prove it is still the primary); when etcd returns, the cluster
/// resumes with the same primary.
#[test]
fn with_etcd_down_the_primary_stops_writes_and_resumes_when_it_returns() {
    let mut trio = Trio::start(1);
    let mut c = trio.nodes[0].client();
    let () = redis::cmd("SET")
        .arg("before")
        .arg(1)
        .query(&mut c)
        .unwrap();
    trio.etcd.kill();
    let killed = Instant::now();
    wait_until("writes refused", FAILOVER_LIMIT, || {
        redis::cmd("SET")
            .arg("during")
            .arg(1)
            .query::<()>(&mut c)
            .is_err()
    });
    // The lease is 2 s: refused before etcd could have given it away.
    assert!(
        killed.elapsed() < Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    let e = redis::cmd("SET")
        .arg("during")
        .arg(1)
        .query::<()>(&mut c)
        .unwrap_err();
    assert_eq!(e.code(), Some("READONLY"), "{e}");
    assert_eq!(
        trio.nodes[0].info("replication")["coordinator_link"],
        "down"
    );
    trio.etcd.restart();
    wait_until("writes accepted again", FAILOVER_LIMIT, || {
        redis::cmd("SET")
            .arg("after")
            .arg(1)
            .query::<()>(&mut c)
            .is_ok()
    });
    assert_eq!(role(&trio.nodes[0]).as_deref(), Some("primary"));
    // The nodes' views of etcd catch up within a tick or two.
    wait_until("the same primary named", FAILOVER_LIMIT, || {
        trio.primary_index() == Some(0)
    });
}

/// A Sentinel-aware client program (`program script ports... seconds`, the
/// protocol of `tests/clients/sentinel_writer.*`) keeps writing across a
/// `kill -9` failover after its reconnect, with no code of ours on the
/// client side; every write it got `OK` for is on the new primary.
fn client_follows_a_kill9_failover(client: &str, program: &str, script: &str) {
    use std::io::BufRead;
    let mut trio = Trio::start(1);
    let mut child = std::process::Command::new(program)
        .arg(script)
        .args(trio.ports().iter().map(|p| p.to_string()))
        .arg("10")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready", "{client}");
    std::thread::sleep(Duration::from_secs(1));
    trio.nodes[0].kill9();
    let killed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = lines.last().unwrap().unwrap();
    assert!(child.wait().unwrap().success(), "{client}");
    let result: serde_json::Value = serde_json::from_str(&last).unwrap();
    let acked: Vec<String> = result["acked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let last_ok = result["last_ok"].as_f64().unwrap();
    assert!(
        last_ok > killed + 1.0,
        "{client} stopped writing at the failover ({last_ok} vs kill at {killed})"
    );
    let new = trio.primary_index().expect("a new primary");
    assert_all_present(&mut trio.nodes[new].client(), &acked);
    eprintln!(
        "{client}: {} writes acknowledged, longest gap {:.2} s",
        acked.len(),
        result["gap"].as_f64().unwrap()
    );
}

/// redis-py's `Sentinel` (`master_for`), given the nodes as its Sentinels.
#[test]
fn redis_py_sentinel_follows_a_kill9_failover() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import redis"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have,
        "python3 with redis-py: scripts/test.sh installs it (pip install redis)"
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/sentinel_writer.py"
    );
    client_follows_a_kill9_failover("redis-py", "python3", script);
}

/// ioredis's `sentinels` option, with its defaults otherwise.
#[test]
fn ioredis_sentinels_follow_a_kill9_failover() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/ioredis")
            .is_dir(),
        "ioredis in {dir}/node_modules: scripts/test.sh installs it (npm install)"
    );
    client_follows_a_kill9_failover("ioredis", "node", &format!("{dir}/sentinel_writer.js"));
}

/// A planned switchover: `FAILOVER TO host port` on the primary holds
/// writes, hands over once the target caught up, and steps down; then
/// `SHUTDOWN` of the new primary hands over the same way before it exits.
/// No acknowledged write is lost, and no writer ever gets `-TIMEOUT`
/// (held writes are answered `-READONLY` naming the new primary, and a
/// retry lands there).
#[test]
fn failover_and_shutdown_hand_over_without_loss() {
    let mut trio = Trio::start(1);
    let writers = FollowingWriters::start(trio.ports(), 4);
    wait_until("writes", FAILOVER_LIMIT, || writers.acked() > 200);
    let target = trio.nodes[1].port;
    let asked = Instant::now();
    let () = redis::cmd("FAILOVER")
        .arg("TO")
        .arg("127.0.0.1")
        .arg(target)
        .query(&mut trio.nodes[0].client())
        .unwrap();
    wait_until("the target is primary", FAILOVER_LIMIT, || {
        trio.primary_index() == Some(1)
    });
    let before = writers.acked();
    wait_until("writes on the target", FAILOVER_LIMIT, || {
        writers.acked() > before + 100
    });
    let gap = writers.longest_gap_since(asked);
    wait_until("the old primary steps down", FAILOVER_LIMIT, || {
        role(&trio.nodes[0]).as_deref() == Some("secondary")
    });
    assert_eq!(
        trio.nodes[0].info("replication")["master_failover_state"],
        "no-failover"
    );
    // SHUTDOWN of the new primary: another takes over without waiting for
    // its lease.
    cluster::wait_secondaries_online(&trio.nodes[1], 2);
    let shut = Instant::now();
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut trio.nodes[1].client());
    let before = writers.acked();
    wait_until("writes after SHUTDOWN", FAILOVER_LIMIT, || {
        writers.acked() > before + 100
    });
    let shutdown_gap = writers.longest_gap_since(shut);
    let new = trio.primary_index().expect("a primary");
    assert_ne!(new, 1);
    let errors = writers.errors();
    let acked = writers.stop();
    assert_all_present(&mut trio.nodes[new].client(), &acked);
    assert!(
        !errors.iter().any(|e| e == "TIMEOUT"),
        "a writer got -TIMEOUT: {errors:?}"
    );
    assert!(trio.nodes[1].wait_exit().success());
    let log = trio.nodes[1].log_text();
    assert!(log.contains("FAILOVER: handed over"), "{log}");
    eprintln!(
        "FAILOVER: longest gap between OKs {gap:?}; SHUTDOWN: {shutdown_gap:?}; {} writes acknowledged",
        acked.len()
    );
}
