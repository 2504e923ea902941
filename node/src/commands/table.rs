//! The command table `COMMAND` publishes: every command hotblock answers,
//! with Redis's arity, flags and key positions, so that clients that ask
//! (redis-cli's hints, cluster-aware clients finding keys) see the truth.
//! One table, checked against the dispatcher by a test, so it cannot drift.

use super::text;
use crate::resp::Reply;

/// One command as `COMMAND INFO` describes it.
pub(super) struct CommandSpec {
    pub name: &'static str,
    pub arity: i32,
    pub flags: &'static [&'static str],
    /// First key, last key (-1: the last argument), step; 0 0 0 for none.
    pub keys: (i32, i32, i32),
    pub group: &'static str,
    pub summary: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    group: &'static str,
    summary: &'static str,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        keys,
        group,
        summary,
    }
}

const R: &[&str] = &["readonly", "fast"];
const RS: &[&str] = &["readonly"];
const W: &[&str] = &["write", "denyoom", "fast"];
const WD: &[&str] = &["write", "fast"];
const WS: &[&str] = &["write"];
const C: &[&str] = &["fast", "loading", "stale"];
const A: &[&str] = &["admin", "noscript"];
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);
const PAIRS: (i32, i32, i32) = (1, -1, 2);
const TWO: (i32, i32, i32) = (1, 2, 1);
const NONE: (i32, i32, i32) = (0, 0, 0);

