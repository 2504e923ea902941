//! The commands that act on the node rather than on data: `WAIT`,
//! `REPLICAOF` (and `SLAVEOF`), `SHUTDOWN`, `DEBUG`, `VERIFY`, `SAVE` and
//! `CONFIG`. They reach into the node's role, replication and data
//! directory; `INFO` and `ROLE`, which only report, are in [`crate::info`].

use bytes::Bytes;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::session::Session;
use super::{syntax_error, text, wrong_arity};
use crate::resp::Reply;
use crate::{Node, Reject};

/// `SHUTDOWN`: asks the server to stop, and closes this connection.
pub(super) fn shutdown(node: &Node, session: &mut Session) -> Reply {
    tracing::info!(client = session.id, "SHUTDOWN asked by a client");
    node.request_shutdown();
    session.close = true;
    Reply::ok()
}

/// `FAILOVER [TO host port] [FORCE] [TIMEOUT ms]` and `FAILOVER ABORT`,
/// with Redis's arguments and errors (see `coordinator::handover`).
pub(super) async fn failover(node: &Arc<Node>, args: &[Bytes]) -> Reply {
    use crate::coordinator::handover::{self, HandoverPlan};
    let upper: Vec<String> = args[1..]
        .iter()
        .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
        .collect();
    if upper.len() == 1 && upper[0] == "ABORT" {
        return match node.handover().abort() {
            Ok(()) => Reply::ok(),
            Err(e) => Reply::Error(e.to_string()),
        };
    }
    let mut plan = HandoverPlan {
        to: None,
        timeout: None,
        force: false,
    };
    let mut target = None;
    let mut i = 0;
    while i < upper.len() {
        match upper[i].as_str() {
            "TO" if i + 2 < upper.len() && target.is_none() => {
                target = Some(format!(
                    "{}:{}",
                    String::from_utf8_lossy(&args[i + 2]),
                    upper[i + 2]
                ));
                i += 3;
            }
            "FORCE" if !plan.force => {
                plan.force = true;
                i += 1;
            }
            "TIMEOUT" if i + 1 < upper.len() && plan.timeout.is_none() => {
                match upper[i + 1].parse::<i64>() {
                    Ok(ms) if ms > 0 => {
                        plan.timeout = Some(std::time::Duration::from_millis(ms as u64))
                    }
                    Ok(_) => {
                        return Reply::Error("ERR FAILOVER timeout must be greater than 0".into())
                    }
                    Err(_) => {
                        return Reply::Error("ERR value is not an integer or out of range".into())
                    }
                }
                i += 2;
            }
            _ => return super::syntax_error(),
        }
    }
    // Redis's order of checks: in progress, a replica, then the options.
    if node.handover().state() != handover::HandoverState::NoFailover {
        return Reply::Error(handover::HandoverError::InProgress.to_string());
    }
    if node.db().is_none() {
        return Reply::Error(handover::HandoverError::NotPrimary.to_string());
    }
    if plan.force && (plan.timeout.is_none() || target.is_none()) {
        return Reply::Error(
            "ERR FAILOVER with force option requires both a timeout and target HOST and IP.".into(),
        );
    }
    if let Some(address) = &target {
        // The target as clients know it: the member with that address (read
        // afresh from etcd if this node has not seen it yet).
        let mut members = node.cluster().members;
        if !members.iter().any(|m| &m.client == address) {
            let reader = node.clone();
            if let Ok(Ok(fresh)) =
                tokio::task::spawn_blocking(move || handover::read_members(&reader)).await
            {
                members = fresh;
            }
        }
        match members.iter().find(|m| &m.client == address) {
            // A node that does not stand in elections would never take
            // the key: writes would stay held.
            Some(m) if m.candidate => plan.to = Some(m.node),
            _ => return Reply::Error("ERR FAILOVER target HOST and PORT is not a replica.".into()),
        }
    }
    match handover::start(node, plan) {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::Error(e.to_string()),
    }
}

