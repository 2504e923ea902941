//! End to end: the real binaries on loopback, a real Redis client.

mod cluster;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster::{
    assert_all_present, data_dir, signal, wait_secondaries_online, wait_until, Proc, Writers,
};
use redis::{Commands, Value};

fn err_text(e: &redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
}

/// Waits until `node` reports one secondary, online.
fn wait_online(node: &Proc) {
    wait_secondaries_online(node, 1);
}

#[test]
fn kv_records_transactions_and_errors_over_resp() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &[]);
    let mut c = node.client();

    let () = c.set("k", "v1").unwrap();
    assert_eq!(
        c.get::<_, Option<String>>("k").unwrap().as_deref(),
        Some("v1")
    );
    assert_eq!(c.exists::<_, i64>(&["k", "nope"][..]).unwrap(), 1);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 1);
    assert_eq!(c.del::<_, i64>(&["k", "nope"][..]).unwrap(), 1);
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
    let nx: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("a")
        .arg("NX")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx.as_deref(), Some("OK"));
    let nx: Option<String> = redis::cmd("SET")
        .arg("k")
        .arg("b")
        .arg("NX")
        .query(&mut c)
        .unwrap();
    assert_eq!(nx, None, "NX refuses an existing key");
    assert_eq!(c.get::<_, String>("k").unwrap(), "a");

    // Records with non-unique keys.
    let () = redis::cmd("DB.CREATE")
        .arg("users")
        .arg("city")
        .arg("team")
        .query(&mut c)
        .unwrap();
    let e = redis::cmd("DB.CREATE")
        .arg("users")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).contains("already exists"));
    for (k, city, team) in [
        ("ada", "london", "engines"),
        ("alan", "london", "codes"),
        ("grace", "nyc", "compilers"),
    ] {
        let () = redis::cmd("REC.PUT")
            .arg("users")
            .arg(k)
            .arg(format!("{{\"name\":\"{k}\"}}"))
            .arg("city")
            .arg(city)
            .arg("team")
            .arg(team)
            .query(&mut c)
            .unwrap();
    }
    let mut london: Vec<String> = redis::cmd("REC.FIND")
        .arg("users")
        .arg("city")
        .arg("london")
        .query(&mut c)
        .unwrap();
    london.sort();
    assert_eq!(london, ["ada", "alan"]);
    let one: Vec<String> = redis::cmd("REC.FIND")
        .arg("users")
        .arg("city")
        .arg("london")
        .arg("LIMIT")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(one.len(), 1);
    let rec: Vec<Option<String>> = redis::cmd("REC.GET")
        .arg("users")
        .arg("grace")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        rec,
        [
            Some("{\"name\":\"grace\"}"),
            Some("city"),
            Some("nyc"),
            Some("team"),
            Some("compilers")
        ]
        .map(|s| s.map(String::from))
    );
    assert_eq!(
        redis::cmd("REC.COUNT")
            .arg("users")
            .query::<i64>(&mut c)
            .unwrap(),
        3
    );
    assert_eq!(
        redis::cmd("REC.DEL")
            .arg("users")
            .arg("alan")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("REC.GET")
            .arg("users")
            .arg("alan")
            .query::<Value>(&mut c)
            .unwrap(),
        Value::Nil
    );
    let dbs: BTreeSet<String> = redis::cmd("DB.LIST").query(&mut c).unwrap();
    assert_eq!(dbs, ["0", "users"].map(String::from).into());
    let e = redis::cmd("REC.PUT")
        .arg("users")
        .arg("x")
        .arg("p")
        .arg("planet")
        .arg("mars")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).contains("no index 'planet'"));

    // MULTI/EXEC: one transaction, one LSN.
    let before = node.lsn();
    let replies: (String, String, i64) = redis::pipe()
        .atomic()
        .set("m1", "1")
        .set("m2", "2")
        .del("k")
        .query(&mut c)
        .unwrap();
    assert_eq!(replies, ("OK".into(), "OK".into(), 1));
    assert_eq!(node.lsn(), before + 1, "three writes, one LSN");
    // A bad command aborts the whole transaction; nothing runs.
    let () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: Value = redis::cmd("SET").arg("m3").arg("3").query(&mut c).unwrap();
    assert!(redis::cmd("NOSUCH").query::<Value>(&mut c).is_err());
    let e = redis::cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert!(err_text(&e).contains("EXECABORT"));
    assert_eq!(c.get::<_, Option<String>>("m3").unwrap(), None);
    // A transaction may span databases: records and keys together.
    let before = node.lsn();
    let replies: (String, String) = redis::pipe()
        .atomic()
        .set("m4", "4")
        .cmd("REC.PUT")
        .arg("users")
        .arg("z")
        .arg("p")
        .query(&mut c)
        .unwrap();
    assert_eq!(replies, ("OK".into(), "OK".into()));
    assert_eq!(node.lsn(), before + 1, "two databases, one LSN");

    // Errors keep the connection usable.
    let e = redis::cmd("GET").query::<Value>(&mut c).unwrap_err();
    assert!(err_text(&e).contains("wrong number of arguments"));
    let e = redis::cmd("FLY")
        .arg("me")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).contains("unknown command 'FLY'"));
    let big = vec![b'x'; 70_000];
    let e = redis::cmd("SET")
        .arg("big")
        .arg(&big[..])
        .query::<Value>(&mut c)
        .unwrap_err();
    let e = err_text(&e);
    assert!(e.contains("block"), "{e}");
    assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");

    let info = node.info("replication");
    for field in ["role", "epoch", "lsn", "connected_secondaries"] {
        assert!(info.contains_key(field), "INFO replication lacks {field}");
    }
    assert_eq!(info["role"], "master");
    let keyspace = node.info("keyspace");
    assert!(
        keyspace["dbusers"].starts_with("keys=3,expires=0,avg_ttl=0,"),
        "{keyspace:?}"
    );
}

#[test]
fn passwords_are_required_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &["--requirepass", "s3cret"]);
    let mut c = node.client();
    let e = c.get::<_, Value>("k").unwrap_err();
    assert!(err_text(&e).starts_with("NOAUTH"));
    let e = redis::cmd("AUTH")
        .arg("wrong")
        .query::<()>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).starts_with("WRONGPASS"));
    let () = redis::cmd("AUTH").arg("s3cret").query(&mut c).unwrap();
    let () = c.set("k", "v").unwrap();
    // A client library's own AUTH (from the URL) works too.
    let mut c2 = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", node.port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(c2.get::<_, String>("k").unwrap(), "v");
}

/// Writers run against a sync primary; it is killed with SIGKILL; the sync
/// secondary is promoted: every write that got OK is there.
#[test]
fn sync_failover_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Proc::node(
        dir.path(),
        &["--sync-quorum", "1", "--sync-timeout-ms", "500"],
    );
    let secondary = Proc::secondary(dir.path(), node.repl_port, &["--mode", "sync"]);
    wait_online(&node);

    // A stopped secondary acknowledges nothing: a sync write gets an
    // outcome-unknown error, never OK; once it resumes, writes get OK.
    signal("-STOP", secondary.pid());
    let e = node
        .client()
        .set::<_, _, ()>("while-stopped", 1)
        .unwrap_err();
    assert_eq!(e.code(), Some("TIMEOUT"), "{}", err_text(&e));
    signal("-CONT", secondary.pid());
    wait_until("a write gets OK again", Duration::from_secs(20), || {
        node.client().set::<_, _, ()>("resumed", 1).is_ok()
    });

    let writers = Writers::start(node.port, 4);
    wait_until("writes", Duration::from_secs(20), || writers.acked() >= 400);
    node.kill9();
    let acked = writers.stop();
    secondary.promote();
    let mut c = secondary.client();
    assert_all_present(&mut c, &acked);
    assert_eq!(secondary.info("replication")["role"], "master");
    // The promoted node takes writes.
    let () = c.set("after", "failover").unwrap();
}

