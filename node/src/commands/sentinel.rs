//! Redis Sentinel's discovery commands, answered by every node of a
//! cluster with a coordinator, from what etcd says.
//!
//! **Why.** Redis clients already know how to find a primary and follow it
//! across failovers: ask a Sentinel (`SENTINEL get-master-addr-by-name`, or
//! `SENTINEL masters` for redis-py), connect there, and ask again on
//! `-READONLY` or a dropped connection. Every hotblock node answers those
//! questions for its cluster (`--cluster`, the "master name"), so a client
//! given the nodes' addresses as its Sentinels needs no code of ours.
//! Reply shapes are Sentinel's: flat field/value arrays, the same field
//! names, the primary flagged `s_down,o_down` while an election is on (so
//! clients wait for the new one rather than use the old).

use bytes::Bytes;

use crate::coordinator::records::{MemberRecord, PrimaryRecord};
use crate::coordinator::ClusterState;
use crate::resp::Reply;
use crate::Node;

pub(super) fn sentinel(node: &Node, args: &[Bytes]) -> Reply {
    let Some(config) = &node.options().coordinator else {
        return Reply::Error(
            "ERR SENTINEL needs a cluster: start this node with --coordinator etcd://HOST:PORT"
                .into(),
        );
    };
    let Some(sub) = args.get(1) else {
        return super::wrong_arity(b"sentinel");
    };
    let sub = String::from_utf8_lossy(sub).to_ascii_lowercase();
    let mut cluster = node.cluster();
    if !cluster.link_up {
        // Cut off from etcd, this node cannot vouch for any primary (it
        // may be the old one): it answers as a Sentinel that sees the
        // master down, and clients ask another.
        cluster.primary = None;
    }
    let name = args.get(2).map(|n| String::from_utf8_lossy(n).to_string());
    let ours = name.as_deref() == Some(config.cluster.as_str());
    let failover_timeout_ms = config.failover_timeout.as_millis() as i64;
    let unknown_master = || Reply::Error("ERR No such master with that name".into());
    match (sub.as_str(), args.len()) {
        ("get-master-addr-by-name", 3) => match (ours, &cluster.primary) {
            (true, Some(p)) => {
                let (ip, port) = host_port(&p.client);
                Reply::Array(Some(vec![text(ip), text(port)]))
            }
            _ => Reply::Array(None),
        },
        ("masters", 2) => Reply::Array(Some(
            master_state(&config.cluster, &cluster, failover_timeout_ms)
                .into_iter()
                .collect(),
        )),
        ("master", 3) if ours => master_state(&config.cluster, &cluster, failover_timeout_ms)
            .unwrap_or_else(unknown_master),
        ("replicas" | "slaves", 3) if ours => Reply::Array(Some(
            others(&cluster, primary_node(&cluster))
                .map(|m| replica_state(m, &cluster))
                .collect(),
        )),
        ("sentinels", 3) if ours => Reply::Array(Some(
            others(&cluster, Some(node_id(node)))
                .map(sentinel_state)
                .collect(),
        )),
        ("master" | "replicas" | "slaves" | "sentinels", 3) => unknown_master(),
        ("myid", 2) => text(&format!("{:040x}", node_id(node))),
        (
            "get-master-addr-by-name" | "masters" | "master" | "replicas" | "slaves" | "sentinels"
            | "myid",
            _,
        ) => Reply::Error(format!(
            "ERR wrong number of arguments for 'sentinel|{sub}' command"
        )),
        _ => Reply::Error(format!(
            "ERR Unknown sentinel subcommand '{sub}'; hotblock answers get-master-addr-by-name, masters, master, replicas, slaves, sentinels, myid"
        )),
    }
}

fn node_id(node: &Node) -> u64 {
    node.options().follow.as_ref().map_or(0, |f| f.node_id.0)
}

fn primary_node(cluster: &ClusterState) -> Option<u64> {
    cluster
        .primary
        .as_ref()
        .or(cluster.term.as_ref())
        .map(|p| p.node)
}