/// `WAIT numreplicas timeout`: how many secondaries acknowledged this
/// client's last write, waiting up to `timeout` ms (0: no limit) for
/// `numreplicas` of them.
pub(super) async fn wait(node: &Node, session: &Session, args: &[Bytes]) -> Reply {
    if args.len() != 3 {
        return wrong_arity(b"wait");
    }
    let parse = |b: &Bytes| {
        std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
    };
    let (Some(wanted), Some(timeout_ms)) = (parse(&args[1]), parse(&args[2])) else {
        return Reply::Error("ERR value is not an integer or out of range".into());
    };
    let Some(db) = node.db() else {
        return Reply::Error("ERR WAIT cannot be used with replica instances.".into());
    };
    let Some(replicator) = db.replicator() else {
        return Reply::Integer(0);
    };
    let mut rx = replicator.progress();
    let target = session.last_write;
    let count = |rx: &mut tokio::sync::watch::Receiver<hotblock_primary::AckProgress>| {
        rx.borrow_and_update().count_at_least(target) as u64
    };
    let wait = async {
        loop {
            if count(&mut rx) >= wanted || rx.changed().await.is_err() {
                return;
            }
        }
    };
    if timeout_ms == 0 {
        wait.await;
    } else {
        let _ = tokio::time::timeout(std::time::Duration::from_millis(timeout_ms), wait).await;
    }
    Reply::Integer(count(&mut replicator.progress()) as i64)
}

/// `REPLICAOF host port [fingerprint]`: a secondary follows another
/// primary. `REPLICAOF NO ONE`: a secondary becomes a primary in place.
pub(super) async fn replicaof(node: &Arc<Node>, args: &[Bytes]) -> Reply {
    if !(3..=4).contains(&args.len()) {
        return wrong_arity(&args[0]);
    }
    let no_one = args[1].eq_ignore_ascii_case(b"NO") && args[2].eq_ignore_ascii_case(b"ONE");
    if no_one && args.len() != 3 {
        return wrong_arity(&args[0]);
    }
    if node.options().coordinator.is_some() {
        // Roles are etcd's to decide here: a hand-made primary would hold
        // an epoch no election knows of.
        return Reply::Error(
            "ERR this node's role is decided through its coordinator (--coordinator): REPLICAOF is refused; stop the primary, and the cluster elects another".into(),
        );
    }
    if !no_one {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        let (host, port) = (text(&args[1]), text(&args[2]));
        let Ok(port) = port.parse::<u16>() else {
            return Reply::Error(format!("ERR invalid port {port:?}"));
        };
        // Resolved here, off the role lock: a slow resolver stalls only
        // this client.
        let address = match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(mut found) => match found.next() {
                Some(address) => address,
                None => return Reply::Error(format!("ERR {host}: no address")),
            },
            Err(e) => return Reply::Error(format!("ERR {host}: {e}")),
        };
        let fingerprint = args.get(3).map(text);
        return match node.repoint(address, fingerprint.as_deref()) {
            Ok(()) => Reply::ok(),
            Err(e) => Reply::Error(format!("ERR {e}")),
        };
    }
    if node.db().is_some() {
        return Reply::ok();
    }
    // Promotion joins the follower's threads and starts a runtime for the
    // new primary's replication: not work for an async worker.
    let node = node.clone();
    match tokio::task::spawn_blocking(move || node.promote()).await {
        Ok(Ok(_)) => Reply::ok(),
        Ok(Err(e)) => Reply::Error(format!("ERR {e}")),
        Err(e) => Reply::Error(format!("ERR promotion failed: {e}")),
    }
}

/// `VERIFY`: on a primary, sends every caught-up secondary the digests of
/// its blocks now; a secondary whose blocks differ names them in its log,
/// counts them (`blocks_diverged` in its `INFO replication`) and resyncs.
/// Replies with how many secondaries were sent digests.
pub(super) async fn verify(node: &Node, args: &[Bytes]) -> Reply {
    if args.len() != 1 {
        return wrong_arity(b"verify");
    }
    match node.db().as_ref().and_then(|db| db.replicator()) {
        Some(r) => Reply::Integer(r.verify().await as i64),
        None => Reply::Error(
            "ERR VERIFY runs on a primary: it sends its digests to its secondaries".into(),
        ),
    }
}

/// `SAVE`: a checkpoint now (a snapshot, then a new log), as Redis's
/// `SAVE`. After the data directory failed (full, say) and writes get
/// `-MISCONF`, a successful `SAVE` makes the node writable again, without
/// waiting for the background retry.
pub(super) async fn save(node: &Node, args: &[Bytes]) -> Reply {
    if args.len() != 1 {
        return wrong_arity(b"save");
    }
    let (Some(p), Some(db)) = (node.options().persister.clone(), node.db()) else {
        return Reply::Error(
            "ERR SAVE needs a primary started with --data-dir (a secondary checkpoints itself)"
                .into(),
        );
    };
    let engine = db.engine().clone();
    match tokio::task::spawn_blocking(move || p.checkpoint(&engine)).await {
        Ok(Ok(lsn)) => {
            tracing::info!(%lsn, "checkpoint written (SAVE)");
            Reply::ok()
        }
        Ok(Err(e)) => Reply::Error(format!("ERR {e}")),
        Err(e) => Reply::Error(format!("ERR checkpoint: {e}")),
    }
}

