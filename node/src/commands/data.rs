//! The data commands: `GET`, `SET`, `DEL`, `EXISTS` and `DBSIZE` on the
//! session's database, `REC.GET`, `REC.PUT`, `REC.DEL`, `REC.FIND` and
//! `REC.COUNT` on records with non-unique keys, and `DB.CREATE`/`DB.LIST`.
//! Everything about one of them is here: its arity and whether it writes
//! (the [`Data`] table), how it reads the latest state or a transaction's
//! view, and how it applies inside an engine transaction ([`in_txn`]).
//! [`commit_run`] is the one way a write commits, whether alone, from
//! `EXEC` or as a pipelined run.

use bytes::Bytes;

use hotblock_core::{
    key_order, DatabaseOptions, Error, Record, ScanStep, Schema, Txn, SCAN_STEPS_MAX,
};
use hotblock_primary::Db;

use super::errors::{error_reply, write_error_reply};
use super::session::Session;
use super::{bulk, expiry, keyspace, strings, syntax_error, text, wrong_arity};
use crate::resp::{Protocol, Reply};
use crate::watch::{NodeNow, Watch};
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
    MGet,
    MSet,
    MSetNx,
    SetNx,
    GetSet,
    GetDel,
    GetRange,
    SetRange,
    Append,
    StrLen,
    Incr,
    Decr,
    IncrBy,
    DecrBy,
    IncrByFloat,
    Type,
    Keys,
    Scan,
    RandomKey,
    Rename,
    RenameNx,
    Copy,
    FlushDb,
    RecGet,
    RecMGet,
    RecPut,
    RecDel,
    RecFind,
    RecCount,
    RecScan,
    SetEx,
    PSetEx,
    GetEx,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    Ttl,
    PTtl,
    ExpireTime,
    PExpireTime,
    Persist,
    RecExpire,
    RecTtl,
}

impl Data {
    pub(super) fn parse(name: &[u8]) -> Option<Data> {
        Some(match name {
            b"GET" => Data::Get,
            b"SET" => Data::Set,
            b"DEL" | b"UNLINK" => Data::Del,
            b"EXISTS" => Data::Exists,
            b"DBSIZE" => Data::DbSize,
            b"MGET" => Data::MGet,
            b"MSET" => Data::MSet,
            b"MSETNX" => Data::MSetNx,
            b"SETNX" => Data::SetNx,
            b"GETSET" => Data::GetSet,
            b"GETDEL" => Data::GetDel,
            b"GETRANGE" | b"SUBSTR" => Data::GetRange,
            b"SETRANGE" => Data::SetRange,
            b"APPEND" => Data::Append,
            b"STRLEN" => Data::StrLen,
            b"INCR" => Data::Incr,
            b"DECR" => Data::Decr,
            b"INCRBY" => Data::IncrBy,
            b"DECRBY" => Data::DecrBy,
            b"INCRBYFLOAT" => Data::IncrByFloat,
            b"TYPE" => Data::Type,
            b"KEYS" => Data::Keys,
            b"SCAN" => Data::Scan,
            b"RANDOMKEY" => Data::RandomKey,
            b"RENAME" => Data::Rename,
            b"RENAMENX" => Data::RenameNx,
            b"COPY" => Data::Copy,
            b"FLUSHDB" => Data::FlushDb,
            b"REC.GET" => Data::RecGet,
            b"REC.MGET" => Data::RecMGet,
            b"REC.PUT" => Data::RecPut,
            b"REC.DEL" => Data::RecDel,
            b"REC.FIND" => Data::RecFind,
            b"REC.COUNT" => Data::RecCount,
            b"REC.SCAN" => Data::RecScan,
            b"SETEX" => Data::SetEx,
            b"PSETEX" => Data::PSetEx,
            b"GETEX" => Data::GetEx,
            b"EXPIRE" => Data::Expire,
            b"PEXPIRE" => Data::PExpire,
            b"EXPIREAT" => Data::ExpireAt,
            b"PEXPIREAT" => Data::PExpireAt,
            b"TTL" => Data::Ttl,
            b"PTTL" => Data::PTtl,
            b"EXPIRETIME" => Data::ExpireTime,
            b"PEXPIRETIME" => Data::PExpireTime,
            b"PERSIST" => Data::Persist,
            b"REC.EXPIRE" => Data::RecExpire,
            b"REC.TTL" => Data::RecTtl,
            _ => return None,
        })
    }

