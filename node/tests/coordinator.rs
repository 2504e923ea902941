//! The etcd client against a real etcd (Debian's `etcd-server`, installed
//! by `scripts/test.sh`), started on loopback ports by the test: leases
//! expire and take their keys with them, compare-and-swap refuses the
//! loser, a dead endpoint is skipped, and no endpoint at all is an error.

mod cluster;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cluster::etcd::EtcdProcess;
use cluster::free_port;
use hotblock_node::coordinator::{CoordinatorUrl, Etcd, EtcdError};

#[test]
fn a_lease_left_unrenewed_expires_and_takes_its_key() {
    let etcd = EtcdProcess::start();
    let client = etcd.client();
    let (lease, ttl_s) = client.grant(Duration::from_millis(1000)).unwrap();
    assert!(ttl_s >= 1);
    client.put(b"hb/primary", b"node-1", Some(lease)).unwrap();
    let kv = client.get(b"hb/primary").unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease),
        (&b"node-1"[..], Some(lease))
    );
    // Renewed, it lives on past its TTL.
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(300));
        assert!(client.keep_alive(lease).unwrap() >= 1);
    }
    assert!(client.get(b"hb/primary").unwrap().is_some());
    // Left alone, etcd expires it: the key goes, and renewing says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.get(b"hb/primary").unwrap().is_some() {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(client.keep_alive(lease).unwrap(), 0);
    // Revoking a lease that is gone is done, not an error.
    client.revoke(lease).unwrap();
}

#[test]
fn compare_and_swap_lets_one_contender_win() {
    let etcd = EtcdProcess::start();
    let client = etcd.client();
    assert!(client.create(b"hb/leader", b"a", None).unwrap());
    assert!(!client.create(b"hb/leader", b"b", None).unwrap());
    let kv = client.get(b"hb/leader").unwrap().unwrap();
    assert_eq!(kv.value, b"a");
    // A swap naming an old revision loses; one naming the current wins.
    assert!(!client
        .replace(b"hb/leader", kv.mod_revision - 1, b"c", None)
        .unwrap());
    assert!(client
        .replace(b"hb/leader", kv.mod_revision, b"d", None)
        .unwrap());
    assert_eq!(client.get(b"hb/leader").unwrap().unwrap().value, b"d");
    // Prefix reads come in key order, and stop at the prefix.
    client.put(b"hb/members/2", b"y", None).unwrap();
    client.put(b"hb/members/1", b"x", None).unwrap();
    client.put(b"hb/membersZ", b"not a member", None).unwrap();
    let members: Vec<Vec<u8>> = client
        .get_prefix(b"hb/members/")
        .unwrap()
        .into_iter()
        .map(|kv| kv.value)
        .collect();
    assert_eq!(members, [b"x".to_vec(), b"y".to_vec()]);
    assert!(client.delete(b"hb/members/1").unwrap());
    assert!(!client.delete(b"hb/members/1").unwrap());
}

#[test]
fn a_dead_endpoint_is_skipped_and_none_alive_is_an_error() {
    let etcd = EtcdProcess::start();
    let dead = free_port();
    let url: CoordinatorUrl = format!("etcd://127.0.0.1:{dead},127.0.0.1:{}", etcd.client_port)
        .parse()
        .unwrap();
    let client = Etcd::new(url, Duration::from_secs(2));
    client.put(b"k", b"v", None).unwrap();
    assert_eq!(client.get(b"k").unwrap().unwrap().value, b"v");

    let nobody: CoordinatorUrl = format!("etcd://127.0.0.1:{dead}").parse().unwrap();
    let started = Instant::now();
    let e = Etcd::new(nobody, Duration::from_secs(2))
        .get(b"k")
        .unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // An etcd error is an answer, with its code: a lease that never was.
    let e = client
        .put(b"k", b"v", Some(hotblock_node::coordinator::LeaseId(12345)))
        .unwrap_err();
    assert!(matches!(e, EtcdError::Refused { code: 5, .. }), "{e}");
}

/// Endpoints that accept connections and never answer (a member hung or
/// behind a black hole): one call still ends within the client's timeout,
/// however many such endpoints it tries, and a write sent to one is not
/// retried elsewhere: its outcome is unknown.
#[test]
fn silent_endpoints_cost_one_timeout_and_a_sent_write_is_not_retried() {
    let etcd = EtcdProcess::start();
    let silent: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: Vec<u16> = silent
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let url: CoordinatorUrl = format!("etcd://127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1])
        .parse()
        .unwrap();
    let client = Etcd::new(url, Duration::from_millis(600));
    let started = Instant::now();
    let e = client.get(b"k").unwrap_err();
    assert!(matches!(e, EtcdError::Unreachable { .. }), "{e}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "one timeout for the call, not one per endpoint: {:?}",
        started.elapsed()
    );
    // A write that reached a silent member first is not sent to the live
    // one: it may have been applied.
    let url: CoordinatorUrl = format!(
        "etcd://127.0.0.1:{},127.0.0.1:{}",
        ports[0], etcd.client_port
    )
    .parse()
    .unwrap();
    let client = Etcd::new(url, Duration::from_millis(600));
    let e = client.create(b"hb/once", b"x", None).unwrap_err();
    assert!(matches!(e, EtcdError::OutcomeUnknown { .. }), "{e}");
    assert!(etcd.client().get(b"hb/once").unwrap().is_none());
    // A read goes on to the live member.
    assert!(client.get(b"hb/once").unwrap().is_none());
    drop(silent);
}