/// `DEBUG DIGEST`: one hash of every block of every database, taken while
/// no transaction applies — equal on two nodes at the same LSN exactly when
/// their blocks are byte-identical. Works on passive secondaries too.
/// `DEBUG FLIPBYTE db-id block-id offset`, with fault injection enabled
/// only, flips a byte of a block behind every check, as a memory fault
/// would.
pub(super) fn debug(node: &Node, args: &[Bytes]) -> Reply {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    if &sub[..] == b"FLIPBYTE" && args.len() == 5 && node.options().fault_injection {
        let num = |b: &Bytes| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
        };
        let (Some(db), Some(block), Some(offset)) = (num(&args[2]), num(&args[3]), num(&args[4]))
        else {
            return Reply::Error("ERR DEBUG FLIPBYTE db-id block-id offset".into());
        };
        let Some(engine) = node.engine() else {
            return Reply::Error(Reject::Promoting.message().into());
        };
        let flipped = engine.inject_fault_flip_byte(
            hotblock_core::DbId(db as u32),
            hotblock_core::BlockId(block as u32),
            offset as usize,
            0x01,
        );
        tracing::warn!(
            db,
            block,
            offset,
            flipped,
            "DEBUG FLIPBYTE: a block was corrupted on purpose"
        );
        return Reply::Integer(flipped as i64);
    }
    if &sub[..] != b"DIGEST" || args.len() != 2 {
        return Reply::Error("ERR DEBUG supports DIGEST only".into());
    }
    let Some(engine) = node.engine() else {
        return Reply::Error(Reject::Promoting.message().into());
    };
    let digest = engine.at_consistent_point(|_| {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for d in engine.digests() {
            hasher.update(&d.db.0.to_le_bytes());
            hasher.update(&d.digest.to_le_bytes());
        }
        hasher.digest()
    });
    text(format!("{digest:016x}"))
}

/// `CONFIG GET pattern [pattern ...]` (a map under RESP3), `CONFIG SET
/// name value [name value ...]` for the settings that change at run time
/// (`maxmemory`, `maxclients`; `save ""` and `appendonly no`, which
/// describe hotblock as it is, are accepted), and `CONFIG RESETSTAT`.
/// Everything else is set by flags and the `--config` file.
pub(super) fn config(node: &Node, args: &[Bytes]) -> Reply {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    match (&sub[..], args.len()) {
        (b"GET", 3..) => {
            let params = config_params(node);
            let mut pairs = Vec::new();
            for (name, value) in params {
                let wanted = args[2..]
                    .iter()
                    .any(|p| glob_match(&String::from_utf8_lossy(p).to_lowercase(), name));
                if wanted {
                    pairs.push((text(name), text(value)));
                }
            }
            Reply::Map(pairs)
        }
        (b"GET", _) => wrong_arity(b"config|get"),
        (b"SET", n) if n >= 4 && n % 2 == 0 => config_set(node, &args[2..]),
        (b"SET", _) => wrong_arity(b"config|set"),
        (b"RESETSTAT", 2) => {
            node.reset_stats();
            Reply::ok()
        }
        _ => Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |a| &a[..]))
        )),
    }
}

/// The settings `CONFIG GET` shows, with their values now.
fn config_params(node: &Node) -> Vec<(&'static str, String)> {
    let maxmemory = node
        .engine()
        .and_then(|e| e.memory_limit_bytes())
        .unwrap_or(0);
    let limits = &node.options().limits;
    vec![
        ("maxmemory", maxmemory.to_string()),
        ("maxmemory-policy", "noeviction".to_string()),
        ("maxclients", node.max_clients().to_string()),
        ("proto-max-bulk-len", limits.resp.bulk_len_max.to_string()),
        (
            "client-query-buffer-limit",
            limits.resp.query_buffer_max.to_string(),
        ),
        ("save", String::new()),
        ("appendonly", "no".to_string()),
        ("databases", "1".to_string()),
        (
            "requirepass",
            // Redis shows it; hotblock does not repeat a secret.
            String::new(),
        ),
    ]
}

