//! The commands about the connection itself rather than data or the node:
//! `PING`, `ECHO`, `QUIT`, `AUTH`, `HELLO`, `SELECT`, `CLIENT` and
//! `COMMAND`. They read or change the [`Session`] only (`SELECT` checks
//! that the database exists), and are what clients send at connect.

use bytes::Bytes;

use super::session::Session;
use super::{syntax_error, table, text, wrong_arity};
use crate::resp::{Protocol, Reply};
use crate::Node;

/// `PING [message]`.
pub(super) fn ping(args: &[Bytes]) -> Reply {
    match args.len() {
        1 => Reply::Simple("PONG".into()),
        2 => Reply::Bulk(Some(args[1].clone())),
        _ => wrong_arity(b"ping"),
    }
}

/// `ECHO message`.
pub(super) fn echo(args: &[Bytes]) -> Reply {
    match args.len() {
        2 => Reply::Bulk(Some(args[1].clone())),
        _ => wrong_arity(b"echo"),
    }
}

/// `QUIT`: closes the connection after its reply.
pub(super) fn quit(session: &mut Session) -> Reply {
    session.close = true;
    Reply::ok()
}

/// `AUTH`: the password of `--requirepass` authenticates the connection.
pub(super) fn auth(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
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

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`: authenticates,
/// names the connection and switches it to RESP2 or RESP3, replying with
/// Redis's map of the server's facts (a flat array under RESP2). Nothing
/// changes unless the whole command succeeds.
pub(super) fn hello(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    let mut rest = args;
    let mut protocol = session.protocol;
    if let [version, tail @ ..] = rest {
        protocol = match std::str::from_utf8(version)
            .ok()
            .and_then(|v| v.parse::<i64>().ok())
        {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return Reply::Error("NOPROTO unsupported protocol version".into()),
            None => {
                return Reply::Error(
                    "ERR Protocol version is not an integer or out of range".into(),
                )
            }
        };
        rest = tail;
    }
    let mut name = None;
    while !rest.is_empty() {
        match (&rest[0].to_ascii_uppercase()[..], rest) {
            (b"AUTH", [_, user, password, tail @ ..]) => {
                if let Reply::Error(e) = auth(node, session, &[user.clone(), password.clone()]) {
                    return Reply::Error(e);
                }
                rest = tail;
            }
            (b"SETNAME", [_, new_name, tail @ ..]) => {
                name = Some(String::from_utf8_lossy(new_name).into_owned());
                rest = tail;
            }
            _ => return syntax_error(),
        }
    }
    if !session.authenticated {
        return Reply::Error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time".into());
    }
    session.protocol = protocol;
    if name.is_some() {
        session.name = name;
    }
    let role = match node.role_name() {
        "primary" => "master",
        _ => "replica",
    };
    Reply::Map(vec![
        (text("server"), text("hotblock")),
        (text("version"), text(env!("CARGO_PKG_VERSION"))),
        (
            text("proto"),
            Reply::Integer(match protocol {
                Protocol::Resp2 => 2,
                Protocol::Resp3 => 3,
            }),
        ),
        (text("id"), Reply::Integer(session.id as i64)),
        (text("mode"), text("standalone")),
        (text("role"), text(role)),
        (text("modules"), Reply::Array(Some(vec![]))),
    ])
}

/// `SELECT db`: databases have names here; `SELECT 0` is the default one.
pub(super) fn select(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    if args.len() != 2 {
        return wrong_arity(b"select");
    }
    let Ok(name) = std::str::from_utf8(&args[1]) else {
        return Reply::Error("ERR database names are UTF-8".into());
    };
    let engine = match node.read_engine() {
        Ok(engine) => engine,
        Err(r) => return Reply::Error(node.refusal(r)),
    };
    match engine.database(name) {
        Ok(_) => {
            session.db = name.to_string();
            Reply::ok()
        }
        Err(_) => Reply::Error(format!("ERR no database '{name}' (DB.LIST shows them)")),
    }
}

/// `CLIENT SETNAME|GETNAME|ID|SETINFO|INFO|LIST|KILL|NO-EVICT|NO-TOUCH`.
pub(super) fn client(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
    let sub = args
        .get(1)
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    match (&sub[..], args.len()) {
        (b"SETNAME", 3) => {
            if args[2].iter().any(|b| !(b'!'..=b'~').contains(b)) {
                return Reply::Error(
                    "ERR Client names cannot contain spaces, newlines or special characters."
                        .into(),
                );
            }
            session.name = match args[2].is_empty() {
                true => None,
                false => Some(String::from_utf8_lossy(&args[2]).into_owned()),
            };
            Reply::ok()
        }
        (b"GETNAME", 2) => Reply::Bulk(session.name.clone().map(Bytes::from)),
        (b"ID", 2) => Reply::Integer(session.id as i64),
        (b"SETINFO", 4) => Reply::ok(),
        (b"NO-EVICT" | b"NO-TOUCH", 3)
            if args[2].eq_ignore_ascii_case(b"on") || args[2].eq_ignore_ascii_case(b"off") =>
        {
            // Nothing is evicted and nothing tracks access here.
            Reply::ok()
        }
        (b"INFO", 2) => match node.clients().get(session.id) {
            Some(entry) => {
                session.publish(&entry);
                Reply::Verbatim(format!("{}\n", entry.line()))
            }
            None => Reply::Verbatim(String::new()),
        },
        (b"LIST", _) => client_list(node, session, &args[2..]),
        (b"KILL", 3) => {
            // The old form: `CLIENT KILL addr`.
            let addr = String::from_utf8_lossy(&args[2]);
            let found = node
                .clients()
                .all()
                .into_iter()
                .find(|c| c.peer.to_string() == addr);
            match found {
                Some(c) => {
                    c.kill();
                    Reply::ok()
                }
                None => Reply::Error("ERR No such client".into()),
            }
        }
        (b"KILL", _) => client_kill(node, session, &args[2..]),
        _ => Reply::Error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
            String::from_utf8_lossy(args.get(1).map_or(&b""[..], |a| &a[..]))
        )),
    }
}

/// `CLIENT LIST [TYPE normal] [ID id ...]`: one line per client.
fn client_list(node: &Node, session: &Session, filters: &[Bytes]) -> Reply {
    let mut ids: Option<Vec<u64>> = None;
    match filters {
        [] => {}
        [word, kind] if word.eq_ignore_ascii_case(b"TYPE") => {
            if !kind.eq_ignore_ascii_case(b"normal") {
                // Replication runs on its own port: no client here is of
                // another type.
                return Reply::Verbatim(String::new());
            }
        }
        [word, list @ ..] if word.eq_ignore_ascii_case(b"ID") && !list.is_empty() => {
            let parsed: Option<Vec<u64>> = list
                .iter()
                .map(|id| std::str::from_utf8(id).ok()?.parse().ok())
                .collect();
            let Some(parsed) = parsed else {
                return Reply::Error("ERR Invalid client ID".into());
            };
            ids = Some(parsed);
        }
        _ => return syntax_error(),
    }
    if let Some(me) = node.clients().get(session.id) {
        session.publish(&me);
    }
    let mut out = String::new();
    for entry in node.clients().all() {
        if ids.as_ref().is_some_and(|ids| !ids.contains(&entry.id)) {
            continue;
        }
        out.push_str(&entry.line());
        out.push('\n');
    }
    Reply::Verbatim(out)
}

/// `CLIENT KILL [ID id] [ADDR ip:port] [LADDR ip:port] [SKIPME yes|no]
/// [TYPE normal] [USER default]`: how many clients were closed.
fn client_kill(node: &Node, session: &Session, filters: &[Bytes]) -> Reply {
    let (mut id, mut addr, mut laddr, mut skip_me) = (None, None, None, true);
    let mut rest = filters;
    while let [word, value, tail @ ..] = rest {
        let value_text = String::from_utf8_lossy(value).into_owned();
        match &word.to_ascii_uppercase()[..] {
            b"ID" => match value_text.parse::<u64>() {
                Ok(n) => id = Some(n),
                Err(_) => return Reply::Error("ERR client-id should be greater than 0".into()),
            },
            b"ADDR" => addr = Some(value_text),
            b"LADDR" => laddr = Some(value_text),
            b"SKIPME" => match value_text.to_ascii_lowercase().as_str() {
                "yes" => skip_me = true,
                "no" => skip_me = false,
                _ => return syntax_error(),
            },
            b"TYPE" if value_text.eq_ignore_ascii_case("normal") => {}
            b"USER" if value_text == "default" => {}
            b"TYPE" | b"USER" => return Reply::Integer(0),
            _ => return syntax_error(),
        }
        rest = tail;
    }
    if !rest.is_empty() {
        return syntax_error();
    }
    let mut killed = 0;
    for entry in node.clients().all() {
        let matches = id.is_none_or(|id| id == entry.id)
            && addr.as_ref().is_none_or(|a| *a == entry.peer.to_string())
            && laddr.as_ref().is_none_or(|a| *a == entry.local.to_string())
            && !(skip_me && entry.id == session.id);
        if matches {
            entry.kill();
            killed += 1;
        }
    }
    Reply::Integer(killed)
}

/// `COMMAND`, `COMMAND COUNT|LIST|INFO [name ...]|DOCS [name ...]`, from
/// the table of every command hotblock answers.
pub(super) fn command(args: &[Bytes]) -> Reply {
    let sub = args.get(1).map(|a| a.to_ascii_uppercase());
    match sub.as_deref() {
        None => Reply::Array(Some(
            table::COMMANDS.iter().map(table::info_reply).collect(),
        )),
        Some(b"COUNT") => Reply::Integer(table::COMMANDS.len() as i64),
        Some(b"LIST") => Reply::Array(Some(table::COMMANDS.iter().map(|c| text(c.name)).collect())),
        Some(b"INFO") if args.len() == 2 => Reply::Array(Some(
            table::COMMANDS.iter().map(table::info_reply).collect(),
        )),
        Some(b"INFO") => Reply::Array(Some(
            args[2..]
                .iter()
                .map(|name| table::find(name).map_or(Reply::Array(None), table::info_reply))
                .collect(),
        )),
        Some(b"DOCS") => {
            let wanted: Vec<&table::CommandSpec> = match args.len() {
                2 => table::COMMANDS.iter().collect(),
                _ => args[2..].iter().filter_map(|n| table::find(n)).collect(),
            };
            Reply::Map(
                wanted
                    .into_iter()
                    .map(|c| (text(c.name), table::docs_reply(c)))
                    .collect(),
            )
        }
        Some(_) => Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
    }
}
