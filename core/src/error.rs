//! Error types at the engine's edges. Each variant's doc says what caused it
//! and what to do about it.

use crate::ids::{BlockId, DbId, Lsn};

/// Errors of engine operations: schema, transactions, queries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No database has this name. Create it first.
    #[error("unknown database '{0}'")]
    UnknownDatabase(String),
    /// The transaction's delta could hold more than a delta may
    /// (`DELTA_OPS_MAX` ops, `DELTA_SIZE_MAX` bytes), which secondaries and
    /// the log would refuse. Nothing was changed: split it.
    #[error(
        "transaction too large to replicate: up to {ops} operations and {bytes} bytes; split it"
    )]
    TransactionTooLarge { ops: usize, bytes: usize },
    /// A transaction reads or writes only the databases it began on
    /// (`Engine::begin_across`).
    #[error("database '{0}' is not part of this transaction")]
    NotInTransaction(String),
    /// A database with this name exists already.
    #[error("database '{0}' already exists")]
    DatabaseExists(String),
    /// The database declares no non-unique key of this name.
    #[error("database '{db}' has no index '{index}'")]
    UnknownIndex { db: String, index: String },
    /// A record must carry one value slot (present or absent) per declared
    /// non-unique key.
    #[error("database '{db}' declares {expected} non-unique keys, the record gives {got}")]
    ValueCount {
        db: String,
        expected: usize,
        got: usize,
    },
    /// Database or index names are 1..=64 bytes of `[A-Za-z0-9_.:-]`, and
    /// index names are distinct.
    #[error("invalid name '{name}': {why}")]
    InvalidName { name: String, why: &'static str },
    /// Too many indexes or databases were asked for.
    #[error("{what}: at most {max}")]
    TooMany { what: &'static str, max: usize },
    /// Block sizes are powers of two from 4 KiB to 1 MiB.
    #[error("invalid block size {0}: a power of two from 4096 to 1048576 bytes")]
    InvalidBlockSize(usize),
    /// Unique keys are never empty.
    #[error("empty key")]
    EmptyKey,
    #[error("key of {len} bytes exceeds the limit of {max}")]
    KeyTooLong { len: usize, max: usize },
    #[error("non-unique value of {len} bytes exceeds the limit of {max}")]
    ValueTooLong { len: usize, max: usize },
    /// A record never spans blocks: use a larger block size or a smaller record.
    #[error(
        "record of {record_bytes} bytes does not fit in a block of {block_size} bytes \
         ({block_capacity} bytes for records)"
    )]
    RecordTooLarge {
        record_bytes: usize,
        block_capacity: usize,
        block_size: usize,
    },
    /// `insert` found the unique key present (committed, or put earlier in
    /// this transaction). Use `put` to replace.
    #[error("duplicate unique key")]
    DuplicateKey,
    /// The configured memory limit would be exceeded. Nothing was changed:
    /// delete records, compact, or raise the limit.
    #[error(
        "memory limit of {limit_bytes} bytes reached (in use {used_bytes}, asked {asked_bytes})"
    )]
    MemoryLimit {
        limit_bytes: u64,
        used_bytes: u64,
        asked_bytes: u64,
    },
    /// A database reached `BLOCKS_PER_DB_MAX` blocks.
    #[error("database {db} is full: {max} blocks")]
    DatabaseFull { db: DbId, max: usize },
    /// Queries by index need the indexes, which a passive engine does not keep.
    /// Call `Engine::rebuild_indexes` (promotion does).
    #[error("indexes are not built on this engine (passive); rebuild them first")]
    IndexesNotBuilt,
    /// An engine that applies a primary's deltas does not run its own
    /// transactions until it is promoted.
    #[error("this engine follows a primary (it applies deltas); promote it to write")]
    ReadOnly,
    /// A block's bytes do not parse. The engine stops writing to the database
    /// rather than build on bytes it cannot vouch for; resync it from a peer.
    #[error("corrupt block {block} in {db}: {why}")]
    Corrupt {
        db: DbId,
        block: BlockId,
        why: String,
    },
    /// An earlier failure left the database in a state it cannot vouch for;
    /// it refuses writes. Reopen or resync.
    #[error("database {0} refuses writes after an earlier failure")]
    Poisoned(DbId),
    /// The process that last used this directory-backed arena stopped while
    /// applying this LSN, so its blocks may hold part of that transaction.
    /// Resync the node from a peer (or start it empty).
    #[error("blocks may hold part of the transaction at lsn {lsn} (the process stopped while applying it)")]
    TornCommit { lsn: u64 },
    /// The arena's memory could not be mapped or grown (with
    /// `ArenaBacking::Dir`: its files on tmpfs could not be created,
    /// extended or synced). Nothing was changed.
    #[error("arena I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Why a record's bytes do not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordDecodeError {
    #[error("record truncated")]
    Truncated,
    #[error("bad record state byte {0}")]
    BadState(u8),
    #[error("record declares {0} values")]
    TooManyValues(usize),
    #[error("record slot of {slot_len} bytes runs past the {available} bytes used")]
    SlotPastEnd { slot_len: usize, available: usize },
    #[error("record fields need {need} bytes, its slot has {slot_len}")]
    FieldsPastSlot { need: usize, slot_len: usize },
}

/// Why encoded delta bytes were rejected. Nothing is applied from a delta
/// that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaDecodeError {
    #[error("delta truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("not a delta (bad magic)")]
    BadMagic,
    #[error("unsupported delta format version {0}")]
    UnsupportedVersion(u8),
    #[error("delta of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("delta checksum mismatch")]
    Checksum,
    #[error("unknown delta op tag {0}")]
    UnknownOp(u8),
    #[error("malformed delta: {0}")]
    Malformed(&'static str),
}

/// Why a decoded delta could not be applied. A rejected delta leaves no trace.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Deltas apply in LSN order, one after another.
    #[error("delta for {got} does not follow the applied {applied}")]
    LsnGap { applied: Lsn, got: Lsn },
    #[error("delta names unknown database {0}")]
    UnknownDatabase(DbId),
    #[error("delta creates {0}, which exists")]
    DatabaseExists(DbId),
    #[error("delta names unknown block {block} of {db}")]
    UnknownBlock { db: DbId, block: BlockId },
    #[error("delta allocates block {block} of {db}, which exists")]
    BlockExists { db: DbId, block: BlockId },
    #[error("delta allocates block {block} of {db}, far past the blocks in use")]
    SparseBlock { db: DbId, block: BlockId },
    #[error("delta writes overlapping ranges of a block of {db}")]
    OverlappingWrites { db: DbId },
    #[error("delta writes {len} bytes at {offset} of a {block_size}-byte block")]
    OutOfBlock {
        offset: u32,
        len: u32,
        block_size: usize,
    },
    #[error("delta touches {0}, not the database of its transaction")]
    WrongDatabase(DbId),
    /// The delta was applied but left the database's bytes unparseable.
    #[error(transparent)]
    Engine(#[from] Error),
}