/// Async replication under load: the primary reports lag, and once the
/// writes stop, a secondary and a secondary of that secondary converge.
#[test]
fn async_secondaries_and_a_daisy_chain_converge() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &[]);
    let first = Proc::secondary(dir.path(), node.repl_port, &["--serve-reads"]);
    let second = Proc::secondary(dir.path(), first.repl_port, &[]);
    wait_online(&node);
    let mut c = node.client();
    let () = redis::cmd("DB.CREATE")
        .arg("t")
        .arg("group")
        .query(&mut c)
        .unwrap();
    let mut saw_secondary_line = false;
    for batch in 0..50 {
        let mut pipe = redis::pipe();
        for i in 0..100 {
            pipe.cmd("REC.PUT")
                .arg("t")
                .arg(format!("{batch}-{i}"))
                .arg("payload")
                .arg("group")
                .arg(i % 7)
                .ignore();
        }
        let () = pipe.query(&mut c).unwrap();
        let info = node.info("replication");
        if let Some(line) = info.get("secondary0") {
            for field in [
                "id=",
                "addr=127.0.0.1:",
                "mode=async",
                "state=",
                "acked_lsn=",
                "lag_lsn=",
                "lag_ms=",
            ] {
                assert!(line.contains(field), "{line} lacks {field}");
            }
            saw_secondary_line = true;
        }
    }
    assert!(saw_secondary_line);
    let lsn = node.lsn();
    wait_until("the chain converges", Duration::from_secs(30), || {
        first.lsn() == lsn && second.lsn() == lsn
    });
    assert_eq!(first.digest(), node.digest());
    assert_eq!(second.digest(), node.digest());
    // The hot secondary answers reads; the passive one refuses them.
    let found: Vec<String> = redis::cmd("REC.FIND")
        .arg("t")
        .arg("group")
        .arg("3")
        .query(&mut first.client())
        .unwrap();
    assert_eq!(found.len(), 50 * (0..100).filter(|i| i % 7 == 3).count());
    let e = redis::cmd("REC.COUNT")
        .arg("t")
        .query::<i64>(&mut second.client())
        .unwrap_err();
    assert!(err_text(&e).contains("passive"));
    // Writes to a secondary are refused.
    let e = first.client().set::<_, _, ()>("x", "y").unwrap_err();
    assert!(err_text(&e).starts_with("READONLY"));
}

/// Both nodes killed with SIGKILL; the secondary restarts from its data
/// directory alone (the primary stays down): same LSN, every record, and
/// it can still be promoted. The node restarts from its own as well.
#[test]
fn data_directories_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (node_dir, sec_dir) = (data_dir(dir.path(), "node"), data_dir(dir.path(), "sec"));
    let mut node = Proc::node(dir.path(), &["--data-dir", &node_dir, "--sync-quorum", "1"]);
    let mut secondary = Proc::secondary(
        dir.path(),
        node.repl_port,
        &[
            "--mode",
            "sync",
            "--data-dir",
            &sec_dir,
            "--fsync",
            "always",
        ],
    );
    let mut c = node.client();
    let () = redis::cmd("DB.CREATE")
        .arg("t")
        .arg("group")
        .query(&mut c)
        .unwrap();
    for i in 0..300 {
        let () = redis::cmd("REC.PUT")
            .arg("t")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .arg("group")
            .arg(i % 3)
            .query(&mut c)
            .unwrap();
    }
    for i in 0..100 {
        let () = c.set(format!("s{i}"), i).unwrap();
    }
    let lsn = node.lsn();
    wait_until(
        "the secondary has everything",
        Duration::from_secs(20),
        || secondary.lsn() == lsn,
    );
    let digest = node.digest();
    node.kill9();
    secondary.kill9();

    secondary.start();
    assert_eq!(secondary.lsn(), lsn, "the secondary recovers its LSN");
    assert_eq!(secondary.digest(), digest, "and its blocks");
    secondary.promote();
    let mut s = secondary.client();
    assert_eq!(
        redis::cmd("REC.COUNT")
            .arg("t")
            .query::<i64>(&mut s)
            .unwrap(),
        300
    );
    let group: Vec<String> = redis::cmd("REC.FIND")
        .arg("t")
        .arg("group")
        .arg("1")
        .query(&mut s)
        .unwrap();
    assert_eq!(group.len(), 100);
    assert_eq!(s.get::<_, i64>("s99").unwrap(), 99);

    drop(secondary);
    let node = {
        node.start();
        node
    };
    assert_eq!(node.lsn(), lsn, "the node recovers its LSN");
    assert_eq!(node.digest(), digest);
    assert_eq!(
        redis::cmd("REC.GET")
            .arg("t")
            .arg("k7")
            .query::<Vec<String>>(&mut node.client())
            .unwrap()[0],
        "v7"
    );
}

/// After a failover the old primary, which committed writes its secondary
/// never got (async), rejoins as a secondary of the new primary: those
/// writes are discarded and its blocks end digest-equal.
#[test]
fn an_old_primary_rejoins_and_discards_its_divergent_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (data_dir(dir.path(), "a"), data_dir(dir.path(), "b"));
    let mut a = Proc::node(dir.path(), &["--data-dir", &a_dir]);
    let mut b = Proc::secondary(dir.path(), a.repl_port, &["--data-dir", &b_dir]);
    let mut ca = a.client();
    for i in 0..200 {
        let () = ca.set(format!("shared{i}"), i).unwrap();
    }
    let lsn = a.lsn();
    wait_until("b caught up", Duration::from_secs(20), || b.lsn() == lsn);
    // b stops hearing from a; a goes on alone, then dies.
    b.kill9();
    for i in 0..50 {
        let () = ca.set(format!("lost{i}"), i).unwrap();
    }
    assert!(a.lsn() > lsn);
    a.kill9();
    // b comes back from its data directory and is promoted.
    b.start();
    b.promote();
    let mut cb = b.client();
    for i in 0..30 {
        let () = cb.set(format!("new{i}"), i).unwrap();
    }
    // a rejoins as b's secondary, from its own data directory.
    let old = Proc::secondary(
        dir.path(),
        b.repl_port,
        &["--data-dir", &a_dir, "--serve-reads"],
    );
    let lsn = b.lsn();
    wait_until("the old primary converges", Duration::from_secs(30), || {
        let info = old.info("replication");
        info["state"] == "online" && info["lsn"] == lsn.to_string()
    });
    assert_eq!(old.digest(), b.digest());
    let mut co = old.client();
    assert_eq!(
        co.get::<_, Option<i64>>("lost0").unwrap(),
        None,
        "the divergent tail is gone"
    );
    assert_eq!(co.get::<_, i64>("new29").unwrap(), 29);
    assert_eq!(co.get::<_, i64>("shared199").unwrap(), 199);
    assert!(old.info("replication")["epoch"].parse::<u64>().unwrap() > 0);
}

