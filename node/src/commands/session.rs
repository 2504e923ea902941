//! One client connection's state, kept by the server between requests and
//! read or changed by the commands: who it is, whether it authenticated,
//! which database the Redis-style commands act on, its open `MULTI`, and
//! its `WATCH`ed keys, the LSN `WAIT` waits for. Its own file because every command family
//! touches it and none owns it.

use hotblock_core::Lsn;

use super::transaction::Multi;
use crate::clients::ClientEntry;
use crate::resp::Protocol;
use crate::watch::Watch;
use crate::DEFAULT_DATABASE;

/// One client's connection state.
#[derive(Debug)]
pub(crate) struct Session {
    pub(super) id: u64,
    pub(crate) authenticated: bool,
    /// The database `SET`, `GET`, `DEL`, `EXISTS` and `DBSIZE` act on.
    pub(super) db: String,
    pub(super) multi: Option<Multi>,
    /// The keys `WATCH`ed until the next `EXEC`, `DISCARD` or `UNWATCH`.
    pub(super) watch: Option<Watch>,
    /// The LSN of this client's last write, which `WAIT` waits for.
    pub(super) last_write: Lsn,
    pub(super) name: Option<String>,
    /// RESP2 until `HELLO 3`.
    pub(crate) protocol: Protocol,
    /// The name of the last command run, for `CLIENT LIST`.
    pub(super) last_command: Option<bytes::Bytes>,
    /// Close after this reply (`QUIT`, `SHUTDOWN`, a failed `AUTH` flood).
    pub(crate) close: bool,
}

impl Session {
    pub(crate) fn new(id: u64, authenticated: bool) -> Session {
        Session {
            id,
            authenticated,
            db: DEFAULT_DATABASE.to_string(),
            multi: None,
            watch: None,
            last_write: Lsn::ZERO,
            name: None,
            protocol: Protocol::Resp2,
            close: false,
            last_command: None,
        }
    }

    /// Refreshes what `CLIENT LIST` shows of this connection.
    pub(crate) fn publish(&self, entry: &ClientEntry) {
        let mut state = entry.state.lock().expect("client entry lock");
        state.last_active = std::time::Instant::now();
        if let Some(name) = &self.last_command {
            if !name.eq_ignore_ascii_case(state.last_command.as_bytes()) {
                state.last_command = String::from_utf8_lossy(name).to_lowercase();
            }
        }
        if state.db != self.db {
            state.db.clone_from(&self.db);
        }
        if state.name != self.name {
            state.name.clone_from(&self.name);
        }
        state.protocol = match self.protocol {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        };
        state.in_multi = self.multi.is_some();
    }
}
