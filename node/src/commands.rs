//! RESP commands: Redis's names and reply shapes where Redis has the same
//! thing, and the `DB.*`/`REC.*` commands for records with non-unique keys.
//!
//! Every write runs as one engine transaction on one database, committed
//! locally without waiting, then awaited (disk, then the sync quorum)
//! before its reply: the async wait keeps a worker thread free for other
//! clients while this one's commit gathers acknowledgements.
//! `MULTI`/`EXEC` queue commands and run them in one such transaction, so
//! they take one LSN and replicate whole; a transaction writes one
//! database, so queuing a command on a second one aborts it.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;

use crate::resp::Reply;
use hotblock_core::{DatabaseOptions, Error, Lsn, Txn};

use crate::{info, Node, DEFAULT_DATABASE};
use hotblock_primary::Db;
use hotblock_primary::WriteError;

/// One client's connection state.
#[derive(Debug)]
pub(crate) struct Session {
    pub id: u64,
    pub authenticated: bool,
    /// The database `SET`, `GET`, `DEL`, `EXISTS` and `DBSIZE` act on.
    pub db: String,
    pub multi: Option<Multi>,
    /// The LSN of this client's last write, which `WAIT` waits for.
    pub last_write: Lsn,
    pub name: Option<String>,
    /// Close after this reply (`QUIT`, `SHUTDOWN`, a failed `AUTH` flood).
    pub close: bool,
}

impl Session {
    pub fn new(id: u64, authenticated: bool) -> Session {
        Session {
            id,
            authenticated,
            db: DEFAULT_DATABASE.to_string(),
            multi: None,
            last_write: Lsn::ZERO,
            name: None,
            close: false,
        }
    }
}

/// Commands queued by `MULTI`.
#[derive(Debug, Default)]
pub(crate) struct Multi {
    queued: Vec<Vec<Bytes>>,
    /// The one database the transaction touches, once a command named it.
    db: Option<String>,
    /// A command failed to queue: `EXEC` aborts.
    failed: bool,
}

/// The commands a transaction can hold, with their arity (Redis's
/// convention: positive is exact, negative is a minimum, both counting the
/// name), and whether they write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    Get,
    Set,
    Del,
    Exists,
    DbSize,
    RecGet,
    RecPut,
    RecDel,
    RecFind,
    RecCount,
}

impl Data {
    fn parse(name: &[u8]) -> Option<Data> {
        Some(match name {
            b"GET" => Data::Get,
            b"SET" => Data::Set,
            b"DEL" => Data::Del,
            b"EXISTS" => Data::Exists,
            b"DBSIZE" => Data::DbSize,
            b"REC.GET" => Data::RecGet,
            b"REC.PUT" => Data::RecPut,
            b"REC.DEL" => Data::RecDel,
            b"REC.FIND" => Data::RecFind,
            b"REC.COUNT" => Data::RecCount,
            _ => return None,
        })
    }

    fn arity(self) -> i32 {
        match self {
            Data::Get => 2,
            Data::Set => -3,
            Data::Del | Data::Exists => -2,
            Data::DbSize => 1,
            Data::RecGet | Data::RecDel => 3,
            Data::RecPut => -4,
            Data::RecFind => -4,
            Data::RecCount => 2,
        }
    }

    fn writes(self) -> bool {
        matches!(self, Data::Set | Data::Del | Data::RecPut | Data::RecDel)
    }

    /// The database the command acts on.
    fn database<'a>(self, args: &'a [Bytes], session: &'a Session) -> Result<&'a str, Reply> {
        match self {
            Data::Get | Data::Set | Data::Del | Data::Exists | Data::DbSize => Ok(&session.db),
            _ => std::str::from_utf8(&args[1])
                .map_err(|_| Reply::Error("ERR database names are UTF-8".into())),
        }
    }
}

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

fn syntax_error() -> Reply {
    Reply::Error("ERR syntax error".into())
}

fn bulk(bytes: &[u8]) -> Reply {
    Reply::Bulk(Some(Bytes::copy_from_slice(bytes)))
}

fn text(s: impl Into<String>) -> Reply {
    Reply::Bulk(Some(Bytes::from(s.into())))
}

/// The RESP error for an engine error. Where Redis has the same condition,
/// its error code (`OOM`, `READONLY`, `NOREPLICAS`) so clients react alike.
pub(crate) fn error_reply(e: &Error) -> Reply {
    Reply::Error(match e {
        Error::MemoryLimit { .. } => {
            format!("OOM command not allowed when used memory > 'maxmemory' ({e})")
        }
        Error::ReadOnly => "READONLY You can't write against a read only replica.".into(),
        Error::Io(_) => format!("MISCONF {e}"),
        _ => format!("ERR {e}"),
    })
}