/// `SHUTDOWN` and SIGTERM stop a node cleanly (exit 0); `WAIT` counts the
/// secondaries that applied this client's last write; a bad data directory
/// or config is refused at start with an error that names it.
#[test]
fn clean_stops_wait_and_start_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), "data");
    let mut node = Proc::node(dir.path(), &["--data-dir", &data]);
    let secondary = Proc::secondary(dir.path(), node.repl_port, &[]);
    let mut c = node.client();
    let () = c.set("k", "v").unwrap();
    let n: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut c).unwrap();
    assert_eq!(n, 1, "the secondary acknowledged the write");
    let n: i64 = redis::cmd("WAIT").arg(2).arg(100).query(&mut c).unwrap();
    assert_eq!(n, 1, "there is only one secondary: WAIT times out with 1");
    let e = redis::cmd("WAIT")
        .arg(1)
        .arg(0)
        .query::<i64>(&mut secondary.client())
        .unwrap_err();
    assert!(err_text(&e).contains("replica"));

    // SIGTERM: exit 0, and the data directory has everything.
    let lsn = node.lsn();
    signal("-TERM", node.pid());
    assert!(node.wait_exit().success(), "{}", node.log_text());
    node.start();
    assert_eq!(node.lsn(), lsn);
    assert_eq!(node.client().get::<_, String>("k").unwrap(), "v");
    // SHUTDOWN: exit 0.
    let _ = redis::cmd("SHUTDOWN").query::<()>(&mut node.client());
    assert!(node.wait_exit().success(), "{}", node.log_text());

    // Start errors name the problem and exit non-zero.
    let run = |args: &[&str]| {
        let out = std::process::Command::new(cluster::binary("hotblock-node"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let port = format!("127.0.0.1:{}", cluster::free_port());
    let missing = dir.path().join("nope");
    let err = run(&["--listen", &port, "--data-dir", missing.to_str().unwrap()]);
    assert!(err.contains("does not exist"), "{err}");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let err = run(&["--listen", &port, "--data-dir", file.to_str().unwrap()]);
    assert!(err.contains("not a directory"), "{err}");
    let err = run(&["--listen", "0.0.0.0:0"]);
    assert!(err.contains("without --requirepass"), "{err}");
    // An empty password would pass that check and protect nothing.
    let err = run(&["--listen", "0.0.0.0:0", "--requirepass", ""]);
    assert!(err.contains("empty secret"), "{err}");
    let err = run(&["--maxmemory", "12 parsecs"]);
    assert!(
        err.contains("--maxmemory") && err.contains("unknown unit"),
        "{err}"
    );
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "sync-quorom = 1\n").unwrap();
    let err = run(&["--config", config.to_str().unwrap()]);
    assert!(err.contains("sync-quorom"), "{err}");
    // A secondary holding some databases only cannot acknowledge commits
    // to the others: not as a sync secondary.
    let out = std::process::Command::new(cluster::binary("hotblock-secondary"))
        .args([
            "--primary",
            "127.0.0.1:1",
            "--mode",
            "sync",
            "--databases",
            "a",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--databases with --mode sync"), "{err}");
}

/// Settings from a `--config` file apply, and flags override them.
#[test]
fn a_config_file_sets_what_flags_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "requirepass = \"from-file\"\nmaxclients = 1\nblock-size = 8192\n",
    )
    .unwrap();
    let node = Proc::node(
        dir.path(),
        &["--config", config.to_str().unwrap(), "--maxclients", "5"],
    );
    let mut c = node.client();
    let e = c.get::<_, Value>("k").unwrap_err();
    assert!(
        err_text(&e).starts_with("NOAUTH"),
        "requirepass came from the file"
    );
    let () = redis::cmd("AUTH").arg("from-file").query(&mut c).unwrap();
    let clients: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxclients")
        .query(&mut c)
        .unwrap();
    assert_eq!(clients, ["maxclients", "5"], "the flag won over the file");
    // block-size came from the file: a 6000-byte value fits 8192-byte blocks of a new database.
    let () = redis::cmd("DB.CREATE").arg("big").query(&mut c).unwrap();
    let () = redis::cmd("REC.PUT")
        .arg("big")
        .arg("k")
        .arg(vec![b'x'; 6000])
        .query(&mut c)
        .unwrap();
    let e = redis::cmd("REC.PUT")
        .arg("big")
        .arg("k2")
        .arg(vec![b'x'; 9000])
        .query::<()>(&mut c)
        .unwrap_err();
    let e = err_text(&e);
    assert!(e.contains("8192"), "{e}");
}

/// Raw pipelines: requests that arrive in one packet run in order, reads
/// see the writes before them, `AUTH` in the same packet as what follows
/// it works, and a protocol error closes the connection before anything
/// after it runs.
#[test]
fn pipelines_run_in_order_and_a_protocol_error_stops_them() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &["--requirepass", "pw"]);
    let exchange = |request: &[u8], expect: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < expect.len() {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!(
                    "reading replies: {e}; got {:?}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expect)
        );
        s
    };
    // REPLICAOF (which points this node at a primary, and so its secret's
    // proof at whoever listens there) only after AUTH.
    exchange(
        b"REPLICAOF 127.0.0.1 1\r\n",
        b"-NOAUTH Authentication required.\r\n",
    );
    exchange(
        b"AUTH pw\r\nSET x 1\r\nGET x\r\nSET x 2\r\nGET x\r\nDEL x\r\nGET x\r\nEXISTS x\r\n",
        b"+OK\r\n+OK\r\n$1\r\n1\r\n+OK\r\n$1\r\n2\r\n:1\r\n$-1\r\n:0\r\n",
    );
    // A pipelined MULTI/EXEC among plain commands.
    exchange(
        b"AUTH pw\r\nSET a 0\r\nMULTI\r\nSET a 1\r\nSET b 1\r\nEXEC\r\nGET a\r\n",
        b"+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n$1\r\n1\r\n",
    );
    // An HTTP request on the RESP port: the write before it runs, nothing
    // after it does, and the connection is closed.
    let mut s = exchange(
        b"AUTH pw\r\nSET before 1\r\nPOST / HTTP/1.1\r\nHost: x\r\n\r\nSET after 1\r\n",
        b"+OK\r\n+OK\r\n-ERR Protocol error: looks like HTTP: closing\r\n",
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the server closes the connection");
    assert!(rest.is_empty(), "nothing after the error: {rest:?}");
    let mut c = redis::Client::open(format!("redis://:pw@127.0.0.1:{}/", node.port))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(c.get::<_, Option<i64>>("before").unwrap(), Some(1));
    assert_eq!(
        c.get::<_, Option<i64>>("after").unwrap(),
        None,
        "nothing after the protocol error ran"
    );
}

/// Replies larger in all than the output buffer limit: the node runs a
/// pipeline in pieces, writing each piece's replies out before the next
/// runs, and every reply still comes, in order; a protocol error after
/// them is reported only once they all ran.
#[test]
fn a_pipeline_whose_replies_exceed_the_output_limit_runs_in_order_in_pieces() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &["--client-output-buffer-limit", "64kb"]);
    let big = "v".repeat(16 * 1024);
    let () = node.client().set("big", &big).unwrap();
    let mut request = Vec::new();
    let mut expect = Vec::new();
    for i in 0..100 {
        request.extend_from_slice(b"GET big\r\n");
        expect.extend_from_slice(format!("${}\r\n{big}\r\n", big.len()).as_bytes());
        if i % 10 == 0 {
            request.extend_from_slice(format!("SET k{i} {i}\r\nGET k{i}\r\n").as_bytes());
            expect.extend_from_slice(
                format!("+OK\r\n${}\r\n{i}\r\n", i.to_string().len()).as_bytes(),
            );
        }
    }
    request.extend_from_slice(b"*1\r\n$-5\r\n");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&request).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("the server closes the connection");
    assert!(got.len() > expect.len(), "{} bytes of replies", got.len());
    assert_eq!(
        &got[..expect.len()],
        &expect[..],
        "replies out of order or missing"
    );
    let error = String::from_utf8_lossy(&got[expect.len()..]).into_owned();
    assert!(
        error.starts_with("-ERR") && error.contains("bulk"),
        "{error}"
    );
    // 0 means no limit (as in Redis), not "run nothing".
    let unlimited = Proc::node(dir.path(), &["--client-output-buffer-limit", "0"]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", unlimited.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"SET a 1\r\nGET a\r\nQUIT\r\n").unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(&got[..], b"+OK\r\n$1\r\n1\r\n+OK\r\n");
}