/// The members other than `except`.
fn others(cluster: &ClusterState, except: Option<u64>) -> impl Iterator<Item = &MemberRecord> {
    cluster
        .members
        .iter()
        .filter(move |m| Some(m.node) != except)
}

/// The primary's state, as `SENTINEL master` gives it. While no primary
/// holds the key (or this node cannot reach etcd to know), the last one is
/// shown down (`s_down,o_down`): clients then keep asking instead of
/// writing to it.
fn master_state(name: &str, cluster: &ClusterState, failover_timeout_ms: i64) -> Option<Reply> {
    let (p, flags): (&PrimaryRecord, &str) = match (&cluster.primary, &cluster.term) {
        (Some(p), _) => (p, "master"),
        (None, Some(last)) => (last, "master,s_down,o_down"),
        (None, None) => return None,
    };
    let (ip, port) = host_port(&p.client);
    let replicas = others(cluster, Some(p.node)).count();
    Some(fields(vec![
        ("name", text(name)),
        ("ip", text(ip)),
        ("port", text(port)),
        ("runid", text(&format!("{:040x}", p.node))),
        ("flags", text(flags)),
        ("link-pending-commands", int(0)),
        ("link-refcount", int(1)),
        ("last-ping-sent", int(0)),
        ("last-ok-ping-reply", int(0)),
        ("last-ping-reply", int(0)),
        ("down-after-milliseconds", int(failover_timeout_ms)),
        ("info-refresh", int(0)),
        ("role-reported", text("master")),
        ("role-reported-time", int(0)),
        ("config-epoch", int(p.term as i64)),
        ("num-slaves", int(replicas as i64)),
        // Every other node answers these commands too.
        (
            "num-other-sentinels",
            int(cluster.members.len().saturating_sub(1) as i64),
        ),
        ("quorum", int(1)),
        ("failover-timeout", int(failover_timeout_ms)),
        ("parallel-syncs", int(1)),
    ]))
}

fn replica_state(m: &MemberRecord, cluster: &ClusterState) -> Reply {
    let (ip, port) = host_port(&m.client);
    let (master_host, master_port) = cluster
        .primary
        .as_ref()
        .map_or(("?", "0"), |p| host_port(&p.client));
    fields(vec![
        ("name", text(&m.client)),
        ("ip", text(ip)),
        ("port", text(port)),
        ("runid", text(&format!("{:040x}", m.node))),
        ("flags", text("slave")),
        ("role-reported", text("slave")),
        ("master-host", text(master_host)),
        ("master-port", text(master_port)),
        ("slave-priority", int(100)),
    ])
}

fn sentinel_state(m: &MemberRecord) -> Reply {
    let (ip, port) = host_port(&m.client);
    fields(vec![
        ("name", text(&format!("{:040x}", m.node))),
        ("ip", text(ip)),
        ("port", text(port)),
        ("runid", text(&format!("{:040x}", m.node))),
        ("flags", text("sentinel")),
    ])
}

/// `host:port` (or `[v6]:port`) split for Sentinel's separate fields.
fn host_port(address: &str) -> (&str, &str) {
    match address.rsplit_once(':') {
        Some((host, port)) => (host.trim_start_matches('[').trim_end_matches(']'), port),
        None => (address, "0"),
    }
}

/// Sentinel's shape for a record: a flat array of field, value, ...
/// (values as bulk strings, as Sentinel sends them).
fn fields(pairs: Vec<(&str, Reply)>) -> Reply {
    Reply::Array(Some(
        pairs.into_iter().flat_map(|(k, v)| [text(k), v]).collect(),
    ))
}

fn text(s: &str) -> Reply {
    Reply::Bulk(Some(Bytes::from(s.to_string())))
}

/// Sentinel sends numbers as strings in these arrays.
fn int(n: i64) -> Reply {
    text(&n.to_string())
}