/// The RESP error for a failed write: the engine's, or a cluster state
/// with Redis's code for it.
pub(crate) fn write_error_reply(e: &WriteError) -> Reply {
    Reply::Error(match e {
        WriteError::Engine(e) => return error_reply(e),
        WriteError::Fenced => format!("READONLY {e}"),
        WriteError::TooFewSecondaries => "NOREPLICAS Not enough good replicas to write.".into(),
        WriteError::OutcomeUnknown { .. } => format!("TIMEOUT {e}"),
        WriteError::Persist(_) => format!("MISCONF {e}"),
        _ => format!("ERR {e}"),
    })
}

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
            execute(node, session, args).await.encode(out);
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
                counted(node, data_command(node, session, cmd, &args).await).encode(out);
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
            reply.encode(out);
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
    Some((cmd, cmd.database(args, session).ok()?.to_string()))
}

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
    let replies = match node.write_db() {
        Ok(db) => commit_run(node, session, &db, db_name, &commands, false).await,
        Err(r) => Err(Reply::Error(r.message().into())),
    };
    let replies = replies.unwrap_or_else(|e| vec![e; run.len()]);
    replies.into_iter().map(|r| counted(node, r)).collect()
}

/// Counts an error reply in `INFO stats`.
fn counted(node: &Node, reply: Reply) -> Reply {
    if let Reply::Error(_) = reply {
        Node::count(&node.stats().errors);
    }
    reply
}

/// Runs `commands` in one transaction on `db_name`, commits it, and waits
/// until it is as durable and replicated as configured (`Db::wait_committed`)
/// before anyone may be told. Returns each command's reply, or the one
/// error that stands for all of them (none is known committed). With
/// `lone`, a single command that fails commits nothing.
async fn commit_run(
    node: &Node,
    session: &mut Session,
    db: &Db,
    db_name: &str,
    commands: &[(Data, &[Bytes])],
    lone: bool,
) -> Result<Vec<Reply>, Reply> {
    let (replies, lsn) = {
        let mut txn = db.begin(db_name).map_err(|e| write_error_reply(&e))?;
        let replies: Vec<Reply> = commands
            .iter()
            .map(|(cmd, args)| in_txn(node, &mut txn, *cmd, args))
            .collect();
        if lone && matches!(replies[..], [Reply::Error(_)]) {
            return Ok(replies);
        }
        let committed = txn.commit_local().map_err(|e| write_error_reply(&e))?;
        (replies, committed.map(|c| c.lsn))
    };
    if let Some(lsn) = lsn {
        session.last_write = lsn;
        db.wait_committed(lsn)
            .await
            .map_err(|e| write_error_reply(&e))?;
    }
    Ok(replies)
}

