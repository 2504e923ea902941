//! One client connection's state, kept by the server between requests and
//! read or changed by the commands: who it is, whether it authenticated,
//! which database the Redis-style commands act on, its open `MULTI`, and
//! the LSN `WAIT` waits for. Its own file because every command family
//! touches it and none owns it.

use hotblock_core::Lsn;

use super::transaction::Multi;
use crate::DEFAULT_DATABASE;

/// One client's connection state.
#[derive(Debug)]
pub(crate) struct Session {
    pub(super) id: u64,
    pub(crate) authenticated: bool,
    /// The database `SET`, `GET`, `DEL`, `EXISTS` and `DBSIZE` act on.
    pub(super) db: String,
    pub(super) multi: Option<Multi>,
    /// The LSN of this client's last write, which `WAIT` waits for.
    pub(super) last_write: Lsn,
    pub(super) name: Option<String>,
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
            last_write: Lsn::ZERO,
            name: None,
            close: false,
        }
    }
}