/// a fault of docs/reliability.md against real processes: 20 `kill -9`s,
/// of the primary or of its sync secondary at random, each restarted from
/// its data directory, while 3 writers run in sync mode. No write that got
/// `OK` is lost, and both end with the same blocks.
#[test]
fn twenty_kill_9s_under_sync_load_lose_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (node_dir, sec_dir) = (data_dir(dir.path(), "node"), data_dir(dir.path(), "sec"));
    let mut node = Proc::node(
        dir.path(),
        &[
            "--data-dir",
            &node_dir,
            "--sync-quorum",
            "1",
            "--sync-timeout-ms",
            "300",
        ],
    );
    let mut secondary = Proc::secondary(
        dir.path(),
        node.repl_port,
        &["--mode", "sync", "--data-dir", &sec_dir],
    );
    wait_online(&node);
    let writers = Writers::start(node.port, 3);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut node_kills = 0;
    for round in 0..20 {
        wait_until("writes between kills", Duration::from_secs(20), || {
            writers.acked() >= 50 * (round + 1)
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let victim = if rng % 2 == 0 {
            node_kills += 1;
            &mut node
        } else {
            &mut secondary
        };
        victim.kill9();
        victim.start();
    }
    assert!(node_kills > 0 && node_kills < 20, "both were killed");
    // Each restart of the primary from its data directory began an epoch.
    let epoch: u64 = node.info("replication")["epoch"].parse().unwrap();
    assert!(
        epoch >> 16 > node_kills,
        "epoch {epoch:#x} after {node_kills} restarts"
    );
    let acked = writers.stop();
    eprintln!(
        "{} writes acknowledged across 20 kills ({node_kills} of the primary)",
        acked.len()
    );
    let mut c = node.client();
    assert_all_present(&mut c, &acked);
    let lsn = node.lsn();
    wait_until("the secondary converges", Duration::from_secs(30), || {
        let info = secondary.info("replication");
        info["state"] == "online" && info["lsn"] == lsn.to_string()
    });
    assert_eq!(secondary.digest(), node.digest());
}

/// Past `--maxmemory`, writes get `-OOM`; nothing acknowledged before is
/// lost, and reads go on.
#[test]
fn maxmemory_refuses_writes_and_keeps_serving_reads() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &["--maxmemory", "8mb"]);
    let mut c = node.client();
    let mut acked = 0u64;
    let mut oom = None;
    for i in 0..200_000 {
        match c.set::<_, _, ()>(format!("k{i}"), "v".repeat(200)) {
            Ok(()) => acked += 1,
            Err(e) => {
                oom = Some(e.code().unwrap_or("").to_string());
                break;
            }
        }
    }
    let code = oom.expect("the memory limit was reached");
    assert_eq!(code, "OOM");
    assert!(acked > 1000, "{acked} writes fit before the limit");
    assert_eq!(
        redis::cmd("DBSIZE").query::<u64>(&mut c).unwrap(),
        acked,
        "no acknowledged write lost, no refused one kept"
    );
    let v: String = c.get("k0").unwrap();
    assert_eq!(v.len(), 200);
    let e = c.set::<_, _, ()>("one-more", "x".repeat(200)).unwrap_err();
    assert_eq!(e.code(), Some("OOM"));
    assert!(node.info("memory")["used_memory"].parse::<u64>().unwrap() <= 8 << 20);
}

/// A fault of docs/reliability.md, sync mode: the primary is paused (SIGSTOP), its sync
/// secondary promoted, then the old primary resumed (SIGCONT). The old
/// primary can no longer get a write acknowledged (its only sync secondary
/// is now a primary on a newer epoch): every write there gets an error,
/// never OK, and none of them reaches the new primary.
#[test]
fn a_paused_old_primary_resumed_after_a_promotion_acknowledges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(
        dir.path(),
        &["--sync-quorum", "1", "--sync-timeout-ms", "300"],
    );
    let secondary = Proc::secondary(dir.path(), node.repl_port, &["--mode", "sync"]);
    wait_online(&node);
    let mut old = node.client();
    let () = old.set("before", 1).unwrap();
    signal("-STOP", node.pid());
    secondary.promote();
    let mut new = secondary.client();
    let () = new.set("on-new", 1).unwrap();
    signal("-CONT", node.pid());
    // TIMEOUT until the promoted node's notice of its epoch arrives, then
    // READONLY: never OK.
    for i in 0..5 {
        let e = old.set::<_, _, ()>(format!("stale{i}"), i).unwrap_err();
        assert!(
            matches!(e.code(), Some("TIMEOUT" | "READONLY")),
            "{}",
            err_text(&e)
        );
    }
    wait_until("the old primary fenced", Duration::from_secs(20), || {
        node.info("replication")["fenced"] == "1"
    });
    assert_eq!(new.get::<_, Option<i64>>("stale0").unwrap(), None);
    assert_eq!(new.get::<_, i64>("before").unwrap(), 1);
    let old_epoch: u64 = node.info("replication")["epoch"].parse().unwrap();
    let new_epoch: u64 = secondary.info("replication")["epoch"].parse().unwrap();
    assert!(new_epoch > old_epoch, "{new_epoch:#x} > {old_epoch:#x}");
}

/// A fault of docs/reliability.md, async mode: an async primary answers OK on its own
/// apply, so only fencing stops it. After a pause (SIGSTOP), the promotion
/// of one of its secondaries and SIGCONT, the promoted node tells it of the
/// newer epoch; from then on it refuses writes (READONLY), the secondary it
/// still has stops moving, nothing it took after the pause reaches the new
/// primary, and a restart from its data directory keeps it fenced.
#[test]
fn a_paused_async_primary_is_fenced_by_the_promoted_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), "old-primary");
    let mut node = Proc::node(dir.path(), &["--data-dir", &data]);
    let promoted = Proc::secondary(dir.path(), node.repl_port, &["--mode", "async"]);
    let stays = Proc::secondary(dir.path(), node.repl_port, &["--mode", "async"]);
    wait_secondaries_online(&node, 2);
    let mut old = node.client();
    let () = old.set("before", 1).unwrap();
    wait_until("the write replicated", Duration::from_secs(20), || {
        promoted.info("replication")["lsn"] == node.info("replication")["lsn"]
    });
    signal("-STOP", node.pid());
    promoted.promote();
    let mut new = promoted.client();
    let () = new.set("on-new", 1).unwrap();
    signal("-CONT", node.pid());
    // Writes in the moment before the notice arrives are the documented
    // async window: OK'd by the old primary alone and lost.
    let mut window = Vec::new();
    wait_until("the old primary fenced", Duration::from_secs(30), || {
        let key = format!("window{}", window.len());
        match old.set::<_, _, ()>(&key, 1) {
            Ok(()) => {
                window.push(key);
                std::thread::sleep(Duration::from_millis(50));
                false
            }
            // A write applied as the notice arrived: its outcome is
            // unknown (the promoted node may or may not hold it), never
            // READONLY, which would say it did not happen.
            Err(e) if err_text(&e).contains("outcome unknown") => {
                window.push(key);
                false
            }
            Err(e) => {
                assert_eq!(e.code(), Some("READONLY"), "{}", err_text(&e));
                true
            }
        }
    });
    assert_eq!(node.info("replication")["fenced"], "1");
    // What the old primary took before the fence reaches its secondary;
    // from then on nothing more does.
    let fenced_at = node.lsn();
    wait_until(
        "the remaining secondary caught up",
        Duration::from_secs(20),
        || stays.lsn() == fenced_at,
    );
    let held = stays.info("replication")["lsn"].clone();
    for i in 0..20 {
        let e = old.set::<_, _, ()>(format!("stale{i}"), i).unwrap_err();
        assert_eq!(e.code(), Some("READONLY"), "{}", err_text(&e));
    }
    assert_eq!(stays.info("replication")["lsn"], held);
    for key in window
        .iter()
        .map(String::as_str)
        .chain(["stale0", "stale19"])
    {
        assert_eq!(new.get::<_, Option<i64>>(key).unwrap(), None, "{key}");
    }
    assert_eq!(new.get::<_, i64>("before").unwrap(), 1);
    // The old primary refuses writes as soon as it has taken the notice;
    // the promoted node logs its answer once that crossed back, which
    // under load can come a little later.
    wait_until(
        "the promoted node logged the fenced answer",
        Duration::from_secs(20),
        || {
            promoted
                .log_text()
                .contains("former primary told of the new epoch")
        },
    );
    // The fencing is kept in its data directory: restarted, it is still
    // fenced, rather than starting an epoch of its own.
    node.kill9();
    node.start();
    assert_eq!(node.info("replication")["fenced"], "1");
    let e = node
        .client()
        .set::<_, _, ()>("after-restart", 1)
        .unwrap_err();
    assert_eq!(e.code(), Some("READONLY"), "{}", err_text(&e));
    assert!(node
        .log_text()
        .contains("fenced by a newer primary before it stopped"));
}

