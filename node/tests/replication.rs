//! Replication over real links — TCP and QUIC on loopback, and in-process
//! pipes: a primary and two secondaries (one sync and hot, one async and
//! passive) converge to equal digests under concurrent writers; a restarted
//! secondary resumes by partial resync; one that fell behind the backlog
//! gets a snapshot; wrong secrets and certificates are refused; writes wait
//! for `min_secondaries`; a daisy-chained secondary converges via its relay.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hotblock_core::repl::{Epoch, EpochHistory, Mode, NodeId, PrimaryConfig};
use hotblock_core::{Engine, EngineConfig, IndexMode, Lsn, Role};
use hotblock_nic_transport::{ConnectTo, ListenOn, MemoryHub, Secret, TlsIdentity, Trust};
use hotblock_node::relay::Relay;
use hotblock_primary::{DatabaseOptions, Db, ReplicationConfig};
use hotblock_secondary::{SecondaryNode, SecondaryNodeConfig};

const SECRET: &[u8] = b"correct horse battery staple";

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn primary(backlog_bytes_max: usize, sync_quorum: usize) -> (Db, ConnectTo) {
    primary_on(
        ListenOn::Tcp("127.0.0.1:0".parse().unwrap()),
        backlog_bytes_max,
        sync_quorum,
    )
}

/// A primary listening `on` TCP or in process; returns where to connect.
fn primary_on(on: ListenOn, backlog_bytes_max: usize, sync_quorum: usize) -> (Db, ConnectTo) {
    let db = Db::in_memory();
    db.create_database("t", DatabaseOptions::with_indexes(["v"]).block_size(4096))
        .unwrap();
    let mut config = ReplicationConfig::on(on.clone(), Secret::new(SECRET));
    config.protocol = PrimaryConfig {
        sync_quorum,
        sync_timeout: Duration::from_secs(5),
        backlog_bytes_max,
        ..PrimaryConfig::default()
    };
    let db = db.with_replication(config).unwrap();
    let addr = db.replicator().unwrap().local_addr().to_string();
    let to = match on {
        ListenOn::Tcp(_) => ConnectTo::Tcp(addr.parse().unwrap()),
        ListenOn::Quic(_, identity) => {
            ConnectTo::Quic(addr.parse().unwrap(), Trust::Pinned(identity.fingerprint()))
        }
        ListenOn::Tls(_, identity) => {
            ConnectTo::Tls(addr.parse().unwrap(), Trust::Pinned(identity.fingerprint()))
        }
        ListenOn::Memory(hub) => ConnectTo::Memory(hub),
    };
    (db, to)
}

fn secondary_config(
    to: &ConnectTo,
    node: u64,
    mode: Mode,
    indexes: IndexMode,
) -> SecondaryNodeConfig {
    SecondaryNodeConfig {
        primary: to.clone(),
        primary_address: "primary".into(),
        secret: Secret::new(SECRET),
        node: NodeId(node),
        mode,
        indexes,
        downstream: None,
        databases: Vec::new(),
        persister: None,
        progress_bar: false,
    }
}

fn write(db: &Db, writer: u32, count: u32) {
    for i in 0..count {
        let mut txn = db.begin("t").unwrap();
        let v = format!("w{writer}");
        txn.put(
            format!("{writer}-{i}-a").as_bytes(),
            &[Some(v.as_bytes())],
            &[i as u8; 200],
        )
        .unwrap();
        txn.put(
            format!("{writer}-{i}-b").as_bytes(),
            &[Some(v.as_bytes())],
            &[i as u8; 300],
        )
        .unwrap();
        txn.commit().unwrap();
    }
}

/// Streaming (so no snapshot is half-done), at the primary's LSN, with its
/// digests.
fn converged(db: &Db, node: &SecondaryNode) -> bool {
    node.status().streaming
        && node.engine().lsn() == db.lsn()
        && node.engine().digests() == db.engine().digests()
}

