//! `INFO` and `ROLE`: Redis's layout (`# Section` headers, `field:value`
//! lines) with hotblock's fields, whose names are part of the contract.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::resp::Reply;
use bytes::Bytes;
use hotblock_core::repl::Mode;
use hotblock_primary::Db;

use crate::{Follower, Node, Serving};

/// Redis's sections, in Redis's order; `default` and `all` print these.
const SECTIONS: [&str; 11] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
];

/// `INFO [section ...]`: the sections named, or all of them (`all`,
/// `everything`, `default`, none). Text for people: RESP3's verbatim type,
/// a bulk string under RESP2.
pub(crate) fn info(node: &Node, sections: &[Bytes]) -> Reply {
    let wanted: Vec<String> = sections
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| matches!(w.as_str(), "all" | "everything" | "default"));
    let mut out = String::new();
    for name in SECTIONS {
        if !all && !wanted.iter().any(|w| w == name) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let title = match name {
            "cpu" => "CPU".to_string(),
            _ => format!("{}{}", name[..1].to_uppercase(), &name[1..]),
        };
        let _ = writeln!(out, "# {title}\r");
        section_text(node, name, &mut out);
    }
    Reply::Verbatim(out)
}

/// The last samples of `total_commands_processed`, one per
/// [`OPS_SAMPLE_INTERVAL`], as Redis keeps them for
/// `instantaneous_ops_per_sec`.
#[derive(Debug, Default)]
pub(crate) struct OpsSamples {
    /// (when, commands processed by then), oldest first.
    samples: std::collections::VecDeque<(Instant, u64)>,
}

/// How often commands are sampled, and how many samples the rate spans.
pub(crate) const OPS_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);
const OPS_SAMPLES_MAX: usize = 16;

impl OpsSamples {
    fn record(&mut self, at: Instant, processed: u64) {
        if self.samples.len() == OPS_SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back((at, processed));
    }

    /// Commands per second over the samples kept.
    fn per_second(&self) -> u64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                ((n1 - n0) as f64 / (*t1 - *t0).as_secs_f64()) as u64
            }
            _ => 0,
        }
    }
}

/// Samples the node's command count until the node is gone.
pub(crate) async fn sample_ops(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(OPS_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let processed = node.stats.commands_processed.load(Ordering::Relaxed);
        node.stats
            .ops_samples
            .lock()
            .expect("ops samples lock")
            .record(Instant::now(), processed);
    }
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
        "memory" => memory_section(&role, out),
        "persistence" => persistence_section(node, out),
        "stats" => stats_section(node, out),
        "replication" => replication_section(node, &role, out),
        "cpu" => cpu_section(out),
        "errorstats" => errorstats_section(node, out),
        "cluster" => line(out, "cluster_enabled", 0),
        "keyspace" => keyspace_section(node, &role, out),
        _ => {}
    }
}

fn server_section(node: &Node, role: &Serving, out: &mut String) {
    // The Redis version whose commands and replies hotblock follows:
    // clients compare it to decide what they may send.
    line(out, "redis_version", REDIS_VERSION);
    line(out, "redis_mode", "standalone");
    line(out, "os", std::env::consts::OS);
    line(out, "arch_bits", usize::BITS);
    line(out, "process_id", std::process::id());
    line(out, "run_id", &node.run_id);
    line(
        out,
        "tcp_port",
        node.client_port.get().map_or(0, |a| a.port()),
    );
    let uptime = node.started.elapsed().as_secs();
    line(out, "uptime_in_seconds", uptime);
    line(out, "uptime_in_days", uptime / 86_400);
    line(out, "hotblock_version", env!("CARGO_PKG_VERSION"));
    // Not `node.role_name()`: that would take the role lock again,
    // which blocks behind a waiting promotion.
    line(out, "hotblock_role", role.name());
}

/// The Redis release whose commands and reply shapes hotblock follows.
pub(crate) const REDIS_VERSION: &str = "7.0.0";

fn clients_section(node: &Node, out: &mut String) {
    line(
        out,
        "connected_clients",
        node.stats().connected_clients.load(Ordering::Relaxed),
    );
    line(out, "cluster_connections", 0);
    line(out, "maxclients", node.max_clients());
    line(out, "blocked_clients", 0);
    line(out, "tracking_clients", 0);
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
    let used = engine.as_ref().map_or(0, |e| e.memory_used_bytes());
    let rss = rss_bytes();
    line(out, "used_memory", used);
    line(out, "used_memory_human", human_bytes(used));
    line(out, "used_memory_rss", rss);
    line(out, "used_memory_rss_human", human_bytes(rss));
    let max = engine
        .as_ref()
        .and_then(|e| e.memory_limit_bytes())
        .unwrap_or(0);
    line(out, "maxmemory", max);
    line(out, "maxmemory_human", human_bytes(max));
    // A full node refuses writes (`-OOM`) rather than evict.
    line(out, "maxmemory_policy", "noeviction");
    line(
        out,
        "mem_fragmentation_ratio",
        format_args!("{:.2}", rss as f64 / used.max(1) as f64),
    );
    line(out, "mem_allocator", "libc");
    if let Some(engine) = engine {
        let index: u64 = engine
            .databases()
            .iter()
            .map(|d| d.stats().index_bytes)
            .sum();
        line(out, "index_memory", index);
    }
}

