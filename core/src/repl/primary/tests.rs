//! The primary's unit tests: snapshots taken while writers run ahead,
//! epochs, write gating. (The simulator, `core/tests/simulator.rs`, covers
//! the rest.)

use std::time::Duration;

use super::*;
use crate::engine::{DatabaseOptions, EngineConfig, IndexMode};
use crate::repl::frame::Mode;
use crate::repl::secondary::{Secondary, SecondaryConfig, SecondaryEvent};
use crate::repl::NodeId;

/// A fresh async secondary with a hot follower engine.
fn async_secondary(now: Instant) -> Secondary {
    let follower = Engine::new(EngineConfig::follower(IndexMode::Maintained));
    Secondary::new(
        follower,
        EpochHistory::default(),
        SecondaryConfig::new(NodeId(1), Mode::Async),
        now,
    )
}

/// Moves frames both ways until neither side has anything to say.
fn pump(p: &mut Primary, session: SessionId, s: &mut Secondary, now: Instant) {
    loop {
        let mut moved = false;
        while let Some((_, frame)) = p.poll_transmit(now) {
            s.handle_frame(now, frame);
            moved = true;
        }
        while let Some(frame) = s.poll_transmit(now) {
            p.handle_frame(now, session, frame);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

/// Moves at most `frames` frames from the primary, and everything back.
fn pump_some(p: &mut Primary, session: SessionId, s: &mut Secondary, now: Instant, frames: usize) {
    for _ in 0..frames {
        match p.poll_transmit(now) {
            Some((_, frame)) => s.handle_frame(now, frame),
            None => break,
        }
    }
    while let Some(frame) = s.poll_transmit(now) {
        p.handle_frame(now, session, frame);
    }
}

#[test]
fn a_snapshot_taken_while_writers_run_ahead_of_the_backlog_converges() {
    let t0 = Instant::now();
    let engine = Engine::new(EngineConfig::default());
    let opts = DatabaseOptions::with_indexes(["v"]).block_size(4096);
    // A backlog of about six deltas: a fresh secondary needs a snapshot.
    let config = PrimaryConfig {
        backlog_bytes_max: 20_000,
        ..PrimaryConfig::default()
    };
    let mut p = Primary::new(engine.clone(), EpochHistory::default(), config);
    p.on_commit(t0, engine.create_database("t", opts).unwrap().delta, false);
    // Ten blocks of two 1.5 KiB records each.
    let put = |keys: std::ops::Range<u32>, fill: u8| {
        let mut txn = engine.begin("t").unwrap();
        for k in keys {
            txn.put(&k.to_be_bytes(), &[Some(&[fill])], &[fill; 1500])
                .unwrap();
        }
        txn.commit().unwrap().unwrap().delta
    };
    for i in 0..10u32 {
        p.on_commit(t0, put(i * 2..i * 2 + 2, 1), false);
    }
    // A hole at block 1 before the snapshot starts (both its records go).
    let mut txn = engine.begin("t").unwrap();
    txn.delete(&2u32.to_be_bytes()).unwrap();
    txn.delete(&3u32.to_be_bytes()).unwrap();
    p.on_commit(t0, txn.commit().unwrap().unwrap().delta, false);
    let mut s = async_secondary(t0);
    let session = p.connect(t0);
    s.connect(t0).unwrap();
    // The hello reaches the primary; then about half the blocks go out,
    // the cursor passing the hole at block 1.
    pump_some(&mut p, session, &mut s, t0, 0);
    // Welcome; the secondary's digests come back; then blocks go out.
    pump_some(&mut p, session, &mut s, t0, 1);
    pump_some(&mut p, session, &mut s, t0, 5);
    assert!(!s.is_consistent(), "the snapshot is under way");
    // Meanwhile the engine runs ahead of the controller: new records fill
    // the hole (block 1 again, behind the cursor), both records of block
    // 2 (already sent) go, and a record of block 8 (not sent yet) is
    // rewritten.
    let mut pending = vec![put(100..104, 2)];
    let mut txn = engine.begin("t").unwrap();
    txn.delete(&4u32.to_be_bytes()).unwrap();
    txn.delete(&5u32.to_be_bytes()).unwrap();
    pending.push(txn.commit().unwrap().unwrap().delta);
    pending.push(put(16..17, 3));
    // More of the snapshot goes out before the controller hears of them.
    pump_some(&mut p, session, &mut s, t0, 4);
    for delta in pending {
        p.on_commit(t0, delta, false);
    }
    pump(&mut p, session, &mut s, t0);
    assert!(s.is_streaming(), "the snapshot finished");
    assert_eq!(s.engine().lsn(), engine.lsn());
    assert_eq!(s.engine().digests(), engine.digests());
    let copy = s.engine().database("t").unwrap();
    assert_eq!(copy.count(), engine.database("t").unwrap().count());
    assert_eq!(copy.find("v", &[2], None).unwrap().len(), 4);
}

/// a fault of docs/reliability.md: a node that has seen
/// epoch e refuses anything from a lower one. A secondary streaming
/// from a primary on epoch 2 is handed that primary's next frames
/// relabelled with epoch 1 (a stale primary's stream): it refuses the
/// first, applies nothing and drops the connection. The primary, given
/// an acknowledgement relabelled with epoch 1, refuses it and does not
/// count it.
#[test]
fn frames_and_acks_from_an_older_epoch_are_refused() {
    let t0 = Instant::now();
    let engine = Engine::new(EngineConfig::default());
    let old_epoch = EpochHistory::default().current();
    let mut history = EpochHistory::default();
    let new_epoch = history.promote(Lsn::ZERO, NodeId(2), Epoch(0));
    assert!(new_epoch > old_epoch);
    let mut p = Primary::new(engine.clone(), history, PrimaryConfig::default());
    let mut s = async_secondary(t0);
    let session = p.connect(t0);
    s.connect(t0).unwrap();
    pump(&mut p, session, &mut s, t0);
    let created = engine
        .create_database("t", DatabaseOptions::default())
        .unwrap();
    p.on_commit(t0, created.delta, false);
    pump(&mut p, session, &mut s, t0);
    assert_eq!((s.epoch(), s.engine().lsn()), (new_epoch, engine.lsn()));

    // A stale primary's frames: refused at the first, nothing applied.
    let (lsn, digests) = (s.engine().lsn(), s.engine().digests());
    let mut txn = engine.begin("t").unwrap();
    txn.put(&[1], &[], b"v").unwrap();
    p.on_commit(t0, txn.commit().unwrap().unwrap().delta, false);
    let mut refused = false;
    while let Some((_, mut frame)) = p.poll_transmit(t0) {
        frame.epoch = old_epoch;
        s.handle_frame(t0, frame);
        if let Some(SecondaryEvent::Disconnect { reason }) = s.poll_event() {
            assert!(reason.contains("older epoch"), "{reason}");
            refused = true;
            break;
        }
    }
    assert!(refused, "a frame from epoch {old_epoch} was taken");
    let Some(Message::Error { code, .. }) = s.poll_transmit(t0).map(|f| f.message) else {
        panic!("no error frame sent back");
    };
    assert_eq!(code, ErrorCode::StaleEpoch);
    assert_eq!((s.engine().lsn(), s.engine().digests()), (lsn, digests));

    // Reconnected, it catches up; its next acknowledgement, relabelled
    // with the old epoch, is refused and not counted.
    s.disconnected();
    p.disconnect(session);
    let session = p.connect(t0);
    s.connect(t0).unwrap();
    pump(&mut p, session, &mut s, t0);
    assert_eq!(s.engine().lsn(), engine.lsn());
    let acked = p.acked_lsns();
    let mut txn = engine.begin("t").unwrap();
    txn.put(&[2], &[], b"v").unwrap();
    p.on_commit(t0, txn.commit().unwrap().unwrap().delta, false);
    while let Some((_, frame)) = p.poll_transmit(t0) {
        s.handle_frame(t0, frame);
    }
    let mut ack = s.poll_transmit(t0).expect("an acknowledgement");
    assert!(matches!(ack.message, Message::Ack { .. }), "{ack:?}");
    ack.epoch = old_epoch;
    p.handle_frame(t0, session, ack);
    let Some((
        to,
        Frame {
            message: Message::Error { code, .. },
            ..
        },
    )) = p.poll_transmit(t0)
    else {
        panic!("the stale ack was not refused");
    };
    assert_eq!((to, code), (session, ErrorCode::StaleEpoch));
    assert!(p.acked_lsns().iter().all(|a| acked.contains(a)));
    assert!(!p.is_fenced(), "an older epoch never fences");
}

#[test]
fn writes_are_refused_while_too_few_secondaries_are_current() {
    let t0 = Instant::now();
    let engine = Engine::new(EngineConfig::default());
    let config = PrimaryConfig {
        min_secondaries: 1,
        max_lag: Duration::from_millis(500),
        ..PrimaryConfig::default()
    };
    let mut p = Primary::new(engine.clone(), EpochHistory::default(), config);
    assert!(!p.accepts_writes(t0), "no secondary yet");
    let mut s = async_secondary(t0);
    let session = p.connect(t0);
    s.connect(t0).unwrap();
    pump(&mut p, session, &mut s, t0);
    assert!(p.accepts_writes(t0));
    // A commit the secondary never acknowledges (it is cut off).
    let created = engine
        .create_database("t", DatabaseOptions::default())
        .unwrap();
    p.on_commit(t0, created.delta, false);
    assert!(p.accepts_writes(t0 + Duration::from_millis(400)));
    assert!(
        !p.accepts_writes(t0 + Duration::from_millis(600)),
        "lag past max_lag"
    );
    // Once it catches up, writes go ahead again.
    let t1 = t0 + Duration::from_millis(700);
    pump(&mut p, session, &mut s, t1);
    assert_eq!(s.engine().lsn(), engine.lsn());
    assert!(p.accepts_writes(t1));
    let status = p.status(t1);
    assert_eq!((status[0].state, status[0].lag_lsn), ("online", 0));
    // A commit the engine made but this controller has not yet been
    // given is not lag of seconds: the secondary is not behind
    // anything it could have been sent.
    let t2 = t1 + Duration::from_secs(30);
    let mut txn = engine.begin("t").unwrap();
    txn.put(b"k", &[], b"v").unwrap();
    txn.commit().unwrap();
    let status = p.status(t2);
    assert_eq!((status[0].lag_lsn, status[0].lag_ms), (1, 0));
    assert!(p.accepts_writes(t2));
}

/// A sync secondary that replicates some databases only gets the others'
/// transactions empty, and acknowledges them: its acknowledgement holds no
/// data of theirs, so it counts toward no commit's quorum.
#[test]
fn a_subscribed_sync_secondary_counts_toward_no_quorum() {
    let t0 = Instant::now();
    let engine = Engine::new(EngineConfig::default());
    let config = PrimaryConfig {
        sync_quorum: 1,
        ..PrimaryConfig::default()
    };
    let mut p = Primary::new(engine.clone(), EpochHistory::default(), config);
    for name in ["a", "b"] {
        let created = engine
            .create_database(name, DatabaseOptions::default())
            .unwrap();
        p.on_commit(t0, created.delta, false);
    }
    let mut sc = SecondaryConfig::new(NodeId(1), Mode::Sync);
    sc.databases = vec!["a".into()];
    let follower = Engine::new(EngineConfig::follower(IndexMode::Maintained));
    let mut s = Secondary::new(follower, EpochHistory::default(), sc, t0);
    let session = p.connect(t0);
    s.connect(t0).unwrap();
    pump(&mut p, session, &mut s, t0);
    assert!(s.is_streaming());
    let mut txn = engine.begin("b").unwrap();
    txn.put(b"k", &[], b"v").unwrap();
    let b = txn.commit().unwrap().unwrap();
    p.on_commit(t0, b.delta, true);
    pump(&mut p, session, &mut s, t0);
    assert_eq!(s.engine().lsn(), b.lsn, "b's transaction reached it, empty");
    assert!(s.engine().database("b").is_err(), "it holds nothing of b");
    assert!(
        p.sync_acked() < b.lsn,
        "acknowledged while no secondary holds b"
    );
    while let Some(event) = p.poll_event() {
        assert!(
            !matches!(event, PrimaryEvent::SyncAcked(l) if l >= b.lsn),
            "{event:?}"
        );
    }
}

/// A secondary that replicates some databases gets, of a transaction
/// across databases, the part of the ones it holds, whatever their order.
#[test]
fn a_subscriber_gets_its_share_of_a_transaction_across_databases() {
    let t0 = Instant::now();
    let engine = Engine::new(EngineConfig::default());
    let mut p = Primary::new(
        engine.clone(),
        EpochHistory::default(),
        PrimaryConfig::default(),
    );
    for name in ["a", "b", "c"] {
        let created = engine
            .create_database(name, DatabaseOptions::default())
            .unwrap();
        p.on_commit(t0, created.delta, false);
    }
    let mut sc = SecondaryConfig::new(NodeId(1), Mode::Async);
    sc.databases = vec!["b".into()];
    let follower = Engine::new(EngineConfig::follower(IndexMode::Maintained));
    let mut s = Secondary::new(follower, EpochHistory::default(), sc, t0);
    let session = p.connect(t0);
    s.connect(t0).unwrap();
    pump(&mut p, session, &mut s, t0);
    assert!(s.is_streaming());
    for dbs in [["a", "b"], ["c", "b"], ["a", "c"]] {
        let mut txn = engine.begin_across(&dbs).unwrap();
        for db in dbs {
            txn.select(db).unwrap();
            txn.put(dbs.join("+").as_bytes(), &[], db.as_bytes())
                .unwrap();
        }
        let committed = txn.commit().unwrap().unwrap();
        assert!(committed.delta.spans_databases());
        p.on_commit(t0, committed.delta, false);
        pump(&mut p, session, &mut s, t0);
        assert_eq!(s.engine().lsn(), committed.lsn);
    }
    let b = s.engine().database("b").unwrap();
    assert_eq!(b.count(), 2);
    assert_eq!(b.get(b"a+b").unwrap().unwrap().payload, b"b");
    assert_eq!(b.get(b"c+b").unwrap().unwrap().payload, b"b");
    assert!(s.engine().database("a").is_err());
    assert_eq!(s.engine().digests()[0], engine.digests()[1], "b alike");
}
