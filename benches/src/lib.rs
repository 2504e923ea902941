//! Shared helpers of hotblock's benchmarks: the deterministic dataset every
//! system under test loads, and the process memory reading used to cross-check
//! hotblock's own size counters.
//!
//! The dataset: record `i` has a 16-byte unique key, two 8-byte non-unique
//! values (`city`, `team`) and a 100-byte payload, all derived from `i` with
//! splitmix64, so any record can be regenerated from its index without storing
//! the dataset. Keys of distinct indexes never collide (see [`Dataset::key`]),
//! which is how benchmarks insert fresh keys: indexes `records..` are records
//! that are not loaded.

/// Bytes of a unique key.
pub const KEY_LEN: usize = 16;
/// Bytes of each non-unique value.
pub const VALUE_LEN: usize = 8;
/// Bytes of a payload.
pub const PAYLOAD_LEN: usize = 100;
/// Raw bytes of one record: key, two values, payload.
pub const RAW_RECORD_LEN: usize = KEY_LEN + 2 * VALUE_LEN + PAYLOAD_LEN;
/// Names of the two non-unique keys, in the order records carry them.
pub const INDEXES: [&str; 2] = ["city", "team"];
/// Records matching each non-unique value, on average.
pub const RECORDS_PER_VALUE: u64 = 10;
/// Records loaded when `HOTBLOCK_BENCH_RECORDS` is not set.
pub const DEFAULT_RECORDS: u64 = 1_000_000;

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_KEY_HI: u64 = 0x6b65_7968_6900_0001;
const SEED_KEY_LO: u64 = 0x6b65_796c_6f00_0002;
const SEED_CITY: u64 = 0x6369_7479_0000_0003;
const SEED_TEAM_CLASS: u64 = 0x7465_616d_0000_0004;
const SEED_TEAM: u64 = 0x7465_616d_0000_0005;
const SEED_PAYLOAD: u64 = 0x7061_796c_6f61_0006;

/// The splitmix64 finalizer: a bijection of `u64`.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The splitmix64 generator: a small, fast, deterministic random stream.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// A value in `0..n` (`n > 0`), by multiply-shift (no modulo bias worth
    /// mentioning for the ranges used here).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// One record, inline (no heap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub key: [u8; KEY_LEN],
    pub city: [u8; VALUE_LEN],
    pub team: [u8; VALUE_LEN],
    pub payload: [u8; PAYLOAD_LEN],
}

/// The dataset: `records` records, `distinct_values` distinct values per
/// non-unique key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dataset {
    pub records: u64,
    pub distinct_values: u64,
}

impl Dataset {
    /// `records` records with about [`RECORDS_PER_VALUE`] records per
    /// non-unique value.
    pub fn new(records: u64) -> Self {
        Dataset {
            records,
            distinct_values: (records / RECORDS_PER_VALUE).max(1),
        }
    }

    /// The size given by `HOTBLOCK_BENCH_RECORDS`, else [`DEFAULT_RECORDS`].
    ///
    /// # Panics
    /// If the variable is set but is not a positive integer.
    pub fn from_env() -> Self {
        let records = match std::env::var("HOTBLOCK_BENCH_RECORDS") {
            Ok(v) => match v.trim().replace('_', "").parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => panic!("HOTBLOCK_BENCH_RECORDS={v:?}: expected a positive integer"),
            },
            Err(_) => DEFAULT_RECORDS,
        };
        Dataset::new(records)
    }

    /// The unique key of record `i`. Its first 8 bytes are a bijection of
    /// `i`, so two indexes never share a key.
    #[inline]
    pub fn key(&self, i: u64) -> [u8; KEY_LEN] {
        let mut key = [0; KEY_LEN];
        key[..8].copy_from_slice(&mix64(i.wrapping_mul(GOLDEN) ^ SEED_KEY_HI).to_be_bytes());
        key[8..].copy_from_slice(&mix64(i ^ SEED_KEY_LO).to_be_bytes());
        key
    }

    /// The `class`-th distinct `city` value (`class < distinct_values`).
    #[inline]
    pub fn city(&self, class: u64) -> [u8; VALUE_LEN] {
        mix64(class ^ SEED_CITY).to_le_bytes()
    }

    /// The `class`-th distinct `team` value (`class < distinct_values`).
    #[inline]
    pub fn team(&self, class: u64) -> [u8; VALUE_LEN] {
        mix64(class ^ SEED_TEAM).to_le_bytes()
    }

    /// The `city` class of record `i`: round robin, so every city value
    /// matches exactly `records / distinct_values` loaded records (give or
    /// take one).
    #[inline]
    pub fn city_class(&self, i: u64) -> u64 {
        i % self.distinct_values
    }

    /// The `team` class of record `i`: pseudo-random, so team values match
    /// `RECORDS_PER_VALUE` records on average (Poisson-like spread) and are
    /// uncorrelated with city.
    #[inline]
    pub fn team_class(&self, i: u64) -> u64 {
        ((mix64(i ^ SEED_TEAM_CLASS) as u128 * self.distinct_values as u128) >> 64) as u64
    }

    /// Record `i`. Indexes `>= records` are records not loaded: fresh keys.
    pub fn row(&self, i: u64) -> Row {
        let mut payload = [0; PAYLOAD_LEN];
        let mut rng = SplitMix64::new(i ^ SEED_PAYLOAD);
        for chunk in payload.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
        }
        Row {
            key: self.key(i),
            city: self.city(self.city_class(i)),
            team: self.team(self.team_class(i)),
            payload,
        }
    }
}

/// Resident set size of this process in bytes (`VmRSS` of
/// `/proc/self/status`, which is `/proc/self/statm`'s resident pages already
/// multiplied by the page size). `None` where procfs is unavailable.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn keys_are_unique_and_values_spread() {
        let data = Dataset::new(10_000);
        let keys: HashSet<_> = (0..2 * data.records).map(|i| data.key(i)).collect();
        assert_eq!(keys.len() as u64, 2 * data.records);

        let mut cities: HashMap<[u8; 8], u64> = HashMap::new();
        let mut teams: HashMap<[u8; 8], u64> = HashMap::new();
        for i in 0..data.records {
            let row = data.row(i);
            *cities.entry(row.city).or_default() += 1;
            *teams.entry(row.team).or_default() += 1;
        }
        assert_eq!(cities.len() as u64, data.distinct_values);
        assert!(cities.values().all(|&n| n == RECORDS_PER_VALUE));
        assert!(teams.len() as u64 > data.distinct_values / 2);
        assert_eq!(teams.values().sum::<u64>(), data.records);
    }

    #[test]
    fn rows_are_deterministic() {
        let data = Dataset::new(100);
        assert_eq!(data.row(42), data.row(42));
        assert_ne!(data.row(42).payload, data.row(43).payload);
    }
}