/// Runs one request. The caller has checked that `args` is not empty.
pub(crate) async fn execute(node: &Arc<Node>, session: &mut Session, args: Vec<Bytes>) -> Reply {
    let name = args[0].to_ascii_uppercase();
    Node::count(&node.stats().commands_processed);
    if !session.authenticated && !matches!(&name[..], b"AUTH" | b"HELLO" | b"QUIT") {
        return Reply::Error("NOAUTH Authentication required.".into());
    }
    if session.multi.is_some() && !matches!(&name[..], b"EXEC" | b"DISCARD" | b"MULTI" | b"QUIT") {
        return queue(session, &name, args);
    }
    let reply = match &name[..] {
        b"PING" => match args.len() {
            1 => Reply::Simple("PONG".into()),
            2 => Reply::Bulk(Some(args[1].clone())),
            _ => wrong_arity(&name),
        },
        b"ECHO" => match args.len() {
            2 => Reply::Bulk(Some(args[1].clone())),
            _ => wrong_arity(&name),
        },
        b"QUIT" => {
            session.close = true;
            Reply::ok()
        }
        b"AUTH" => auth(node, session, &args[1..]),
        b"HELLO" => hello(node, session, &args[1..]),
        b"SELECT" => select(node, session, &args),
        b"MULTI" => match session.multi {
            Some(_) => Reply::Error("ERR MULTI calls can not be nested".into()),
            None => {
                session.multi = Some(Multi::default());
                Reply::ok()
            }
        },
        b"DISCARD" => match session.multi.take() {
            Some(_) => Reply::ok(),
            None => Reply::Error("ERR DISCARD without MULTI".into()),
        },
        b"EXEC" => match session.multi.take() {
            Some(multi) => exec(node, session, multi).await,
            None => Reply::Error("ERR EXEC without MULTI".into()),
        },
        b"INFO" => info::info(node, args.get(1)),
        b"ROLE" => info::role(node),
        b"WAIT" => wait(node, session, &args).await,
        b"REPLICAOF" | b"SLAVEOF" => replicaof(node, &args).await,
        b"SHUTDOWN" => {
            tracing::info!(client = session.id, "SHUTDOWN asked by a client");
            node.request_shutdown();
            session.close = true;
            Reply::ok()
        }
        b"DEBUG" => debug(node, &args),
        b"VERIFY" => verify(node, &args).await,
        b"SAVE" => save(node, &args).await,
        b"COMMAND" => command(&args),
        b"CONFIG" => config(node, &args),
        b"CLIENT" => client(session, &args),
        b"DB.CREATE" => db_create(node, session, &args).await,
        b"DB.LIST" => match node.read_engine() {
            Ok(engine) => Reply::Array(Some(
                engine.databases().iter().map(|d| text(d.name())).collect(),
            )),
            Err(r) => Reply::Error(r.message().into()),
        },
        _ => match Data::parse(&name) {
            Some(cmd) if !arity_ok(cmd.arity(), args.len()) => wrong_arity(&name),
            Some(cmd) => data_command(node, session, cmd, &args).await,
            None => unknown(&args),
        },
    };
    counted(node, reply)
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

fn auth(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    // `AUTH password` or `AUTH default password` (there is one user).
    let password = match args {
        [password] => password,
        [user, password] if &user[..] == b"default" => password,
        [_, _] => return wrong_pass(),
        _ => return wrong_arity(b"auth"),
    };
    match &node.options().requirepass {
        None => Reply::Error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into(),
        ),
        Some(expected) if constant_time_eq(expected.as_bytes(), password) => {
            session.authenticated = true;
            Reply::ok()
        }
        Some(_) => {
            tracing::warn!(client = session.id, "wrong password");
            wrong_pass()
        }
    }
}

