//! The log file: every delta since a snapshot, one record each — its
//! format, its encoder and decoder, and creating a new one.
//!
//! Each record carries its own length and checksum, so recovery finds the
//! end of what was written whole — a record cut by a crash, or bytes that
//! rotted, fail their check — and cuts the file there.
//!
//! `log-<base lsn>.hb` holds the deltas after `base lsn`, in LSN order
//! without a gap. It is created (header only) by a checkpoint, or by
//! recovery, and appended to by the commit hook (`log_writer.rs`).
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HBLG"
//! 4       1     format version (1)
//! 5       3     zero
//! 8       8     base lsn: the first record holds lsn base + 1
//! 16      8     xxh3-64 of bytes 0..16
//! 24      ...   records, each:
//!                 len u32 (LOG_RECORD_SIZE_MIN..=LOG_RECORD_SIZE_MAX),
//!                 xxh3-64 of the delta u64,
//!                 len bytes of delta (`Delta::encode`, its own format)
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

use crate::codec::{ReadError, Source};
use crate::error::PersistError;
use crate::limits::{LOG_RECORD_SIZE_MAX, LOG_RECORD_SIZE_MIN};
use crate::PERSIST_FORMAT_VERSION;
use hotblock_core::Delta;
use hotblock_core::Lsn;

pub(crate) const LOG_MAGIC: [u8; 4] = *b"HBLG";
/// Magic, version, 3 zero bytes, base LSN, xxh3 of those 16 bytes.
pub(crate) const LOG_HEADER_SIZE: usize = 24;
/// Length and checksum before each record's delta bytes.
pub(crate) const RECORD_PREFIX_SIZE: usize = 12;

/// A log open for appending, positioned at its end.
#[derive(Debug)]
pub(crate) struct OpenLog {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) base: Lsn,
    pub(crate) len: u64,
}

/// Creates `dir/name` as an empty log after `base` and opens it for
/// appending. Not fsynced: the caller syncs it with whatever must be durable
/// alongside it.
pub(crate) fn create(dir: &Path, name: &str, base: Lsn) -> Result<OpenLog, PersistError> {
    let path = dir.join(name);
    let create = || -> io::Result<File> {
        let mut f = File::create(&path)?;
        f.write_all(&encode_header(base))?;
        drop(f);
        // O_APPEND: every record lands at the end, even after a failed
        // write was cut off with `set_len`.
        OpenOptions::new().append(true).open(&path)
    };
    let file = create().map_err(PersistError::io("creating the log", &path))?;
    #[cfg(test)]
    crate::files::trace::record(crate::files::trace::Step::Created, &path);
    Ok(OpenLog {
        file,
        path,
        base,
        len: LOG_HEADER_SIZE as u64,
    })
}

pub(crate) fn encode_header(base: Lsn) -> [u8; LOG_HEADER_SIZE] {
    let mut h = [0; LOG_HEADER_SIZE];
    h[0..4].copy_from_slice(&LOG_MAGIC);
    h[4] = PERSIST_FORMAT_VERSION;
    h[8..16].copy_from_slice(&base.0.to_le_bytes());
    let sum = xxh3_64(&h[..16]);
    h[16..24].copy_from_slice(&sum.to_le_bytes());
    h
}