#[test]
fn sync_and_async_secondaries_converge_resume_and_resync_over_tcp() {
    let (db, addr) = primary(1 << 20, 1);
    converge_resume_promote(db, addr);
}

#[test]
fn sync_and_async_secondaries_converge_resume_and_resync_in_process() {
    let (db, addr) = primary_on(ListenOn::Memory(MemoryHub::new()), 1 << 20, 1);
    converge_resume_promote(db, addr);
}

#[test]
fn sync_and_async_secondaries_converge_resume_and_resync_over_quic() {
    let identity = TlsIdentity::self_signed().unwrap();
    let (db, addr) = primary_on(
        ListenOn::Quic("127.0.0.1:0".parse().unwrap(), identity),
        1 << 20,
        1,
    );
    converge_resume_promote(db, addr);
}

#[test]
fn sync_and_async_secondaries_converge_resume_and_resync_over_tls() {
    let identity = TlsIdentity::self_signed().unwrap();
    let (db, addr) = primary_on(
        ListenOn::Tls("127.0.0.1:0".parse().unwrap(), identity),
        1 << 20,
        1,
    );
    converge_resume_promote(db, addr);
}

fn converge_resume_promote(db: Db, addr: ConnectTo) {
    let sync = SecondaryNode::start(secondary_config(
        &addr,
        1,
        Mode::Sync,
        IndexMode::Maintained,
    ));
    let passive =
        SecondaryNode::start(secondary_config(&addr, 2, Mode::Async, IndexMode::Deferred));
    wait_until("both secondaries online", Duration::from_secs(10), || {
        sync.status().streaming && passive.status().streaming
    });

    // Concurrent writers; every commit returns only once the sync
    // secondary applied it.
    std::thread::scope(|s| {
        for w in 0..4 {
            let db = &db;
            s.spawn(move || write(db, w, 100));
        }
    });
    // Sync: the hot secondary holds every acknowledged commit already.
    assert!(
        sync.engine().lsn() >= db.lsn(),
        "{:?} < {:?}",
        sync.engine().lsn(),
        db.lsn()
    );
    wait_until("convergence", Duration::from_secs(10), || {
        converged(&db, &sync) && converged(&db, &passive)
    });
    let hot = sync.engine().database("t").unwrap();
    assert_eq!(hot.count(), 800);
    assert_eq!(hot.find("v", b"w2", None).unwrap().len(), 200);
    // Status is refreshed by the controller every 50 ms or so.
    wait_until(
        "both sessions online in the status",
        Duration::from_secs(5),
        || {
            let status = db.replicator().unwrap().status();
            status.len() == 2 && status.iter().all(|s| s.state == "online" && s.lag_lsn == 0)
        },
    );

    // The async secondary restarts with its blocks and resumes from its LSN.
    let stopped = passive.stop();
    let (engine, history) = (stopped.engine().clone(), stopped.history().clone());
    drop(stopped);
    write(&db, 9, 50);
    let passive = SecondaryNode::start_with(
        engine,
        history,
        Epoch(0),
        secondary_config(&addr, 2, Mode::Async, IndexMode::Deferred),
    );
    wait_until("resume", Duration::from_secs(10), || {
        converged(&db, &passive)
    });
    assert_eq!(
        passive.status().snapshots,
        0,
        "a partial resync needs no snapshot"
    );

    // Promotion of the passive secondary: indexes built from its blocks.
    drop(sync);
    let (engine, history) = passive.promote(Epoch(0)).unwrap();
    assert!(history.current() > EpochHistory::default().current());
    let promoted = engine.database("t").unwrap();
    assert_eq!(promoted.count(), 900);
    assert_eq!(promoted.find("v", b"w9", None).unwrap().len(), 100);
    let mut txn = engine.begin("t").unwrap();
    txn.put(b"after", &[None], b"promotion").unwrap();
    assert_eq!(txn.commit().unwrap().unwrap().lsn, db.lsn().next());
}