/// Every command, by name.
pub(super) const COMMANDS: &[CommandSpec] = &[
    spec(
        "get",
        2,
        R,
        ONE,
        "string",
        "Returns the string value of a key.",
    ),
    spec(
        "set",
        -3,
        W,
        ONE,
        "string",
        "Sets the string value of a key.",
    ),
    spec("del", -2, WS, ALL, "generic", "Deletes one or more keys."),
    spec(
        "unlink",
        -2,
        WD,
        ALL,
        "generic",
        "Deletes one or more keys.",
    ),
    spec(
        "exists",
        -2,
        R,
        ALL,
        "generic",
        "Counts the keys that exist.",
    ),
    spec(
        "dbsize",
        1,
        R,
        NONE,
        "server",
        "Returns the number of keys in the database.",
    ),
    spec(
        "mget",
        -2,
        R,
        ALL,
        "string",
        "Returns the values of one or more keys.",
    ),
    spec(
        "mset",
        -3,
        W,
        PAIRS,
        "string",
        "Sets the values of one or more keys.",
    ),
    spec(
        "msetnx",
        -3,
        W,
        PAIRS,
        "string",
        "Sets keys only if none of them exists.",
    ),
    spec(
        "setnx",
        3,
        W,
        ONE,
        "string",
        "Sets a key only if it does not exist.",
    ),
    spec(
        "getset",
        3,
        W,
        ONE,
        "string",
        "Sets a key and returns its old value.",
    ),
    spec(
        "getdel",
        2,
        WD,
        ONE,
        "string",
        "Returns a key's value and deletes it.",
    ),
    spec(
        "getrange",
        4,
        RS,
        ONE,
        "string",
        "Returns a substring of a value.",
    ),
    spec(
        "substr",
        4,
        RS,
        ONE,
        "string",
        "Returns a substring of a value.",
    ),
    spec(
        "setrange",
        4,
        W,
        ONE,
        "string",
        "Overwrites part of a value from an offset.",
    ),
    spec("append", 3, W, ONE, "string", "Appends to a value."),
    spec(
        "strlen",
        2,
        R,
        ONE,
        "string",
        "Returns the length of a value.",
    ),
    spec(
        "incr",
        2,
        W,
        ONE,
        "string",
        "Increments an integer value by one.",
    ),
    spec(
        "decr",
        2,
        W,
        ONE,
        "string",
        "Decrements an integer value by one.",
    ),
    spec(
        "incrby",
        3,
        W,
        ONE,
        "string",
        "Increments an integer value.",
    ),
    spec(
        "decrby",
        3,
        W,
        ONE,
        "string",
        "Decrements an integer value.",
    ),
    spec(
        "incrbyfloat",
        3,
        W,
        ONE,
        "string",
        "Increments a floating point value.",
    ),
    spec(
        "type",
        2,
        R,
        ONE,
        "generic",
        "Returns the type of a key's value.",
    ),
    spec(
        "keys",
        2,
        RS,
        NONE,
        "keyspace",
        "Returns the keys that match a pattern.",
    ),
    spec("scan", -2, RS, NONE, "keyspace", "Iterates over the keys."),
    spec(
        "randomkey",
        1,
        RS,
        NONE,
        "keyspace",
        "Returns a random key.",
    ),
    spec(
        "rename",
        3,
        WS,
        TWO,
        "generic",
        "Renames a key, overwriting the destination.",
    ),
    spec(
        "renamenx",
        3,
        WD,
        TWO,
        "generic",
        "Renames a key if the new name is free.",
    ),
    spec(
        "copy",
        -3,
        W,
        TWO,
        "generic",
        "Copies a value to a new key.",
    ),
    spec(
        "flushdb",
        -1,
        WS,
        NONE,
        "server",
        "Deletes every key of the database.",
    ),
    spec(
        "flushall",
        -1,
        WS,
        NONE,
        "server",
        "Deletes every key of every database.",
    ),
    spec(
        "setex",
        4,
        W,
        ONE,
        "string",
        "Sets a value and its time to live in seconds.",
    ),
    spec(
        "psetex",
        4,
        W,
        ONE,
        "string",
        "Sets a value and its time to live in milliseconds.",
    ),
    spec(
        "getex",
        -2,
        WD,
        ONE,
        "string",
        "Returns a value and changes its expiry.",
    ),
    spec(
        "expire",
        -3,
        WD,
        ONE,
        "generic",
        "Sets a key's time to live in seconds.",
    ),
    spec(
        "pexpire",
        -3,
        WD,
        ONE,
        "generic",
        "Sets a key's time to live in milliseconds.",
    ),
    spec(
        "expireat",
        -3,
        WD,
        ONE,
        "generic",
        "Sets a key's expiry as a Unix time in seconds.",
    ),
    spec(
        "pexpireat",
        -3,
        WD,
        ONE,
        "generic",
        "Sets a key's expiry as a Unix time in milliseconds.",
    ),
    spec(
        "ttl",
        2,
        R,
        ONE,
        "generic",
        "Returns a key's time to live in seconds.",
    ),
    spec(
        "pttl",
        2,
        R,
        ONE,
        "generic",
        "Returns a key's time to live in milliseconds.",
    ),
    spec(
        "expiretime",
        2,
        R,
        ONE,
        "generic",
        "Returns a key's expiry as a Unix time in seconds.",
    ),
    spec(
        "pexpiretime",
        2,
        R,
        ONE,
        "generic",
        "Returns a key's expiry as a Unix time in milliseconds.",
    ),
    spec("persist", 2, WD, ONE, "generic", "Removes a key's expiry."),
    spec(
        "rec.expire",
        4,
        WD,
        NONE,
        "records",
        "Sets a record's time to live in seconds.",
    ),
    spec(
        "rec.ttl",
        3,
        R,
        NONE,
        "records",
        "Returns a record's time to live in seconds.",
    ),
    spec(
        "rec.get",
        3,
        R,
        NONE,
        "records",
        "Returns a record: payload and non-unique values.",
    ),
    spec(
        "rec.mget",
        -3,
        R,
        NONE,
        "records",
        "Returns several records.",
    ),
    spec(
        "rec.put",
        -4,
        W,
        NONE,
        "records",
        "Writes a record with its non-unique values.",
    ),
    spec("rec.del", 3, WS, NONE, "records", "Deletes a record."),
    spec(
        "rec.find",
        -4,
        RS,
        NONE,
        "records",
        "Finds records by a non-unique value.",
    ),
    spec(
        "rec.count",
        2,
        R,
        NONE,
        "records",
        "Returns the number of records.",
    ),
    spec(
        "rec.scan",
        -3,
        RS,
        NONE,
        "records",
        "Iterates over a database's records.",
    ),
    spec(
        "db.create",
        -2,
        WS,
        NONE,
        "records",
        "Creates a database with non-unique keys.",
    ),
    spec("db.list", 1, RS, NONE, "records", "Lists the databases."),
    spec(
        "ping",
        -1,
        C,
        NONE,
        "connection",
        "Returns the server's liveliness response.",
    ),
    spec(
        "echo",
        2,
        C,
        NONE,
        "connection",
        "Returns the given string.",
    ),
    spec("quit", -1, C, NONE, "connection", "Closes the connection."),
    spec(
        "auth",
        -2,
        C,
        NONE,
        "connection",
        "Authenticates the connection.",
    ),
    spec(
        "hello",
        -1,
        C,
        NONE,
        "connection",
        "Handshakes: protocol, authentication, name.",
    ),
    spec(
        "select",
        2,
        C,
        NONE,
        "connection",
        "Changes the selected database.",
    ),
    spec(
        "client",
        -2,
        C,
        NONE,
        "connection",
        "Inspects and manages connections.",
    ),
    spec("command", -1, C, NONE, "server", "Describes the commands."),
    spec("multi", 1, C, NONE, "transactions", "Starts a transaction."),
    spec(
        "exec",
        1,
        &["noscript", "loading", "stale"],
        NONE,
        "transactions",
        "Runs a transaction.",
    ),
    spec(
        "discard",
        1,
        C,
        NONE,
        "transactions",
        "Discards a transaction.",
    ),
    spec(
        "watch",
        -2,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        ALL,
        "transactions",
        "Makes the next EXEC fail if any of the keys is written first.",
    ),
    spec(
        "unwatch",
        1,
        &["noscript", "loading", "stale", "fast", "allow_busy"],
        NONE,
        "transactions",
        "Forgets every key WATCHed.",
    ),
    spec(
        "info",
        -1,
        &["loading", "stale"],
        NONE,
        "server",
        "Returns information about the server.",
    ),
    spec(
        "role",
        1,
        C,
        NONE,
        "server",
        "Returns the replication role.",
    ),
    spec("time", 1, C, NONE, "server", "Returns the server time."),
    spec(
        "lastsave",
        1,
        C,
        NONE,
        "server",
        "Returns when the last checkpoint was written.",
    ),
    spec(
        "save",
        1,
        A,
        NONE,
        "server",
        "Writes a checkpoint and waits for it.",
    ),
    spec(
        "bgsave",
        -1,
        A,
        NONE,
        "server",
        "Writes a checkpoint in the background.",
    ),
    spec(
        "wait",
        3,
        &["noscript"],
        NONE,
        "generic",
        "Waits for replication of this client's writes.",
    ),
    spec(
        "replicaof",
        -3,
        A,
        NONE,
        "server",
        "Follows a primary, or becomes one.",
    ),
    spec(
        "slaveof",
        -3,
        A,
        NONE,
        "server",
        "Follows a primary, or becomes one.",
    ),
    spec(
        "failover",
        -1,
        A,
        NONE,
        "server",
        "Hands the primary role to a secondary.",
    ),
    spec("shutdown", -1, A, NONE, "server", "Stops the node."),
    spec("config", -2, A, NONE, "server", "Reads the settings."),
    spec(
        "debug",
        -2,
        A,
        NONE,
        "server",
        "Digests and fault injection.",
    ),
    spec(
        "verify",
        -1,
        A,
        NONE,
        "server",
        "Compares blocks with the primary's.",
    ),
    spec("memory", -2, RS, NONE, "server", "Memory of a key."),
    spec("latency", -2, A, NONE, "server", "Latency events."),
    spec(
        "object",
        -2,
        RS,
        NONE,
        "generic",
        "Inspects a value's encoding.",
    ),
    spec(
        "sentinel",
        -2,
        A,
        NONE,
        "sentinel",
        "Sentinel discovery commands.",
    ),
];