/// `--transport tls`: the node makes a certificate in its data directory
/// and keeps it across restarts, so the fingerprint its secondary pinned
/// stays valid; a secondary pinning another fingerprint gets nothing.
#[test]
fn tls_replication_between_the_binaries_keeps_its_certificate_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), "node-data");
    let mut node = Proc::node(dir.path(), &["--transport", "tls", "--data-dir", &data]);
    let pinned = node
        .fingerprints()
        .pop()
        .expect("the node logs its fingerprint");
    assert_eq!(pinned.len(), 64, "{pinned}");
    let secondary = Proc::secondary(
        dir.path(),
        node.repl_port,
        &["--transport", "tls", "--primary-fingerprint", &pinned],
    );
    wait_online(&node);
    let mut c = node.client();
    let () = c.set("k", "over tls").unwrap();
    node.kill9();
    node.start();
    assert_eq!(node.fingerprints(), vec![pinned.clone(), pinned.clone()]);
    wait_online(&node);
    let mut c = node.client();
    let () = c.set("after", "restart").unwrap();
    wait_until("the secondary caught up", Duration::from_secs(20), || {
        secondary.lsn() == node.lsn()
    });
    assert_eq!(secondary.digest(), node.digest());
    let impostor = "ab".repeat(32);
    let refused = Proc::secondary(
        dir.path(),
        node.repl_port,
        &["--transport", "tls", "--primary-fingerprint", &impostor],
    );
    wait_until("a refusal", Duration::from_secs(20), || {
        refused
            .info("replication")
            .get("last_error")
            .is_some_and(|e| e.contains("fingerprint"))
    });
    assert_eq!(refused.lsn(), 0);
    assert_eq!(node.info("replication")["connected_secondaries"], "1");
}

/// Sets the running process's file-size limit (RLIMIT_FSIZE; `None`: no
/// limit) with util-linux's `prlimit`. Past it, its writes fail (EFBIG) as
/// they would on a full disk.
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let soft = bytes.map_or("unlimited".to_string(), |b| b.to_string());
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--fsize={soft}:unlimited"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success());
}

/// The largest file in `dir`, in bytes.
fn largest_file(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap_or(0)
}

/// Writes 1 KiB values until one is refused; returns the acknowledged keys
/// and the refusal.
fn write_until_refused(
    c: &mut redis::Connection,
    prefix: &str,
) -> (Vec<String>, redis::RedisError) {
    let value = "v".repeat(1024);
    let mut acked = Vec::new();
    for i in 0..100_000 {
        let key = format!("{prefix}{i}");
        match c.set::<_, _, ()>(&key, &value) {
            Ok(()) => acked.push(key),
            Err(e) => return (acked, e),
        }
    }
    panic!("no write was refused");
}

/// A data directory that stops taking bytes while writes go on (a full
/// disk; here the node's file-size limit, which fails its writes the same
/// way): writes get `-MISCONF` naming the cause, reads go on, nothing
/// acknowledged is lost across a `kill -9` (the torn log tail is cut), and
/// once there is room again `SAVE` makes the node writable.
#[test]
fn a_full_data_directory_refuses_writes_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), "data");
    let mut node = Proc::node(dir.path(), &["--data-dir", &data, "--fsync", "always"]);
    let value = "v".repeat(1024);
    let check_all = |node: &Proc, keys: &[String]| {
        let mut c = node.client();
        for key in keys {
            assert_eq!(
                c.get::<_, Option<String>>(key).unwrap().as_ref(),
                Some(&value),
                "{key}"
            );
        }
    };
    let mut acked = Vec::new();
    for round in ["a", "b"] {
        limit_file_size(node.pid(), Some(largest_file(data.as_ref()) + 256 * 1024));
        let mut c = node.client();
        let (keys, refused) = write_until_refused(&mut c, round);
        assert!(keys.len() > 50, "{} writes before the refusal", keys.len());
        assert_eq!(refused.code(), Some("MISCONF"), "{}", err_text(&refused));
        assert!(
            err_text(&refused).contains("too large"),
            "{}",
            err_text(&refused)
        );
        acked.extend(keys);
        // Refused from then on, reads served.
        let e = c.set::<_, _, ()>("more", 1).unwrap_err();
        assert_eq!(e.code(), Some("MISCONF"), "{}", err_text(&e));
        check_all(&node, &acked);
        let persistence = node.info("persistence");
        assert_eq!(persistence["healthy"], "0");
        assert!(
            persistence["last_error"].contains("too large"),
            "{persistence:?}"
        );
        if round == "a" {
            // Crash while full: recovery cuts the torn tail and keeps
            // every acknowledged write.
            node.kill9();
            node.start();
        } else {
            // Room again: SAVE checkpoints and writes resume.
            limit_file_size(node.pid(), None);
            let () = redis::cmd("SAVE").query(&mut c).unwrap();
            assert_eq!(node.info("persistence")["healthy"], "1");
            let () = c.set("after", &value).unwrap();
            acked.push("after".into());
            let lsn = node.lsn();
            node.kill9();
            node.start();
            assert_eq!(node.lsn(), lsn);
        }
        check_all(&node, &acked);
    }
}

/// a fault of docs/reliability.md: a sync secondary killed and restarted with its
/// data directory wiped comes back empty, catches up from LSN 0, and only
/// counts for acknowledgements of what it holds: writers run throughout, and after the
/// primary dies and the secondary is promoted, every write that got OK —
/// before, during and after its resync — is there.
#[test]
fn a_secondary_with_a_wiped_data_dir_catches_up_in_full_before_its_acks_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), "secondary-data");
    let mut node = Proc::node(
        dir.path(),
        &["--sync-quorum", "1", "--sync-timeout-ms", "500"],
    );
    let mut secondary = Proc::secondary(
        dir.path(),
        node.repl_port,
        &["--mode", "sync", "--data-dir", &data, "--fsync", "always"],
    );
    wait_online(&node);
    let writers = Writers::start(node.port, 4);
    wait_until("writes", Duration::from_secs(20), || writers.acked() >= 300);
    secondary.kill9();
    for entry in std::fs::read_dir(&data).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let before = writers.acked();
    secondary.start();
    wait_until("writes after the resync", Duration::from_secs(30), || {
        writers.acked() >= before + 300
    });
    // It came back empty and caught up from LSN 0 (by snapshot, or by
    // stream while the primary's backlog still reaches back that far).
    assert_eq!(
        secondary.log_text().matches("new data directory").count(),
        2,
        "{}",
        secondary.log_text()
    );
    node.kill9();
    let acked = writers.stop();
    secondary.promote();
    let mut c = secondary.client();
    assert_all_present(&mut c, &acked);
    // The resync was checkpointed into the wiped directory.
    assert!(std::fs::read_dir(&data).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("snapshot-")));
}

