//! Redis's string commands beyond `GET`/`SET`: `MSET`, `MSETNX`, `SETNX`,
//! `GETSET`, `GETDEL`, `GETRANGE`, `SETRANGE`, `APPEND`, the `INCR` family
//! and `INCRBYFLOAT`, with Redis's replies and error texts. A string is a
//! record's payload; a command that changes the payload of a record with
//! non-unique values (in a database `SELECT`ed by name) keeps its values.

use bytes::Bytes;

use hotblock_core::{Error, Record, Txn};

use super::data::Reader;
use super::{bulk, wrong_arity};
use crate::resp::Reply;

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

/// Writes `payload` under `key`, keeping the non-unique values and the
/// expiry time of the record it replaces, if any (as Redis's `APPEND`,
/// `SETRANGE` and `INCR` keep a key's time to live).
fn put_payload(
    txn: &mut Txn,
    key: &[u8],
    old: Option<&Record>,
    payload: &[u8],
) -> Result<(), Error> {
    let values: Vec<Option<&[u8]>> = match old {
        Some(r) => r.values.iter().map(|v| v.as_deref()).collect(),
        None => vec![None; txn.database().schema().indexes.len()],
    };
    txn.put_expiring(key, &values, payload, old.and_then(|r| r.expires_at_ms))
}

/// `MSET key value [key value ...]`, and `MSETNX`, which sets none of them
/// if any exists.
pub(super) fn mset(txn: &mut Txn, args: &[Bytes], nx: bool) -> Result<Reply, Error> {
    let pairs = &args[1..];
    if pairs.len() % 2 != 0 {
        return Ok(wrong_arity(if nx { b"msetnx" } else { b"mset" }));
    }
    if nx {
        for pair in pairs.chunks_exact(2) {
            if txn.contains(&pair[0])? {
                return Ok(Reply::Integer(0));
            }
        }
    }
    let none = vec![None; txn.database().schema().indexes.len()];
    for pair in pairs.chunks_exact(2) {
        txn.put(&pair[0], &none, &pair[1])?;
    }
    Ok(match nx {
        true => Reply::Integer(1),
        false => Reply::ok(),
    })
}

/// `SETNX key value`: 1 if it set the key, 0 if the key existed.
pub(super) fn setnx(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    if txn.contains(&args[1])? {
        return Ok(Reply::Integer(0));
    }
    let none = vec![None; txn.database().schema().indexes.len()];
    txn.put(&args[1], &none, &args[2])?;
    Ok(Reply::Integer(1))
}

/// `GETSET key value`: the old value (or nil), and the new one set.
pub(super) fn getset(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let old = txn.get(&args[1])?;
    let none = vec![None; txn.database().schema().indexes.len()];
    txn.put(&args[1], &none, &args[2])?;
    Ok(Reply::Bulk(old.map(|r| Bytes::from(r.payload))))
}

/// `GETDEL key`: the value (or nil), and the key deleted.
pub(super) fn getdel(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let old = txn.get(&args[1])?;
    if old.is_some() {
        txn.delete(&args[1])?;
    }
    Ok(Reply::Bulk(old.map(|r| Bytes::from(r.payload))))
}

/// `GETRANGE key start end`: inclusive, negative offsets from the end, as
/// Redis clamps them; a missing key is the empty string.
pub(super) fn getrange(reader: &dyn Reader, args: &[Bytes]) -> Result<Reply, Error> {
    let (Ok(mut start), Ok(mut end)) = (parse_i64(&args[2]), parse_i64(&args[3])) else {
        return Ok(Reply::Error(NOT_AN_INTEGER.into()));
    };
    let value = reader.get(&args[1])?.map(|r| r.payload).unwrap_or_default();
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Ok(bulk(b""));
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0).min(len - 1);
    if len == 0 || start > end {
        return Ok(bulk(b""));
    }
    Ok(bulk(&value[start as usize..=end as usize]))
}