/// `CONFIG SET`: all the pairs are checked before any is applied.
fn config_set(node: &Node, pairs: &[Bytes]) -> Reply {
    let mut maxmemory = None;
    let mut maxclients = None;
    for pair in pairs.chunks_exact(2) {
        let name = String::from_utf8_lossy(&pair[0]).to_lowercase();
        let value = String::from_utf8_lossy(&pair[1]).to_lowercase();
        let failed = |why: &str| {
            Reply::Error(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
            ))
        };
        match name.as_str() {
            "maxmemory" => match parse_memory(&value) {
                Some(n) => maxmemory = Some(n),
                None => return failed("argument must be a memory value"),
            },
            "maxclients" => match value.parse::<usize>() {
                Ok(n) if n >= 1 => maxclients = Some(n),
                _ => return failed("argument couldn't be parsed into an integer"),
            },
            "save" if value.is_empty() => {}
            "appendonly" if value == "no" => {}
            "maxmemory-policy" if value == "noeviction" => {}
            "save" | "appendonly" | "maxmemory-policy" | "databases" | "requirepass"
            | "proto-max-bulk-len" => {
                return failed("can't set immutable config (a flag or the --config file sets it)")
            }
            _ => {
                return Reply::Error(format!(
                    "ERR Unknown option or number of arguments for CONFIG SET - '{name}'"
                ))
            }
        }
    }
    if let Some(bytes) = maxmemory {
        let Some(engine) = node.engine() else {
            return Reply::Error("ERR the node is between roles: try again".into());
        };
        engine.set_memory_limit_bytes(Some(bytes).filter(|b| *b > 0));
        tracing::info!(bytes, "maxmemory changed (CONFIG SET)");
    }
    if let Some(n) = maxclients {
        node.set_max_clients(n);
        tracing::info!(n, "maxclients changed (CONFIG SET)");
    }
    Reply::ok()
}

/// A memory size as Redis writes one: `100`, `1k` (1000), `1kb` (1024),
/// `m`, `mb`, `g`, `gb`.
pub(crate) fn parse_memory(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let scale: u64 = match unit {
        "" | "b" => 1,
        "k" => 1_000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(scale)
}

/// `TIME`: seconds and microseconds since the Unix epoch.
pub(super) fn time() -> Reply {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(Some(vec![
        text(now.as_secs().to_string()),
        text(now.subsec_micros().to_string()),
    ]))
}

/// `LASTSAVE`: when the newest checkpoint was written (without a data
/// directory: when the node started), in Unix seconds.
pub(super) fn lastsave(node: &Node) -> Reply {
    Reply::Integer(match &node.options().persister {
        Some(p) => p.status().last_checkpoint_unix_secs,
        None => node.started_unix_secs(),
    } as i64)
}

/// `BGSAVE [SCHEDULE]`: starts a checkpoint and replies at once, as Redis
/// does; its outcome is in the log, `LASTSAVE` and `INFO persistence`.
pub(super) fn bgsave(node: &Node, args: &[Bytes]) -> Reply {
    match &args[1..] {
        [] => {}
        [word] if word.eq_ignore_ascii_case(b"SCHEDULE") => {}
        _ => return syntax_error(),
    }
    let (Some(p), Some(db)) = (node.options().persister.clone(), node.db()) else {
        return Reply::Error(
            "ERR BGSAVE needs a primary started with --data-dir (a secondary checkpoints itself)"
                .into(),
        );
    };
    let engine = db.engine().clone();
    tokio::task::spawn_blocking(move || match p.checkpoint(&engine) {
        Ok(lsn) => tracing::info!(%lsn, "checkpoint written (BGSAVE)"),
        Err(e) => tracing::error!(error = %e, "checkpoint failed (BGSAVE)"),
    });
    Reply::Simple("Background saving started".into())
}

/// Redis's glob subset that `CONFIG GET` needs: `*` and literal characters.
/// `CONFIG GET`'s pattern rule: Redis's glob, case-insensitive as Redis
/// matches configuration names.
fn glob_match(pattern: &str, name: &str) -> bool {
    crate::glob::matches(pattern.as_bytes(), name.as_bytes(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_config_get() {
        assert!(glob_match("*", "save"));
        assert!(glob_match("max*", "maxmemory"));
        assert!(glob_match("*memory", "maxmemory"));
        assert!(glob_match("m*m*y", "maxmemory"));
        assert!(!glob_match("max*", "save"));
        assert!(!glob_match("save", "saves"));
    }

    #[test]
    fn hostile_patterns_neither_overflow_the_stack_nor_hang() {
        let stars = "*".repeat(20_000);
        assert!(glob_match(&stars, "maxmemory"));
        let slow = format!("{}x", "*".repeat(60));
        assert!(!glob_match(&slow, "maxmemory-policy-and-then-some"));
    }
}
