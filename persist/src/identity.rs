//! `node-id`: who this node is, kept with its data so that a restart is the
//! same node to its peers (the primary tells a reconnecting secondary from a
//! new one by its id) and so that ids need no configuration.
//!
//! The file is text, one line: `hotblock-node-id <id>`, the id a decimal
//! number in `1..=NODE_ID_MAX`. It is written once, atomically, the first
//! time a node starts on the directory, and never changed after: an
//! operator who wants another id passes `--node-id`, which wins over it.
//! A directory copied to seed another node carries the id with it: remove
//! `node-id` from the copy (or pass `--node-id`), or the two nodes are one
//! member to their primary and close each other's sessions.

use std::path::Path;

use hotblock_core::repl::NodeId;

use crate::error::PersistError;
use crate::files;

/// The file's name in the data directory.
pub(crate) const NODE_ID_FILE: &str = "node-id";

/// The largest node id: an epoch holds the id of the node promoted in it in
/// its low 16 bits (see `hotblock_core::repl::Epoch`).
pub const NODE_ID_MAX: u64 = u16::MAX as u64;

const PREFIX: &str = "hotblock-node-id ";

/// The id kept in `dir`, or `new()`'s, saved there first.
pub(crate) fn load_or_create(
    dir: &Path,
    new: impl FnOnce() -> NodeId,
) -> Result<NodeId, PersistError> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text).ok_or_else(|| PersistError::Corrupt {
            path: path.clone(),
            offset: 0,
            why: format!(
                "expected one line 'hotblock-node-id N' with N in 1..={NODE_ID_MAX}; \
                 fix or remove it (a new id makes this node a new member to its peers)"
            ),
            source: None,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = new();
            assert!(
                (1..=NODE_ID_MAX).contains(&id.0),
                "node ids are 1..={NODE_ID_MAX}"
            );
            files::write_atomically(dir, NODE_ID_FILE, format!("{PREFIX}{}\n", id.0).as_bytes())?;
            Ok(id)
        }
        Err(e) => Err(PersistError::io("reading", &path)(e)),
    }
}

fn parse(text: &str) -> Option<NodeId> {
    // Hand edits may lose the newline or add a carriage return.
    let id: u64 = text.trim().strip_prefix(PREFIX)?.parse().ok()?;
    (1..=NODE_ID_MAX).contains(&id).then_some(NodeId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), || NodeId(4242)).unwrap();
        assert_eq!(first, NodeId(4242));
        let again = load_or_create(dir.path(), || NodeId(7)).unwrap();
        assert_eq!(again, NodeId(4242));
    }

    #[test]
    fn a_hand_edited_file_without_its_newline_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NODE_ID_FILE), "hotblock-node-id 12\r\n").unwrap();
        assert_eq!(
            load_or_create(dir.path(), || NodeId(1)).unwrap(),
            NodeId(12)
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_new_id() {
        for bad in [
            "",
            "hotblock-node-id 0\n",
            "hotblock-node-id 65536\n",
            "hotblock-node-id x\n",
            "4242\n",
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(NODE_ID_FILE), bad).unwrap();
            let e = load_or_create(dir.path(), || NodeId(1)).unwrap_err();
            assert!(e.to_string().contains("node-id"), "{bad:?}: {e}");
        }
    }
}
