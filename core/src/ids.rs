//! Identifiers as newtypes, so a block id is never taken for an offset or an
//! LSN for a count.

use std::fmt;

/// A database's number within its engine. Shared by primary and secondaries:
/// deltas name databases by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DbId(pub u32);

/// A block's logical name within its database. Shared by primary and
/// secondaries; each node maps it to its own physical slot through its
/// location table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockId(pub u32);

/// Log sequence number: one per committed transaction, rising by one.
/// `Lsn(0)` is the empty engine, before any commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    /// The LSN after this one.
    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

/// Where a record lives: its block and its byte offset in that block. Record
/// ids are logical (block ids, not addresses), so they mean the same thing on
/// every node and survive relocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub block: BlockId,
    pub offset: u32,
}

impl RecordId {
    /// The greatest id, an upper bound in ordered ranges.
    pub const MAX: RecordId = RecordId {
        block: BlockId(u32::MAX),
        offset: u32::MAX,
    };
}

impl fmt::Display for DbId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "db#{}", self.0)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block#{}", self.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.block, self.offset)
    }
}
