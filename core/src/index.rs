//! Indexes: the unique-key index and one index per non-unique key.
//!
//! Both are hash tables (hashbrown's `HashTable`, hashed with xxh3) that
//! store record ids, not keys: the key or value is compared by reading the
//! record from its block. That keeps an index entry at 16 bytes whatever the
//! key size, and keeps the blocks the single source of truth — every index
//! can be rebuilt from the blocks alone.
//!
//! A non-unique value maps to a posting that holds the value itself (inline
//! up to 22 bytes), so finding a value reads no record, and a list of record
//! ids kept sorted, so that every node lists the records of a value in the
//! same order (record ids are logical and shared) and removal is a binary
//! search.

use hashbrown::HashTable;
use xxhash_rust::xxh3::xxh3_64;

use crate::ids::RecordId;

pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Unique key → record id.
#[derive(Debug, Default)]
pub struct UniqueIndex {
    table: HashTable<(u64, RecordId)>,
}

impl UniqueIndex {
    /// The record whose key hashes to `hash` and for which `is_key` holds.
    pub fn find(&self, hash: u64, mut is_key: impl FnMut(RecordId) -> bool) -> Option<RecordId> {
        self.table
            .find(hash, |&(h, rid)| h == hash && is_key(rid))
            .map(|e| e.1)
    }

    /// Adds an entry; the caller has checked that the key is absent.
    pub fn insert(&mut self, hash: u64, rid: RecordId) {
        self.table.insert_unique(hash, (hash, rid), |e| e.0);
    }

    pub fn remove(&mut self, hash: u64, rid: RecordId) -> bool {
        match self.table.find_entry(hash, |e| e.1 == rid) {
            Ok(entry) => {
                entry.remove();
                true
            }
            Err(_) => false,
        }
    }

    /// Every entry: (hash of the key, record), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, RecordId)> + '_ {
        self.table.iter().copied()
    }

    pub fn heap_bytes(&self) -> usize {
        // One control byte per bucket beside each entry.
        self.table.capacity() * (std::mem::size_of::<(u64, RecordId)>() + 1)
    }
}

/// A non-unique value as a posting holds it: inline when short (the common
/// case: codes, names, ids), so that finding a posting reads no record and
/// no other heap object.
#[derive(Debug)]
enum ValueBytes {
    Inline {
        len: u8,
        bytes: [u8; VALUE_INLINE_LEN_MAX],
    },
    Heap(Box<[u8]>),
}

/// Longest value stored inline: keeps `ValueBytes` at 24 bytes.
const VALUE_INLINE_LEN_MAX: usize = 22;
const _: () = assert!(std::mem::size_of::<ValueBytes>() == 24);

impl ValueBytes {
    fn new(value: &[u8]) -> Self {
        if value.len() <= VALUE_INLINE_LEN_MAX {
            let mut bytes = [0; VALUE_INLINE_LEN_MAX];
            bytes[..value.len()].copy_from_slice(value);
            ValueBytes::Inline {
                len: value.len() as u8,
                bytes,
            }
        } else {
            ValueBytes::Heap(value.into())
        }
    }

    fn get(&self) -> &[u8] {
        match self {
            ValueBytes::Inline { len, bytes } => &bytes[..*len as usize],
            ValueBytes::Heap(b) => b,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            ValueBytes::Inline { .. } => 0,
            ValueBytes::Heap(b) => b.len(),
        }
    }
}

#[derive(Debug)]
struct Posting {
    hash: u64,
    value: ValueBytes,
    /// Never empty; sorted ascending.
    rids: Vec<RecordId>,
}

impl Posting {
    fn is(&self, hash: u64, value: &[u8]) -> bool {
        self.hash == hash && self.value.get() == value
    }
}

/// One non-unique key: value → posting list of record ids.
#[derive(Debug, Default)]
pub struct ValueIndex {
    table: HashTable<Posting>,
    /// Heap bytes of posting lists and long values, for `heap_bytes`.
    heap_bytes: usize,
}

impl ValueIndex {
    /// The records holding `value`, whose hash is `hash`, in record id order.
    pub fn find(&self, hash: u64, value: &[u8]) -> &[RecordId] {
        self.table
            .find(hash, |p| p.is(hash, value))
            .map_or(&[], |p| &p.rids)
    }

    pub fn insert(&mut self, hash: u64, value: &[u8], rid: RecordId) {
        match self.table.find_mut(hash, |p| p.is(hash, value)) {
            Some(p) => {
                let at = p.rids.partition_point(|r| *r < rid);
                if p.rids.get(at) == Some(&rid) {
                    return;
                }
                let before = p.rids.capacity();
                p.rids.insert(at, rid);
                self.heap_bytes += (p.rids.capacity() - before) * std::mem::size_of::<RecordId>();
            }
            None => {
                let posting = Posting {
                    hash,
                    value: ValueBytes::new(value),
                    rids: vec![rid],
                };
                self.heap_bytes += posting.value.heap_bytes()
                    + posting.rids.capacity() * std::mem::size_of::<RecordId>();
                self.table.insert_unique(hash, posting, |p| p.hash);
            }
        }
    }

