//! Deltas: the physical redo of one transaction, and their encoding.
//!
//! A delta is `TxnBegin`, then block operations, then `TxnCommit {lsn}`.
//! Applying a node's deltas in LSN order to another engine yields
//! byte-identical blocks (see `apply.rs`). An aborted transaction has no
//! delta.
//!
//! A transaction may change several databases (`MULTI` across `SELECT`):
//! its block operations come in one *section* per database, sections in
//! ascending database id, and `TxnBegin` names the first. Ascending order
//! is the order engines take the databases' locks in, so applying a
//! section at a time never deadlocks and the sections are found without a
//! sort.
//!
//! Encoding, format version 1 (`DELTA_FORMAT_VERSION`), little-endian:
//!
//! ```text
//! offset  size      field
//! 0       2         magic "HD"
//! 2       1         format version (1)
//! 3       1         flags, 0
//! 4       4         body_len
//! 8       body_len  ops, each a tag byte and its fields:
//!                     1 TxnBegin    db u32
//!                     2 BlockAlloc  db u32, block u32
//!                     3 BlockWrite  db u32, block u32, offset u32, len u32, len bytes
//!                     4 BlockFree   db u32, block u32
//!                     5 TxnCommit   lsn u64
//!                     6 DbCreate    db u32, block_size u32, name_len u8, name,
//!                                   index_count u8, (name_len u8, name) * index_count
//! 8+body  8         xxh3-64 of every byte before it
//! ```
//!
//! The decoder checks length, magic, version and checksum before it looks at
//! any op, never allocates a declared length up front (write bytes are
//! slices of the input), and checks the op sequence: exactly one `TxnBegin`
//! first and one `TxnCommit` last, the ops between grouped by database in
//! ascending id order, the first group the database `TxnBegin` names. Offsets are checked against the block
//! size when the delta is applied.

use bytes::{BufMut, Bytes};
use xxhash_rust::xxh3::xxh3_64;

use crate::constants::{
    BLOCK_SIZE_MAX, DELTA_OPS_MAX, DELTA_SIZE_MAX, INDEXES_PER_DB_MAX, NAME_LEN_MAX,
};
use crate::error::DeltaDecodeError;
use crate::ids::{BlockId, DbId, Lsn};

pub const DELTA_MAGIC: [u8; 2] = *b"HD";
pub const DELTA_FORMAT_VERSION: u8 = 1;
const PREFIX_SIZE: usize = 8;
const CHECKSUM_SIZE: usize = 8;

const TAG_BEGIN: u8 = 1;
const TAG_ALLOC: u8 = 2;
const TAG_WRITE: u8 = 3;
const TAG_FREE: u8 = 4;
const TAG_COMMIT: u8 = 5;
const TAG_DB_CREATE: u8 = 6;

/// One operation of a delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeltaOp {
    /// Opens the transaction; names the first database it changes.
    TxnBegin { db: DbId },
    /// Creates a database (a schema transaction of its own).
    DbCreate {
        db: DbId,
        name: String,
        block_size: u32,
        indexes: Vec<String>,
    },
    /// A new, zeroed block.
    BlockAlloc { db: DbId, block: BlockId },
    /// Bytes at an offset of a block.
    BlockWrite {
        db: DbId,
        block: BlockId,
        offset: u32,
        bytes: Bytes,
    },
    /// The block is gone; its id may be reused by a later transaction.
    BlockFree { db: DbId, block: BlockId },
    /// Closes the transaction, which got this LSN.
    TxnCommit { lsn: Lsn },
}

/// The delta of one committed transaction. Only commits and the decoder make
/// one, so it always runs `TxnBegin .. TxnCommit`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delta {
    ops: Vec<DeltaOp>,
}

impl Delta {
    pub(crate) fn from_ops(ops: Vec<DeltaOp>) -> Self {
        debug_assert!(check_sequence(&ops).is_ok());
        Delta { ops }
    }

    /// One delta of the per-database deltas of one transaction, given in
    /// ascending database id, all with the same LSN: one begin (naming the
    /// first), their sections, one commit.
    /// A part that changed no block is left out (unless all are).
    pub(crate) fn join(mut parts: Vec<Delta>) -> Delta {
        if parts.iter().any(|d| d.ops.len() > 2) {
            parts.retain(|d| d.ops.len() > 2);
        } else {
            parts.truncate(1);
        }
        if parts.len() == 1 {
            return parts.pop().expect("one part");
        }
        let first = parts.first().expect("a transaction changes a database");
        let (begin, commit) = (first.ops[0].clone(), first.ops[first.ops.len() - 1].clone());
        let len = parts.iter().map(|d| d.ops.len() - 2).sum::<usize>() + 2;
        let mut ops = Vec::with_capacity(len);
        ops.push(begin);
        for part in parts {
            let n = part.ops.len();
            ops.extend(part.ops.into_iter().take(n - 1).skip(1));
        }
        ops.push(commit);
        Delta::from_ops(ops)
    }

