//! `INFO` and `ROLE`: Redis's layout (`# Section` headers, `field:value`
//! lines) with hotblock's fields, whose names are part of the contract.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::resp::Reply;
use bytes::Bytes;
use hotblock_core::repl::Mode;
use hotblock_primary::Db;

use crate::{Follower, Node, Serving};

const SECTIONS: [&str; 7] = [
    "server",
    "clients",
    "replication",
    "memory",
    "persistence",
    "stats",
    "keyspace",
];

/// `INFO [section]`: one section, or all (`all`, `everything`, none).
pub(crate) fn info(node: &Node, section: Option<&Bytes>) -> Reply {
    let wanted = section.map(|s| String::from_utf8_lossy(s).to_lowercase());
    let mut out = String::new();
    for name in SECTIONS {
        let all = matches!(
            wanted.as_deref(),
            None | Some("all" | "everything" | "default")
        );
        if !all && wanted.as_deref() != Some(name) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let _ = writeln!(out, "# {}{}\r", name[..1].to_uppercase(), &name[1..]);
        section_text(node, name, &mut out);
    }
    Reply::Bulk(Some(Bytes::from(out)))
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Sync => "sync",
        Mode::Async => "async",
    }
}

fn line(out: &mut String, field: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "{field}:{value}\r\n");
}

/// Appends section `name`'s fields to `out`: one function per section,
/// those that depend on the role given the one read here.
fn section_text(node: &Node, name: &str, out: &mut String) {
    let role = node.role.read().expect("role lock");
    match name {
        "server" => server_section(node, &role, out),
        "clients" => clients_section(node, out),
        "replication" => replication_section(node, &role, out),
        "memory" => memory_section(&role, out),
        "persistence" => persistence_section(node, out),
        "stats" => stats_section(node, out),
        "keyspace" => keyspace_section(node, &role, out),
        _ => {}
    }
}

fn server_section(node: &Node, role: &Serving, out: &mut String) {
    line(out, "hotblock_version", env!("CARGO_PKG_VERSION"));
    line(out, "redis_version", "7.0.0-compatible");
    line(out, "process_id", std::process::id());
    line(out, "uptime_in_seconds", node.started.elapsed().as_secs());
    // Not `node.role_name()`: that would take the role lock again,
    // which blocks behind a waiting promotion.
    line(out, "hotblock_role", role.name());
}

fn clients_section(node: &Node, out: &mut String) {
    line(
        out,
        "connected_clients",
        node.stats().connected_clients.load(Ordering::Relaxed),
    );
    line(out, "maxclients", node.options.limits.max_clients);
}

fn replication_section(node: &Node, role: &Serving, out: &mut String) {
    match role {
        Serving::Primary(db) => primary_replication(node, db, out),
        Serving::Secondary(f) => secondary_replication(node, f, out),
        Serving::Promoting => {
            // Redis has no such state: a replica about to be a master.
            line(out, "role", "slave");
            line(out, "hotblock_role", "promoting");
        }
    }
    coordinator_replication(node, role, out);
}

/// With a coordinator: its link, this node's lease, and the cluster's
/// primary as etcd says.
fn coordinator_replication(node: &Node, role: &Serving, out: &mut String) {
    let Some(config) = &node.options.coordinator else {
        line(out, "coordinator", "none");
        return;
    };
    let c = node.cluster();
    line(out, "coordinator", "etcd");
    line(out, "coordinator_url", &config.url);
    line(
        out,
        "coordinator_link",
        if c.link_up { "up" } else { "down" },
    );
    let remaining = match role {
        Serving::Primary(db) => db.lease().and_then(|l| l.remaining()),
        _ => None,
    };
    line(
        out,
        "lease_remaining_ms",
        remaining.map_or(0, |d| d.as_millis()),
    );
    line(out, "cluster", &config.cluster);
    let known = c.primary.as_ref().or(c.term.as_ref());
    line(out, "cluster_epoch", known.map_or(0, |p| p.epoch));
    line(out, "cluster_term", known.map_or(0, |p| p.term));
    line(
        out,
        "cluster_primary",
        c.primary.as_ref().map_or("none", |p| p.client.as_str()),
    );
    line(
        out,
        "cluster_primary_id",
        c.primary.as_ref().map_or(0, |p| p.node),
    );
    line(out, "cluster_members", c.members.len());
    line(
        out,
        "failover_timeout_ms",
        config.failover_timeout.as_millis(),
    );
    line(out, "master_failover_state", node.handover().state().name());
    line(out, "promotions", c.promotions);
    line(out, "demotions", c.demotions);
    if let Some(why) = &c.election {
        line(out, "election", why.replace(['\r', '\n'], " "));
    }
    if let Some(e) = &c.last_error {
        line(out, "coordinator_error", e.replace(['\r', '\n'], " "));
    }
}

fn primary_replication(node: &Node, db: &Db, out: &mut String) {
    let secondaries = db.replicator().map(|r| r.secondaries()).unwrap_or_default();
    // Redis's word, which clients read (ioredis checks it after asking a
    // Sentinel); hotblock's own beside it.
    line(out, "role", "master");
    line(out, "hotblock_role", "primary");
    line(
        out,
        "epoch",
        node.history.lock().expect("history lock").current().0,
    );
    line(out, "lsn", db.lsn().0);
    line(
        out,
        "master_replid",
        format_args!(
            "{:016x}",
            node.history.lock().expect("history lock").lineage()
        ),
    );
    line(out, "connected_secondaries", secondaries.len());
    line(out, "connected_slaves", secondaries.len());
    if let Some(r) = db.replicator() {
        line(out, "repl_listen", r.local_addr());
        line(out, "sync_quorum", r.sync_quorum());
        line(out, "writable", r.check_writable().is_ok() as u8);
        line(out, "fenced", r.is_fenced() as u8);
    }
    for (i, (s, address)) in secondaries.iter().enumerate() {
        line(
            out,
            &format!("secondary{i}"),
            format_args!(
                "id={},addr={},mode={},state={},acked_lsn={},lag_lsn={},lag_ms={}",
                s.node.map_or(0, |n| n.0),
                address,
                mode_name(s.mode),
                s.state,
                s.acked_lsn.0,
                s.lag_lsn,
                s.lag_ms
            ),
        );
    }
    line(out, "master_repl_offset", db.lsn().0);
}