fn wrong_pass() -> Reply {
    Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// Compares without an early exit, so timing does not tell how much of a
/// guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`. Only RESP2 is
/// spoken; `HELLO 3` gets Redis's `-NOPROTO`, and clients fall back.
fn hello(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    let mut rest = args;
    if let [version, tail @ ..] = rest {
        match &version[..] {
            b"2" => {}
            b"3" => return Reply::Error("NOPROTO this server speaks RESP2 only".into()),
            _ => return Reply::Error("NOPROTO unsupported protocol version".into()),
        }
        rest = tail;
    }
    while !rest.is_empty() {
        match (&rest[0].to_ascii_uppercase()[..], rest) {
            (b"AUTH", [_, user, password, tail @ ..]) => {
                if let Reply::Error(e) = auth(node, session, &[user.clone(), password.clone()]) {
                    return Reply::Error(e);
                }
                rest = tail;
            }
            (b"SETNAME", [_, name, tail @ ..]) => {
                session.name = Some(String::from_utf8_lossy(name).into_owned());
                rest = tail;
            }
            _ => return syntax_error(),
        }
    }
    if !session.authenticated {
        return Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
    }
    let role = match node.role_name() {
        "primary" => "master",
        _ => "replica",
    };
    Reply::Array(Some(vec![
        text("server"),
        text("hotblock"),
        text("version"),
        text(env!("CARGO_PKG_VERSION")),
        text("proto"),
        Reply::Integer(2),
        text("id"),
        Reply::Integer(session.id as i64),
        text("mode"),
        text("standalone"),
        text("role"),
        text(role),
        text("modules"),
        Reply::Array(Some(vec![])),
    ]))
}

/// `SELECT db`: databases have names here; `SELECT 0` is the default one.
fn select(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    if args.len() != 2 {
        return wrong_arity(b"select");
    }
    let Ok(name) = std::str::from_utf8(&args[1]) else {
        return Reply::Error("ERR database names are UTF-8".into());
    };
    let engine = match node.read_engine() {
        Ok(engine) => engine,
        Err(r) => return Reply::Error(r.message().into()),
    };
    match engine.database(name) {
        Ok(_) => {
            session.db = name.to_string();
            Reply::ok()
        }
        Err(_) => Reply::Error(format!("ERR no database '{name}' (DB.LIST shows them)")),
    }
}

fn queue(session: &mut Session, name: &[u8], args: Vec<Bytes>) -> Reply {
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
            _ => unknown(&args),
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

async fn exec(node: &Node, session: &mut Session, multi: Multi) -> Reply {
    if multi.failed {
        return Reply::Error("EXECABORT Transaction discarded because of previous errors.".into());
    }
    let Some(db_name) = multi.db else {
        return Reply::Array(Some(vec![]));
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
            Err(r) => return Reply::Error(format!("EXECABORT {}", r.message())),
        };
        let database = match engine.database(&db_name) {
            Ok(d) => d,
            Err(e) => return error_reply(&e),
        };
        let view = database.read();
        let replies = commands
            .iter()
            .map(|(cmd, args)| read(node, &View::Committed(&view, database.schema()), *cmd, args))
            .collect();
        return Reply::Array(Some(replies));
    }
    let db = match node.write_db() {
        Ok(db) => db,
        Err(r) => return Reply::Error(format!("EXECABORT {}", r.message())),
    };
    let commands: Vec<(Data, &[Bytes])> = commands.iter().map(|(c, a)| (*c, &a[..])).collect();
    match commit_run(node, session, &db, &db_name, &commands, false).await {
        Ok(replies) => Reply::Array(Some(replies)),
        Err(e) => e,
    }
}

async fn data_command(node: &Node, session: &mut Session, cmd: Data, args: &[Bytes]) -> Reply {
    let db_name = match cmd.database(args, session) {
        Ok(db) => db.to_string(),
        Err(reply) => return reply,
    };
    if !cmd.writes() {
        let engine = match node.read_engine() {
            Ok(engine) => engine,
            Err(r) => return Reply::Error(r.message().into()),
        };
        return match engine.database(&db_name) {
            Ok(database) => read(node, &View::Latest(&database), cmd, args),
            Err(e) => error_reply(&e),
        };
    }
    let db = match node.write_db() {
        Ok(db) => db,
        Err(r) => return Reply::Error(r.message().into()),
    };
    match commit_run(node, session, &db, &db_name, &[(cmd, args)], true).await {
        Ok(mut replies) => replies.pop().expect("one command, one reply"),
        Err(e) => e,
    }
}

/// Where a read looks.
enum View<'a> {
    /// The latest committed state, each command on its own.
    Latest(&'a hotblock_core::Database),
    /// One view across a transaction's reads.
    Committed(&'a hotblock_core::ReadView<'a>, &'a hotblock_core::Schema),
}

fn read(node: &Node, view: &View<'_>, cmd: Data, args: &[Bytes]) -> Reply {
    let result = match (view, cmd) {
        (View::Latest(db), Data::Get) => db
            .with_record(&args[1], |r| bulk(r.payload()))
            .map(|r| hit(node, r)),
        (View::Committed(v, _), Data::Get) => v
            .get(&args[1])
            .map(|r| hit(node, r.map(|r| bulk(&r.payload)))),
        (View::Latest(db), Data::Exists) => {
            let view = db.read();
            count_keys(&args[1..], |k| view.contains(k))
        }
        (View::Committed(v, _), Data::Exists) => count_keys(&args[1..], |k| v.contains(k)),
        (View::Latest(db), Data::DbSize | Data::RecCount) => Ok(Reply::Integer(db.count() as i64)),
        (View::Committed(v, _), Data::DbSize | Data::RecCount) => {
            Ok(Reply::Integer(v.count() as i64))
        }
        (View::Latest(db), Data::RecGet) => db
            .get(&args[2])
            .map(|r| hit(node, r.map(|r| record_reply(db.schema(), &r)))),
        (View::Committed(v, schema), Data::RecGet) => v
            .get(&args[2])
            .map(|r| hit(node, r.map(|r| record_reply(schema, &r)))),
        (View::Latest(db), Data::RecFind) => match find_args(args) {
            Ok((index, value, limit)) => db.find(index, value, limit).map(keys_reply),
            Err(reply) => return reply,
        },
        (View::Committed(v, _), Data::RecFind) => match find_args(args) {
            Ok((index, value, limit)) => v.find(index, value, limit).map(keys_reply),
            Err(reply) => return reply,
        },
        (_, _) => unreachable!("only reads come here"),
    };
    result.unwrap_or_else(|e| error_reply(&e))
}

fn hit(node: &Node, reply: Option<Reply>) -> Reply {
    match reply {
        Some(reply) => {
            Node::count(&node.stats().keyspace_hits);
            reply
        }
        None => {
            Node::count(&node.stats().keyspace_misses);
            Reply::Bulk(None)
        }
    }
}

fn count_keys(
    keys: &[Bytes],
    mut contains: impl FnMut(&[u8]) -> Result<bool, Error>,
) -> Result<Reply, Error> {
    let mut n = 0;
    for k in keys {
        n += contains(k)? as i64;
    }
    Ok(Reply::Integer(n))
}

fn record_reply(schema: &hotblock_core::Schema, record: &hotblock_core::Record) -> Reply {
    let mut items = vec![bulk(&record.payload)];
    for (index, value) in schema.indexes.iter().zip(&record.values) {
        items.push(text(index.clone()));
        items.push(Reply::Bulk(value.as_deref().map(Bytes::copy_from_slice)));
    }
    Reply::Array(Some(items))
}

fn keys_reply(keys: Vec<Vec<u8>>) -> Reply {
    Reply::Array(Some(
        keys.into_iter()
            .map(|k| Reply::Bulk(Some(k.into())))
            .collect(),
    ))
}

/// `REC.FIND db index value [LIMIT n]`.
fn find_args(args: &[Bytes]) -> Result<(&str, &[u8], Option<usize>), Reply> {
    let index = std::str::from_utf8(&args[2]).map_err(|_| syntax_error())?;
    let limit = match &args[4..] {
        [] => None,
        [word, n] if word.eq_ignore_ascii_case(b"LIMIT") => Some(
            std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| Reply::Error("ERR LIMIT is not a non-negative integer".into()))?,
        ),
        _ => return Err(syntax_error()),
    };
    Ok((index, &args[3], limit))
}

/// Runs one command inside an open transaction.
fn in_txn(node: &Node, txn: &mut Txn, cmd: Data, args: &[Bytes]) -> Reply {
    let result = match cmd {
        Data::Get => txn
            .get(&args[1])
            .map(|r| hit(node, r.map(|r| bulk(&r.payload)))),
        Data::Exists => count_keys(&args[1..], |k| txn.contains(k)),
        Data::DbSize | Data::RecCount => txn.count().map(|n| Reply::Integer(n as i64)),
        Data::RecGet => {
            let schema = txn.database().schema().clone();
            txn.get(&args[2])
                .map(|r| hit(node, r.map(|r| record_reply(&schema, &r))))
        }
        Data::RecFind => match find_args(args) {
            Ok((index, value, limit)) => txn.find(index, value, limit).map(keys_reply),
            Err(reply) => return reply,
        },
        Data::Set => set(txn, args),
        Data::Del => {
            let mut n = 0;
            let mut result = Ok(());
            for k in &args[1..] {
                match txn.delete(k) {
                    Ok(existed) => n += existed as i64,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            result.map(|()| Reply::Integer(n))
        }
        Data::RecDel => txn
            .delete(&args[2])
            .map(|existed| Reply::Integer(existed as i64)),
        Data::RecPut => rec_put(txn, args),
    };
    result.unwrap_or_else(|e| error_reply(&e))
}

/// `SET key value [NX|XX] [GET]`; expiry options are refused (records do
/// not expire).
fn set(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let (mut nx, mut xx, mut get) = (false, false, false);
    for option in &args[3..] {
        match &option.to_ascii_uppercase()[..] {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GET" => get = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" | b"KEEPTTL" => {
                return Ok(Reply::Error(
                    "ERR expiry is not supported: records do not expire".into(),
                ))
            }
            _ => return Ok(syntax_error()),
        }
    }
    if nx && xx {
        return Ok(syntax_error());
    }
    let old = match get {
        true => txn.get(&args[1])?.map(|r| r.payload),
        false => None,
    };
    let exists = match get {
        true => old.is_some(),
        false => (nx || xx) && txn.contains(&args[1])?,
    };
    if (nx && exists) || (xx && !exists) {
        return Ok(match get {
            true => Reply::Bulk(old.map(Bytes::from)),
            false => Reply::Bulk(None),
        });
    }
    let values = vec![None; txn.database().schema().indexes.len()];
    txn.put(&args[1], &values, &args[2])?;
    Ok(match get {
        true => Reply::Bulk(old.map(Bytes::from)),
        false => Reply::ok(),
    })
}

/// `REC.PUT db ukey payload [index value ...]`; indexes not named get no
/// value.
fn rec_put(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let pairs = &args[4..];
    if pairs.len() % 2 != 0 {
        return Ok(Reply::Error(
            "ERR REC.PUT takes index value pairs after the payload".into(),
        ));
    }
    let schema = txn.database().schema().clone();
    let mut values: Vec<Option<&[u8]>> = vec![None; schema.indexes.len()];
    for pair in pairs.chunks_exact(2) {
        let index = std::str::from_utf8(&pair[0]).unwrap_or("");
        let i = schema.index_position(index)?;
        values[i] = Some(&pair[1]);
    }
    txn.put(&args[2], &values, &args[3])?;
    Ok(Reply::ok())
}

/// `DB.CREATE db [index ...]`.
async fn db_create(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    if args.len() < 2 {
        return wrong_arity(b"db.create");
    }
    let names: Result<Vec<&str>, _> = args[1..].iter().map(|a| std::str::from_utf8(a)).collect();
    let Ok(names) = names else {
        return Reply::Error("ERR names are UTF-8".into());
    };
    let db: Db = match node.write_db() {
        Ok(db) => db,
        Err(r) => return Reply::Error(r.message().into()),
    };
    let mut options = DatabaseOptions::with_indexes(names[1..].iter().copied());
    if let Some(size) = node.options().block_size {
        options = options.block_size(size);
    }
    let lsn = match db.create_database(names[0], options) {
        Ok(lsn) => lsn,
        Err(e) => return write_error_reply(&e),
    };
    session.last_write = lsn;
    match db.wait_committed(lsn).await {
        Ok(()) => Reply::ok(),
        Err(e) => write_error_reply(&e),
    }
}

/// `WAIT numreplicas timeout`: how many secondaries acknowledged this
/// client's last write, waiting up to `timeout` ms (0: no limit) for
/// `numreplicas` of them.
async fn wait(node: &Node, session: &Session, args: &[Bytes]) -> Reply {
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

async fn replicaof(node: &Arc<Node>, args: &[Bytes]) -> Reply {
    if !(3..=4).contains(&args.len()) {
        return wrong_arity(&args[0]);
    }
    let no_one = args[1].eq_ignore_ascii_case(b"NO") && args[2].eq_ignore_ascii_case(b"ONE");
    if no_one && args.len() != 3 {
        return wrong_arity(&args[0]);
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
async fn verify(node: &Node, args: &[Bytes]) -> Reply {
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
async fn save(node: &Node, args: &[Bytes]) -> Reply {
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
fn debug(node: &Node, args: &[Bytes]) -> Reply {
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
            return Reply::Error(super::Reject::Promoting.message().into());
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
        return Reply::Error(super::Reject::Promoting.message().into());
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

/// Enough of `COMMAND` for clients that ask at connect (`redis-cli` asks
/// for `COMMAND DOCS`): no command table is published.
fn command(args: &[Bytes]) -> Reply {
    match args.get(1).map(|a| a.to_ascii_uppercase()) {
        Some(sub) if &sub[..] == b"COUNT" => Reply::Integer(0),
        _ => Reply::Array(Some(vec![])),
    }
}

/// `CONFIG GET pattern`: the parameters clients and `redis-benchmark` ask
/// about. `CONFIG SET` is refused: settings are flags and the config file.
fn config(node: &Node, args: &[Bytes]) -> Reply {
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
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (tail.is_empty()
                    || (0..=name.len() - head.len())
                        .any(|i| glob_match(tail, &name[head.len() + i..])))
        }
    }
}

fn client(session: &mut Session, args: &[Bytes]) -> Reply {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    match (&sub[..], args.len()) {
        (b"SETNAME", 3) => {
            session.name = Some(String::from_utf8_lossy(&args[2]).into_owned());
            Reply::ok()
        }
        (b"GETNAME", 2) => Reply::Bulk(session.name.clone().map(Bytes::from)),
        (b"ID", 2) => Reply::Integer(session.id as i64),
        (b"SETINFO", 4) => Reply::ok(),
        _ => Reply::Error("ERR CLIENT supports SETNAME, GETNAME, ID and SETINFO".into()),
    }
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
    fn arity_follows_redis_convention() {
        assert!(arity_ok(2, 2) && !arity_ok(2, 3));
        assert!(arity_ok(-3, 3) && arity_ok(-3, 5) && !arity_ok(-3, 2));
    }

    #[test]
    fn passwords_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
    }
}
