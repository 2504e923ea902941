//! A transaction's pending writes: key → new record or delete, in the order
//! first written. Small sets (the common one-record transaction) are a
//! plain vector searched linearly; larger ones add a hash index over it.

use hashbrown::HashTable;

use crate::index::hash_bytes;
use crate::record::EncodedRecord;

/// Entries searched linearly before the set builds its hash index.
const LINEAR_ENTRIES_MAX: usize = 8;

#[derive(Debug)]
pub(crate) enum Pending {
    Put(EncodedRecord),
    Delete(Box<[u8]>),
}

impl Pending {
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Pending::Put(rec) => rec.key(),
            Pending::Delete(key) => key,
        }
    }

    pub(crate) fn record(&self) -> Option<&EncodedRecord> {
        match self {
            Pending::Put(rec) => Some(rec),
            Pending::Delete(_) => None,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct WriteSet {
    entries: Vec<Pending>,
    /// Positions in `entries`, hashed by key; built past `LINEAR_ENTRIES_MAX`.
    index: Option<HashTable<usize>>,
}

impl WriteSet {
    fn position(&self, key: &[u8]) -> Option<usize> {
        match &self.index {
            None => self.entries.iter().position(|p| p.key() == key),
            Some(index) => index
                .find(hash_bytes(key), |&i| self.entries[i].key() == key)
                .copied(),
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<&Pending> {
        self.position(key).map(|i| &self.entries[i])
    }

    pub(crate) fn contains_key(&self, key: &[u8]) -> bool {
        self.position(key).is_some()
    }

    /// Records `pending` as the key's latest write.
    pub(crate) fn set(&mut self, pending: Pending) {
        if let Some(i) = self.position(pending.key()) {
            self.entries[i] = pending;
            return;
        }
        self.entries.push(pending);
        let last = self.entries.len() - 1;
        match &mut self.index {
            Some(index) => {
                let entries = &self.entries;
                index.insert_unique(hash_bytes(entries[last].key()), last, |&i| {
                    hash_bytes(entries[i].key())
                });
            }
            None if self.entries.len() > LINEAR_ENTRIES_MAX => {
                let mut index = HashTable::with_capacity(self.entries.len() * 2);
                for (i, p) in self.entries.iter().enumerate() {
                    index.insert_unique(hash_bytes(p.key()), i, |&j| {
                        hash_bytes(self.entries[j].key())
                    });
                }
                self.index = Some(index);
            }
            None => {}
        }
    }

    /// Every key's latest write, in the order keys were first written.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.entries.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], payload: &[u8]) -> Pending {
        Pending::Put(EncodedRecord::encode(key, &[], payload, 4096).unwrap())
    }

    #[test]
    fn latest_write_wins_in_first_write_order_past_the_index_threshold() {
        let mut set = WriteSet::default();
        for i in 0..40u8 {
            set.set(put(&[i], b"a"));
        }
        for i in (0..40u8).step_by(3) {
            set.set(Pending::Delete(Box::new([i])));
        }
        set.set(put(&[3], b"again"));
        assert_eq!(set.len(), 40);
        let keys: Vec<u8> = set.iter().map(|p| p.key()[0]).collect();
        assert_eq!(keys, (0..40).collect::<Vec<_>>());
        assert!(set.get(&[0]).unwrap().record().is_none());
        assert_eq!(
            set.get(&[3]).unwrap().record().unwrap().as_ref().payload(),
            b"again"
        );
        assert_eq!(
            set.get(&[4]).unwrap().record().unwrap().as_ref().payload(),
            b"a"
        );
        assert!(!set.contains_key(&[99]));
    }
}
