//! Replication frames and their codec.
//!
//! Format version 2 (`FRAME_FORMAT_VERSION`), little-endian:
//!
//! ```text
//! offset  size  field
//! 0       4     frame_len: bytes after this field, checksum included
//! 4       1     format version (2)
//! 5       1     message type (below)
//! 6       2     reserved, 0
//! 8       8     epoch of the sender
//! 16      8     sequence number: 0, 1, 2, ... per connection and direction
//! 24      n     payload (per type)
//! 24+n    8     xxh3-64 of bytes 0..24+n
//! ```
//!
//! Message types and payloads:
//!
//! ```text
//! 0x01 Hello          node u64, lsn u64, mode u8 (1 sync, 2 async), history,
//!                     count u16, (name_len u8, name) * count: databases to
//!                     replicate (none: all)
//! 0x02 Welcome        lsn u64, catch_up u8 (0 stream, 1 snapshot), history
//! 0x03 Ack            lsn u64
//! 0x04 Heartbeat      lsn u64
//! 0x05 SnapshotBegin  lsn u64, blocks u64, count u16, (len u16, DbCreate op) * count
//! 0x06 SnapshotBlock  db u32, block u32, block bytes (the rest)
//! 0x07 SnapshotEnd    lsn u64
//! 0x08 Error          code u16 (1 stale epoch, 2 protocol, 3 apply, 4 other,
//!                     5 fenced), message (the rest, UTF-8)
//! 0x09 TxnAbort       (empty)
//! 0x0a BlockDigests   db u32, count u32, (block u32, xxh3 u64) * count
//! 0x0b DigestsEnd     (empty): the secondary sent all its digests
//! 0x0c BlockSame      db u32, block u32: the copy the secondary holds is current
//! 0x11..0x16          one delta op, encoded as in `delta.rs` (tag = type - 0x10):
//!                     TxnBegin, BlockAlloc, BlockWrite, BlockFree, TxnCommit, DbCreate
//! history:            count u16, (epoch u64, start lsn u64) * count, lineage u64
//! ```
//!
//! The decoder rejects a declared length above `FRAME_SIZE_MAX` before
//! waiting for its bytes, so a hostile peer cannot make it buffer more.
//! Sequence numbers let a receiver notice a lost, repeated or reordered
//! frame (which a transaction's ops could not show): it then drops the
//! connection and resumes from its applied LSN.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use xxhash_rust::xxh3::xxh3_64;

use crate::constants::{BLOCK_SIZE_MAX, DATABASES_MAX};
use crate::delta::{decode_op, decode_op_body, encode_op, encode_op_body, op_tag, DeltaOp};
use crate::ids::{BlockId, DbId, Lsn};
use crate::repl::history::{Epoch, EpochHistory};
use crate::repl::NodeId;

pub const FRAME_FORMAT_VERSION: u8 = 2;
/// Bytes before the payload.
pub const FRAME_HEADER_SIZE: usize = 24;
/// Bytes after the payload: the xxh3-64 checksum.
pub(crate) const CHECKSUM_SIZE: usize = 8;
// The codec's bounds, defined (and tied to each other) in `limits.rs`.
pub use crate::repl::limits::{DIGESTS_PER_FRAME_MAX, FRAME_SIZE_MAX};

const T_HELLO: u8 = 0x01;
const T_WELCOME: u8 = 0x02;
const T_ACK: u8 = 0x03;
const T_HEARTBEAT: u8 = 0x04;
const T_SNAPSHOT_BEGIN: u8 = 0x05;
const T_SNAPSHOT_BLOCK: u8 = 0x06;
const T_SNAPSHOT_END: u8 = 0x07;
const T_ERROR: u8 = 0x08;
const T_TXN_ABORT: u8 = 0x09;
const T_BLOCK_DIGESTS: u8 = 0x0a;
const T_DIGESTS_END: u8 = 0x0b;
const T_BLOCK_SAME: u8 = 0x0c;
const T_OP_BASE: u8 = 0x10;

/// How a secondary asks to be replicated to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Commits wait for this secondary's acknowledgement (tightly coupled).
    Sync,
    /// Commits do not wait; lag is tracked (loosely coupled).
    Async,
}

/// How the primary will bring a secondary up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CatchUp {
    /// Transactions from the secondary's LSN on (partial resync).
    Stream,
    /// A snapshot of every block, then transactions (full resync).
    Snapshot,
}