    pub(super) fn arity(self) -> i32 {
        match self {
            Data::Get | Data::StrLen | Data::Incr | Data::Decr | Data::GetDel => 2,
            Data::Type | Data::Keys | Data::RecCount => 2,
            Data::Set | Data::MSet | Data::MSetNx | Data::Copy => -3,
            Data::Del | Data::Exists | Data::MGet | Data::Scan => -2,
            Data::DbSize | Data::RandomKey => 1,
            Data::FlushDb => -1,
            Data::SetNx | Data::GetSet | Data::Append | Data::IncrBy | Data::DecrBy => 3,
            Data::IncrByFloat | Data::Rename | Data::RenameNx => 3,
            Data::GetRange | Data::SetRange => 4,
            Data::RecGet | Data::RecDel => 3,
            Data::RecMGet | Data::RecScan => -3,
            Data::RecPut | Data::RecFind => -4,
            Data::SetEx | Data::PSetEx | Data::RecExpire => 4,
            Data::GetEx => -2,
            Data::Expire | Data::PExpire | Data::ExpireAt | Data::PExpireAt => -3,
            Data::Ttl | Data::PTtl | Data::ExpireTime | Data::PExpireTime | Data::Persist => 2,
            Data::RecTtl => 3,
        }
    }

    pub(super) fn writes(self) -> bool {
        matches!(
            self,
            Data::Set
                | Data::Del
                | Data::MSet
                | Data::MSetNx
                | Data::SetNx
                | Data::GetSet
                | Data::GetDel
                | Data::SetRange
                | Data::Append
                | Data::Incr
                | Data::Decr
                | Data::IncrBy
                | Data::DecrBy
                | Data::IncrByFloat
                | Data::Rename
                | Data::RenameNx
                | Data::Copy
                | Data::FlushDb
                | Data::RecPut
                | Data::RecDel
                | Data::SetEx
                | Data::PSetEx
                | Data::GetEx
                | Data::Expire
                | Data::PExpire
                | Data::ExpireAt
                | Data::PExpireAt
                | Data::Persist
                | Data::RecExpire
        )
    }

    /// Whether the reply is at most about one value: such commands may
    /// join a pipelined run, whose replies are not held to the output
    /// budget one by one.
    pub(super) fn small_reply(self) -> bool {
        !matches!(
            self,
            Data::MGet | Data::Keys | Data::Scan | Data::RecMGet | Data::RecScan | Data::RecFind
        )
    }

