//! A client's pipelined requests: run in order within a reply budget, with
//! group commit — a run of consecutive data commands on one database that
//! writes commits as one transaction. Its own file because it is the
//! server's entry point and the only place requests are looked at
//! together rather than one by one.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

use super::data::{self, Data};
use super::session::Session;
use super::{arity_ok, counted, execute};
use crate::resp::Reply;
use crate::Node;

/// Runs a client's pipelined requests, in order, encoding their replies
/// into `out`, and returns the requests it did not run: once `out` holds
/// `budget` bytes it stops, so that replies are written out before more
/// run and a batch of large replies holds at most about `budget` bytes
/// (plus one reply). A run of two or more consecutive data commands on one
/// database that writes commits as one transaction: one LSN, one log
/// append, one wait for the sync quorum, instead of one each. That is group
/// commit within a pipeline; each command still sees the ones before it,
/// and a command that fails replies with its error while the others
/// commit, as they would one by one. If the commit or its wait fails, every
/// command of the run gets that error (none is known to be committed).
pub(crate) async fn execute_pipeline(
    node: &Arc<Node>,
    session: &mut Session,
    requests: Vec<Vec<Bytes>>,
    out: &mut BytesMut,
    budget: usize,
) -> VecDeque<Vec<Bytes>> {
    let mut requests: VecDeque<Vec<Bytes>> = requests.into();
    // At least one request runs per call, whatever the budget, so that a
    // batch always moves on.
    let mut ran = false;
    while !session.close && (!ran || out.len() < budget) {
        let Some(args) = requests.pop_front() else {
            break;
        };
        ran = true;
        let Some((cmd, db)) = groupable(session, &args) else {
            let reply = execute(node, session, args).await;
            reply.encode(out, session.protocol);
            continue;
        };
        let mut run = vec![(cmd, args)];
        while let Some((c, d)) = requests.front().and_then(|next| groupable(session, next)) {
            if d != db {
                break;
            }
            run.push((c, requests.pop_front().expect("peeked")));
        }
        if run.len() == 1 || !run.iter().any(|(c, _)| c.writes()) {
            // Reads one by one, each within the budget.
            let mut run = run.into_iter();
            for (cmd, args) in run.by_ref() {
                Node::count(&node.stats().commands_processed);
                let reply = data::data_command(node, session, cmd, &args).await;
                counted(node, reply).encode(out, session.protocol);
                if out.len() >= budget {
                    break;
                }
            }
            for (i, (_, args)) in run.enumerate() {
                requests.insert(i, args);
            }
            continue;
        }
        for reply in write_run(node, session, &db, run).await {
            reply.encode(out, session.protocol);
        }
    }
    if session.close {
        requests.clear();
    }
    requests
}

/// A data command that may join a pipelined run, with its database.
fn groupable(session: &Session, args: &[Bytes]) -> Option<(Data, String)> {
    if !session.authenticated || session.multi.is_some() {
        return None;
    }
    let cmd = Data::parse(&args[0].to_ascii_uppercase())?;
    if !arity_ok(cmd.arity(), args.len()) {
        return None;
    }
    // `SET ... GET` replies with a whole old value: run alone, so that the
    // replies of a write run stay small (see `execute_pipeline`'s budget).
    if cmd == Data::Set && args[3..].iter().any(|a| a.eq_ignore_ascii_case(b"GET")) {
        return None;
    }
    if !cmd.small_reply() {
        return None;
    }
    Some((cmd, cmd.database(args, &session.db).ok()?.to_string()))
}

/// Commits a run of writes (and the reads among them) as one transaction.
async fn write_run(
    node: &Node,
    session: &mut Session,
    db_name: &str,
    run: Vec<(Data, Vec<Bytes>)>,
) -> Vec<Reply> {
    for _ in &run {
        Node::count(&node.stats().commands_processed);
    }
    let commands: Vec<(Data, &[Bytes])> = run.iter().map(|(c, a)| (*c, &a[..])).collect();
    let _ticket = node.handover().enter_write().await;
    let replies = match node.write_db() {
        Ok(db) => data::commit_run(node, session, &db, db_name, &commands, false).await,
        Err(r) => Err(Reply::Error(node.refusal(r))),
    };
    let replies = replies.unwrap_or_else(|e| vec![e; run.len()]);
    replies.into_iter().map(|r| counted(node, r)).collect()
}
