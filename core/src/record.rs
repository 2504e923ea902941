//! The record format: how one record is laid out inside a block.
//!
//! Format version 2 (`RECORD_FORMAT_VERSION`), little-endian throughout:
//!
//! ```text
//! offset  size       field
//! 0       1          state: 1 = live, 2 = tombstone (0 never starts a record),
//!                    plus 0x80 when the record has an expiry time
//! 1       1          n: number of non-unique value slots (the database's index count)
//! 2       2          key_len
//! 4       4          slot_len: bytes this record occupies in the block (>= encoded length;
//!                    an in-place update that shrinks keeps the slot)
//! 8       4          payload_len
//! 12      e = 0 or 8 with 0x80: when the record expires, in ms since the Unix epoch
//! 12+e    2 * n      value_len[i]; 0xFFFF means the value is absent
//! 12+e+2n key_len    the unique key
//! ...     sum(len)   the present values, in index order
//! ...     payload_len the payload
//! ...                zero padding up to slot_len
//! ```
//!
//! Version 1 is version 2 without expiry times, so its blocks read as they
//! are. The expiry lives in the record's bytes so that it replicates,
//! persists and survives a promotion as any other byte does.
//!
//! Records sit one after another from the end of the block header to the
//! block's free offset; `slot_len` walks from one to the next. A slot's
//! boundaries never move once written: deletes flip `state`, and compaction
//! moves records to other blocks rather than sliding them within one. The
//! decoder (`RecordRef::parse`) checks every length against the bytes it was
//! given and returns an error, never panics, on bad input.

use crate::constants::{BLOCK_HEADER_SIZE, INDEXES_PER_DB_MAX, KEY_LEN_MAX, VALUE_LEN_MAX};
use crate::error::{Error, RecordDecodeError};

/// Version of the layout above. Stored in every block header.
pub const RECORD_FORMAT_VERSION: u16 = 2;
/// The oldest version this code reads.
pub const RECORD_FORMAT_VERSION_MIN: u16 = 1;
/// Fixed part of a record header, before the value lengths.
pub const RECORD_HEADER_SIZE: usize = 12;

pub(crate) const STATE_LIVE: u8 = 1;
pub(crate) const STATE_TOMBSTONE: u8 = 2;
/// Set in the state byte when an expiry time follows the fixed header.
pub(crate) const STATE_EXPIRES: u8 = 0x80;
const EXPIRY_SIZE: usize = 8;
const VALUE_ABSENT: u16 = u16::MAX;

/// A record owned by the caller, as returned by queries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    /// One entry per declared non-unique key, in declaration order.
    pub values: Vec<Option<Vec<u8>>>,
    pub payload: Vec<u8>,
    /// When the record expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: Option<u64>,
}

/// A record borrowed from a block.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    bytes: &'a [u8],
    live: bool,
    /// Bytes of the expiry field: 0 or `EXPIRY_SIZE`.
    expiry_len: usize,
    value_count: usize,
    key_len: usize,
    slot_len: usize,
    payload_len: usize,
}

impl<'a> RecordRef<'a> {
    /// Parses the record that starts at `bytes[0]`. `bytes` runs to the end
    /// of the used part of the block.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordDecodeError> {
        if bytes.len() < RECORD_HEADER_SIZE {
            return Err(RecordDecodeError::Truncated);
        }
        let live = match bytes[0] & !STATE_EXPIRES {
            STATE_LIVE => true,
            STATE_TOMBSTONE => false,
            _ => return Err(RecordDecodeError::BadState(bytes[0])),
        };
        let expiry_len = match bytes[0] & STATE_EXPIRES {
            0 => 0,
            _ => EXPIRY_SIZE,
        };
        let value_count = bytes[1] as usize;
        if value_count > INDEXES_PER_DB_MAX {
            return Err(RecordDecodeError::TooManyValues(value_count));
        }
        let key_len = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
        let slot_len = read_u32(bytes, 4) as usize;
        let payload_len = read_u32(bytes, 8) as usize;
        if slot_len > bytes.len() {
            return Err(RecordDecodeError::SlotPastEnd {
                slot_len,
                available: bytes.len(),
            });
        }
        let lens_start = RECORD_HEADER_SIZE + expiry_len;
        let lens_end = lens_start + 2 * value_count;
        let mut need = lens_end + key_len + payload_len;
        if lens_end > slot_len {
            return Err(RecordDecodeError::FieldsPastSlot {
                need: lens_end,
                slot_len,
            });
        }
        for i in 0..value_count {
            let len =
                u16::from_le_bytes([bytes[lens_start + 2 * i], bytes[lens_start + 2 * i + 1]]);
            if len != VALUE_ABSENT {
                need += len as usize;
            }
        }
        if need > slot_len {
            return Err(RecordDecodeError::FieldsPastSlot { need, slot_len });
        }
        Ok(RecordRef {
            bytes: &bytes[..slot_len],
            live,
            expiry_len,
            value_count,
            key_len,
            slot_len,
            payload_len,
        })
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    pub fn value_count(&self) -> usize {
        self.value_count
    }