/// Why a peer refused a frame or a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The frame's epoch is older than the receiver's: the sender is fenced.
    StaleEpoch = 1,
    /// A frame the receiver did not expect in its state.
    Protocol = 2,
    /// A delta that did not apply.
    Apply = 3,
    Other = 4,
    /// The sender learnt of a newer epoch from this session: it is fenced
    /// and refuses writes (the answer a promoted node's notice waits for).
    Fenced = 5,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Hello {
        node: NodeId,
        lsn: Lsn,
        mode: Mode,
        history: EpochHistory,
        /// The databases to replicate; empty: all.
        databases: Vec<String>,
    },
    Welcome {
        lsn: Lsn,
        catch_up: CatchUp,
        history: EpochHistory,
    },
    Ack {
        lsn: Lsn,
    },
    Heartbeat {
        lsn: Lsn,
    },
    SnapshotBegin {
        lsn: Lsn,
        blocks: u64,
        databases: Vec<DeltaOp>,
    },
    SnapshotBlock {
        db: DbId,
        block: BlockId,
        bytes: Bytes,
    },
    SnapshotEnd {
        lsn: Lsn,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    TxnAbort,
    /// Digests of blocks a secondary holds, so that a snapshot sends only
    /// the blocks that differ (incremental resync).
    BlockDigests {
        db: DbId,
        entries: Vec<(BlockId, u64)>,
    },
    DigestsEnd,
    /// In a snapshot: the secondary's copy of this block is current.
    BlockSame {
        db: DbId,
        block: BlockId,
    },
    /// One op of a transaction: `TxnBegin`, `BlockAlloc`, `BlockWrite`,
    /// `BlockFree`, `TxnCommit` or `DbCreate`.
    Op(DeltaOp),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub epoch: Epoch,
    /// Set by the state machine that sends the frame.
    pub seq: u64,
    pub message: Message,
}

/// Why bytes did not decode as a frame. The connection cannot be trusted
/// after any of these: close it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {FRAME_SIZE_MAX}")]
    TooLarge(usize),
    #[error("frame too short")]
    TooShort,
    #[error("unsupported frame format version {0}")]
    UnsupportedVersion(u8),
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("unknown frame type {0:#x}")]
    UnknownType(u8),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

impl Frame {
    pub fn new(epoch: Epoch, message: Message) -> Self {
        Frame {
            epoch,
            seq: 0,
            message,
        }
    }

    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.put_u32_le(0); // patched below
        out.put_u8(FRAME_FORMAT_VERSION);
        out.put_u8(self.message.type_code());
        out.put_u16_le(0);
        out.put_u64_le(self.epoch.0);
        out.put_u64_le(self.seq);
        self.message.encode_payload(out);
        let frame_len = (out.len() - start - 4 + CHECKSUM_SIZE) as u32;
        out[start..start + 4].copy_from_slice(&frame_len.to_le_bytes());
        let sum = xxh3_64(&out[start..]);
        out.put_u64_le(sum);
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Takes one whole frame off the front of `buf`, or returns `None` if
    /// `buf` does not hold one yet. On error the stream is unusable.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let frame_len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
        if frame_len > FRAME_SIZE_MAX {
            return Err(FrameError::TooLarge(frame_len));
        }
        if frame_len < FRAME_HEADER_SIZE - 4 + CHECKSUM_SIZE {
            return Err(FrameError::TooShort);
        }
        if buf.len() < 4 + frame_len {
            return Ok(None);
        }
        let bytes = buf.split_to(4 + frame_len).freeze();
        Self::decode_whole(&bytes).map(Some)
    }

    /// Decodes a buffer holding exactly one frame.
    pub fn decode_whole(bytes: &Bytes) -> Result<Frame, FrameError> {
        if bytes.len() < FRAME_HEADER_SIZE + CHECKSUM_SIZE {
            return Err(FrameError::TooShort);
        }
        if bytes.len() > FRAME_SIZE_MAX + 4 {
            return Err(FrameError::TooLarge(bytes.len()));
        }
        let frame_len = u32::from_le_bytes(bytes[0..4].try_into().unwrap()) as usize;
        if frame_len + 4 != bytes.len() {
            return Err(FrameError::Malformed("length does not match"));
        }
        let body_end = bytes.len() - CHECKSUM_SIZE;
        let sum = u64::from_le_bytes(bytes[body_end..].try_into().unwrap());
        if xxh3_64(&bytes[..body_end]) != sum {
            return Err(FrameError::Checksum);
        }
        if bytes[4] != FRAME_FORMAT_VERSION {
            return Err(FrameError::UnsupportedVersion(bytes[4]));
        }
        if bytes[6..8] != [0, 0] {
            return Err(FrameError::Malformed("reserved bits set"));
        }
        let epoch = Epoch(u64::from_le_bytes(bytes[8..16].try_into().unwrap()));
        let seq = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
        let payload = bytes.slice(FRAME_HEADER_SIZE..body_end);
        let message = Message::decode_payload(bytes[5], payload)?;
        Ok(Frame {
            epoch,
            seq,
            message,
        })
    }
}

