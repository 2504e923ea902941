//! The data commands: `GET`, `SET`, `DEL`, `EXISTS` and `DBSIZE` on the
//! session's database, `REC.GET`, `REC.PUT`, `REC.DEL`, `REC.FIND` and
//! `REC.COUNT` on records with non-unique keys, and `DB.CREATE`/`DB.LIST`.
//! Everything about one of them is here: its arity and whether it writes
//! (the [`Data`] table), how it reads the latest state or a transaction's
//! view, and how it applies inside an engine transaction ([`in_txn`]).
//! [`commit_run`] is the one way a write commits, whether alone, from
//! `EXEC` or as a pipelined run.

use bytes::Bytes;

use hotblock_core::{DatabaseOptions, Error, Txn};
use hotblock_primary::Db;

use super::errors::{error_reply, write_error_reply};
use super::session::Session;
use super::{bulk, syntax_error, text, wrong_arity};
use crate::resp::Reply;
use crate::Node;

/// The commands a transaction can hold, with their arity (Redis's
/// convention: positive is exact, negative is a minimum, both counting the
/// name), and whether they write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Data {
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
    pub(super) fn parse(name: &[u8]) -> Option<Data> {
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

    pub(super) fn arity(self) -> i32 {
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

    pub(super) fn writes(self) -> bool {
        matches!(self, Data::Set | Data::Del | Data::RecPut | Data::RecDel)
    }

    /// The database the command acts on.
    pub(super) fn database<'a>(
        self,
        args: &'a [Bytes],
        session: &'a Session,
    ) -> Result<&'a str, Reply> {
        match self {
            Data::Get | Data::Set | Data::Del | Data::Exists | Data::DbSize => Ok(&session.db),
            _ => std::str::from_utf8(&args[1])
                .map_err(|_| Reply::Error("ERR database names are UTF-8".into())),
        }
    }
}

/// One data command on its own: a read of the latest state, or a write
/// committed alone. The caller has checked its arity.
pub(super) async fn data_command(
    node: &Node,
    session: &mut Session,
    cmd: Data,
    args: &[Bytes],
) -> Reply {
    let db_name = match cmd.database(args, session) {
        Ok(db) => db.to_string(),
        Err(reply) => return reply,
    };
    if !cmd.writes() {
        let engine = match node.read_engine() {
            Ok(engine) => engine,
            Err(r) => return Reply::Error(node.refusal(r)),
        };
        return match engine.database(&db_name) {
            Ok(database) => read(node, &View::Latest(&database), cmd, args),
            Err(e) => error_reply(&e),
        };
    }
    // A planned switchover holds writes until it is over.
    let _ticket = node.handover().enter_write().await;
    let db = match node.write_db() {
        Ok(db) => db,
        Err(r) => return Reply::Error(node.refusal(r)),
    };
    match commit_run(node, session, &db, &db_name, &[(cmd, args)], true).await {
        Ok(mut replies) => replies.pop().expect("one command, one reply"),
        Err(e) => e,
    }
}

/// Runs `commands` in one transaction on `db_name`, commits it, and waits
/// until it is as durable and replicated as configured (`Db::wait_committed`)
/// before anyone may be told. Returns each command's reply, or the one
/// error that stands for all of them (none is known committed). With
/// `lone`, a single command that fails commits nothing.
pub(super) async fn commit_run(
    node: &Node,
    session: &mut Session,
    db: &Db,
    db_name: &str,
    commands: &[(Data, &[Bytes])],
    lone: bool,
) -> Result<Vec<Reply>, Reply> {
    // The transaction (and the lock it holds) lives in this block only:
    // no await may hold it.
    let (replies, lsn) = {
        // Room in the commit pipe is waited for on the task, not on this
        // worker's thread.
        let mut txn = db
            .begin_async(db_name)
            .await
            .map_err(|e| write_error_reply(&e))?;
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

/// Reads only (an `EXEC` whose commands all read): their replies, all from
/// one consistent view of `database`, with no transaction.
pub(super) fn read_consistent(
    node: &Node,
    database: &hotblock_core::Database,
    commands: &[(Data, Vec<Bytes>)],
) -> Vec<Reply> {
    let view = database.read();
    commands
        .iter()
        .map(|(cmd, args)| read(node, &View::Committed(&view, database.schema()), *cmd, args))
        .collect()
}

/// Where a read looks.
enum View<'a> {
    /// The latest committed state, each command on its own.
    Latest(&'a hotblock_core::Database),
    /// One view across a transaction's reads.
    Committed(&'a hotblock_core::ReadView<'a>, &'a hotblock_core::Schema),
}

/// A read command outside a transaction.
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
        Data::Del => del(txn, &args[1..]),
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

/// `DEL key [key ...]`: how many of `keys` existed.
fn del(txn: &mut Txn, keys: &[Bytes]) -> Result<Reply, Error> {
    let mut n = 0;
    let mut result = Ok(());
    for k in keys {
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

/// Counts a read's hit or miss in `INFO stats`; a miss is a nil reply.
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

/// `EXISTS`: how many of `keys` are there.
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

/// `REC.GET`'s reply: the payload, then each index's name and value.
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

/// `DB.CREATE db [index ...]`.
pub(super) async fn db_create(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    if args.len() < 2 {
        return wrong_arity(b"db.create");
    }
    let names: Result<Vec<&str>, _> = args[1..].iter().map(|a| std::str::from_utf8(a)).collect();
    let Ok(names) = names else {
        return Reply::Error("ERR names are UTF-8".into());
    };
    let _ticket = node.handover().enter_write().await;
    let db: Db = match node.write_db() {
        Ok(db) => db,
        Err(r) => return Reply::Error(node.refusal(r)),
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

/// `DB.LIST`: the databases' names.
pub(super) fn db_list(node: &Node) -> Reply {
    match node.read_engine() {
        Ok(engine) => Reply::Array(Some(
            engine.databases().iter().map(|d| text(d.name())).collect(),
        )),
        Err(r) => Reply::Error(node.refusal(r)),
    }
}
