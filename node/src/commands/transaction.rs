//! `MULTI`, `EXEC`, `DISCARD`, `WATCH` and `UNWATCH`: data commands queued
//! after `MULTI` and run by `EXEC` as one engine transaction (one LSN,
//! replicated whole, all or nothing on every node), across every database
//! they name — `SELECT` inside `MULTI` switches the database of the
//! commands after it, as in Redis — or as reads on one consistent view of
//! those databases when none writes. `EXEC` fails with a null reply,
//! running nothing, when a key `WATCH`ed before it was written since (see
//! [`crate::watch`]). Its own file because queuing changes how every other
//! command is answered while a transaction is open.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::data::{self, Data};
use super::session::Session;
use super::{arity_ok, unknown_or_unsupported, wrong_arity};
use crate::resp::Reply;
use hotblock_core::Role;

use crate::watch::{NodeNow, Watch};
use crate::Node;

/// One queued command.
#[derive(Debug)]
enum Queued {
    /// A data command and the database it acts on.
    Data { db: String, args: Vec<Bytes> },
    /// `SELECT db`: replies `OK` and makes `db` the connection's database
    /// once `EXEC` has run.
    Select(String),
    /// `UNWATCH`: replies `OK` (`EXEC` unwatches anyway).
    Unwatch,
}

/// Commands queued by `MULTI`.
#[derive(Debug, Default)]
pub(super) struct Multi {
    queued: Vec<Queued>,
    /// The database the next queued command acts on, once a `SELECT` was
    /// queued.
    selected: Option<String>,
    /// A command failed to queue: `EXEC` aborts.
    failed: bool,
    /// Bytes of the queued arguments: bounded by the query buffer limit,
    /// as the requests were before they were queued.
    bytes: usize,
}

/// `MULTI`.
pub(super) fn multi(session: &mut Session) -> Reply {
    match session.multi {
        Some(_) => Reply::Error("ERR MULTI calls can not be nested".into()),
        None => {
            session.multi = Some(Multi::default());
            Reply::ok()
        }
    }
}

/// `DISCARD`.
pub(super) fn discard(session: &mut Session) -> Reply {
    match session.multi.take() {
        Some(_) => {
            session.watch = None;
            Reply::ok()
        }
        None => Reply::Error("ERR DISCARD without MULTI".into()),
    }
}

/// `WATCH key [key ...]`: on the selected database, as Redis. A key that
/// exists with an expiry time counts as touched once the time passes.
pub(super) fn watch(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    if args.len() < 2 {
        return wrong_arity(b"watch");
    }
    // Read where this node reads; a node that serves no reads has no
    // expiry times to offer, and its watched keys still see every write.
    let engine = node.read_engine().ok();
    let database = engine
        .as_ref()
        .and_then(|engine| engine.database(&session.db).ok());
    let watch = session
        .watch
        .get_or_insert_with(|| Watch::new(node.watches().clone()));
    match &engine {
        Some(engine) if engine.role() != Role::Primary => watch.watching_on_follower(engine.lsn()),
        // No engine to read: a follower that serves no reads.
        None => watch.watching_on_follower(node.lsn()),
        Some(_) => {}
    }
    for key in &args[1..] {
        // Registered first, then read: an expiry time set in between
        // raises the flag or is read.
        watch.add(&session.db, key);
        let expires_at = database
            .as_ref()
            .and_then(|d| d.get(key).ok().flatten())
            .and_then(|r| r.expires_at_ms);
        watch.expires_at(expires_at);
    }
    Reply::ok()
}

/// `UNWATCH`.
pub(super) fn unwatch(session: &mut Session, args: &[Bytes]) -> Reply {
    if args.len() != 1 {
        return wrong_arity(b"unwatch");
    }
    session.watch = None;
    Reply::ok()
}