    /// When the record expires, in milliseconds since the Unix epoch.
    pub fn expires_at_ms(&self) -> Option<u64> {
        (self.expiry_len == EXPIRY_SIZE).then(|| read_u64(self.bytes, RECORD_HEADER_SIZE))
    }

    /// Whether the record has expired at `now_ms`.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_some_and(|at| at <= now_ms)
    }

    fn key_start(&self) -> usize {
        RECORD_HEADER_SIZE + self.expiry_len + 2 * self.value_count
    }

    fn value_len(&self, i: usize) -> Option<usize> {
        let at = RECORD_HEADER_SIZE + self.expiry_len + 2 * i;
        let len = u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]]);
        (len != VALUE_ABSENT).then_some(len as usize)
    }

    pub fn key(&self) -> &'a [u8] {
        let start = self.key_start();
        &self.bytes[start..start + self.key_len]
    }

    /// The value of non-unique key `i`, or `None` when absent or out of range.
    pub fn value(&self, i: usize) -> Option<&'a [u8]> {
        if i >= self.value_count {
            return None;
        }
        let mut at = self.key_start() + self.key_len;
        for j in 0..i {
            at += self.value_len(j).unwrap_or(0);
        }
        let len = self.value_len(i)?;
        Some(&self.bytes[at..at + len])
    }

    pub fn payload(&self) -> &'a [u8] {
        let mut at = self.key_start() + self.key_len;
        for j in 0..self.value_count {
            at += self.value_len(j).unwrap_or(0);
        }
        &self.bytes[at..at + self.payload_len]
    }

    pub fn to_record(&self) -> Record {
        Record {
            key: self.key().to_vec(),
            values: (0..self.value_count)
                .map(|i| self.value(i).map(<[u8]>::to_vec))
                .collect(),
            payload: self.payload().to_vec(),
            expires_at_ms: self.expires_at_ms(),
        }
    }
}

/// A record encoded and ready to be copied into a block, built by a
/// transaction before it commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedRecord {
    bytes: Vec<u8>,
}

impl EncodedRecord {
    /// Encodes a live record that does not expire. `capacity` is the record
    /// space of one block of the target database; the record must fit in it.
    pub fn encode(
        key: &[u8],
        values: &[Option<&[u8]>],
        payload: &[u8],
        capacity: usize,
    ) -> Result<Self, Error> {
        Self::encode_expiring(key, values, payload, None, capacity)
    }