/// Guarantee 1, "written to disk first": under `--fsync always`, by the
/// time a sync commit returns OK its LSN is fsynced on the primary and on
/// the sync secondary (`durable_lsn` in `INFO persistence`). Under
/// `everysec` this fails: acknowledgements do not wait for the disk there.
#[test]
fn a_sync_ok_comes_after_both_nodes_fsynced_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (node_data, secondary_data) = (data_dir(dir.path(), "n"), data_dir(dir.path(), "s"));
    let node = Proc::node(
        dir.path(),
        &[
            "--sync-quorum",
            "1",
            "--data-dir",
            &node_data,
            "--fsync",
            "always",
        ],
    );
    let secondary = Proc::secondary(
        dir.path(),
        node.repl_port,
        &[
            "--mode",
            "sync",
            "--data-dir",
            &secondary_data,
            "--fsync",
            "always",
        ],
    );
    wait_online(&node);
    let mut c = node.client();
    let durable = |p: &Proc| -> u64 { p.info("persistence")["durable_lsn"].parse().unwrap() };
    for i in 0..30 {
        let () = c.set(format!("k{i}"), i).unwrap();
        let lsn = node.lsn();
        assert!(
            durable(&secondary) >= lsn,
            "commit {lsn} acked before the secondary's fsync"
        );
        assert!(
            durable(&node) >= lsn,
            "commit {lsn} acked before the primary's fsync"
        );
    }
}

/// a fault of docs/reliability.md: every node killed (kill -9, primary and sync
/// secondary together) while MULTI/EXEC transactions of three keys run,
/// then restarted from their data directories: every transaction that got
/// its EXEC reply is there, and no transaction is there in part.
#[test]
fn every_node_killed_mid_transactions_keeps_them_whole_and_every_acked_one() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let (node_dir, sec_dir) = (data_dir(dir.path(), "node"), data_dir(dir.path(), "sec"));
    let mut node = Proc::node(
        dir.path(),
        &[
            "--data-dir",
            &node_dir,
            "--fsync",
            "always",
            "--sync-quorum",
            "1",
        ],
    );
    let mut secondary = Proc::secondary(
        dir.path(),
        node.repl_port,
        &[
            "--mode",
            "sync",
            "--data-dir",
            &sec_dir,
            "--fsync",
            "always",
        ],
    );
    wait_online(&node);
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let port = node.port;
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                let Ok(mut c) = client.get_connection() else {
                    return;
                };
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let id = format!("{w}-{i}");
                    let done: redis::RedisResult<()> = redis::pipe()
                        .atomic()
                        .set(format!("a{id}"), 1)
                        .set(format!("b{id}"), 2)
                        .set(format!("c{id}"), 3)
                        .query(&mut c);
                    match done {
                        Ok(()) => acked.lock().unwrap().push(id),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    wait_until("transactions", Duration::from_secs(20), || {
        acked.lock().unwrap().len() >= 300
    });
    node.kill9();
    secondary.kill9();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    node.start();
    secondary.start();
    wait_online(&node);
    let lsn = node.lsn();
    wait_until("the secondary caught up", Duration::from_secs(20), || {
        secondary.lsn() == lsn
    });
    assert_eq!(secondary.digest(), node.digest());
    let mut c = node.client();
    for id in &acked {
        let v: (Option<i64>, Option<i64>, Option<i64>) = redis::pipe()
            .get(format!("a{id}"))
            .get(format!("b{id}"))
            .get(format!("c{id}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, (Some(1), Some(2), Some(3)), "transaction {id}");
    }
    // Whole or absent: each writer sends its transactions in order, so the
    // one it had in flight is the one after its last acknowledged.
    for w in 0..4 {
        let sent = acked
            .iter()
            .filter(|id| id.starts_with(&format!("{w}-")))
            .count();
        for i in 0..=sent {
            let id = format!("{w}-{i}");
            let n: usize = redis::cmd("EXISTS")
                .arg(format!("a{id}"))
                .arg(format!("b{id}"))
                .arg(format!("c{id}"))
                .query(&mut c)
                .unwrap();
            assert!(
                n == 0 || n == 3,
                "transaction {id} is there in part ({n} of 3)"
            );
        }
    }
}

/// a fault of docs/reliability.md: the primary dies while sync commits wait for a
/// stopped secondary (B); the other (A), which applied them, is promoted.
/// Those commits never got OK, and A settles them as committed: they are
/// in its state before it takes a write, and B, resumed and re-pointed at A
/// with `REPLICAOF host port`, ends with the same blocks.
#[test]
fn a_failover_while_sync_commits_wait_settles_them_on_every_node() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Proc::node(
        dir.path(),
        &["--sync-quorum", "2", "--sync-timeout-ms", "5000"],
    );
    let a = Proc::secondary(
        dir.path(),
        node.repl_port,
        &["--mode", "sync", "--serve-reads"],
    );
    let b = Proc::secondary(
        dir.path(),
        node.repl_port,
        &["--mode", "sync", "--serve-reads"],
    );
    wait_secondaries_online(&node, 2);
    let () = node.client().set("first", 1).unwrap();
    signal("-STOP", b.pid());
    let base = node.lsn();
    // Commits that wait for B (one pipelined write: one group commit); the
    // client gets no reply before the end.
    let mut pending = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    let request: String = (0..5)
        .map(|i| format!("*3\r\n$3\r\nSET\r\n$8\r\npending{i}\r\n$1\r\n1\r\n"))
        .collect();
    pending.write_all(request.as_bytes()).unwrap();
    wait_until(
        "A applied the pending commits",
        Duration::from_secs(20),
        || a.lsn() > base,
    );
    node.kill9();
    a.promote();
    let mut new = a.client();
    let held: Vec<bool> = (0..5)
        .map(|i| new.exists(format!("pending{i}")).unwrap())
        .collect();
    assert!(held.iter().all(|&h| h), "A holds them all: {held:?}");
    let () = new.set("after", 1).unwrap();
    signal("-CONT", b.pid());
    let () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(a.repl_port)
        .query(&mut b.client())
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(b.lsn() == a.lsn() && b.info("replication")["state"] == "online") {
        assert!(
            std::time::Instant::now() < deadline,
            "B never followed A: {:?}\nB:\n{}\nA:\n{}",
            b.info("replication"),
            b.log_text(),
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.digest(), a.digest());
    assert_eq!(
        b.info("replication")["primary"],
        format!("127.0.0.1:{}", a.repl_port)
    );
    let mut bc = b.client();
    for i in 0..5 {
        assert!(bc.exists::<_, bool>(format!("pending{i}")).unwrap());
    }
    assert_eq!(bc.get::<_, i64>("after").unwrap(), 1);
    // A primary cannot be re-pointed in place; a bad address is an error.
    let e = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .query::<()>(&mut new)
        .unwrap_err();
    assert!(
        err_text(&e).contains("restart it as hotblock-secondary"),
        "{}",
        err_text(&e)
    );
    let e = redis::cmd("REPLICAOF")
        .arg("no-such-host.invalid")
        .arg(1)
        .query::<()>(&mut bc)
        .unwrap_err();
    assert!(
        err_text(&e).contains("no-such-host.invalid"),
        "{}",
        err_text(&e)
    );
}

/// a fault of docs/reliability.md: a client that pipelines requests and never reads
/// the replies holds at most its output buffer, is dropped once its
/// replies stall, and other clients are served meanwhile.
#[test]
fn a_client_that_never_reads_is_dropped_and_others_go_on() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(
        dir.path(),
        &[
            "--client-output-buffer-limit",
            "1mb",
            "--client-output-stall-ms",
            "500",
        ],
    );
    let mut c = node.client();
    let () = c.set("big", "x".repeat(16 * 1024)).unwrap();
    // The clients connected without the greedy one (the INFO query's own
    // connection included).
    let baseline = node.info("clients")["connected_clients"].clone();
    let mut greedy = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = b"GET big\r\n".repeat(1000);
    // Up to 16 MB of replies asked for, none read; the server stops
    // reading this client once its buffers are full, so writes here block
    // and time out, or fail once it is dropped.
    let mut sent = 0;
    for _ in 0..1000 {
        match greedy.write_all(&request) {
            Ok(()) => sent += 1,
            Err(_) => break,
        }
        // Others are served meanwhile.
        assert_eq!(redis::cmd("PING").query::<String>(&mut c).unwrap(), "PONG");
    }
    assert!(
        sent < 1000,
        "the server kept taking requests from a client that reads nothing"
    );
    wait_until(
        "the greedy client is dropped",
        Duration::from_secs(20),
        || node.info("clients")["connected_clients"] == baseline,
    );
    let mut rest = Vec::new();
    greedy
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = greedy.read_to_end(&mut rest);
    assert_eq!(c.get::<_, String>("big").unwrap().len(), 16 * 1024);
}

/// Node ids need no configuration and never come from the port: two
/// secondaries get different ids, and one with a data directory keeps its
/// id across a restart (the primary sees the same member come back).
#[test]
fn node_ids_are_unique_without_configuration_and_kept_in_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &[]);
    let data = data_dir(dir.path(), "kept");
    let mut kept = Proc::secondary(dir.path(), node.repl_port, &["--data-dir", &data]);
    let other = Proc::secondary(dir.path(), node.repl_port, &[]);
    wait_secondaries_online(&node, 2);
    let ids = |node: &Proc| -> Vec<String> {
        let info = node.info("replication");
        let mut ids: Vec<String> = (0..2)
            .filter_map(|i| info.get(&format!("secondary{i}")).cloned())
            .map(|line| {
                line.split(',')
                    .next()
                    .unwrap()
                    .trim_start_matches("id=")
                    .to_string()
            })
            .collect();
        ids.sort();
        ids
    };
    let before = ids(&node);
    assert_eq!(before.len(), 2);
    assert_ne!(before[0], before[1], "two secondaries, two ids");
    // Where each id came from is logged: never the port.
    assert!(other.log_text().contains("random, for this run"));
    let file = std::fs::read_to_string(std::path::Path::new(&data).join("node-id")).unwrap();
    let kept_id = file
        .trim()
        .strip_prefix("hotblock-node-id ")
        .unwrap()
        .to_string();
    assert!(before.contains(&kept_id), "{before:?} {kept_id}");
    assert!(kept.log_text().contains("the data directory"));
    kept.kill9();
    kept.start();
    wait_secondaries_online(&node, 2);
    assert_eq!(
        ids(&node),
        before,
        "the restarted secondary is the same member"
    );
    drop(other);
}