/// `SETRANGE key offset value`: overwrites from `offset`, padding with
/// zero bytes; the new length.
pub(super) fn setrange(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let offset = match parse_i64(&args[2]) {
        Ok(n) if n >= 0 => n as usize,
        Ok(_) => return Ok(Reply::Error("ERR offset is out of range".into())),
        Err(()) => return Ok(Reply::Error(NOT_AN_INTEGER.into())),
    };
    let old = txn.get(&args[1])?;
    let patch = &args[3];
    let current = old.as_ref().map_or(&[][..], |r| &r.payload[..]);
    if patch.is_empty() {
        return Ok(Reply::Integer(current.len() as i64));
    }
    // A record never outgrows its block: refuse before allocating.
    let Some(end) = offset
        .checked_add(patch.len())
        .filter(|end| *end <= txn.database().schema().capacity())
    else {
        return Ok(Reply::Error(
            "ERR string exceeds maximum allowed size (the block size)".into(),
        ));
    };
    let mut value = current.to_vec();
    if value.len() < end {
        value.resize(end, 0);
    }
    value[offset..end].copy_from_slice(patch);
    put_payload(txn, &args[1], old.as_ref(), &value)?;
    Ok(Reply::Integer(value.len() as i64))
}

/// `APPEND key value`: the new length.
pub(super) fn append(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    let old = txn.get(&args[1])?;
    let mut value = old.as_ref().map_or_else(Vec::new, |r| r.payload.clone());
    value.extend_from_slice(&args[2]);
    put_payload(txn, &args[1], old.as_ref(), &value)?;
    Ok(Reply::Integer(value.len() as i64))
}

/// `INCR`, `DECR`, `INCRBY`, `DECRBY`: the value as a 64-bit integer plus
/// `by` (a missing key counts as 0); the new value.
pub(super) fn incr_by(txn: &mut Txn, key: &[u8], by: Result<i64, ()>) -> Result<Reply, Error> {
    let Ok(by) = by else {
        return Ok(Reply::Error(NOT_AN_INTEGER.into()));
    };
    let old = txn.get(key)?;
    let current = match &old {
        Some(r) => match parse_i64(&r.payload) {
            Ok(n) => n,
            Err(()) => return Ok(Reply::Error(NOT_AN_INTEGER.into())),
        },
        None => 0,
    };
    let Some(new) = current.checked_add(by) else {
        return Ok(Reply::Error(
            "ERR increment or decrement would overflow".into(),
        ));
    };
    put_payload(txn, key, old.as_ref(), new.to_string().as_bytes())?;
    Ok(Reply::Integer(new))
}

/// `INCRBYFLOAT key increment`: the new value, as a bulk string.
pub(super) fn incr_by_float(txn: &mut Txn, args: &[Bytes]) -> Result<Reply, Error> {
    const NOT_A_FLOAT: &str = "ERR value is not a valid float";
    let Some(by) = parse_f64(&args[2]) else {
        return Ok(Reply::Error(NOT_A_FLOAT.into()));
    };
    let old = txn.get(&args[1])?;
    let current = match &old {
        Some(r) => match parse_f64(&r.payload) {
            Some(x) => x,
            None => return Ok(Reply::Error(NOT_A_FLOAT.into())),
        },
        None => 0.0,
    };
    let new = current + by;
    if !new.is_finite() {
        return Ok(Reply::Error(
            "ERR increment would produce NaN or Infinity".into(),
        ));
    }
    // Rust's shortest form that reads back the same, never an exponent
    // (as Redis, which prints with `%.17Lf` and trims the zeros).
    let text = format!("{new}");
    put_payload(txn, &args[1], old.as_ref(), text.as_bytes())?;
    Ok(bulk(text.as_bytes()))
}

/// A 64-bit integer as Redis's `string2ll` reads one: an optional `-`,
/// then digits with no leading zero (except `0` itself), nothing else.
pub(super) fn parse_i64(bytes: &[u8]) -> Result<i64, ()> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let well_formed = !digits.is_empty()
        && digits.len() <= 20
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1)
        && bytes != b"-0";
    if !well_formed {
        return Err(());
    }
    std::str::from_utf8(bytes)
        .map_err(|_| ())?
        .parse()
        .map_err(|_| ())
}

/// A finite decimal float (no spaces, no `inf`, no `nan`).
fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    let x: f64 = text.parse().ok().filter(|_| plain)?;
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        assert_eq!(parse_i64(b"0"), Ok(0));
        assert_eq!(parse_i64(b"-12"), Ok(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Ok(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"-0",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
        ] {
            assert_eq!(
                parse_i64(bad),
                Err(()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn floats_are_finite_decimals() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-2e3"), Some(-2000.0));
        for bad in [&b""[..], b"inf", b"nan", b"1e400", b" 1", b"0x10"] {
            assert_eq!(parse_f64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
