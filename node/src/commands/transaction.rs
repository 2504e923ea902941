//! `MULTI`, `EXEC`, `DISCARD`, `WATCH` and `UNWATCH`: data commands queued
//! after `MULTI` and run by `EXEC` as one engine transaction on one
//! database (one LSN, replicated whole), or as reads on one consistent view
//! when none writes; `EXEC` fails with a null reply, running nothing, when
//! a key `WATCH`ed before it was written since (see [`crate::watch`]).
//! Its own file because queuing changes how every other command is
//! answered while a transaction is open.

use bytes::Bytes;

use super::data::{self, Data};
use super::errors::error_reply;
use super::session::Session;
use super::{arity_ok, unknown_or_unsupported, wrong_arity};
use crate::resp::Reply;
use crate::watch::Watch;
use crate::Node;

/// Commands queued by `MULTI`.
#[derive(Debug, Default)]
pub(super) struct Multi {
    queued: Vec<Vec<Bytes>>,
    /// The one database the transaction touches, once a command named it.
    db: Option<String>,
    /// A command failed to queue: `EXEC` aborts.
    failed: bool,
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

/// `WATCH key [key ...]`: on the selected database, as Redis.
pub(super) fn watch(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    if session.multi.is_some() {
        return Reply::Error("ERR WATCH inside MULTI is not allowed".into());
    }
    let watch = session
        .watch
        .get_or_insert_with(|| Watch::new(node.watches().clone()));
    for key in &args[1..] {
        watch.add(&session.db, key);
    }
    Reply::ok()
}

/// `UNWATCH`.
pub(super) fn unwatch(session: &mut Session) -> Reply {
    session.watch = None;
    Reply::ok()
}

/// Any command but `EXEC`, `DISCARD`, `MULTI` and `QUIT` while in `MULTI`:
/// queued if it is a data command on the transaction's database, else
/// refused, and `EXEC` will abort.
pub(super) fn queue(session: &mut Session, name: &[u8], args: Vec<Bytes>) -> Reply {
    let refuse = |session: &mut Session, reply: Reply| {
        if let Some(m) = session.multi.as_mut() {
            m.failed = true;
        }
        reply
    };
    let Some(cmd) = Data::parse(name) else {
        let reply = match name {
            b"PING" | b"ECHO" | b"INFO" | b"SELECT" | b"WAIT" | b"DB.CREATE" | b"DB.LIST" => {
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
    let db = match cmd.database(&args, session) {
        Ok(db) => db.to_string(),
        Err(reply) => return refuse(session, reply),
    };
    let multi = session.multi.as_mut().expect("in MULTI");
    match &multi.db {
        Some(first) if *first != db => {
            let reply = Reply::Error(format!(
                "ERR a transaction acts on one database: this one already uses '{first}', not '{db}'"
            ));
            return refuse(session, reply);
        }
        _ => multi.db = Some(db),
    }
    multi.queued.push(args);
    Reply::Simple("QUEUED".into())
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
    let touched = || watch.as_ref().is_some_and(Watch::touched);
    let Some(db_name) = multi.db else {
        return match touched() {
            true => Reply::Array(None),
            false => Reply::Array(Some(vec![])),
        };
    };
    let commands: Vec<(Data, Vec<Bytes>)> = multi
        .queued
        .into_iter()
        .map(|args| {
            (
                Data::parse(&args[0].to_ascii_uppercase()).expect("checked when queued"),
                args,
            )
        })
        .collect();
    if !commands.iter().any(|(c, _)| c.writes()) {
        // Reads only: one consistent view, no transaction.
        let engine = match node.read_engine() {
            Ok(engine) => engine,
            Err(r) => return Reply::Error(format!("EXECABORT {}", node.refusal(r))),
        };
        let database = match engine.database(&db_name) {
            Ok(d) => d,
            Err(e) => return error_reply(&e),
        };
        return match data::read_consistent(
            node,
            session.protocol,
            &database,
            &commands,
            watch.as_ref(),
        ) {
            Some(replies) => Reply::Array(Some(replies)),
            None => Reply::Array(None),
        };
    }
    // A planned switchover holds writes until it is over.
    let _ticket = node.handover().enter_write().await;
    let db = match node.write_db() {
        Ok(db) => db,
        Err(r) => return Reply::Error(format!("EXECABORT {}", node.refusal(r))),
    };
    let commands: Vec<(Data, &[Bytes])> = commands.iter().map(|(c, a)| (*c, &a[..])).collect();
    let run = data::commit_run_watched(node, session, &db, &db_name, &commands, watch.as_ref());
    match run.await {
        Ok(replies) => Reply::Array(Some(replies)),
        Err(e) => e,
    }
}