/// Any command but `EXEC`, `DISCARD`, `MULTI` and `QUIT` while in `MULTI`:
/// queued if it is a data command, `SELECT` or `UNWATCH`, else refused,
/// and `EXEC` will abort.
pub(super) fn queue(node: &Node, session: &mut Session, name: &[u8], args: Vec<Bytes>) -> Reply {
    let refuse = |session: &mut Session, reply: Reply| {
        if let Some(m) = session.multi.as_mut() {
            m.failed = true;
        }
        reply
    };
    let limit = node.options().limits.resp.query_buffer_max;
    let size: usize = args.iter().map(|a| a.len()).sum();
    let multi = session.multi.as_mut().expect("in MULTI");
    if multi.bytes.saturating_add(size) > limit {
        // The queue is dropped now, not at EXEC: its memory goes at once.
        multi.queued = Vec::new();
        let reply = Reply::Error(
            "ERR the queued commands exceed client-query-buffer-limit; EXEC will abort".into(),
        );
        return refuse(session, reply);
    }
    multi.bytes += size;
    let queued = |session: &mut Session, entry: Queued| {
        session.multi.as_mut().expect("in MULTI").queued.push(entry);
        Reply::Simple("QUEUED".into())
    };
    match name {
        b"SELECT" => {
            if args.len() != 2 {
                return refuse(session, wrong_arity(b"select"));
            }
            let Ok(db) = std::str::from_utf8(&args[1]) else {
                return refuse(session, Reply::Error("ERR database names are UTF-8".into()));
            };
            let exists = node
                .read_engine()
                .is_ok_and(|engine| engine.database(db).is_ok());
            if !exists {
                let reply = Reply::Error(format!("ERR no database '{db}' (DB.LIST shows them)"));
                return refuse(session, reply);
            }
            session.multi.as_mut().expect("in MULTI").selected = Some(db.to_string());
            return queued(session, Queued::Select(db.to_string()));
        }
        b"UNWATCH" if args.len() == 1 => return queued(session, Queued::Unwatch),
        b"UNWATCH" => return refuse(session, wrong_arity(b"unwatch")),
        // As Redis: refused, and the transaction goes on.
        b"WATCH" => return Reply::Error("ERR WATCH inside MULTI is not allowed".into()),
        _ => {}
    }
    let Some(cmd) = Data::parse(name) else {
        let reply = match name {
            b"PING" | b"ECHO" | b"INFO" | b"WAIT" | b"DB.CREATE" | b"DB.LIST" => {
                Reply::Error(format!(
                    "ERR {} is not allowed inside MULTI here",
                    String::from_utf8_lossy(name)
                ))
            }
            _ => unknown_or_unsupported(name, &args),
        };
        return refuse(session, reply);
    };
    if !arity_ok(cmd.arity(), args.len()) {
        return refuse(session, wrong_arity(name));
    }
    let current = session
        .multi
        .as_ref()
        .and_then(|m| m.selected.as_deref())
        .unwrap_or(&session.db);
    let db = match cmd.database(&args, current) {
        Ok(db) => db.to_string(),
        Err(reply) => return refuse(session, reply),
    };
    queued(session, Queued::Data { db, args })
}

/// `EXEC`: runs the queued commands, all reads on one view or all in one
/// transaction, and replies with their replies.
pub(super) async fn exec(node: &Node, session: &mut Session) -> Reply {
    let Some(multi) = session.multi.take() else {
        return Reply::Error("ERR EXEC without MULTI".into());
    };
    // Unwatched whatever happens, as Redis.
    let watch = session.watch.take();
    if multi.failed {
        return Reply::Error("EXECABORT Transaction discarded because of previous errors.".into());
    }
    // The data commands, parsed, with the databases they act on.
    let commands: Vec<(&str, Data, &[Bytes])> = multi
        .queued
        .iter()
        .filter_map(|q| match q {
            Queued::Data { db, args } => Some((
                db.as_str(),
                Data::parse(&args[0].to_ascii_uppercase()).expect("checked when queued"),
                &args[..],
            )),
            Queued::Select(_) | Queued::Unwatch => None,
        })
        .collect();
    // Every database the commands name or the watched keys live in: the
    // watched ones so that the flag is checked holding their writers.
    let mut dbs: BTreeSet<&str> = commands.iter().map(|(db, ..)| *db).collect();
    if let Some(w) = &watch {
        dbs.extend(w.databases());
    }
    let dbs: Vec<&str> = dbs.into_iter().collect();
    let replies = if commands.is_empty() {
        let now = NodeNow {
            lsn: node.lsn(),
            follower: node.write_db().is_err(),
        };
        match watch.as_ref().is_some_and(|w| w.touched(now)) {
            true => None,
            false => Some(vec![]),
        }
    } else if !commands.iter().any(|(_, c, _)| c.writes()) {
        // Reads only: one consistent view, no transaction.
        match data::read_consistent(node, session.protocol, &dbs, &commands, watch.as_ref()) {
            Ok(replies) => replies,
            Err(e) => return e,
        }
    } else {
        // A planned switchover holds writes until it is over.
        let _ticket = node.handover().enter_write().await;
        let db = match node.write_db() {
            Ok(db) => db,
            Err(r) => return Reply::Error(format!("EXECABORT {}", node.refusal(r))),
        };
        let run = data::commit_run_watched(node, session, &db, &dbs, &commands, watch.as_ref());
        match run.await {
            Ok(replies) => replies,
            Err(e) => return e,
        }
    };
    let Some(mut replies) = replies else {
        return Reply::Array(None);
    };
    // Put the replies of SELECT and UNWATCH back in their places; the last
    // SELECT stands once the transaction has run.
    for (i, q) in multi.queued.iter().enumerate() {
        match q {
            Queued::Data { .. } => {}
            Queued::Select(db) => {
                session.db.clone_from(db);
                replies.insert(i, Reply::ok());
            }
            Queued::Unwatch => replies.insert(i, Reply::ok()),
        }
    }
    Reply::Array(Some(replies))
}