fn secondary_replication(node: &Node, f: &Follower, out: &mut String) {
    let i = f.info();
    line(out, "role", "slave");
    line(out, "hotblock_role", "secondary");
    line(out, "epoch", i.epoch.0);
    line(out, "lsn", i.lsn.0);
    line(out, "master_replid", format_args!("{:016x}", i.lineage));
    line(out, "connected_secondaries", 0);
    line(out, "primary", &i.primary);
    line(out, "mode", mode_name(i.mode));
    line(
        out,
        "primary_link_status",
        if i.connected { "up" } else { "down" },
    );
    line(
        out,
        "state",
        match (i.connected, i.streaming) {
            (true, true) => "online",
            (true, false) => "resync",
            (false, _) => "disconnected",
        },
    );
    line(out, "snapshots", i.snapshots);
    line(out, "blocks_diverged", i.blocks_diverged);
    line(out, "serve_reads", node.options.serve_reads as u8);
    if let Some(e) = &i.last_error {
        line(out, "last_error", e.replace(['\r', '\n'], " "));
    }
}

fn memory_section(role: &Serving, out: &mut String) {
    let engine = match role {
        Serving::Primary(db) => Some(db.engine().clone()),
        Serving::Secondary(f) => Some(f.engine().clone()),
        Serving::Promoting => None,
    };
    if let Some(engine) = engine {
        line(out, "used_memory", engine.memory_used_bytes());
        line(out, "maxmemory", engine.memory_limit_bytes().unwrap_or(0));
        let index: u64 = engine
            .databases()
            .iter()
            .map(|d| d.stats().index_bytes)
            .sum();
        line(out, "index_memory", index);
    }
}

fn persistence_section(node: &Node, out: &mut String) {
    match &node.options.persister {
        Some(p) => {
            let s = p.status();
            line(out, "data_dir", s.dir.display());
            line(out, "fsync", s.fsync);
            line(out, "logged_lsn", s.logged_lsn.0);
            line(out, "durable_lsn", s.durable_lsn.0);
            line(out, "log_bytes", s.log_bytes);
            line(out, "checkpoint_lsn", s.last_checkpoint_lsn.0);
            line(out, "healthy", s.last_error.is_none() as u8);
            if let Some(e) = &s.last_error {
                line(out, "last_error", e.replace(['\r', '\n'], " "));
            }
        }
        None => line(out, "data_dir", ""),
    }
}

fn stats_section(node: &Node, out: &mut String) {
    let stats = node.stats();
    for (name, counter) in [
        ("total_connections_received", &stats.connections_received),
        ("total_commands_processed", &stats.commands_processed),
        ("rejected_connections", &stats.rejected_connections),
        ("keyspace_hits", &stats.keyspace_hits),
        ("keyspace_misses", &stats.keyspace_misses),
        ("total_error_replies", &stats.errors),
    ] {
        line(out, name, counter.load(Ordering::Relaxed));
    }
}

fn keyspace_section(node: &Node, role: &Serving, out: &mut String) {
    let engine = match role {
        Serving::Primary(db) => Some(db.engine().clone()),
        Serving::Secondary(f) if node.options.serve_reads => Some(f.engine().clone()),
        _ => None,
    };
    for db in engine.iter().flat_map(|e| e.databases()) {
        let stats = db.stats();
        line(
            out,
            &format!("db_{}", db.name()),
            format_args!(
                "keys={},blocks={},indexes={}",
                stats.records,
                stats.blocks,
                db.schema().indexes.len()
            ),
        );
    }
}

/// `ROLE`, in Redis's shapes: `[master, offset, [[ip, port, offset], ...]]`
/// or `[slave, ip, port, state, offset]`, offsets being LSNs.
pub(crate) fn role(node: &Node) -> Reply {
    let text = |s: &str| Reply::Bulk(Some(Bytes::from(s.to_string())));
    match &*node.role.read().expect("role lock") {
        Serving::Primary(db) => {
            let secondaries = db.replicator().map(|r| r.secondaries()).unwrap_or_default();
            let list = secondaries
                .iter()
                .map(|(s, address)| {
                    let (ip, port) = address.rsplit_once(':').unwrap_or((address, "0"));
                    Reply::Array(Some(vec![
                        text(ip),
                        text(port),
                        text(&s.acked_lsn.0.to_string()),
                    ]))
                })
                .collect();
            Reply::Array(Some(vec![
                text("master"),
                Reply::Integer(db.lsn().0 as i64),
                Reply::Array(Some(list)),
            ]))
        }
        Serving::Secondary(f) => {
            let i = f.info();
            let (ip, port) = i.primary.rsplit_once(':').unwrap_or((&i.primary, "0"));
            let state = match (i.connected, i.streaming) {
                (true, true) => "connected",
                (true, false) => "sync",
                (false, _) => "connect",
            };
            Reply::Array(Some(vec![
                text("slave"),
                text(ip),
                Reply::Integer(port.parse().unwrap_or(0)),
                text(state),
                Reply::Integer(i.lsn.0 as i64),
            ]))
        }
        Serving::Promoting => Reply::Array(Some(vec![text("promoting")])),
    }
}
