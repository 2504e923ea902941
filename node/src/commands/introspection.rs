//! Commands that describe keys and the server rather than change them:
//! `MEMORY USAGE`, `OBJECT ENCODING|REFCOUNT|FREQ|IDLETIME`, `LATENCY`,
//! and the answer to a command of a Redis data type hotblock does not
//! have. Read-only, answered from the engine the node reads.

use bytes::Bytes;

use super::errors::error_reply;
use super::session::Session;
use super::text;
use crate::resp::Reply;
use crate::Node;

/// Bytes of one unique-index entry: a 16-byte (hash, record) pair and its
/// control byte.
const INDEX_ENTRY_BYTES: usize = 17;

/// `MEMORY USAGE key [SAMPLES n]`: the bytes the key's record takes in its
/// block plus its unique-index entry, or nil. `MEMORY DOCTOR` and
/// `MEMORY STATS` in brief.
pub(super) fn memory(node: &Node, session: &Session, args: &[Bytes]) -> Reply {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    match (&sub[..], args.len()) {
        (b"USAGE", 3 | 5) => {
            if args.len() == 5 && !args[3].eq_ignore_ascii_case(b"SAMPLES") {
                return super::syntax_error();
            }
            let engine = match node.read_engine() {
                Ok(engine) => engine,
                Err(r) => return Reply::Error(node.refusal(r)),
            };
            let slot = engine
                .database(&session.db)
                .and_then(|db| db.read().slot_len(&args[2]));
            match slot {
                Ok(Some(bytes)) => Reply::Integer((bytes + INDEX_ENTRY_BYTES) as i64),
                Ok(None) => Reply::Bulk(None),
                Err(e) => error_reply(&e),
            }
        }
        (b"DOCTOR", 2) => Reply::Verbatim(
            "Hi Sam, hotblock keeps records in fixed-size blocks: see INFO memory and INFO keyspace for their use.\n".into(),
        ),
        (b"STATS", 2) => {
            let used = node.engine().map_or(0, |e| e.memory_used_bytes());
            Reply::Map(vec![
                (text("total.allocated"), Reply::Integer(used as i64)),
                (text("keys.count"), Reply::Integer(keys_count(node) as i64)),
            ])
        }
        _ => Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try MEMORY HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |a| &a[..]))
        )),
    }
}

fn keys_count(node: &Node) -> u64 {
    node.engine()
        .map(|e| e.databases().iter().map(|d| d.count()).sum())
        .unwrap_or(0)
}

/// `OBJECT ENCODING|REFCOUNT|FREQ|IDLETIME key`. Values are stored as
/// bytes; `ENCODING` names what Redis would use for the same string
/// (`int`, `embstr` up to 44 bytes, `raw`), which is what clients compare.
pub(super) fn object(node: &Node, session: &Session, args: &[Bytes]) -> Reply {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    if args.len() != 3 || !matches!(&sub[..], b"ENCODING" | b"REFCOUNT" | b"FREQ" | b"IDLETIME") {
        return Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |a| &a[..]))
        ));
    }
    let engine = match node.read_engine() {
        Ok(engine) => engine,
        Err(r) => return Reply::Error(node.refusal(r)),
    };
    let db = match engine.database(&session.db) {
        Ok(db) => db,
        Err(e) => return error_reply(&e),
    };
    let encoding = db.with_record(&args[2], |r| {
        let value = r.payload();
        match () {
            _ if value.len() <= 20 && super::strings::parse_i64(value).is_ok() => "int",
            _ if value.len() <= 44 => "embstr",
            _ => "raw",
        }
    });
    match encoding {
        Ok(None) => Reply::Bulk(None),
        Ok(Some(encoding)) => match &sub[..] {
            b"ENCODING" => text(encoding),
            b"REFCOUNT" => Reply::Integer(1),
            b"FREQ" => Reply::Error(
                "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.".into(),
            ),
            _ => Reply::Integer(0),
        },
        Err(e) => error_reply(&e),
    }
}

/// `LATENCY LATEST|HISTORY|RESET|DOCTOR`: hotblock records no latency
/// events, so every list is empty.
pub(super) fn latency(args: &[Bytes]) -> Reply {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    match &sub[..] {
        b"LATEST" | b"HISTORY" => Reply::Array(Some(vec![])),
        b"RESET" => Reply::Integer(0),
        b"DOCTOR" => Reply::Verbatim("No latency events are recorded by hotblock.\n".into()),
        _ => Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try LATENCY HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |a| &a[..]))
        )),
    }
}