    /// The delta with only the block and schema ops `keep` accepts (a
    /// secondary's share of it). `TxnBegin` then names the first database
    /// left, or stays as it was if none is.
    pub fn retain(&self, mut keep: impl FnMut(&DeltaOp) -> bool) -> Delta {
        let middle = &self.ops[1..self.ops.len() - 1];
        let mut ops = Vec::with_capacity(self.ops.len());
        ops.push(self.ops[0].clone());
        ops.extend(middle.iter().filter(|op| keep(op)).cloned());
        if let Some(db) = ops.get(1).and_then(op_db) {
            ops[0] = DeltaOp::TxnBegin { db };
        }
        ops.push(self.ops[self.ops.len() - 1].clone());
        Delta::from_ops(ops)
    }

    /// A delta from ops received one by one (replication streams them);
    /// checks that they run `TxnBegin .. TxnCommit`, grouped by database.
    pub fn from_checked_ops(ops: Vec<DeltaOp>) -> Result<Self, DeltaDecodeError> {
        check_sequence(&ops)?;
        Ok(Delta { ops })
    }

    pub fn ops(&self) -> &[DeltaOp] {
        &self.ops
    }

    /// The (first) database this delta changes.
    pub fn db(&self) -> DbId {
        match self.ops[0] {
            DeltaOp::TxnBegin { db } => db,
            _ => unreachable!("a delta starts with TxnBegin"),
        }
    }

    /// The ops between `TxnBegin` and `TxnCommit`, one slice per database,
    /// in ascending database id. None for an empty transaction.
    pub fn sections(&self) -> impl Iterator<Item = (DbId, &[DeltaOp])> {
        let mut rest = &self.ops[1..self.ops.len() - 1];
        std::iter::from_fn(move || {
            let db = op_db(rest.first()?)?;
            let len = rest
                .iter()
                .position(|op| op_db(op) != Some(db))
                .unwrap_or(rest.len());
            let (section, tail) = rest.split_at(len);
            rest = tail;
            Some((db, section))
        })
    }

    /// Whether this delta changes more than one database.
    pub fn spans_databases(&self) -> bool {
        self.sections().nth(1).is_some()
    }

    pub fn lsn(&self) -> Lsn {
        match self.ops.last() {
            Some(DeltaOp::TxnCommit { lsn }) => *lsn,
            _ => unreachable!("a delta ends with TxnCommit"),
        }
    }

    /// Bytes of block data this delta writes.
    pub fn write_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                DeltaOp::BlockWrite { bytes, .. } => bytes.len(),
                _ => 0,
            })
            .sum()
    }

    pub fn encoded_len(&self) -> usize {
        PREFIX_SIZE + self.ops.iter().map(op_len).sum::<usize>() + CHECKSUM_SIZE
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let body_len = self.encoded_len() - PREFIX_SIZE - CHECKSUM_SIZE;
        out.reserve(self.encoded_len());
        out.put_slice(&DELTA_MAGIC);
        out.put_u8(DELTA_FORMAT_VERSION);
        out.put_u8(0);
        out.put_u32_le(body_len as u32);
        for op in &self.ops {
            encode_op(op, out);
        }
        let sum = xxh3_64(&out[start..]);
        out.put_u64_le(sum);
        debug_assert_eq!(out.len() - start, self.encoded_len());
    }

    /// Decodes one delta that fills `input` exactly. Write bytes share
    /// `input`'s buffer.
    pub fn decode(input: &Bytes) -> Result<Delta, DeltaDecodeError> {
        let have = input.len();
        if have > DELTA_SIZE_MAX {
            return Err(DeltaDecodeError::TooLarge(have));
        }
        if have < PREFIX_SIZE + CHECKSUM_SIZE {
            return Err(DeltaDecodeError::Truncated {
                need: PREFIX_SIZE + CHECKSUM_SIZE,
                have,
            });
        }
        if input[0..2] != DELTA_MAGIC {
            return Err(DeltaDecodeError::BadMagic);
        }
        if input[2] != DELTA_FORMAT_VERSION {
            return Err(DeltaDecodeError::UnsupportedVersion(input[2]));
        }
        if input[3] != 0 {
            return Err(DeltaDecodeError::Malformed("unknown flags"));
        }
        let body_len = u32::from_le_bytes(input[4..8].try_into().unwrap()) as usize;
        let need = PREFIX_SIZE + body_len + CHECKSUM_SIZE;
        if need != have {
            return Err(if need > have {
                DeltaDecodeError::Truncated { need, have }
            } else {
                DeltaDecodeError::Malformed("bytes after the delta")
            });
        }
        let body_end = PREFIX_SIZE + body_len;
        let sum = u64::from_le_bytes(input[body_end..].try_into().unwrap());
        if xxh3_64(&input[..body_end]) != sum {
            return Err(DeltaDecodeError::Checksum);
        }
        let mut reader = Reader {
            input,
            at: PREFIX_SIZE,
            end: body_end,
        };
        let mut ops = Vec::new();
        while reader.at < reader.end {
            if ops.len() == DELTA_OPS_MAX {
                return Err(DeltaDecodeError::Malformed("too many ops"));
            }
            ops.push(reader.op()?);
        }
        check_sequence(&ops)?;
        Ok(Delta { ops })
    }
}

