//! The commands that act on the node rather than on data: `WAIT`,
//! `REPLICAOF` (and `SLAVEOF`), `SHUTDOWN`, `DEBUG`, `VERIFY`, `SAVE` and
//! `CONFIG`. They reach into the node's role, replication and data
//! directory; `INFO` and `ROLE`, which only report, are in [`crate::info`].

use bytes::Bytes;
use std::sync::Arc;

use super::session::Session;
use super::{text, wrong_arity};
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

/// `CONFIG GET pattern`: the parameters clients and `redis-benchmark` ask
/// about. `CONFIG SET` is refused: settings are flags and the config file.
pub(super) fn config(node: &Node, args: &[Bytes]) -> Reply {
    match (args.get(1).map(|a| a.to_ascii_uppercase()), args.len()) {
        (Some(sub), 3) if &sub[..] == b"GET" => {
            let pattern = String::from_utf8_lossy(&args[2]).to_lowercase();
            let maxmemory = node
                .engine()
                .and_then(|e| e.memory_limit_bytes())
                .unwrap_or(0);
            let params = [
                ("maxmemory", maxmemory.to_string()),
                ("maxclients", node.options().limits.max_clients.to_string()),
                ("save", String::new()),
                ("appendonly", "no".to_string()),
                ("databases", "1".to_string()),
            ];
            let mut items = Vec::new();
            for (name, value) in params {
                if glob_match(&pattern, name) {
                    items.push(text(name));
                    items.push(text(value));
                }
            }
            Reply::Array(Some(items))
        }
        (Some(sub), _) if &sub[..] == b"GET" => wrong_arity(b"config|get"),
        _ => Reply::Error(
            "ERR CONFIG supports GET only: settings are flags and the --config file".into(),
        ),
    }
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