/// `COMMAND INFO`'s entry for one command (Redis 7's ten fields).
pub(super) fn info_reply(c: &CommandSpec) -> Reply {
    let set =
        |items: &[&str]| Reply::Set(items.iter().map(|f| Reply::Simple(f.to_string())).collect());
    Reply::Array(Some(vec![
        text(c.name),
        Reply::Integer(c.arity as i64),
        set(c.flags),
        Reply::Integer(c.keys.0 as i64),
        Reply::Integer(c.keys.1 as i64),
        Reply::Integer(c.keys.2 as i64),
        set(&[]),
        set(&[]),
        Reply::Array(Some(vec![])),
        Reply::Array(Some(vec![])),
    ]))
}

/// `COMMAND DOCS`'s entry for one command.
pub(super) fn docs_reply(c: &CommandSpec) -> Reply {
    Reply::Map(vec![
        (text("summary"), text(c.summary)),
        (text("since"), text("1.0.0")),
        (text("group"), text(c.group)),
    ])
}

pub(super) fn find(name: &[u8]) -> Option<&'static CommandSpec> {
    let name = String::from_utf8_lossy(name).to_lowercase();
    COMMANDS.iter().find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::super::data::Data;
    use super::*;

    #[test]
    fn the_table_agrees_with_the_data_commands() {
        for c in COMMANDS {
            if let Some(cmd) = Data::parse(c.name.to_ascii_uppercase().as_bytes()) {
                assert_eq!(cmd.arity(), c.arity, "{}", c.name);
                assert_eq!(cmd.writes(), c.flags.contains(&"write"), "{}", c.name);
            }
        }
        let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
        for name in names.iter() {
            assert_eq!(
                names.iter().filter(|n| *n == name).count(),
                1,
                "{name} twice"
            );
        }
    }
}