/// A primary without a data directory, restarted, starts a log from
/// nothing: its lineage (`master_replid`) is new. A secondary that holds
/// the earlier life's log at the same LSNs must not take the new log for
/// its continuation (a partial resync would lay physical deltas onto
/// unrelated blocks): it gets a snapshot and ends byte-identical.
#[test]
fn a_primary_started_from_nothing_is_a_new_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let mut primary = Proc::node(dir.path(), &[]);
    let sec_dir = cluster::data_dir(dir.path(), "s");
    let secondary = Proc::secondary(
        dir.path(),
        primary.repl_port,
        &["--serve-reads", "--data-dir", &sec_dir],
    );
    wait_online(&primary);
    let mut c = primary.client();
    for i in 0..50 {
        let () = c.set(format!("old-{i}"), "x".repeat(200)).unwrap();
    }
    let first = primary.info("replication")["master_replid"].clone();
    wait_until("caught up", Duration::from_secs(20), || {
        secondary.lsn() == primary.lsn()
    });
    assert_eq!(secondary.info("replication")["master_replid"], first);
    let snapshots = secondary.info("replication")["snapshots"].clone();
    // The same ports, no data: a log from nothing, written past the LSNs
    // the secondary holds.
    primary.kill9();
    primary.start();
    let second = primary.info("replication")["master_replid"].clone();
    assert_ne!(first, second);
    let mut c = primary.client();
    for i in 0..80 {
        let () = c.set(format!("new-{i}"), "y".repeat(100)).unwrap();
    }
    wait_until("resynced", Duration::from_secs(20), || {
        let info = secondary.info("replication");
        info["master_replid"] == second && info["lsn"] == primary.lsn().to_string()
    });
    assert_ne!(
        secondary.info("replication")["snapshots"],
        snapshots,
        "no snapshot: partial resync across lineages"
    );
    assert_eq!(secondary.digest(), primary.digest());
    let mut r = secondary.client();
    assert!(!r.exists::<_, bool>("old-0").unwrap());
    assert!(r.exists::<_, bool>("new-79").unwrap());
}

/// Expiry across a failover: a key that expired on the primary is absent on
/// the promoted secondary, one that had not still expires there at its
/// time (deleted by the new primary's cycle, counted in `expired_keys`),
/// and one made persistent keeps living.
#[test]
fn expiry_holds_across_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Proc::node(dir.path(), &[]);
    let secondary = Proc::secondary(dir.path(), node.repl_port, &["--mode", "sync"]);
    wait_online(&node);
    let mut c = node.client();
    let () = redis::cmd("SET")
        .arg("gone")
        .arg("v")
        .arg("PX")
        .arg(200)
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("SET")
        .arg("later")
        .arg("v")
        .arg("PX")
        .arg(2500)
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("SET")
        .arg("kept")
        .arg("v")
        .arg("EX")
        .arg(1)
        .query(&mut c)
        .unwrap();
    assert_eq!(
        redis::cmd("PERSIST")
            .arg("kept")
            .query::<i64>(&mut c)
            .unwrap(),
        1
    );
    // The primary's cycle deletes `gone` and replicates the delete.
    wait_until("the primary expired a key", Duration::from_secs(5), || {
        node.info("stats")["expired_keys"] == "1"
    });
    let lsn = node.lsn();
    wait_until("the secondary caught up", Duration::from_secs(5), || {
        secondary.lsn() >= lsn
    });
    node.kill9();
    secondary.promote();
    let mut s = secondary.client();
    assert_eq!(s.get::<_, Option<String>>("gone").unwrap(), None);
    assert_eq!(s.exists::<_, i64>("gone").unwrap(), 0);
    let ttl: i64 = redis::cmd("PTTL").arg("later").query(&mut s).unwrap();
    assert!(0 < ttl && ttl <= 2500, "{ttl}");
    assert_eq!(
        s.get::<_, Option<String>>("later").unwrap().as_deref(),
        Some("v")
    );
    std::thread::sleep(Duration::from_millis(ttl as u64 + 100));
    assert_eq!(s.get::<_, Option<String>>("later").unwrap(), None);
    wait_until(
        "the new primary expired the key",
        Duration::from_secs(5),
        || secondary.info("stats")["expired_keys"] == "1",
    );
    assert_eq!(
        secondary.info("keyspace")["db0"],
        "keys=1,expires=0,avg_ttl=0,blocks=1,indexes=0"
    );
    assert_eq!(
        s.get::<_, Option<String>>("kept").unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(
        redis::cmd("TTL").arg("kept").query::<i64>(&mut s).unwrap(),
        -1
    );
}

