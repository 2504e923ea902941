//! Key expiry with Redis's commands: `SET ... EX|PX|EXAT|PXAT|KEEPTTL`,
//! `SETEX`, `PSETEX`, `GETEX`, `EXPIRE`, `PEXPIRE`, `EXPIREAT`,
//! `PEXPIREAT` (with `NX|XX|GT|LT`), `TTL`, `PTTL`, `EXPIRETIME`,
//! `PEXPIRETIME`, `PERSIST`, and `REC.EXPIRE`/`REC.TTL` for records.
//!
//! **Where the time lives.** An expiry time is part of the record's bytes
//! in its block (ms since the Unix epoch; see the record format), so it
//! replicates, persists and survives a promotion like any byte. Readers on
//! every node treat a record whose time has passed as absent; only the
//! primary deletes it, by its expiry cycle ([`run_cycle`]), each deletion
//! an ordinary replicated transaction — as Redis, whose replicas never
//! expire keys themselves.

use bytes::Bytes;

use hotblock_core::{now_ms, Error, Txn};

use super::data::Reader;
use super::syntax_error;
use crate::resp::Reply;
use crate::Node;

/// How a command's time argument reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum When {
    InSecs,
    InMs,
    AtSecs,
    AtMs,
}

impl When {
    fn option(word: &[u8]) -> Option<When> {
        Some(match &word.to_ascii_uppercase()[..] {
            b"EX" => When::InSecs,
            b"PX" => When::InMs,
            b"EXAT" => When::AtSecs,
            b"PXAT" => When::AtMs,
            _ => return None,
        })
    }

    /// The absolute time, in ms since the Unix epoch, that `arg` names;
    /// `None` when it is not an integer or overflows.
    fn deadline(self, arg: &[u8], now: u64) -> Option<i64> {
        let n = super::strings::parse_i64(arg).ok()?;
        match self {
            When::InSecs => n.checked_mul(1000)?.checked_add(now as i64),
            When::InMs => n.checked_add(now as i64),
            When::AtSecs => n.checked_mul(1000),
            When::AtMs => Some(n),
        }
    }
}

/// The unit of `SETEX` (seconds) and `PSETEX` (milliseconds).
#[derive(Clone, Copy, Debug)]
pub(super) enum Unit {
    Secs,
    Ms,
}

fn invalid_expire(command: &str) -> Reply {
    Reply::Error(format!("ERR invalid expire time in '{command}' command"))
}

/// The expiry time (ms since the Unix epoch) that `time` asks for, checked
/// as Redis checks it: not an integer is `ERR value is not an integer`;
/// zero, negative or overflowing is `ERR invalid expire time`.
pub(super) fn expire_time(when: When, time: &[u8], now: u64, command: &str) -> Result<u64, Reply> {
    let n = super::strings::parse_i64(time)
        .map_err(|()| Reply::Error("ERR value is not an integer or out of range".into()))?;
    match when.deadline(time, now) {
        Some(at) if n > 0 => Ok(at.max(0) as u64),
        _ => Err(invalid_expire(command)),
    }
}

