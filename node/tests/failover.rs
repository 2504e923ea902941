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
    let mut c = p.try_client().ok()?;
    let text: String = redis::cmd("INFO").arg("replication").query(&mut c).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("role:"))
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
            let args = coordinated(
                &etcd,
                &[
                    "--mode",
                    "sync",
                    "--serve-reads",
                    "--sync-quorum",
                    &q,
                    "--data-dir",
                    &data_dir(dir.path(), name),
                ],
            );
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

#[test]
fn kill9_of_the_primary_with_quorum_one_loses_no_acknowledged_write() {
    kill9_failover(1);
}

#[test]
fn kill9_of_the_primary_with_quorum_two_loses_no_acknowledged_write() {
    kill9_failover(2);
}