    /// Encodes a live record that expires at `expires_at_ms` (ms since the
    /// Unix epoch), if given.
    pub fn encode_expiring(
        key: &[u8],
        values: &[Option<&[u8]>],
        payload: &[u8],
        expires_at_ms: Option<u64>,
        capacity: usize,
    ) -> Result<Self, Error> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > KEY_LEN_MAX {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: KEY_LEN_MAX,
            });
        }
        debug_assert!(values.len() <= INDEXES_PER_DB_MAX);
        let expiry_len = expires_at_ms.map_or(0, |_| EXPIRY_SIZE);
        let mut len =
            RECORD_HEADER_SIZE + expiry_len + 2 * values.len() + key.len() + payload.len();
        for value in values.iter().flatten() {
            if value.len() > VALUE_LEN_MAX {
                return Err(Error::ValueTooLong {
                    len: value.len(),
                    max: VALUE_LEN_MAX,
                });
            }
            len += value.len();
        }
        if len > capacity {
            return Err(Error::RecordTooLarge {
                record_bytes: len,
                block_capacity: capacity,
                block_size: capacity + BLOCK_HEADER_SIZE,
            });
        }
        let mut bytes = Vec::with_capacity(len);
        bytes.push(match expires_at_ms {
            Some(_) => STATE_LIVE | STATE_EXPIRES,
            None => STATE_LIVE,
        });
        bytes.push(values.len() as u8);
        bytes.extend_from_slice(&(key.len() as u16).to_le_bytes());
        bytes.extend_from_slice(&(len as u32).to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        if let Some(at) = expires_at_ms {
            bytes.extend_from_slice(&at.to_le_bytes());
        }
        for value in values {
            let l = value.map_or(VALUE_ABSENT, |v| v.len() as u16);
            bytes.extend_from_slice(&l.to_le_bytes());
        }
        bytes.extend_from_slice(key);
        for value in values.iter().flatten() {
            bytes.extend_from_slice(value);
        }
        bytes.extend_from_slice(payload);
        debug_assert_eq!(bytes.len(), len);
        Ok(EncodedRecord { bytes })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef::parse(&self.bytes).expect("an encoded record parses")
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The unique key, read straight from the header this type wrote.
    pub fn key(&self) -> &[u8] {
        let key_len = u16::from_le_bytes([self.bytes[2], self.bytes[3]]) as usize;
        let expiry_len = match self.bytes[0] & STATE_EXPIRES {
            0 => 0,
            _ => EXPIRY_SIZE,
        };
        let start = RECORD_HEADER_SIZE + expiry_len + 2 * self.bytes[1] as usize;
        &self.bytes[start..start + key_len]
    }

    /// Copies this record into a slot of `slot_len >= self.len()` bytes,
    /// recording the slot length and zeroing the rest of the slot.
    pub(crate) fn write_into(&self, slot: &mut [u8]) {
        debug_assert!(slot.len() >= self.bytes.len());
        slot[..self.bytes.len()].copy_from_slice(&self.bytes);
        let slot_len = slot.len() as u32;
        slot[4..8].copy_from_slice(&slot_len.to_le_bytes());
        slot[self.bytes.len()..].fill(0);
    }
}

/// Iterates over the records of a block whose start offsets lie in
/// `[start, stop)`, where `start` is a record boundary (or 0 for "from the
/// first record") and records may run up to `used_end` (the free offset).
/// Yields `(offset, record)`; stops with an error at the first record that
/// does not parse.
pub(crate) struct RecordWalk<'a> {
    used: &'a [u8],
    at: usize,
    stop: usize,
}

impl<'a> RecordWalk<'a> {
    pub(crate) fn new(block: &'a [u8], start: usize, stop: usize, used_end: usize) -> Self {
        let used_end = used_end.min(block.len());
        RecordWalk {
            used: &block[..used_end],
            at: start.max(BLOCK_HEADER_SIZE),
            stop: stop.min(used_end),
        }
    }
}

impl<'a> Iterator for RecordWalk<'a> {
    type Item = Result<(u32, RecordRef<'a>), RecordDecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.stop {
            return None;
        }
        let at = self.at;
        match RecordRef::parse(&self.used[at..]) {
            Ok(rec) => {
                // A parsed record is at least RECORD_HEADER_SIZE long, so the
                // walk always advances.
                self.at += rec.slot_len();
                Some(Ok((at as u32, rec)))
            }
            Err(e) => {
                self.at = self.stop;
                Some(Err(e))
            }
        }
    }
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut le = [0; 8];
    le.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(le)
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_round_trip() {
        let rec = EncodedRecord::encode(b"k1", &[Some(b"red"), None, Some(b"")], b"payload", 4096)
            .unwrap();
        let r = rec.as_ref();
        assert!(r.is_live());
        assert_eq!(r.key(), b"k1");
        assert_eq!(r.value(0), Some(&b"red"[..]));
        assert_eq!(r.value(1), None);
        assert_eq!(r.value(2), Some(&b""[..]));
        assert_eq!(r.payload(), b"payload");
        assert_eq!(r.slot_len(), rec.len());
    }

    #[test]
    fn parse_rejects_every_truncation() {
        let rec = EncodedRecord::encode(b"key", &[Some(b"v")], b"pp", 4096).unwrap();
        for cut in 0..rec.len() {
            assert!(
                RecordRef::parse(&rec.bytes()[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversize_record_names_both_sizes() {
        let err = EncodedRecord::encode(b"k", &[], &[0u8; 5000], 4048).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("5013") && msg.contains("4048"), "{msg}");
    }
}
