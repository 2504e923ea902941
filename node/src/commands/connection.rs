//! The commands about the connection itself rather than data or the node:
//! `PING`, `ECHO`, `QUIT`, `AUTH`, `HELLO`, `SELECT`, `CLIENT` and
//! `COMMAND`. They read or change the [`Session`] only (`SELECT` checks
//! that the database exists), and are what clients send at connect.

use bytes::Bytes;

use super::session::Session;
use super::{syntax_error, text, wrong_arity};
use crate::resp::Reply;
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

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`. Only RESP2 is
/// spoken; `HELLO 3` gets Redis's `-NOPROTO`, and clients fall back.
pub(super) fn hello(node: &Node, session: &mut Session, args: &[Bytes]) -> Reply {
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

/// `CLIENT SETNAME|GETNAME|ID|SETINFO`.
pub(super) fn client(session: &mut Session, args: &[Bytes]) -> Reply {
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

/// Enough of `COMMAND` for clients that ask at connect (`redis-cli` asks
/// for `COMMAND DOCS`): no command table is published.
pub(super) fn command(args: &[Bytes]) -> Reply {
    match args.get(1).map(|a| a.to_ascii_uppercase()) {
        Some(sub) if &sub[..] == b"COUNT" => Reply::Integer(0),
        _ => Reply::Array(Some(vec![])),
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