#[test]
fn a_secondary_behind_the_backlog_gets_a_snapshot() {
    // A 64 KiB backlog: a few hundred commits push the secondary out of it.
    // No sync secondary here: commits do not wait (quorum 0).
    let (db, addr) = primary(64 * 1024, 0);
    let node = SecondaryNode::start(secondary_config(
        &addr,
        3,
        Mode::Async,
        IndexMode::Maintained,
    ));
    wait_until("online", Duration::from_secs(10), || {
        node.status().streaming
    });
    write(&db, 0, 20);
    wait_until("convergence", Duration::from_secs(10), || {
        converged(&db, &node)
    });
    let stopped = node.stop();
    let (engine, history) = (stopped.engine().clone(), stopped.history().clone());
    drop(stopped);
    write(&db, 1, 400);
    let node = SecondaryNode::start_with(
        engine,
        history,
        Epoch(0),
        secondary_config(&addr, 3, Mode::Async, IndexMode::Maintained),
    );
    wait_until(
        "convergence after snapshot",
        Duration::from_secs(20),
        || converged(&db, &node),
    );
    // Incremental: the blocks the secondary already held went unsent.
    let status = node.status();
    assert_eq!(status.snapshots, 1);
    assert!(status.blocks_kept > 0, "{status:?}");
    assert_eq!(node.engine().database("t").unwrap().count(), 840);
}

#[test]
fn a_wrong_secret_is_refused_and_nothing_is_applied() {
    let (db, addr) = primary(1 << 20, 0);
    write(&db, 0, 3);
    let mut config = secondary_config(&addr, 4, Mode::Async, IndexMode::Maintained);
    config.secret = Secret::new(&b"wrong"[..]);
    let node = SecondaryNode::start(config);
    wait_until("a refusal", Duration::from_secs(10), || {
        node.status().last_error.is_some()
    });
    std::thread::sleep(Duration::from_millis(300));
    let status = node.status();
    assert_eq!(status.connects, 0, "{status:?}");
    assert_eq!(node.engine().lsn(), Lsn::ZERO);
    assert!(db.replicator().unwrap().status().is_empty());
}

#[test]
fn writes_are_refused_without_enough_current_secondaries() {
    let db = Db::in_memory();
    db.create_database("t", DatabaseOptions::with_indexes(["v"]))
        .unwrap();
    let mut config = ReplicationConfig::new("127.0.0.1:0".parse().unwrap(), Secret::new(SECRET));
    config.protocol = PrimaryConfig {
        min_secondaries: 1,
        max_lag: Duration::from_millis(300),
        ..PrimaryConfig::default()
    };
    let db = db.with_replication(config).unwrap();
    let addr = ConnectTo::Tcp(db.replicator().unwrap().local_addr().parse().unwrap());
    assert!(matches!(
        db.begin("t"),
        Err(hotblock_primary::WriteError::TooFewSecondaries)
    ));
    let node = SecondaryNode::start(secondary_config(
        &addr,
        5,
        Mode::Async,
        IndexMode::Maintained,
    ));
    wait_until("writes accepted", Duration::from_secs(10), || {
        db.begin("t").is_ok()
    });
    write(&db, 0, 10);
    drop(node);
    wait_until("writes refused again", Duration::from_secs(10), || {
        matches!(
            db.begin("t"),
            Err(hotblock_primary::WriteError::TooFewSecondaries)
        )
    });
    // Reads go on meanwhile.
    assert_eq!(db.count("t").unwrap(), 20);
}