/// `MULTI`/`EXEC` across `SELECT`ed databases and record databases is one
/// transaction (one LSN) on the primary and on its sync secondary, `WATCH`
/// fails an `EXEC` for a write on another database, for a watched key
/// that expired, and on a secondary for a replicated write; `FLUSHALL` is
/// one transaction.
#[test]
fn multi_across_databases_is_one_transaction_on_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(dir.path(), &[]);
    let secondary = Proc::secondary(
        dir.path(),
        node.repl_port,
        &["--mode", "sync", "--serve-reads"],
    );
    wait_online(&node);
    let mut c = node.client();
    for create in [&["1"][..], &["users", "city"][..]] {
        let () = redis::cmd("DB.CREATE").arg(create).query(&mut c).unwrap();
    }
    let before = node.lsn();
    let () = redis::cmd("MULTI").query(&mut c).unwrap();
    for cmd in [
        &["SET", "a", "0"][..],
        &["SELECT", "1"],
        &["SET", "a", "1"],
        &["INCR", "a"],
        &["REC.PUT", "users", "ada", "p", "city", "london"],
    ] {
        let queued: String = redis::cmd(cmd[0]).arg(&cmd[1..]).query(&mut c).unwrap();
        assert_eq!(queued, "QUEUED");
    }
    let replies: Value = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(
        replies,
        Value::Array(vec![
            Value::Okay,
            Value::Okay,
            Value::Okay,
            Value::Int(2),
            Value::Okay
        ])
    );
    assert_eq!(node.lsn(), before + 1, "three databases, one LSN");
    // The SELECT inside stands once EXEC has run.
    assert_eq!(c.get::<_, String>("a").unwrap(), "2");
    let lsn = node.lsn();
    wait_until("the secondary applied it", Duration::from_secs(5), || {
        secondary.lsn() >= lsn
    });
    let mut s = secondary.client();
    assert_eq!(s.get::<_, String>("a").unwrap(), "0");
    let () = redis::cmd("SELECT").arg("1").query(&mut s).unwrap();
    assert_eq!(s.get::<_, String>("a").unwrap(), "2");
    let ada: Value = redis::cmd("REC.GET")
        .arg("users")
        .arg("ada")
        .query(&mut s)
        .unwrap();
    assert_ne!(ada, Value::Nil);

    // A watched key on database 0 written by another client fails an EXEC
    // that writes database 1 only.
    let mut other = node.client();
    let () = redis::cmd("SELECT").arg("0").query(&mut c).unwrap();
    let () = redis::cmd("WATCH").arg("a").query(&mut c).unwrap();
    let () = other.set("a", "changed").unwrap();
    let () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("SELECT").arg("1").query(&mut c).unwrap();
    let _: String = redis::cmd("SET").arg("z").arg("1").query(&mut c).unwrap();
    let r: Value = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(r, Value::Nil, "EXEC fails: a watched key changed");
    let () = redis::cmd("SELECT").arg("1").query(&mut c).unwrap();
    assert_eq!(c.get::<_, Option<String>>("z").unwrap(), None);
    assert_eq!(
        c.get::<_, String>("a").unwrap(),
        "2",
        "the SELECT did not run"
    );

    // A watched key whose time runs out counts as changed.
    let () = redis::cmd("SET")
        .arg("t")
        .arg("v")
        .arg("PX")
        .arg(100)
        .query(&mut c)
        .unwrap();
    let () = redis::cmd("WATCH").arg("t").query(&mut c).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: String = redis::cmd("SET").arg("t").arg("x").query(&mut c).unwrap();
    let r: Value = redis::cmd("EXEC").query(&mut c).unwrap();
    assert_eq!(r, Value::Nil, "EXEC fails: a watched key expired");

    // On the secondary, a replicated write fails a watching EXEC.
    let () = redis::cmd("SELECT").arg("0").query(&mut s).unwrap();
    let () = redis::cmd("WATCH").arg("a").query(&mut s).unwrap();
    let () = other.set("a", "again").unwrap();
    let lsn = node.lsn();
    wait_until("the secondary applied it", Duration::from_secs(5), || {
        secondary.lsn() >= lsn
    });
    let () = redis::cmd("MULTI").query(&mut s).unwrap();
    let _: String = redis::cmd("GET").arg("a").query(&mut s).unwrap();
    let r: Value = redis::cmd("EXEC").query(&mut s).unwrap();
    assert_eq!(r, Value::Nil, "EXEC on the secondary fails");
    // Unwatched, it reads.
    let () = redis::cmd("MULTI").query(&mut s).unwrap();
    let _: String = redis::cmd("GET").arg("a").query(&mut s).unwrap();
    let r: Vec<String> = redis::cmd("EXEC").query(&mut s).unwrap();
    assert_eq!(r, vec!["again".to_string()]);

    // WATCH inside MULTI is refused and the transaction goes on, as Redis.
    let () = redis::cmd("MULTI").query(&mut c).unwrap();
    let e = redis::cmd("WATCH")
        .arg("a")
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(
        err_text(&e).contains("WATCH inside MULTI is not allowed"),
        "{e}"
    );
    let r: Vec<String> = redis::cmd("EXEC").query(&mut c).unwrap();
    assert!(r.is_empty());

    // FLUSHALL: every database, one transaction.
    let before = node.lsn();
    let () = redis::cmd("FLUSHALL").query(&mut c).unwrap();
    assert_eq!(node.lsn(), before + 1);
    for db in ["0", "1"] {
        let () = redis::cmd("SELECT").arg(db).query(&mut c).unwrap();
        assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut c).unwrap(), 0);
    }
    let n: i64 = redis::cmd("REC.COUNT").arg("users").query(&mut c).unwrap();
    assert_eq!(n, 0);
    let lsn = node.lsn();
    wait_until("the secondary applied it", Duration::from_secs(5), || {
        secondary.lsn() >= lsn
    });
    let keyspace = secondary.info("keyspace");
    assert!(keyspace["db1"].starts_with("keys=0,"), "{keyspace:?}");
    assert!(keyspace["dbusers"].starts_with("keys=0,"), "{keyspace:?}");
}

/// `--proto-max-bulk-len` and `--client-query-buffer-limit` (Redis's names,
/// 1mb at least): a longer argument, or a request held past the limit,
/// closes the client with an error; `CONFIG GET` shows both.
#[test]
fn request_limits_close_a_client_that_passes_them() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let node = Proc::node(
        dir.path(),
        &[
            "--proto-max-bulk-len",
            "1mb",
            "--client-query-buffer-limit",
            "2mb",
        ],
    );
    let send = |bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", node.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may close before it has read everything.
        let _ = s.write_all(bytes);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    };
    let got = send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\n");
    assert_eq!(got, "-ERR Protocol error: invalid bulk length\r\n");
    // 3,000 arguments of 1000 bytes, never finished: 3 MB held.
    let mut big = b"*4000\r\n".to_vec();
    for _ in 0..3000 {
        big.extend_from_slice(b"$1000\r\n");
        big.extend_from_slice(&[b'x'; 1000]);
        big.extend_from_slice(b"\r\n");
    }
    let got = send(&big);
    assert!(got.contains("query buffer limit"), "{got}");
    let mut c = node.client();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("*-limit")
        .query(&mut c)
        .unwrap();
    let i = got
        .iter()
        .position(|k| k == "client-query-buffer-limit")
        .unwrap();
    assert_eq!(got[i + 1], (2 << 20).to_string());
    // An argument just under the bulk limit is taken.
    let value = vec![b'v'; (1 << 20) - 64];
    let echoed: Vec<u8> = redis::cmd("ECHO").arg(&value[..]).query(&mut c).unwrap();
    assert_eq!(echoed.len(), value.len());
    // Queued MULTI commands count against the same limit.
    let () = redis::cmd("MULTI").query(&mut c).unwrap();
    let chunk = vec![b'q'; 900_000];
    for _ in 0..2 {
        let queued: String = redis::cmd("SET")
            .arg("q")
            .arg(&chunk[..])
            .query(&mut c)
            .unwrap();
        assert_eq!(queued, "QUEUED");
    }
    let e = redis::cmd("SET")
        .arg("q")
        .arg(&chunk[..])
        .query::<Value>(&mut c)
        .unwrap_err();
    assert!(err_text(&e).contains("client-query-buffer-limit"), "{e}");
    let e = redis::cmd("EXEC").query::<Value>(&mut c).unwrap_err();
    assert!(err_text(&e).contains("EXECABORT"), "{e}");
    let out = std::process::Command::new(cluster::binary("hotblock-node"))
        .args(["--proto-max-bulk-len", "100kb"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("below the least allowed"), "{e}");
}