/// The expiry a `SET` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SetExpiry {
    /// No option: the key no longer expires.
    Clear,
    /// `KEEPTTL`.
    Keep,
    /// At this time, in ms since the Unix epoch.
    At(u64),
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`.
pub(super) fn set(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let (mut nx, mut xx, mut get) = (false, false, false);
    // Every option is read before any time is checked: a syntax error
    // anywhere wins, as in Redis.
    let mut expiry: Option<Result<(When, &Bytes), ()>> = None;
    let now = now_ms();
    let mut rest = &args[3..];
    while let [option, tail @ ..] = rest {
        let word = option.to_ascii_uppercase();
        match (&word[..], tail) {
            (b"NX", _) if !xx => nx = true,
            (b"XX", _) if !nx => xx = true,
            (b"GET", _) => get = true,
            (b"KEEPTTL", _) if expiry.is_none() => expiry = Some(Err(())),
            (_, [time, tail @ ..]) if expiry.is_none() && When::option(&word).is_some() => {
                expiry = Some(Ok((When::option(&word).expect("checked"), time)));
                rest = tail;
                continue;
            }
            _ => return Ok(syntax_error()),
        }
        rest = tail;
    }
    let expiry = match expiry {
        None => None,
        Some(Err(())) => Some(SetExpiry::Keep),
        Some(Ok((when, time))) => match expire_time(when, time, now, "set") {
            Ok(at) => Some(SetExpiry::At(at)),
            Err(reply) => return Ok(reply),
        },
    };
    let key = &args[1];
    let old = txn.get(key)?;
    let old_value = || Reply::Bulk(old.as_ref().map(|r| Bytes::copy_from_slice(&r.payload)));
    if (nx && old.is_some()) || (xx && old.is_none()) {
        return Ok(match get {
            true => old_value(),
            false => Reply::Bulk(None),
        });
    }
    let expires_at = match expiry.unwrap_or(SetExpiry::Clear) {
        SetExpiry::Clear => None,
        SetExpiry::Keep => old.as_ref().and_then(|r| r.expires_at_ms),
        SetExpiry::At(at) => Some(at),
    };
    if expires_at.is_some_and(|at| at <= now) {
        // Already past (an `EXAT` in the past): the key is gone, as Redis
        // deletes it.
        txn.delete(key)?;
    } else {
        let none = vec![None; txn.database().schema().indexes.len()];
        txn.put_expiring(key, &none, &args[2], expires_at)?;
    }
    Ok(match get {
        true => old_value(),
        false => Reply::ok(),
    })
}

/// `SETEX key seconds value`, `PSETEX key milliseconds value`.
pub(super) fn setex(txn: &mut Txn, args: &[Bytes], unit: Unit) -> Result<Reply, Error> {
    let (name, when) = match unit {
        Unit::Secs => ("setex", When::InSecs),
        Unit::Ms => ("psetex", When::InMs),
    };
    let at = match expire_time(when, &args[2], now_ms(), name) {
        Ok(at) => at,
        Err(reply) => return Ok(reply),
    };
    let none = vec![None; txn.database().schema().indexes.len()];
    txn.put_expiring(&args[1], &none, &args[3], Some(at))?;
    Ok(Reply::ok())
}

/// `GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]`: the value, its expiry
/// changed as asked.
pub(super) fn getex(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let now = now_ms();
    let change = match &args[2..] {
        [] => None,
        [word] if word.eq_ignore_ascii_case(b"PERSIST") => Some(None),
        [word, time] if When::option(word).is_some() => {
            let when = When::option(word).expect("checked");
            match expire_time(when, time, now, "getex") {
                Ok(at) => Some(Some(at)),
                Err(reply) => return Ok(reply),
            }
        }
        _ => return Ok(syntax_error()),
    };
    let Some(record) = txn.get(&args[1])? else {
        return Ok(Reply::Bulk(None));
    };
    let reply = Reply::Bulk(Some(Bytes::copy_from_slice(&record.payload)));
    if let Some(expires_at) = change {
        if expires_at.is_some_and(|at| at <= now) {
            txn.delete(&args[1])?;
        } else if expires_at != record.expires_at_ms {
            let values: Vec<Option<&[u8]>> = record.values.iter().map(|v| v.as_deref()).collect();
            txn.put_expiring(&args[1], &values, &record.payload, expires_at)?;
        }
    }
    Ok(reply)
}

/// `EXPIRE key seconds [NX|XX|GT|LT]` and its siblings, and `REC.EXPIRE
/// db key seconds`: 1 if the expiry was set (or the key deleted, its time
/// being past), 0 if the key is missing or a condition did not hold.
pub(super) fn expire(
    txn: &mut Txn,
    key: &[u8],
    args: &[Bytes],
    when: When,
) -> Result<Reply, Error> {
    let name = match when {
        When::InSecs => "expire",
        When::InMs => "pexpire",
        When::AtSecs => "expireat",
        When::AtMs => "pexpireat",
    };
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[1..] {
        match &option.to_ascii_uppercase()[..] {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Ok(Reply::Error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(option)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Ok(Reply::Error(
            "ERR NX and XX, GT or LT options at the same time are not compatible".into(),
        ));
    }
    if gt && lt {
        return Ok(Reply::Error(
            "ERR GT and LT options at the same time are not compatible".into(),
        ));
    }
    let now = now_ms();
    let Some(at) = when.deadline(&args[0], now) else {
        return Ok(match super::strings::parse_i64(&args[0]) {
            Ok(_) => invalid_expire(name),
            Err(()) => Reply::Error("ERR value is not an integer or out of range".into()),
        });
    };
    let Some(record) = txn.get(key)? else {
        return Ok(Reply::Integer(0));
    };
    let current = record.expires_at_ms;
    // A key without expiry counts as expiring never (Redis's rule for GT
    // and LT).
    let holds = match current {
        None => !xx && !gt,
        Some(t) => !nx && (!gt || at > t as i64) && (!lt || at < t as i64),
    };
    if !holds {
        return Ok(Reply::Integer(0));
    }
    if at <= now as i64 {
        txn.delete(key)?;
    } else {
        let values: Vec<Option<&[u8]>> = record.values.iter().map(|v| v.as_deref()).collect();
        txn.put_expiring(key, &values, &record.payload, Some(at as u64))?;
    }
    Ok(Reply::Integer(1))
}

/// `PERSIST key`: 1 if it removed an expiry.
pub(super) fn persist(txn: &mut Txn, key: &[u8]) -> Result<Reply, Error> {
    match txn.get(key)? {
        Some(record) if record.expires_at_ms.is_some() => {
            let values: Vec<Option<&[u8]>> = record.values.iter().map(|v| v.as_deref()).collect();
            txn.put_expiring(key, &values, &record.payload, None)?;
            Ok(Reply::Integer(1))
        }
        _ => Ok(Reply::Integer(0)),
    }
}

/// What a TTL command reports.
#[derive(Clone, Copy, Debug)]
pub(super) enum Ttl {
    RemainingSecs,
    RemainingMs,
    AtSecs,
    AtMs,
}

/// `TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`, `REC.TTL`: -2 for a missing
/// key, -1 for one that does not expire.
pub(super) fn ttl(reader: &dyn Reader, key: &[u8], what: Ttl) -> Result<Reply, Error> {
    let Some(record) = reader.get(key)? else {
        return Ok(Reply::Integer(-2));
    };
    let Some(at) = record.expires_at_ms else {
        return Ok(Reply::Integer(-1));
    };
    let left = at.saturating_sub(now_ms()) as i64;
    Ok(Reply::Integer(match what {
        // Redis rounds to the nearest second.
        Ttl::RemainingSecs => (left + 500) / 1000,
        Ttl::RemainingMs => left,
        Ttl::AtSecs => at as i64 / 1000,
        Ttl::AtMs => at as i64,
    }))
}

/// Keys one pass of the expiry cycle deletes per database at most, so that
/// one transaction stays small.
const CYCLE_KEYS_MAX: usize = 1_000;

/// How often the primary looks for keys whose time ran out (Redis's `hz`
/// is 10).
pub(crate) const CYCLE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The primary's expiry cycle: every [`CYCLE_INTERVAL`], deletes the keys
/// whose time ran out, each database's in one transaction, replicated like
/// any write. Does nothing while the node is not a primary.
pub(crate) async fn run_cycle(node: std::sync::Weak<Node>) {
    let mut tick = tokio::time::interval(CYCLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if let Err(e) = expire_due(&node).await {
            tracing::debug!(error = %e, "expiry cycle skipped");
        }
    }
}

/// How long one pass may keep deleting batches while keys are due (Redis
/// gives its active cycle a quarter of each tick).
const CYCLE_BUDGET: std::time::Duration = std::time::Duration::from_millis(25);

/// One pass of the cycle: returns the keys deleted. A database that fails
/// (poisoned, say) is logged and passed over; the others still expire.
async fn expire_due(node: &Node) -> Result<u64, String> {
    let Ok(db) = node.write_db() else {
        return Ok(0);
    };
    let started = std::time::Instant::now();
    let mut deleted = 0;
    for database in db.engine().databases() {
        loop {
            match expire_batch(node, &db, &database).await {
                Ok((due, n)) => {
                    deleted += n;
                    if due < CYCLE_KEYS_MAX || started.elapsed() > CYCLE_BUDGET {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(db = database.name(), error = %e, "expiring keys failed");
                    break;
                }
            }
        }
    }
    Ok(deleted)
}

/// Deletes up to `CYCLE_KEYS_MAX` due keys of one database in one
/// transaction; returns how many were due and how many it deleted.
async fn expire_batch(
    node: &Node,
    db: &hotblock_primary::Db,
    database: &hotblock_core::Database,
) -> Result<(usize, u64), String> {
    let now = now_ms();
    let due = database
        .read()
        .expired_keys(now, CYCLE_KEYS_MAX)
        .map_err(|e| e.to_string())?;
    if due.is_empty() {
        return Ok((0, 0));
    }
    let _ticket = node.handover().enter_write().await;
    // The transaction (and the lock it holds) lives in this block only: no
    // await may hold it.
    let (n, lsn) = {
        let mut txn = db
            .begin_async(database.name())
            .await
            .map_err(|e| e.to_string())?;
        let mut n = 0;
        for key in &due {
            n += txn.delete_expired(key, now).map_err(|e| e.to_string())? as u64;
        }
        let committed = txn
            .commit_local_observed(|w| node.watches().touch(&w))
            .map_err(|e| e.to_string())?;
        (n, committed.map(|c| c.lsn))
    };
    if let Some(lsn) = lsn {
        db.wait_committed(lsn).await.map_err(|e| e.to_string())?;
    }
    node.stats()
        .expired_keys
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Ok((due.len(), n))
}