    /// The database the command acts on.
    /// The database the command acts on: named in its arguments (records),
    /// or `current`, the connection's.
    pub(super) fn database<'a>(
        self,
        args: &'a [Bytes],
        current: &'a str,
    ) -> Result<&'a str, Reply> {
        match self {
            Data::RecGet
            | Data::RecMGet
            | Data::RecPut
            | Data::RecDel
            | Data::RecFind
            | Data::RecCount
            | Data::RecScan
            | Data::RecExpire
            | Data::RecTtl => std::str::from_utf8(&args[1])
                .map_err(|_| Reply::Error("ERR database names are UTF-8".into())),
            _ => Ok(current),
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
    let db_name = match cmd.database(args, &session.db) {
        Ok(db) => db.to_string(),
        Err(reply) => return reply,
    };
    if !cmd.writes() {
        let engine = match node.read_engine() {
            Ok(engine) => engine,
            Err(r) => return Reply::Error(node.refusal(r)),
        };
        return match engine.database(&db_name) {
            Ok(database) => read(node, session.protocol, &View::Latest(&database), cmd, args),
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
    let commands: Vec<(&str, Data, &[Bytes])> = commands
        .iter()
        .map(|&(cmd, args)| (db_name, cmd, args))
        .collect();
    commit_run_checked(node, session, db, &[db_name], &commands, lone, None).await
}

/// `commit_run` for an `EXEC`: each command on its own database, all in
/// one transaction begun on `dbs` (every database a command names or a
/// watched key lives in); runs nothing and replies with a null array if
/// a watched key was written since it was watched.
pub(super) async fn commit_run_watched(
    node: &Node,
    session: &mut Session,
    db: &Db,
    dbs: &[&str],
    commands: &[(&str, Data, &[Bytes])],
    watch: Option<&Watch>,
) -> Result<Option<Vec<Reply>>, Reply> {
    match commit_run_checked(node, session, db, dbs, commands, false, watch).await {
        Ok(replies) => Ok(Some(replies)),
        Err(Reply::Array(None)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn commit_run_checked(
    node: &Node,
    session: &mut Session,
    db: &Db,
    dbs: &[&str],
    commands: &[(&str, Data, &[Bytes])],
    lone: bool,
    watch: Option<&Watch>,
) -> Result<Vec<Reply>, Reply> {
    // The transaction (and the locks it holds) lives in this block only:
    // no await may hold it.
    let (replies, lsn) = {
        // Room in the commit pipe is waited for on the task, not on this
        // worker's thread.
        let mut txn = db
            .begin_across_async(dbs)
            .await
            .map_err(|e| write_error_reply(&e))?;
        // Checked holding the writers of every watched database: a write
        // to a watched key raised the flag as it committed, under them.
        let now = NodeNow {
            lsn: db.lsn(),
            follower: false,
        };
        if watch.is_some_and(|w| w.touched(now)) {
            return Err(Reply::Array(None));
        }
        let protocol = session.protocol;
        let mut replies = Vec::with_capacity(commands.len());
        for &(db_name, cmd, args) in commands {
            if txn.database().name() != db_name {
                txn.select(db_name).map_err(|e| error_reply(&e))?;
            }
            replies.push(in_txn(node, protocol, &mut txn, cmd, args));
        }
        if lone && matches!(replies[..], [Reply::Error(_)]) {
            return Ok(replies);
        }
        let committed = txn
            .commit_local_observed(|w| node.watches().touch(&w))
            .map_err(|e| write_error_reply(&e))?;
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
/// one consistent view of `dbs` (every database a command reads or a
/// watched key lives in), with no transaction; `None` if a key in `watch`
/// was written since it was watched.
pub(super) fn read_consistent(
    node: &Node,
    protocol: Protocol,
    dbs: &[&str],
    commands: &[(&str, Data, &[Bytes])],
    watch: Option<&Watch>,
) -> Result<Option<Vec<Reply>>, Reply> {
    let engine = node
        .read_engine()
        .map_err(|r| Reply::Error(format!("EXECABORT {}", node.refusal(r))))?;
    let databases = dbs
        .iter()
        .map(|name| engine.database(name))
        .collect::<Result<Vec<_>, Error>>()
        .map_err(|e| error_reply(&e))?;
    let refs: Vec<&hotblock_core::Database> = databases.iter().map(|d| &**d).collect();
    let views = hotblock_core::Database::read_across(&refs);
    // After the views are taken: a write they hold raised the flag first.
    let now = NodeNow {
        lsn: engine.lsn(),
        follower: engine.role() != hotblock_core::Role::Primary,
    };
    if watch.is_some_and(|w| w.touched(now)) {
        return Ok(None);
    }
    let replies = commands
        .iter()
        .map(|&(db_name, cmd, args)| {
            let i = dbs
                .iter()
                .position(|d| *d == db_name)
                .expect("every command's database is viewed");
            let view = View::Committed(&views[i], databases[i].schema());
            read(node, protocol, &view, cmd, args)
        })
        .collect();
    Ok(Some(replies))
}

/// Where a read looks.
enum View<'a> {
    /// The latest committed state, each command on its own.
    Latest(&'a hotblock_core::Database),
    /// One view across a transaction's reads.
    Committed(&'a hotblock_core::ReadView<'a>, &'a hotblock_core::Schema),
}

/// What a read command needs of the state it reads: a committed view, or
/// a transaction's view (its own writes included).
pub(super) trait Reader {
    fn get(&self, key: &[u8]) -> Result<Option<Record>, Error>;
    fn contains(&self, key: &[u8]) -> Result<bool, Error>;
    fn count(&self) -> Result<u64, Error>;
    fn find(&self, index: &str, value: &[u8], limit: Option<usize>) -> Result<Vec<Vec<u8>>, Error>;
    /// Calls `f` with every key.
    fn each_key(&self, f: &mut dyn FnMut(&[u8])) -> Result<(), Error>;
    fn scan(&self, cursor: u64, count: usize) -> Result<ScanStep, Error>;
    fn random_key(&self, random: u64) -> Result<Option<Vec<u8>>, Error>;
}

impl Reader for hotblock_core::ReadView<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Record>, Error> {
        hotblock_core::ReadView::get(self, key)
    }
    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        hotblock_core::ReadView::contains(self, key)
    }
    fn count(&self) -> Result<u64, Error> {
        Ok(hotblock_core::ReadView::count(self))
    }
    fn find(&self, index: &str, value: &[u8], limit: Option<usize>) -> Result<Vec<Vec<u8>>, Error> {
        hotblock_core::ReadView::find(self, index, value, limit)
    }
    fn each_key(&self, f: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        self.for_each_key(f)
    }
    fn scan(&self, cursor: u64, count: usize) -> Result<ScanStep, Error> {
        hotblock_core::ReadView::scan(self, cursor, count)
    }
    fn random_key(&self, random: u64) -> Result<Option<Vec<u8>>, Error> {
        hotblock_core::ReadView::random_key(self, random)
    }
}

impl Reader for Txn {
    fn get(&self, key: &[u8]) -> Result<Option<Record>, Error> {
        Txn::get(self, key)
    }
    fn contains(&self, key: &[u8]) -> Result<bool, Error> {
        Txn::contains(self, key)
    }
    fn count(&self) -> Result<u64, Error> {
        Txn::count(self)
    }
    fn find(&self, index: &str, value: &[u8], limit: Option<usize>) -> Result<Vec<Vec<u8>>, Error> {
        Txn::find(self, index, value, limit)
    }
    fn each_key(&self, f: &mut dyn FnMut(&[u8])) -> Result<(), Error> {
        for key in self.keys()? {
            f(&key);
        }
        Ok(())
    }
    /// A transaction's scan sorts its view's keys: rare (a `SCAN` queued
    /// in `MULTI`), so simplicity wins over speed.
    fn scan(&self, cursor: u64, count: usize) -> Result<ScanStep, Error> {
        let mut keys: Vec<(u64, Vec<u8>)> = self
            .keys()?
            .into_iter()
            .map(|k| (key_order(&k), k))
            .filter(|(h, _)| *h >= cursor)
            .collect();
        keys.sort_unstable();
        let batch = count.max(1).max(keys.len().div_ceil(SCAN_STEPS_MAX));
        if keys.len() <= batch {
            return Ok(ScanStep {
                next: 0,
                keys: keys.into_iter().map(|(_, k)| k).collect(),
            });
        }
        let last = keys[batch - 1].0;
        keys.retain(|(h, _)| *h <= last);
        Ok(ScanStep {
            next: last.checked_add(1).unwrap_or(0),
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        })
    }
    fn random_key(&self, random: u64) -> Result<Option<Vec<u8>>, Error> {
        let keys = self.keys()?;
        Ok(keys
            .iter()
            .filter(|k| key_order(k) >= random)
            .min_by_key(|k| key_order(k))
            .or_else(|| keys.iter().min_by_key(|k| key_order(k)))
            .cloned())
    }
}

/// A read command outside a transaction.
fn read(node: &Node, protocol: Protocol, view: &View<'_>, cmd: Data, args: &[Bytes]) -> Reply {
    match view {
        // The hot path: the value copied once, straight from its block.
        View::Latest(db) if cmd == Data::Get => db
            .with_record(&args[1], |r| bulk(r.payload()))
            .map(|r| hit(node, r))
            .unwrap_or_else(|e| error_reply(&e)),
        View::Latest(db) => read_in(node, protocol, &db.read(), db.schema(), cmd, args),
        View::Committed(view, schema) => read_in(node, protocol, *view, schema, cmd, args),
    }
}

/// A read command on `reader`.
fn read_in(
    node: &Node,
    protocol: Protocol,
    reader: &dyn Reader,
    schema: &Schema,
    cmd: Data,
    args: &[Bytes],
) -> Reply {
    let result = match cmd {
        Data::Get => reader
            .get(&args[1])
            .map(|r| hit(node, r.map(|r| bulk(&r.payload)))),
        Data::Exists => count_keys(&args[1..], |k| reader.contains(k)),
        Data::DbSize | Data::RecCount => reader.count().map(|n| Reply::Integer(n as i64)),
        Data::RecGet => reader
            .get(&args[2])
            .map(|r| hit(node, r.map(|r| record_reply(protocol, schema, &r)))),
        Data::RecMGet => args[2..]
            .iter()
            .map(|k| {
                let r = reader.get(k)?;
                Ok(hit(node, r.map(|r| record_reply(protocol, schema, &r))))
            })
            .collect::<Result<Vec<_>, Error>>()
            .map(|items| Reply::Array(Some(items))),
        Data::RecFind => match find_args(args) {
            Ok((index, value, limit)) => reader.find(index, value, limit).map(keys_reply),
            Err(reply) => return reply,
        },
        Data::MGet => args[1..]
            .iter()
            .map(|k| Ok(hit(node, reader.get(k)?.map(|r| bulk(&r.payload)))))
            .collect::<Result<Vec<_>, Error>>()
            .map(|items| Reply::Array(Some(items))),
        Data::StrLen => reader
            .get(&args[1])
            .map(|r| Reply::Integer(r.map_or(0, |r| r.payload.len() as i64))),
        Data::GetRange => strings::getrange(reader, args),
        Data::Type => reader
            .contains(&args[1])
            .map(|there| Reply::Simple(if there { "string" } else { "none" }.into())),
        Data::Keys => keyspace::keys(reader, &args[1]),
        Data::Scan => keyspace::scan(reader, &args[1], &args[2..]),
        Data::RecScan => keyspace::scan(reader, &args[2], &args[3..]),
        Data::RandomKey => keyspace::random_key(reader),
        Data::Ttl => expiry::ttl(reader, &args[1], expiry::Ttl::RemainingSecs),
        Data::PTtl => expiry::ttl(reader, &args[1], expiry::Ttl::RemainingMs),
        Data::ExpireTime => expiry::ttl(reader, &args[1], expiry::Ttl::AtSecs),
        Data::PExpireTime => expiry::ttl(reader, &args[1], expiry::Ttl::AtMs),
        Data::RecTtl => expiry::ttl(reader, &args[2], expiry::Ttl::RemainingSecs),
        _ => unreachable!("only reads come here"),
    };
    result.unwrap_or_else(|e| error_reply(&e))
}

/// Runs one command inside an open transaction.
fn in_txn(node: &Node, protocol: Protocol, txn: &mut Txn, cmd: Data, args: &[Bytes]) -> Reply {
    if !cmd.writes() {
        let schema = txn.database().schema().clone();
        return read_in(node, protocol, &*txn, &schema, cmd, args);
    }
    let result = match cmd {
        Data::Set => expiry::set(txn, args),
        Data::Del => del(txn, &args[1..]),
        Data::RecDel => txn
            .delete(&args[2])
            .map(|existed| Reply::Integer(existed as i64)),
        Data::RecPut => rec_put(txn, args),
        Data::MSet | Data::MSetNx => strings::mset(txn, args, cmd == Data::MSetNx),
        Data::SetNx => strings::setnx(txn, args),
        Data::GetSet => strings::getset(txn, args),
        Data::GetDel => strings::getdel(txn, args),
        Data::SetRange => strings::setrange(txn, args),
        Data::Append => strings::append(txn, args),
        Data::Incr => strings::incr_by(txn, &args[1], Ok(1)),
        Data::Decr => strings::incr_by(txn, &args[1], Ok(-1)),
        Data::IncrBy => strings::incr_by(txn, &args[1], strings::parse_i64(&args[2])),
        Data::DecrBy => strings::incr_by(
            txn,
            &args[1],
            strings::parse_i64(&args[2]).and_then(|n| n.checked_neg().ok_or(())),
        ),
        Data::IncrByFloat => strings::incr_by_float(txn, args),
        Data::Rename | Data::RenameNx => keyspace::rename(txn, args, cmd == Data::RenameNx),
        Data::Copy => keyspace::copy(txn, args),
        Data::FlushDb => keyspace::flush(txn, args),
        Data::SetEx => expiry::setex(txn, args, expiry::Unit::Secs),
        Data::PSetEx => expiry::setex(txn, args, expiry::Unit::Ms),
        Data::GetEx => expiry::getex(txn, args),
        Data::Expire => expiry::expire(txn, &args[1], &args[2..], expiry::When::InSecs),
        Data::PExpire => expiry::expire(txn, &args[1], &args[2..], expiry::When::InMs),
        Data::ExpireAt => expiry::expire(txn, &args[1], &args[2..], expiry::When::AtSecs),
        Data::PExpireAt => expiry::expire(txn, &args[1], &args[2..], expiry::When::AtMs),
        Data::RecExpire => expiry::expire(txn, &args[2], &args[3..], expiry::When::InSecs),
        Data::Persist => expiry::persist(txn, &args[1]),
        _ => unreachable!("only writes come here"),
    };
    result.unwrap_or_else(|e| error_reply(&e))
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

/// `REC.PUT db ukey payload [index value ...] [EX seconds]`; indexes not
/// named get no value. `EX` is the expiry unless the database has an
/// index named `EX`, whose value the pair then is.
fn rec_put(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let mut pairs = &args[4..];
    let schema = txn.database().schema().clone();
    let mut expires_at = None;
    if let [head @ .., word, secs] = pairs {
        let ex_is_index = schema.indexes.iter().any(|i| i.eq_ignore_ascii_case("EX"));
        if word.eq_ignore_ascii_case(b"EX") && !ex_is_index {
            let now = hotblock_core::now_ms();
            match expiry::expire_time(expiry::When::InSecs, secs, now, "rec.put") {
                Ok(at) => expires_at = Some(at),
                Err(reply) => return Ok(reply),
            }
            pairs = head;
        }
    }
    if pairs.len() % 2 != 0 {
        return Ok(Reply::Error(
            "ERR REC.PUT takes index value pairs after the payload".into(),
        ));
    }
    let mut values: Vec<Option<&[u8]>> = vec![None; schema.indexes.len()];
    for pair in pairs.chunks_exact(2) {
        let index = std::str::from_utf8(&pair[0]).unwrap_or("");
        let i = schema.index_position(index)?;
        values[i] = Some(&pair[1]);
    }
    txn.put_expiring(&args[2], &values, &args[3], expires_at)?;
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

/// `REC.GET`'s reply: the payload, then each index's name and value; under
/// RESP3 a map, the payload under the key `payload`.
fn record_reply(
    protocol: Protocol,
    schema: &hotblock_core::Schema,
    record: &hotblock_core::Record,
) -> Reply {
    let values = schema
        .indexes
        .iter()
        .zip(&record.values)
        .map(|(index, value)| {
            (
                text(index.clone()),
                Reply::Bulk(value.as_deref().map(Bytes::copy_from_slice)),
            )
        });
    match protocol {
        Protocol::Resp3 => Reply::Map(
            std::iter::once((text("payload"), bulk(&record.payload)))
                .chain(values)
                .collect(),
        ),
        Protocol::Resp2 => {
            let mut items = vec![bulk(&record.payload)];
            for (index, value) in values {
                items.push(index);
                items.push(value);
            }
            Reply::Array(Some(items))
        }
    }
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

/// `FLUSHALL [ASYNC|SYNC]`: `FLUSHDB` on every database, in one
/// transaction across them all, replicated like any write. The databases
/// themselves, and their non-unique keys, stay.
pub(super) async fn flushall(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    match &args[1..] {
        [] => {}
        [mode] if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {}
        _ => return syntax_error(),
    }
    let _ticket = node.handover().enter_write().await;
    let db = match node.write_db() {
        Ok(db) => db,
        Err(r) => return Reply::Error(node.refusal(r)),
    };
    let names: Vec<String> = db
        .engine()
        .databases()
        .iter()
        .map(|d| d.name().to_string())
        .collect();
    if names.is_empty() {
        return Reply::ok();
    }
    let flush: [Bytes; 1] = [Bytes::from_static(b"FLUSHDB")];
    let dbs: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    let commands: Vec<(&str, Data, &[Bytes])> = dbs
        .iter()
        .map(|&n| (n, Data::FlushDb, &flush[..]))
        .collect();
    match commit_run_checked(node, session, &db, &dbs, &commands, false, None).await {
        Ok(replies) => replies
            .into_iter()
            .find(|r| matches!(r, Reply::Error(_)))
            .unwrap_or_else(Reply::ok),
        Err(e) => e,
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
