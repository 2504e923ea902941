//! Engine and cluster errors as RESP errors. Where Redis has the same
//! condition, the reply carries its error code (`OOM`, `READONLY`,
//! `NOREPLICAS`, `MISCONF`, ...) so that clients react alike; one place so
//! that every command maps an error the same way.

use hotblock_core::Error;
use hotblock_primary::WriteError;

use crate::resp::Reply;

/// The RESP error for an engine error. Where Redis has the same condition,
/// its error code (`OOM`, `READONLY`, `NOREPLICAS`) so clients react alike.
pub(super) fn error_reply(e: &Error) -> Reply {
    Reply::Error(match e {
        Error::MemoryLimit { .. } => {
            format!("OOM command not allowed when used memory > 'maxmemory' ({e})")
        }
        Error::ReadOnly => "READONLY You can't write against a read only replica.".into(),
        Error::Io(_) => format!("MISCONF {e}"),
        _ => format!("ERR {e}"),
    })
}

/// The RESP error for a failed write: the engine's, or a cluster state
/// with Redis's code for it.
pub(super) fn write_error_reply(e: &WriteError) -> Reply {
    Reply::Error(match e {
        WriteError::Engine(e) => return error_reply(e),
        WriteError::Fenced | WriteError::NoLease => format!("READONLY {e}"),
        WriteError::TooFewSecondaries => "NOREPLICAS Not enough good replicas to write.".into(),
        WriteError::OutcomeUnknown { .. } => format!("TIMEOUT {e}"),
        WriteError::Persist(_) => format!("MISCONF {e}"),
        _ => format!("ERR {e}"),
    })
}