/// One record, ready for a single `write_all`; `Err(len)` if the delta
/// encodes larger than a record may be.
pub(crate) fn encode_record(delta: &Delta) -> Result<Vec<u8>, usize> {
    let len = delta.encoded_len();
    if len > LOG_RECORD_SIZE_MAX {
        return Err(len);
    }
    let mut out = Vec::with_capacity(RECORD_PREFIX_SIZE + len);
    out.extend_from_slice(&[0; RECORD_PREFIX_SIZE]);
    delta.encode_into(&mut out);
    let body = &out[RECORD_PREFIX_SIZE..];
    debug_assert_eq!(body.len(), len);
    let sum = xxh3_64(body);
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[4..12].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// Reads a log's records in order, checking each and that their LSNs run
/// on from the base without a gap.
pub(crate) struct LogReader<R> {
    src: Source<R>,
    base: Lsn,
    last: Lsn,
    /// End of the last record that read whole: where a bad tail is cut.
    good_end: u64,
}

impl<R: Read> LogReader<R> {
    /// Reads and checks the header.
    pub(crate) fn new(input: R) -> Result<Self, ReadError> {
        let mut src = Source::new(input, false);
        let mut h = [0; LOG_HEADER_SIZE];
        src.exact(&mut h, "log header")?;
        if h[0..4] != LOG_MAGIC {
            return Err(ReadError::bad(0, "not a hotblock log (bad magic)"));
        }
        if h[4] != PERSIST_FORMAT_VERSION {
            return Err(ReadError::Version(h[4]));
        }
        if h[5..8] != [0; 3] || xxh3_64(&h[..16]).to_le_bytes() != h[16..24] {
            return Err(ReadError::bad(0, "log header checksum mismatch"));
        }
        let base = Lsn(u64::from_le_bytes(h[8..16].try_into().unwrap()));
        Ok(LogReader {
            src,
            base,
            last: base,
            good_end: LOG_HEADER_SIZE as u64,
        })
    }

    pub(crate) fn base(&self) -> Lsn {
        self.base
    }

    /// The LSN of the last record read (the base before any).
    pub(crate) fn last(&self) -> Lsn {
        self.last
    }

    /// Byte offset just past the last record that read whole.
    pub(crate) fn good_end(&self) -> u64 {
        self.good_end
    }

    /// The next record's delta, or `None` at a clean end of the file.
    pub(crate) fn next_delta(&mut self) -> Result<Option<Delta>, ReadError> {
        let mut prefix = [0; RECORD_PREFIX_SIZE];
        if !self.src.exact_or_end(&mut prefix, "record header")? {
            return Ok(None);
        }
        let at = self.good_end;
        let bad = |why: String| ReadError::bad(at, why);
        let len = u32::from_le_bytes(prefix[0..4].try_into().unwrap()) as usize;
        let sum = u64::from_le_bytes(prefix[4..12].try_into().unwrap());
        if !(LOG_RECORD_SIZE_MIN..=LOG_RECORD_SIZE_MAX).contains(&len) {
            return Err(bad(format!(
                "record length {len} outside {LOG_RECORD_SIZE_MIN}..={LOG_RECORD_SIZE_MAX}"
            )));
        }
        let body = self.src.bytes(len, "record")?;
        if xxh3_64(&body) != sum {
            return Err(bad("record checksum mismatch".into()));
        }
        let delta = Delta::decode(&Bytes::from(body))
            .map_err(|e| ReadError::bad_because(at, "record does not decode", e))?;
        if delta.lsn() != self.last.next() {
            return Err(bad(format!(
                "record for {} follows {}",
                delta.lsn(),
                self.last
            )));
        }
        self.last = delta.lsn();
        self.good_end = self.src.offset();
        Ok(Some(delta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotblock_core::DbId;
    use hotblock_core::DeltaOp;

    fn delta(lsn: u64) -> Delta {
        Delta::from_checked_ops(vec![
            DeltaOp::TxnBegin { db: DbId(0) },
            DeltaOp::TxnCommit { lsn: Lsn(lsn) },
        ])
        .unwrap()
    }

    #[test]
    fn records_round_trip_and_every_cut_is_caught() {
        let mut file = encode_header(Lsn(4)).to_vec();
        let ends: Vec<usize> = (5..8)
            .map(|lsn| {
                file.extend(encode_record(&delta(lsn)).unwrap());
                file.len()
            })
            .collect();
        let mut r = LogReader::new(&file[..]).unwrap();
        assert_eq!(r.base(), Lsn(4));
        for lsn in 5..8 {
            assert_eq!(r.next_delta().unwrap().unwrap().lsn(), Lsn(lsn));
        }
        assert!(r.next_delta().unwrap().is_none());
        for cut in LOG_HEADER_SIZE..file.len() {
            let mut r = LogReader::new(&file[..cut]).unwrap();
            while let Ok(Some(_)) = r.next_delta() {}
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(r.last(), Lsn(4 + whole as u64));
            assert_eq!(
                r.good_end() as usize,
                ends[..whole].last().copied().unwrap_or(LOG_HEADER_SIZE)
            );
        }
    }
}