/// The process's resident set, from `/proc/self/status` (0 where there
/// is none).
pub(crate) fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let kib = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Redis's human form: `1.50M`, `932.00K`, `12B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, f64); 4] = [
        ("P", 1_125_899_906_842_624.0),
        ("T", 1_099_511_627_776.0),
        ("G", 1_073_741_824.0),
        ("M", 1_048_576.0),
    ];
    for (unit, size) in UNITS {
        if n as f64 >= size {
            return format!("{:.2}{unit}", n as f64 / size);
        }
    }
    match n >= 1024 {
        true => format!("{:.2}K", n as f64 / 1024.0),
        false => format!("{n}B"),
    }
}

fn persistence_section(node: &Node, out: &mut String) {
    line(out, "loading", 0);
    line(out, "async_loading", 0);
    line(out, "rdb_bgsave_in_progress", 0);
    line(out, "aof_enabled", 0);
    line(out, "aof_rewrite_in_progress", 0);
    match &node.options.persister {
        Some(p) => {
            let s = p.status();
            line(
                out,
                "rdb_changes_since_last_save",
                s.logged_lsn.0.saturating_sub(s.last_checkpoint_lsn.0),
            );
            line(out, "rdb_last_save_time", s.last_checkpoint_unix_secs);
            line(
                out,
                "rdb_last_bgsave_status",
                if s.last_error.is_none() { "ok" } else { "err" },
            );
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
        None => {
            line(out, "rdb_changes_since_last_save", 0);
            line(out, "rdb_last_save_time", node.started_unix_secs());
            line(out, "rdb_last_bgsave_status", "ok");
            line(out, "data_dir", "");
        }
    }
}

fn stats_section(node: &Node, out: &mut String) {
    let stats = node.stats();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    line(
        out,
        "total_connections_received",
        get(&stats.connections_received),
    );
    line(
        out,
        "total_commands_processed",
        get(&stats.commands_processed),
    );
    line(
        out,
        "instantaneous_ops_per_sec",
        stats
            .ops_samples
            .lock()
            .expect("ops samples lock")
            .per_second(),
    );
    line(out, "total_net_input_bytes", get(&stats.net_input_bytes));
    line(out, "total_net_output_bytes", get(&stats.net_output_bytes));
    line(
        out,
        "rejected_connections",
        get(&stats.rejected_connections),
    );
    line(out, "expired_keys", get(&stats.expired_keys));
    line(out, "evicted_keys", 0);
    line(out, "keyspace_hits", get(&stats.keyspace_hits));
    line(out, "keyspace_misses", get(&stats.keyspace_misses));
    line(out, "pubsub_channels", 0);
    line(out, "pubsub_patterns", 0);
    line(out, "total_error_replies", get(&stats.errors));
}

/// The CPU time this process used, from `/proc/self/stat` (in the
/// kernel's `USER_HZ` ticks, 100 a second on every Linux ABI).
fn cpu_section(out: &mut String) {
    const USER_HZ: f64 = 100.0;
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // The command name may hold spaces: fields start after its ')'.
            let fields: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
            Some((
                fields.get(11)?.parse::<u64>().ok()?,
                fields.get(12)?.parse::<u64>().ok()?,
            ))
        })
        .unwrap_or((0, 0));
    line(
        out,
        "used_cpu_sys",
        format_args!("{:.6}", ticks.1 as f64 / USER_HZ),
    );
    line(
        out,
        "used_cpu_user",
        format_args!("{:.6}", ticks.0 as f64 / USER_HZ),
    );
}

/// `errorstat_<CODE>:count=n`, one line per error code replied.
fn errorstats_section(node: &Node, out: &mut String) {
    let codes = node.stats().error_codes.lock().expect("error codes lock");
    for (code, count) in codes.iter() {
        line(
            out,
            &format!("errorstat_{code}"),
            format_args!("count={count}"),
        );
    }
}

/// `db<name>:keys=n,expires=n,avg_ttl=ms` as Redis prints it, then
/// hotblock's own fields (`blocks`, `indexes`). Redis numbers its
/// databases; here they have names, the default one `0` (`db0`).
fn keyspace_section(node: &Node, role: &Serving, out: &mut String) {
    let engine = match role {
        Serving::Primary(db) => Some(db.engine().clone()),
        Serving::Secondary(f) if node.options.serve_reads => Some(f.engine().clone()),
        _ => None,
    };
    let now = hotblock_core::now_ms();
    for db in engine.iter().flat_map(|e| e.databases()) {
        let stats = db.stats();
        // A passive secondary keeps no indexes, and so no expiry counts.
        let (expires, avg_ttl) = db.read().expiry_stats(now).unwrap_or((0, 0));
        if stats.records == 0 && db.name() == crate::DEFAULT_DATABASE {
            // Redis lists only databases that hold keys.
            continue;
        }
        line(
            out,
            &format!("db{}", db.name()),
            format_args!(
                "keys={},expires={},avg_ttl={},blocks={},indexes={}",
                stats.records,
                expires,
                avg_ttl,
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