fn check_sequence(ops: &[DeltaOp]) -> Result<(), DeltaDecodeError> {
    let (Some(DeltaOp::TxnBegin { db }), Some(DeltaOp::TxnCommit { .. })) =
        (ops.first(), ops.last())
    else {
        return Err(DeltaDecodeError::Malformed(
            "a delta runs from TxnBegin to TxnCommit",
        ));
    };
    if ops.len() < 2 {
        return Err(DeltaDecodeError::Malformed(
            "a delta runs from TxnBegin to TxnCommit",
        ));
    }
    let mut current = *db;
    for (i, op) in ops[1..ops.len() - 1].iter().enumerate() {
        if let DeltaOp::DbCreate { .. } = op {
            if ops.len() != 3 {
                return Err(DeltaDecodeError::Malformed(
                    "DbCreate is a transaction alone",
                ));
            }
        }
        let Some(op_db) = op_db(op) else {
            return Err(DeltaDecodeError::Malformed(
                "nested TxnBegin or early TxnCommit",
            ));
        };
        if i == 0 && op_db != *db {
            return Err(DeltaDecodeError::Malformed(
                "the first op names another database than TxnBegin",
            ));
        }
        if op_db < current {
            return Err(DeltaDecodeError::Malformed(
                "ops not grouped by database in ascending order",
            ));
        }
        current = op_db;
    }
    Ok(())
}

/// The database a block or schema op names; `None` for begin and commit.
fn op_db(op: &DeltaOp) -> Option<DbId> {
    match op {
        DeltaOp::TxnBegin { .. } | DeltaOp::TxnCommit { .. } => None,
        DeltaOp::DbCreate { db, .. }
        | DeltaOp::BlockAlloc { db, .. }
        | DeltaOp::BlockWrite { db, .. }
        | DeltaOp::BlockFree { db, .. } => Some(*db),
    }
}

/// Appends one op's encoding (tag and fields) to `out`.
pub(crate) fn encode_op(op: &DeltaOp, out: &mut Vec<u8>) {
    out.put_u8(op_tag(op));
    encode_op_body(op, out);
}

/// The tag byte that opens an op's encoding.
pub(crate) fn op_tag(op: &DeltaOp) -> u8 {
    match op {
        DeltaOp::TxnBegin { .. } => TAG_BEGIN,
        DeltaOp::BlockAlloc { .. } => TAG_ALLOC,
        DeltaOp::BlockWrite { .. } => TAG_WRITE,
        DeltaOp::BlockFree { .. } => TAG_FREE,
        DeltaOp::TxnCommit { .. } => TAG_COMMIT,
        DeltaOp::DbCreate { .. } => TAG_DB_CREATE,
    }
}