    /// Removes `rid` from the posting of `value`. Returns whether it was there.
    pub fn remove(&mut self, hash: u64, value: &[u8], rid: RecordId) -> bool {
        let Ok(entry) = self.table.find_entry(hash, |p| p.is(hash, value)) else {
            return false;
        };
        let Ok(at) = entry.get().rids.binary_search(&rid) else {
            return false;
        };
        if entry.get().rids.len() == 1 {
            let (posting, _) = entry.remove();
            self.heap_bytes -= posting.value.heap_bytes()
                + posting.rids.capacity() * std::mem::size_of::<RecordId>();
        } else {
            entry.into_mut().rids.remove(at);
        }
        true
    }

    #[cfg(test)]
    fn distinct_values(&self) -> usize {
        self.table.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<Posting>() + 1) + self.heap_bytes
    }
}

/// The records that expire, in the order they do: what the primary's
/// expiry cycle takes from the front of, and what `INFO keyspace` counts.
#[derive(Debug, Default)]
pub struct ExpiryIndex {
    by_time: std::collections::BTreeSet<(u64, RecordId)>,
    /// Sum of the expiry times, for the average time to live.
    sum_ms: u128,
}

impl ExpiryIndex {
    pub fn insert(&mut self, at_ms: u64, rid: RecordId) {
        if self.by_time.insert((at_ms, rid)) {
            self.sum_ms += at_ms as u128;
        }
    }

    pub fn remove(&mut self, at_ms: u64, rid: RecordId) {
        if self.by_time.remove(&(at_ms, rid)) {
            self.sum_ms -= at_ms as u128;
        }
    }

    pub fn len(&self) -> usize {
        self.by_time.len()
    }

    /// The records whose time is at or before `now_ms`, soonest first.
    pub fn due(&self, now_ms: u64) -> impl Iterator<Item = RecordId> + '_ {
        self.by_time
            .range(..=(now_ms, RecordId::MAX))
            .map(|&(_, rid)| rid)
    }

    /// The mean of the expiry times, in ms since the Unix epoch.
    pub fn mean_ms(&self) -> Option<u64> {
        (!self.by_time.is_empty()).then(|| (self.sum_ms / self.by_time.len() as u128) as u64)
    }

    pub fn heap_bytes(&self) -> usize {
        // A B-tree node holds up to 11 entries; count them about 2/3 full.
        self.by_time.len() * std::mem::size_of::<(u64, RecordId)>() * 3 / 2
    }
}

/// All indexes of one database.
#[derive(Debug, Default)]
pub struct Indexes {
    pub unique: UniqueIndex,
    pub values: Vec<ValueIndex>,
    pub expiring: ExpiryIndex,
}

impl Indexes {
    pub fn new(value_indexes: usize) -> Self {
        Indexes {
            unique: UniqueIndex::default(),
            values: (0..value_indexes).map(|_| ValueIndex::default()).collect(),
            expiring: ExpiryIndex::default(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.expiring.heap_bytes()
            + self.unique.heap_bytes()
            + self
                .values
                .iter()
                .map(ValueIndex::heap_bytes)
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::BlockId;

    fn rid(b: u32, o: u32) -> RecordId {
        RecordId {
            block: BlockId(b),
            offset: o,
        }
    }

    #[test]
    fn postings_stay_sorted_and_vanish_when_empty() {
        let mut idx = ValueIndex::default();
        let long = [7u8; 40];
        for value in [&b"red"[..], &long[..]] {
            for r in [rid(2, 10), rid(1, 50), rid(1, 48)] {
                idx.insert(7, value, r);
            }
            assert_eq!(idx.find(7, value), &[rid(1, 48), rid(1, 50), rid(2, 10)]);
        }
        // Same hash, other value: a different posting.
        assert!(idx.find(7, b"blue").is_empty());
        assert!(!idx.remove(7, b"blue", rid(1, 50)));
        for value in [&b"red"[..], &long[..]] {
            assert!(idx.remove(7, value, rid(1, 50)));
            assert!(!idx.remove(7, value, rid(1, 50)));
            assert!(idx.remove(7, value, rid(1, 48)));
            assert!(idx.remove(7, value, rid(2, 10)));
        }
        assert_eq!(idx.distinct_values(), 0);
        assert!(idx.find(7, b"red").is_empty());
    }

    #[test]
    fn unique_remove_by_rid() {
        let mut idx = UniqueIndex::default();
        idx.insert(5, rid(0, 48));
        idx.insert(5, rid(0, 99)); // a hash collision with another key
        assert_eq!(idx.find(5, |r| r.offset == 99), Some(rid(0, 99)));
        assert!(idx.remove(5, rid(0, 48)));
    }
}
