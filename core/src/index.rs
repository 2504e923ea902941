//! Indexes: the unique-key index and one index per non-unique key.
//!
//! Both are hash tables (hashbrown's `HashTable`, hashed with xxh3) that
//! store record ids, not keys: the key or value is compared by reading the
//! record from its block. That keeps an index entry at 16 bytes whatever the
//! key size, and keeps the blocks the single source of truth — every index
//! can be rebuilt from the blocks alone.
//!
//! A non-unique value maps to a posting list of record ids kept sorted, so
//! that every node lists the records of a value in the same order (record
//! ids are logical and shared) and removal is a binary search.

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

    pub fn heap_bytes(&self) -> usize {
        // One control byte per bucket beside each entry.
        self.table.capacity() * (std::mem::size_of::<(u64, RecordId)>() + 1)
    }
}

#[derive(Debug)]
struct Posting {
    hash: u64,
    /// Never empty; sorted ascending.
    rids: Vec<RecordId>,
}

/// One non-unique key: value → posting list of record ids.
#[derive(Debug, Default)]
pub struct ValueIndex {
    table: HashTable<Posting>,
    rid_capacity: usize,
}

impl ValueIndex {
    /// The records holding the value that hashes to `hash` and for which
    /// `is_value` holds (checked on one record of each candidate posting).
    pub fn find(&self, hash: u64, mut is_value: impl FnMut(RecordId) -> bool) -> &[RecordId] {
        self.table
            .find(hash, |p| p.hash == hash && is_value(p.rids[0]))
            .map_or(&[], |p| &p.rids)
    }

    pub fn insert(&mut self, hash: u64, rid: RecordId, mut is_value: impl FnMut(RecordId) -> bool) {
        match self
            .table
            .find_mut(hash, |p| p.hash == hash && is_value(p.rids[0]))
        {
            Some(p) => {
                let before = p.rids.capacity();
                let at = p.rids.partition_point(|r| *r < rid);
                if p.rids.get(at) == Some(&rid) {
                    return;
                }
                p.rids.insert(at, rid);
                self.rid_capacity += p.rids.capacity() - before;
            }
            None => {
                let rids = vec![rid];
                self.rid_capacity += rids.capacity();
                self.table
                    .insert_unique(hash, Posting { hash, rids }, |p| p.hash);
            }
        }
    }

    /// Removes `rid` from the posting of the value hashing to `hash`. Finds
    /// the posting by the record id itself, so it works even if the record's
    /// bytes are no longer readable.
    pub fn remove(&mut self, hash: u64, rid: RecordId) -> bool {
        let Ok(entry) = self.table.find_entry(hash, |p| {
            p.hash == hash && p.rids.binary_search(&rid).is_ok()
        }) else {
            return false;
        };
        let posting = entry.into_mut();
        let at = posting.rids.binary_search(&rid).expect("found above");
        posting.rids.remove(at);
        if posting.rids.is_empty() {
            self.rid_capacity -= posting.rids.capacity();
            self.table
                .find_entry(hash, |p| p.rids.is_empty())
                .expect("just emptied")
                .remove();
        }
        true
    }

    #[cfg(test)]
    fn distinct_values(&self) -> usize {
        self.table.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<Posting>() + 1)
            + self.rid_capacity * std::mem::size_of::<RecordId>()
    }
}

/// All indexes of one database.
#[derive(Debug, Default)]
pub struct Indexes {
    pub unique: UniqueIndex,
    pub values: Vec<ValueIndex>,
}

impl Indexes {
    pub fn new(value_indexes: usize) -> Self {
        Indexes {
            unique: UniqueIndex::default(),
            values: (0..value_indexes).map(|_| ValueIndex::default()).collect(),
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.unique.heap_bytes()
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
        // All rids hold the same value: equality is always true.
        for r in [rid(2, 10), rid(1, 50), rid(1, 48)] {
            idx.insert(7, r, |_| true);
        }
        assert_eq!(idx.find(7, |_| true), &[rid(1, 48), rid(1, 50), rid(2, 10)]);
        assert!(idx.remove(7, rid(1, 50)));
        assert!(!idx.remove(7, rid(1, 50)));
        assert!(idx.remove(7, rid(1, 48)));
        assert!(idx.remove(7, rid(2, 10)));
        assert_eq!(idx.distinct_values(), 0);
        assert!(idx.find(7, |_| true).is_empty());
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