/// Appends one op's fields, without its tag, to `out`.
pub(crate) fn encode_op_body(op: &DeltaOp, out: &mut Vec<u8>) {
    match op {
        DeltaOp::TxnBegin { db } => {
            out.put_u32_le(db.0);
        }
        DeltaOp::DbCreate {
            db,
            name,
            block_size,
            indexes,
        } => {
            out.put_u32_le(db.0);
            out.put_u32_le(*block_size);
            put_name(out, name);
            out.put_u8(indexes.len() as u8);
            for index in indexes {
                put_name(out, index);
            }
        }
        DeltaOp::BlockAlloc { db, block } => {
            out.put_u32_le(db.0);
            out.put_u32_le(block.0);
        }
        DeltaOp::BlockWrite {
            db,
            block,
            offset,
            bytes,
        } => {
            out.put_u32_le(db.0);
            out.put_u32_le(block.0);
            out.put_u32_le(*offset);
            out.put_u32_le(bytes.len() as u32);
            out.put_slice(bytes);
        }
        DeltaOp::BlockFree { db, block } => {
            out.put_u32_le(db.0);
            out.put_u32_le(block.0);
        }
        DeltaOp::TxnCommit { lsn } => {
            out.put_u64_le(lsn.0);
        }
    }
}

/// Decodes exactly one op filling `input[range]`; write bytes share `input`.
pub(crate) fn decode_op(input: &Bytes) -> Result<DeltaOp, DeltaDecodeError> {
    let mut reader = Reader {
        input,
        at: 0,
        end: input.len(),
    };
    let tag = reader.u8()?;
    let op = reader.op_body(tag)?;
    if reader.at != reader.end {
        return Err(DeltaDecodeError::Malformed("bytes after the op"));
    }
    Ok(op)
}

/// Decodes the fields of one op whose tag came separately; they must fill
/// `input`. Write bytes share `input`.
pub(crate) fn decode_op_body(tag: u8, input: &Bytes) -> Result<DeltaOp, DeltaDecodeError> {
    let mut reader = Reader {
        input,
        at: 0,
        end: input.len(),
    };
    let op = reader.op_body(tag)?;
    if reader.at != reader.end {
        return Err(DeltaDecodeError::Malformed("bytes after the op"));
    }
    Ok(op)
}

