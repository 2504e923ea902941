//! RESP commands: Redis's names and reply shapes where Redis has the same
//! thing, and the `DB.*`/`REC.*` commands for records with non-unique keys.
//!
//! Every write runs as one engine transaction, committed locally without
//! waiting, then awaited (disk, then the sync quorum) before its reply:
//! the async wait keeps a worker thread free for other clients while this
//! one's commit gathers acknowledgements. `MULTI`/`EXEC` queue commands
//! and run them in one such transaction across every database they name,
//! so they take one LSN and replicate whole.
//!
//! **Where things are.** This file is the front door: [`execute`] checks
//! authentication and `MULTI` queuing, then sends a command by name to its
//! family; it also holds the reply helpers the families share (arity,
//! syntax errors, bulk strings, error counting). The families:
//!
//! - [`data`]: the commands on records and databases (`GET`, `SET`, `DEL`,
//!   `EXISTS`, `DBSIZE`, `REC.*`, `DB.*`), their table (arity, whether they
//!   write), how each runs alone, inside a transaction or as a read, and
//!   `commit_run`, the one way any write commits;
//! - [`transaction`]: `MULTI`, `EXEC`, `DISCARD`, `WATCH`, `UNWATCH` and
//!   the queue between;
//! - [`pipeline`]: a client's pipelined requests, with group commit of runs
//!   of writes;
//! - [`connection`]: `PING`, `ECHO`, `QUIT`, `AUTH`, `HELLO`, `SELECT`,
//!   `CLIENT`, `COMMAND`;
//! - [`admin`]: `WAIT`, `REPLICAOF`, `SHUTDOWN`, `DEBUG`, `VERIFY`, `SAVE`,
//!   `CONFIG` (`INFO` and `ROLE` are [`crate::info`]'s);
//! - [`sentinel`]: Redis Sentinel's discovery commands, for clients that
//!   find the primary through Sentinels;
//! - [`session`]: one connection's state;
//! - [`errors`]: engine and cluster errors as Redis's error codes.

mod admin;
mod connection;
mod data;
mod errors;
mod expiry;
mod introspection;
mod keyspace;
mod pipeline;
mod sentinel;
mod session;
mod strings;
mod table;
mod transaction;

use bytes::Bytes;
use std::sync::Arc;

use crate::resp::Reply;
use crate::{info, Node};
use data::Data;

pub(crate) use expiry::run_cycle as run_expiry_cycle;
pub(crate) use pipeline::execute_pipeline;
pub(crate) use session::Session;

/// Runs one request. The caller has checked that `args` is not empty.
async fn execute(node: &Arc<Node>, session: &mut Session, args: Vec<Bytes>) -> Reply {
    let name = args[0].to_ascii_uppercase();
    Node::count(&node.stats().commands_processed);
    session.last_command = Some(args[0].clone());
    if !session.authenticated && !matches!(&name[..], b"AUTH" | b"HELLO" | b"QUIT") {
        return Reply::Error("NOAUTH Authentication required.".into());
    }
    if session.multi.is_some() && !matches!(&name[..], b"EXEC" | b"DISCARD" | b"MULTI" | b"QUIT") {
        return transaction::queue(node, session, &name, args);
    }
    let reply = match &name[..] {
        // The connection.
        b"PING" => connection::ping(&args),
        b"ECHO" => connection::echo(&args),
        b"QUIT" => connection::quit(session),
        b"AUTH" => connection::auth(node, session, &args[1..]),
        b"HELLO" => connection::hello(node, session, &args[1..]),
        b"SELECT" => connection::select(node, session, &args),
        b"CLIENT" => connection::client(node, session, &args),
        b"COMMAND" => connection::command(&args),
        // Transactions.
        b"MULTI" => transaction::multi(session),
        b"DISCARD" => transaction::discard(session),
        b"EXEC" => transaction::exec(node, session).await,
        b"WATCH" => transaction::watch(node, session, &args),
        b"UNWATCH" => transaction::unwatch(session, &args),
        // The node.
        b"INFO" => info::info(node, &args[1..]),
        b"ROLE" => info::role(node),
        b"WAIT" => admin::wait(node, session, &args).await,
        b"REPLICAOF" | b"SLAVEOF" => admin::replicaof(node, &args).await,
        b"SHUTDOWN" => admin::shutdown(node, session),
        b"DEBUG" => admin::debug(node, &args),
        b"VERIFY" => admin::verify(node, &args).await,
        b"SAVE" => admin::save(node, &args).await,
        b"CONFIG" => admin::config(node, &args),
        b"TIME" => admin::time(),
        b"LASTSAVE" => admin::lastsave(node),
        b"BGSAVE" => admin::bgsave(node, &args),
        b"FLUSHALL" => data::flushall(node, session, &args).await,
        b"MEMORY" => introspection::memory(node, session, &args),
        b"OBJECT" => introspection::object(node, session, &args),
        b"LATENCY" => introspection::latency(&args),
        b"SENTINEL" => sentinel::sentinel(node, &args),
        b"FAILOVER" => admin::failover(node, &args).await,
        // Databases and records.
        b"DB.CREATE" => data::db_create(node, session, &args).await,
        b"DB.LIST" => data::db_list(node),
        _ => match Data::parse(&name) {
            Some(cmd) if !arity_ok(cmd.arity(), args.len()) => wrong_arity(&name),
            Some(cmd) => data::data_command(node, session, cmd, &args).await,
            None => unknown_or_unsupported(&name, &args),
        },
    };
    counted(node, reply)
}