/// The Redis data type or feature a command belongs to, when hotblock
/// does not have it.
pub(super) fn unsupported(name: &[u8]) -> Option<&'static str> {
    const FAMILIES: &[(&str, &[&str])] = &[
        (
            "lists",
            &[
                "LPUSH",
                "RPUSH",
                "LPOP",
                "RPOP",
                "LRANGE",
                "LLEN",
                "LINDEX",
                "LSET",
                "LREM",
                "LTRIM",
                "LINSERT",
                "LPOS",
                "LMOVE",
                "BLPOP",
                "BRPOP",
                "BLMOVE",
                "RPOPLPUSH",
                "BRPOPLPUSH",
                "LPUSHX",
                "RPUSHX",
                "LMPOP",
                "BLMPOP",
            ],
        ),
        (
            "hashes",
            &[
                "HSET",
                "HGET",
                "HMSET",
                "HMGET",
                "HGETALL",
                "HDEL",
                "HEXISTS",
                "HINCRBY",
                "HINCRBYFLOAT",
                "HKEYS",
                "HVALS",
                "HLEN",
                "HSETNX",
                "HSTRLEN",
                "HSCAN",
                "HRANDFIELD",
            ],
        ),
        (
            "sets",
            &[
                "SADD",
                "SREM",
                "SMEMBERS",
                "SISMEMBER",
                "SMISMEMBER",
                "SCARD",
                "SPOP",
                "SRANDMEMBER",
                "SINTER",
                "SUNION",
                "SDIFF",
                "SINTERSTORE",
                "SUNIONSTORE",
                "SDIFFSTORE",
                "SMOVE",
                "SSCAN",
                "SINTERCARD",
            ],
        ),
        (
            "sorted sets",
            &[
                "ZADD",
                "ZREM",
                "ZRANGE",
                "ZRANGEBYSCORE",
                "ZREVRANGE",
                "ZSCORE",
                "ZINCRBY",
                "ZCARD",
                "ZCOUNT",
                "ZRANK",
                "ZREVRANK",
                "ZPOPMIN",
                "ZPOPMAX",
                "BZPOPMIN",
                "BZPOPMAX",
                "ZSCAN",
                "ZMSCORE",
                "ZRANGESTORE",
                "ZUNIONSTORE",
                "ZINTERSTORE",
            ],
        ),
        (
            "streams",
            &[
                "XADD",
                "XREAD",
                "XRANGE",
                "XREVRANGE",
                "XLEN",
                "XDEL",
                "XTRIM",
                "XGROUP",
                "XREADGROUP",
                "XACK",
                "XPENDING",
                "XCLAIM",
                "XAUTOCLAIM",
                "XINFO",
            ],
        ),
        (
            "pub/sub",
            &[
                "SUBSCRIBE",
                "UNSUBSCRIBE",
                "PSUBSCRIBE",
                "PUNSUBSCRIBE",
                "PUBLISH",
                "PUBSUB",
                "SSUBSCRIBE",
                "SUNSUBSCRIBE",
                "SPUBLISH",
            ],
        ),
        (
            "scripting",
            &[
                "EVAL",
                "EVALSHA",
                "EVAL_RO",
                "EVALSHA_RO",
                "SCRIPT",
                "FUNCTION",
                "FCALL",
                "FCALL_RO",
            ],
        ),
        (
            "geo",
            &[
                "GEOADD",
                "GEODIST",
                "GEOHASH",
                "GEOPOS",
                "GEORADIUS",
                "GEOSEARCH",
                "GEOSEARCHSTORE",
            ],
        ),
        ("HyperLogLog", &["PFADD", "PFCOUNT", "PFMERGE"]),
        (
            "bitmaps",
            &[
                "SETBIT",
                "GETBIT",
                "BITCOUNT",
                "BITOP",
                "BITPOS",
                "BITFIELD",
                "BITFIELD_RO",
            ],
        ),
        (
            "cluster mode",
            &["CLUSTER", "READONLY", "READWRITE", "ASKING"],
        ),
        ("ACL users", &["ACL"]),
        ("modules", &["MODULE"]),
        ("MONITOR", &["MONITOR"]),
        (
            "keyspace moves between databases",
            &["MOVE", "SWAPDB", "MIGRATE", "DUMP", "RESTORE"],
        ),
        ("sorting", &["SORT", "SORT_RO"]),
    ];
    let name = std::str::from_utf8(name).ok()?;
    FAMILIES
        .iter()
        .find(|(_, names)| names.contains(&name))
        .map(|(family, _)| *family)
}