/// A `u16` count of databases, at most `DATABASES_MAX`.
fn database_count(p: &mut Bytes) -> Result<usize, FrameError> {
    if p.remaining() < 2 {
        return Err(FrameError::Malformed("payload too short"));
    }
    let count = p.get_u16_le() as usize;
    if count > DATABASES_MAX {
        return Err(FrameError::Malformed("too many databases"));
    }
    Ok(count)
}

impl Message {
    fn type_code(&self) -> u8 {
        match self {
            Message::Hello { .. } => T_HELLO,
            Message::Welcome { .. } => T_WELCOME,
            Message::Ack { .. } => T_ACK,
            Message::Heartbeat { .. } => T_HEARTBEAT,
            Message::SnapshotBegin { .. } => T_SNAPSHOT_BEGIN,
            Message::SnapshotBlock { .. } => T_SNAPSHOT_BLOCK,
            Message::SnapshotEnd { .. } => T_SNAPSHOT_END,
            Message::Error { .. } => T_ERROR,
            Message::TxnAbort => T_TXN_ABORT,
            Message::BlockDigests { .. } => T_BLOCK_DIGESTS,
            Message::DigestsEnd => T_DIGESTS_END,
            Message::BlockSame { .. } => T_BLOCK_SAME,
            Message::Op(op) => T_OP_BASE + op_tag(op),
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) {
        match self {
            Message::Hello {
                node,
                lsn,
                mode,
                history,
                databases,
            } => {
                out.put_u64_le(node.0);
                out.put_u64_le(lsn.0);
                out.put_u8(match mode {
                    Mode::Sync => 1,
                    Mode::Async => 2,
                });
                history.encode(out);
                out.put_u64_le(history.lineage());
                out.put_u16_le(databases.len() as u16);
                for name in databases {
                    out.put_u8(name.len() as u8);
                    out.put_slice(name.as_bytes());
                }
            }
            Message::Welcome {
                lsn,
                catch_up,
                history,
            } => {
                out.put_u64_le(lsn.0);
                out.put_u8(match catch_up {
                    CatchUp::Stream => 0,
                    CatchUp::Snapshot => 1,
                });
                history.encode(out);
                out.put_u64_le(history.lineage());
            }
            Message::Ack { lsn } | Message::Heartbeat { lsn } | Message::SnapshotEnd { lsn } => {
                out.put_u64_le(lsn.0)
            }
            Message::SnapshotBegin {
                lsn,
                blocks,
                databases,
            } => {
                out.put_u64_le(lsn.0);
                out.put_u64_le(*blocks);
                out.put_u16_le(databases.len() as u16);
                for op in databases {
                    let at = out.len();
                    out.put_u16_le(0);
                    encode_op(op, out);
                    let len = (out.len() - at - 2) as u16;
                    out[at..at + 2].copy_from_slice(&len.to_le_bytes());
                }
            }
            Message::SnapshotBlock { db, block, bytes } => {
                out.put_u32_le(db.0);
                out.put_u32_le(block.0);
                out.put_slice(bytes);
            }
            Message::Error { code, message } => {
                out.put_u16_le(*code as u16);
                out.put_slice(message.as_bytes());
            }
            Message::TxnAbort | Message::DigestsEnd => {}
            Message::BlockDigests { db, entries } => {
                out.put_u32_le(db.0);
                out.put_u32_le(entries.len() as u32);
                for (block, digest) in entries {
                    out.put_u32_le(block.0);
                    out.put_u64_le(*digest);
                }
            }
            Message::BlockSame { db, block } => {
                out.put_u32_le(db.0);
                out.put_u32_le(block.0);
            }
            // The op's own encoding; its tag is carried by the frame type.
            Message::Op(op) => encode_op_body(op, out),
        }
    }

    /// One arm per message type, in the order of the format table in the
    /// module doc. Long, but not split: each arm is a few lines that read
    /// one payload against that table, and the shared `need`/`done`
    /// checks keep every arm bounded the same way.
    fn decode_payload(kind: u8, mut p: Bytes) -> Result<Message, FrameError> {
        let need = |p: &Bytes, n: usize| {
            if p.remaining() < n {
                Err(FrameError::Malformed("payload too short"))
            } else {
                Ok(())
            }
        };
        let done = |p: &Bytes| {
            if p.has_remaining() {
                Err(FrameError::Malformed("bytes after the payload"))
            } else {
                Ok(())
            }
        };
        let message = match kind {
            T_HELLO => {
                need(&p, 17)?;
                let node = NodeId(p.get_u64_le());
                let lsn = Lsn(p.get_u64_le());
                let mode = match p.get_u8() {
                    1 => Mode::Sync,
                    2 => Mode::Async,
                    _ => return Err(FrameError::Malformed("mode")),
                };
                let history = EpochHistory::decode(&mut p)?;
                need(&p, 8)?;
                let history = history.with_lineage(p.get_u64_le());
                let count = database_count(&mut p)?;
                let mut databases = Vec::new();
                for _ in 0..count {
                    need(&p, 1)?;
                    let len = p.get_u8() as usize;
                    need(&p, len)?;
                    let name = String::from_utf8(p.split_to(len).to_vec())
                        .map_err(|_| FrameError::Malformed("database name"))?;
                    databases.push(name);
                }
                Message::Hello {
                    node,
                    lsn,
                    mode,
                    history,
                    databases,
                }
            }
            T_WELCOME => {
                need(&p, 9)?;
                let lsn = Lsn(p.get_u64_le());
                let catch_up = match p.get_u8() {
                    0 => CatchUp::Stream,
                    1 => CatchUp::Snapshot,
                    _ => return Err(FrameError::Malformed("catch-up")),
                };
                let history = EpochHistory::decode(&mut p)?;
                need(&p, 8)?;
                let history = history.with_lineage(p.get_u64_le());
                Message::Welcome {
                    lsn,
                    catch_up,
                    history,
                }
            }
            T_ACK | T_HEARTBEAT | T_SNAPSHOT_END => {
                need(&p, 8)?;
                let lsn = Lsn(p.get_u64_le());
                match kind {
                    T_ACK => Message::Ack { lsn },
                    T_HEARTBEAT => Message::Heartbeat { lsn },
                    _ => Message::SnapshotEnd { lsn },
                }
            }
            T_SNAPSHOT_BEGIN => {
                need(&p, 18)?;
                let lsn = Lsn(p.get_u64_le());
                let blocks = p.get_u64_le();
                let count = database_count(&mut p)?;
                let mut databases = Vec::new();
                for _ in 0..count {
                    need(&p, 2)?;
                    let len = p.get_u16_le() as usize;
                    need(&p, len)?;
                    let op = decode_op(&p.split_to(len))
                        .map_err(|_| FrameError::Malformed("database"))?;
                    if !matches!(op, DeltaOp::DbCreate { .. }) {
                        return Err(FrameError::Malformed("database"));
                    }
                    databases.push(op);
                }
                Message::SnapshotBegin {
                    lsn,
                    blocks,
                    databases,
                }
            }
            T_SNAPSHOT_BLOCK => {
                need(&p, 8)?;
                let db = DbId(p.get_u32_le());
                let block = BlockId(p.get_u32_le());
                if p.is_empty() || p.len() > BLOCK_SIZE_MAX {
                    return Err(FrameError::Malformed("block size"));
                }
                Message::SnapshotBlock {
                    db,
                    block,
                    bytes: p.split_off(0),
                }
            }
            T_ERROR => {
                need(&p, 2)?;
                let code = match p.get_u16_le() {
                    1 => ErrorCode::StaleEpoch,
                    2 => ErrorCode::Protocol,
                    3 => ErrorCode::Apply,
                    5 => ErrorCode::Fenced,
                    _ => ErrorCode::Other,
                };
                let message = String::from_utf8_lossy(&p.split_off(0)).into_owned();
                Message::Error { code, message }
            }
            T_TXN_ABORT => Message::TxnAbort,
            T_DIGESTS_END => Message::DigestsEnd,
            T_BLOCK_SAME => {
                need(&p, 8)?;
                Message::BlockSame {
                    db: DbId(p.get_u32_le()),
                    block: BlockId(p.get_u32_le()),
                }
            }
            T_BLOCK_DIGESTS => {
                need(&p, 8)?;
                let db = DbId(p.get_u32_le());
                let count = p.get_u32_le() as usize;
                if count > DIGESTS_PER_FRAME_MAX || p.remaining() != count * 12 {
                    return Err(FrameError::Malformed("block digests"));
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push((BlockId(p.get_u32_le()), p.get_u64_le()));
                }
                Message::BlockDigests { db, entries }
            }
            k if (T_OP_BASE + 1..=T_OP_BASE + 6).contains(&k) => {
                let op = decode_op_body(k - T_OP_BASE, &p)
                    .map_err(|_| FrameError::Malformed("delta op"))?;
                p.advance(p.len());
                Message::Op(op)
            }
            other => return Err(FrameError::UnknownType(other)),
        };
        done(&p)?;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BlockId, DbId};

    fn samples() -> Vec<Frame> {
        let mut history = EpochHistory::default();
        history.promote(Lsn(7), NodeId(3), Epoch(0));
        let messages = vec![
            Message::Hello {
                node: NodeId(9),
                lsn: Lsn(3),
                mode: Mode::Sync,
                history: history.clone(),
                databases: vec!["users".into()],
            },
            Message::Welcome {
                lsn: Lsn(10),
                catch_up: CatchUp::Snapshot,
                history,
            },
            Message::Ack { lsn: Lsn(4) },
            Message::Heartbeat { lsn: Lsn(5) },
            Message::SnapshotBegin {
                lsn: Lsn(6),
                blocks: 2,
                databases: vec![DeltaOp::DbCreate {
                    db: DbId(0),
                    name: "users".into(),
                    block_size: 4096,
                    indexes: vec!["city".into()],
                }],
            },
            Message::SnapshotBlock {
                db: DbId(0),
                block: BlockId(1),
                bytes: Bytes::from(vec![1u8; 64]),
            },
            Message::SnapshotEnd { lsn: Lsn(8) },
            Message::Error {
                code: ErrorCode::StaleEpoch,
                message: "old".into(),
            },
            Message::TxnAbort,
            Message::BlockDigests {
                db: DbId(1),
                entries: vec![(BlockId(0), 7), (BlockId(3), u64::MAX)],
            },
            Message::DigestsEnd,
            Message::BlockSame {
                db: DbId(1),
                block: BlockId(3),
            },
            Message::Op(DeltaOp::TxnBegin { db: DbId(0) }),
            Message::Op(DeltaOp::BlockWrite {
                db: DbId(0),
                block: BlockId(2),
                offset: 48,
                bytes: Bytes::from_static(b"abc"),
            }),
            Message::Op(DeltaOp::TxnCommit { lsn: Lsn(11) }),
        ];
        messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| Frame {
                epoch: Epoch(2),
                seq: i as u64,
                message,
            })
            .collect()
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        let frames = samples();
        let mut stream = Vec::new();
        for f in &frames {
            f.encode(&mut stream);
        }
        // Fed one byte at a time, the decoder waits, then yields each frame.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in stream {
            buf.put_u8(b);
            while let Some(f) = Frame::decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, frames);
    }

    #[test]
    fn every_single_byte_corruption_is_rejected() {
        for frame in samples() {
            let bytes = frame.to_bytes();
            let intact = Frame::decode(&mut BytesMut::from(&bytes[..])).unwrap();
            assert_eq!(intact.as_ref(), Some(&frame));
            for at in 0..bytes.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = bytes.clone();
                    bad[at] ^= flip;
                    let mut buf = BytesMut::from(&bad[..]);
                    if let Ok(Some(f)) = Frame::decode(&mut buf) {
                        assert_eq!(f, frame, "{at} ^ {flip:#x} accepted");
                    }
                }
            }
        }
    }

    #[test]
    fn oversize_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&((FRAME_SIZE_MAX + 1) as u32).to_le_bytes()[..]);
        assert!(matches!(
            Frame::decode(&mut buf),
            Err(FrameError::TooLarge(_))
        ));
        let mut buf = BytesMut::from(&3u32.to_le_bytes()[..]);
        assert!(matches!(Frame::decode(&mut buf), Err(FrameError::TooShort)));
    }
}