/// Counts an error reply in `INFO stats`.
fn counted(node: &Node, reply: Reply) -> Reply {
    if let Reply::Error(e) = &reply {
        Node::count(&node.stats().errors);
        let code = e.split(' ').next().unwrap_or("ERR");
        let mut codes = node.stats().error_codes.lock().expect("error codes lock");
        match codes.get_mut(code) {
            Some(n) => *n += 1,
            // Bounded: codes are the server's own words, a few dozen.
            None => {
                codes.insert(code.to_string(), 1);
            }
        }
    }
    reply
}

/// Whether `args` arguments (the name included) fit `arity`, in Redis's
/// convention: positive is exact, negative is a minimum.
fn arity_ok(arity: i32, args: usize) -> bool {
    match arity >= 0 {
        true => args == arity as usize,
        false => args >= arity.unsigned_abs() as usize,
    }
}

fn wrong_arity(name: &[u8]) -> Reply {
    Reply::Error(format!(
        "ERR wrong number of arguments for '{}' command",
        String::from_utf8_lossy(name).to_lowercase()
    ))
}

/// A command hotblock does not have: for Redis's lists, hashes, sets and
/// the like, an error that says so; else Redis's unknown-command error.
fn unknown_or_unsupported(name: &[u8], args: &[Bytes]) -> Reply {
    match introspection::unsupported(name) {
        Some(family) => Reply::Error(format!(
            "ERR hotblock stores strings and records: {family} ('{}') are not supported",
            String::from_utf8_lossy(&args[0])
        )),
        None => unknown(args),
    }
}

fn unknown(args: &[Bytes]) -> Reply {
    let mut message = format!(
        "ERR unknown command '{}', with args beginning with:",
        String::from_utf8_lossy(&args[0])
    );
    for arg in args[1..].iter().take(4) {
        message.push_str(&format!(
            " '{}'",
            String::from_utf8_lossy(&arg[..arg.len().min(64)])
        ));
    }
    Reply::Error(message)
}

fn syntax_error() -> Reply {
    Reply::Error("ERR syntax error".into())
}

fn bulk(bytes: &[u8]) -> Reply {
    Reply::Bulk(Some(Bytes::copy_from_slice(bytes)))
}

fn text(s: impl Into<String>) -> Reply {
    Reply::Bulk(Some(Bytes::from(s.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arity_follows_redis_convention() {
        assert!(arity_ok(2, 2) && !arity_ok(2, 3));
        assert!(arity_ok(-3, 3) && arity_ok(-3, 5) && !arity_ok(-3, 2));
    }
}