pub(crate) fn op_len(op: &DeltaOp) -> usize {
    1 + match op {
        DeltaOp::TxnBegin { .. } => 4,
        DeltaOp::DbCreate { name, indexes, .. } => {
            8 + 1 + name.len() + 1 + indexes.iter().map(|i| 1 + i.len()).sum::<usize>()
        }
        DeltaOp::BlockAlloc { .. } | DeltaOp::BlockFree { .. } => 8,
        DeltaOp::BlockWrite { bytes, .. } => 16 + bytes.len(),
        DeltaOp::TxnCommit { .. } => 8,
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    debug_assert!(name.len() <= NAME_LEN_MAX);
    out.put_u8(name.len() as u8);
    out.put_slice(name.as_bytes());
}

struct Reader<'a> {
    input: &'a Bytes,
    at: usize,
    end: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, DeltaDecodeError> {
        let have = self.end - self.at;
        if n > have {
            return Err(DeltaDecodeError::Truncated { need: n, have });
        }
        let range = self.at..self.at + n;
        self.at += n;
        Ok(range)
    }

    fn u8(&mut self) -> Result<u8, DeltaDecodeError> {
        Ok(self.input[self.take(1)?.start])
    }

    fn u32(&mut self) -> Result<u32, DeltaDecodeError> {
        let r = self.take(4)?;
        Ok(u32::from_le_bytes(self.input[r].try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, DeltaDecodeError> {
        let r = self.take(8)?;
        Ok(u64::from_le_bytes(self.input[r].try_into().unwrap()))
    }

    fn name(&mut self) -> Result<String, DeltaDecodeError> {
        let len = self.u8()? as usize;
        if len == 0 || len > NAME_LEN_MAX {
            return Err(DeltaDecodeError::Malformed("name length"));
        }
        let r = self.take(len)?;
        String::from_utf8(self.input[r].to_vec())
            .map_err(|_| DeltaDecodeError::Malformed("name is not UTF-8"))
    }

    fn op(&mut self) -> Result<DeltaOp, DeltaDecodeError> {
        let tag = self.u8()?;
        self.op_body(tag)
    }

    fn op_body(&mut self, tag: u8) -> Result<DeltaOp, DeltaDecodeError> {
        Ok(match tag {
            TAG_BEGIN => DeltaOp::TxnBegin {
                db: DbId(self.u32()?),
            },
            TAG_ALLOC => DeltaOp::BlockAlloc {
                db: DbId(self.u32()?),
                block: BlockId(self.u32()?),
            },
            TAG_WRITE => {
                let db = DbId(self.u32()?);
                let block = BlockId(self.u32()?);
                let offset = self.u32()?;
                let len = self.u32()? as usize;
                if len == 0 || offset as usize + len > BLOCK_SIZE_MAX {
                    return Err(DeltaDecodeError::Malformed("write outside any block"));
                }
                let r = self.take(len)?;
                DeltaOp::BlockWrite {
                    db,
                    block,
                    offset,
                    bytes: self.input.slice(r),
                }
            }
            TAG_FREE => DeltaOp::BlockFree {
                db: DbId(self.u32()?),
                block: BlockId(self.u32()?),
            },
            TAG_COMMIT => DeltaOp::TxnCommit {
                lsn: Lsn(self.u64()?),
            },
            TAG_DB_CREATE => {
                let db = DbId(self.u32()?);
                let block_size = self.u32()?;
                let name = self.name()?;
                let count = self.u8()? as usize;
                if count > INDEXES_PER_DB_MAX {
                    return Err(DeltaDecodeError::Malformed("too many indexes"));
                }
                let mut indexes = Vec::new();
                for _ in 0..count {
                    indexes.push(self.name()?);
                }
                DeltaOp::DbCreate {
                    db,
                    name,
                    block_size,
                    indexes,
                }
            }
            other => return Err(DeltaDecodeError::UnknownOp(other)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Delta {
        Delta::from_ops(vec![
            DeltaOp::TxnBegin { db: DbId(1) },
            DeltaOp::BlockAlloc {
                db: DbId(1),
                block: BlockId(4),
            },
            DeltaOp::BlockWrite {
                db: DbId(1),
                block: BlockId(4),
                offset: 48,
                bytes: Bytes::from_static(b"record bytes"),
            },
            DeltaOp::BlockFree {
                db: DbId(1),
                block: BlockId(2),
            },
            DeltaOp::TxnCommit { lsn: Lsn(9) },
        ])
    }

    #[test]
    fn round_trip() {
        let d = sample();
        let bytes = Bytes::from(d.encode());
        assert_eq!(bytes.len(), d.encoded_len());
        assert_eq!(Delta::decode(&bytes).unwrap(), d);
        let create = Delta::from_ops(vec![
            DeltaOp::TxnBegin { db: DbId(2) },
            DeltaOp::DbCreate {
                db: DbId(2),
                name: "users".into(),
                block_size: 4096,
                indexes: vec!["city".into(), "team".into()],
            },
            DeltaOp::TxnCommit { lsn: Lsn(1) },
        ]);
        assert_eq!(
            Delta::decode(&Bytes::from(create.encode())).unwrap(),
            create
        );
    }

    fn alloc(db: u32, block: u32) -> DeltaOp {
        DeltaOp::BlockAlloc {
            db: DbId(db),
            block: BlockId(block),
        }
    }

    #[test]
    fn a_delta_across_databases_has_one_section_each_in_id_order() {
        let d = Delta::from_checked_ops(vec![
            DeltaOp::TxnBegin { db: DbId(1) },
            alloc(1, 0),
            alloc(1, 1),
            alloc(3, 0),
            DeltaOp::TxnCommit { lsn: Lsn(2) },
        ])
        .unwrap();
        let sections: Vec<(DbId, usize)> = d.sections().map(|(db, ops)| (db, ops.len())).collect();
        assert_eq!(sections, vec![(DbId(1), 2), (DbId(3), 1)]);
        assert!(d.spans_databases());
        assert_eq!(Delta::decode(&Bytes::from(d.encode())).unwrap(), d);
        let empty = Delta::from_checked_ops(vec![
            DeltaOp::TxnBegin { db: DbId(1) },
            DeltaOp::TxnCommit { lsn: Lsn(2) },
        ])
        .unwrap();
        assert_eq!(empty.sections().count(), 0);
        assert!(!sample().spans_databases());
    }

    #[test]
    fn sections_out_of_order_or_not_named_by_begin_are_rejected() {
        let begin = |db| DeltaOp::TxnBegin { db: DbId(db) };
        let commit = DeltaOp::TxnCommit { lsn: Lsn(2) };
        for ops in [
            vec![begin(1), alloc(3, 0), alloc(1, 0), commit.clone()],
            vec![
                begin(1),
                alloc(1, 0),
                alloc(3, 0),
                alloc(1, 1),
                commit.clone(),
            ],
            vec![begin(1), alloc(2, 0), commit.clone()],
        ] {
            assert!(Delta::from_checked_ops(ops.clone()).is_err(), "{ops:?}");
            let raw = Delta { ops }.encode();
            assert!(Delta::decode(&Bytes::from(raw)).is_err());
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let enc = sample().encode();
        for cut in 0..enc.len() {
            assert!(Delta::decode(&Bytes::copy_from_slice(&enc[..cut])).is_err());
        }
    }
}