#[test]
fn a_daisy_chained_secondary_converges_through_its_relay() {
    let (db, addr) = primary(1 << 20, 0);
    write(&db, 0, 20);
    // A relays to B over TCP.
    // A relay is composition: a primary controller on the secondary's engine.
    let a_engine = Engine::new(EngineConfig {
        role: Role::Follower(IndexMode::Maintained),
        ..Default::default()
    });
    let relay = Relay::start(
        &a_engine,
        &EpochHistory::default(),
        ReplicationConfig::new("127.0.0.1:0".parse().unwrap(), Secret::new(SECRET)),
    )
    .unwrap();
    let mut a_config = secondary_config(&addr, 7, Mode::Async, IndexMode::Maintained);
    a_config.downstream = Some(relay.clone());
    let a = SecondaryNode::start_with(a_engine, EpochHistory::default(), Epoch(0), a_config);
    let relay_addr = ConnectTo::Tcp(relay.local_addr().parse().unwrap());
    let b = SecondaryNode::start(secondary_config(
        &relay_addr,
        8,
        Mode::Async,
        IndexMode::Deferred,
    ));
    std::thread::scope(|s| {
        for w in 1..3 {
            let db = &db;
            s.spawn(move || write(db, w, 100));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(converged(&db, &a) && converged(&db, &b)) {
        assert!(
            Instant::now() < deadline,
            "no convergence: primary {:?}, a {:?} {:?}, b {:?} {:?}",
            db.lsn(),
            a.engine().lsn(),
            a.status(),
            b.engine().lsn(),
            b.status()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // B restarts and resumes from the relay.
    let stopped = b.stop();
    let (engine, history) = (stopped.engine().clone(), stopped.history().clone());
    drop(stopped);
    write(&db, 5, 30);
    let b = SecondaryNode::start_with(
        engine,
        history,
        Epoch(0),
        secondary_config(&relay_addr, 8, Mode::Async, IndexMode::Deferred),
    );
    wait_until("the chain converges again", Duration::from_secs(20), || {
        converged(&db, &b)
    });
    assert_eq!(b.status().snapshots, 0);
}

#[test]
fn a_secondary_can_subscribe_to_some_databases_only() {
    // A small backlog, so that the restart below needs a snapshot too.
    let (db, addr) = primary(32 * 1024, 0);
    db.create_database("other", DatabaseOptions::default())
        .unwrap();
    let mut config = secondary_config(&addr, 9, Mode::Async, IndexMode::Maintained);
    config.databases = vec!["t".into()];
    let node = SecondaryNode::start(config.clone());
    let write_other = |n: u32| {
        for i in 0..n {
            db.put("other", format!("o{i}").as_bytes(), &[], &[1; 300])
                .unwrap();
        }
    };
    write(&db, 0, 30);
    write_other(30);
    let caught_up = |node: &SecondaryNode| {
        node.status().streaming
            && node.engine().lsn() == db.lsn()
            && node.engine().digest("t").ok() == db.engine().digest("t").ok()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !caught_up(&node) {
        assert!(
            Instant::now() < deadline,
            "the subscriber did not catch up: primary {:?}, node {:?} {:?}",
            db.lsn(),
            node.engine().lsn(),
            node.status()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        node.engine().database("other").is_err(),
        "an unsubscribed database arrived"
    );
    assert_eq!(node.engine().database("t").unwrap().count(), 60);
    // Restarted past the backlog: a snapshot of the subscribed database.
    let stopped = node.stop();
    let (engine, history) = (stopped.engine().clone(), stopped.history().clone());
    drop(stopped);
    write(&db, 1, 100);
    write_other(100);
    let node = SecondaryNode::start_with(engine, history, Epoch(0), config);
    wait_until(
        "the subscriber catches up again",
        Duration::from_secs(10),
        || caught_up(&node),
    );
    assert_eq!(node.status().snapshots, 1);
    assert!(node.engine().database("other").is_err());
    assert_eq!(node.engine().database("t").unwrap().count(), 260);
}

/// A CA and a certificate it signed for `name`: (CA DER, leaf DER, leaf key DER).
fn ca_and_leaf(name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    (
        ca.der().to_vec(),
        leaf.der().to_vec(),
        leaf_key.serialize_der(),
    )
}

/// A secondary that must be refused: no session, nothing applied. Returns
/// what it reports.
fn refused(to: &ConnectTo, node: u64) -> hotblock_secondary::SecondaryStatus {
    let secondary = SecondaryNode::start(secondary_config(
        to,
        node,
        Mode::Async,
        IndexMode::Maintained,
    ));
    wait_until("a refusal", Duration::from_secs(10), || {
        secondary.status().last_error.is_some()
    });
    let status = secondary.status();
    assert_eq!(
        (status.connects, secondary.engine().lsn()),
        (0, Lsn::ZERO),
        "{to:?}"
    );
    status
}

/// a fault of docs/reliability.md: over QUIC and over TCP with TLS, a certificate
/// other than the pinned one gets nothing, and neither does a TCP peer
/// that skips TLS.
#[test]
fn tls_and_quic_refuse_another_certificate_and_tls_a_peer_without_it() {
    let listeners: [fn(SocketAddr, TlsIdentity) -> ListenOn; 2] = [ListenOn::Quic, ListenOn::Tls];
    for (i, listen) in listeners.into_iter().enumerate() {
        let identity = TlsIdentity::self_signed().unwrap();
        let (db, addr) = primary_on(listen("127.0.0.1:0".parse().unwrap(), identity), 1 << 20, 0);
        write(&db, 0, 3);
        let impostor = Trust::Pinned(TlsIdentity::self_signed().unwrap().fingerprint());
        let node = 6 + 2 * i as u64;
        let (wrong, plain) = match addr {
            ConnectTo::Quic(at, _) => (ConnectTo::Quic(at, impostor), None),
            ConnectTo::Tls(at, _) => (ConnectTo::Tls(at, impostor), Some(ConnectTo::Tcp(at))),
            _ => unreachable!(),
        };
        let status = refused(&wrong, node);
        assert!(
            status
                .last_error
                .as_deref()
                .unwrap()
                .contains("fingerprint"),
            "{status:?}"
        );
        if let Some(plain) = plain {
            refused(&plain, node + 1);
        }
        assert!(db.replicator().unwrap().secondaries().is_empty());
    }
}

/// With a CA configured (`Trust::Ca`), over QUIC and over TCP with TLS, a
/// secondary accepts a certificate that CA signed for the name, and
/// another CA's trust refuses the same primary.
#[test]
fn tls_and_quic_with_a_configured_ca_accept_its_certificates_only() {
    let listeners: [fn(SocketAddr, TlsIdentity) -> ListenOn; 2] = [ListenOn::Quic, ListenOn::Tls];
    for (i, listen) in listeners.into_iter().enumerate() {
        let (ca, leaf, key) = ca_and_leaf("primary.example");
        let (db, addr) = primary_on(
            listen(
                "127.0.0.1:0".parse().unwrap(),
                TlsIdentity::from_der(leaf, key),
            ),
            1 << 20,
            0,
        );
        write(&db, 0, 10);
        let trust = |ca: Vec<u8>| Trust::Ca {
            ca,
            server_name: "primary.example".into(),
        };
        let with = |trust: Trust| match &addr {
            ConnectTo::Quic(at, _) => ConnectTo::Quic(*at, trust),
            ConnectTo::Tls(at, _) => ConnectTo::Tls(*at, trust),
            _ => unreachable!(),
        };
        let node = 10 + 2 * i as u64;
        let trusted = SecondaryNode::start(secondary_config(
            &with(trust(ca)),
            node,
            Mode::Async,
            IndexMode::Maintained,
        ));
        wait_until("convergence with a CA", Duration::from_secs(10), || {
            converged(&db, &trusted)
        });
        let (other_ca, _, _) = ca_and_leaf("primary.example");
        refused(&with(trust(other_ca)), node + 1);
    }
}
