//! The commands over a database's keys rather than one value: `KEYS`,
//! `SCAN` (and `REC.SCAN`), `RANDOMKEY`, `RENAME`, `RENAMENX`, `COPY` and
//! `FLUSHDB`. A record renamed or copied keeps its expiry time.
//!
//! **SCAN's cursor** is a position in the order of the keys' hashes (see
//! `ReadView::scan`): a key present for the whole scan is returned at least
//! once whatever is written meanwhile, a key may come back twice only if
//! it was written during the scan, and the cursor means the same on every
//! node, so a client may go on scanning the promoted secondary after a
//! failover. `COUNT` is a hint, as in Redis: a large database returns more
//! keys per call, so that a whole scan makes at most `SCAN_STEPS_MAX`
//! passes over the index. `KEYS` and each `SCAN` step are one pass over the
//! index with the database's read lock held, so they delay that database's
//! commits for as long (about 2 ms per million keys).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use hotblock_core::{Error, Txn};

use super::data::Reader;
use super::{syntax_error, text};
use crate::glob;
use crate::resp::Reply;

/// Keys a `SCAN` step returns unless `COUNT` says otherwise (Redis's).
const SCAN_COUNT_DEFAULT: usize = 10;

/// `KEYS pattern`.
pub(super) fn keys(reader: &dyn Reader, pattern: &[u8]) -> Result<Reply, Error> {
    let all = pattern == b"*";
    let mut keys = Vec::new();
    reader.each_key(&mut |k| {
        if all || glob::matches(pattern, k, false) {
            keys.push(Reply::Bulk(Some(Bytes::copy_from_slice(k))));
        }
    })?;
    Ok(Reply::Array(Some(keys)))
}

/// `SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]`, and
/// `REC.SCAN db cursor [MATCH pattern] [COUNT count]`: `[next cursor,
/// [key, ...]]`.
pub(super) fn scan(reader: &dyn Reader, cursor: &[u8], options: &[Bytes]) -> Result<Reply, Error> {
    let Some(cursor) = std::str::from_utf8(cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return Ok(Reply::Error("ERR invalid cursor".into()));
    };
    let mut pattern: Option<&[u8]> = None;
    let mut count = SCAN_COUNT_DEFAULT;
    let mut strings = true;
    let mut rest = options;
    while let [option, value, tail @ ..] = rest {
        match &option.to_ascii_uppercase()[..] {
            b"MATCH" => pattern = Some(value),
            b"COUNT" => match super::strings::parse_i64(value) {
                Ok(n) if n >= 1 => count = n as usize,
                Ok(_) => return Ok(syntax_error()),
                Err(()) => {
                    return Ok(Reply::Error(
                        "ERR value is not an integer or out of range".into(),
                    ))
                }
            },
            // Every key here holds a string.
            b"TYPE" => strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Ok(syntax_error()),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return Ok(syntax_error());
    }
    let step = reader.scan(cursor, count)?;
    let keys = step
        .keys
        .into_iter()
        .filter(|k| strings && pattern.is_none_or(|p| glob::matches(p, k, false)))
        .map(|k| Reply::Bulk(Some(k.into())))
        .collect();
    Ok(Reply::Array(Some(vec![
        text(step.next.to_string()),
        Reply::Array(Some(keys)),
    ])))
}

/// `RANDOMKEY`: a key, or nil when there is none.
pub(super) fn random_key(reader: &dyn Reader) -> Result<Reply, Error> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let random = xxhash_rust::xxh3::xxh3_64(&nanos.to_le_bytes());
    Ok(Reply::Bulk(reader.random_key(random)?.map(Bytes::from)))
}

/// `RENAME key newkey` (`ERR no such key` if `key` is missing) and
/// `RENAMENX key newkey` (0 if `newkey` exists). The record moves whole:
/// its non-unique values go with it.
pub(super) fn rename(txn: &mut Txn, args: &[Bytes], nx: bool) -> Result<Reply, Error> {
    let (from, to) = (&args[1], &args[2]);
    let Some(record) = txn.get(from)? else {
        return Ok(Reply::Error("ERR no such key".into()));
    };
    if from == to {
        return Ok(match nx {
            true => Reply::Integer(0),
            false => Reply::ok(),
        });
    }
    if nx && txn.contains(to)? {
        return Ok(Reply::Integer(0));
    }
    let values: Vec<Option<&[u8]>> = record.values.iter().map(|v| v.as_deref()).collect();
    txn.put_expiring(to, &values, &record.payload, record.expires_at_ms)?;
    txn.delete(from)?;
    Ok(match nx {
        true => Reply::Integer(1),
        false => Reply::ok(),
    })
}

/// `COPY source destination [DB destination-db] [REPLACE]`: 1 if copied,
/// 0 if `source` is missing or `destination` exists without `REPLACE`.
/// `DB` may name only the database the command acts on: a copy to another
/// would be a transaction across databases, which hotblock does not run.
pub(super) fn copy(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let mut replace = false;
    let mut rest = &args[3..];
    while let [option, tail @ ..] = rest {
        match (&option.to_ascii_uppercase()[..], tail) {
            (b"REPLACE", _) => {
                replace = true;
                rest = tail;
            }
            (b"DB", [db, tail @ ..]) => {
                if db[..] != *txn.database().name().as_bytes() {
                    return Ok(Reply::Error(
                        "ERR COPY to another database is not supported: use MULTI, GET, SELECT, SET"
                            .into(),
                    ));
                }
                rest = tail;
            }
            _ => return Ok(syntax_error()),
        }
    }
    let (from, to) = (&args[1], &args[2]);
    let Some(record) = txn.get(from)? else {
        return Ok(Reply::Integer(0));
    };
    if from == to {
        return Ok(Reply::Error(
            "ERR source and destination objects are the same".into(),
        ));
    }
    if !replace && txn.contains(to)? {
        return Ok(Reply::Integer(0));
    }
    let values: Vec<Option<&[u8]>> = record.values.iter().map(|v| v.as_deref()).collect();
    txn.put_expiring(to, &values, &record.payload, record.expires_at_ms)?;
    Ok(Reply::Integer(1))
}

/// `FLUSHDB [ASYNC|SYNC]`: deletes every key of the database, as one
/// transaction (replicated and logged like any other).
pub(super) fn flush(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    match &args[1..] {
        [] => {}
        [mode] if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {}
        _ => return Ok(syntax_error()),
    }
    txn.clear()?;
    Ok(Reply::ok())
}
