//! The snapshot file: every database's schema and blocks at one LSN — its
//! format, its streaming encoder and decoder.
//!
//! Written as a stream while the engine is held at a consistent point, and
//! read as a stream into an engine, so neither side holds a second copy of
//! the database in memory. The checksum covers the whole file and is only
//! known at its end: a reader that installs blocks as it goes must discard
//! the engine if the trailer does not match.
//!
//! `snapshot-<lsn>.hb` holds the databases at `lsn`. A checkpoint writes it
//! to `snapshot.hb.tmp`, fsyncs it, renames it and fsyncs the directory
//! (`checkpoint.rs`).
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HBSN"
//! 4       1     format version (1)
//! 5       3     zero
//! 8       8     lsn
//! 16      4     database count n (at most DATABASES_MAX)
//! 20      ...   n schemas, in rising id order, each:
//!                 id u32, block_size u32, name_len u8 (1..=NAME_LEN_MAX), name,
//!                 index_count u8 (at most INDEXES_PER_DB_MAX),
//!                 (name_len u8, name) * index_count
//!         ...   blocks, in rising (db id, block id) order, each:
//!                 tag u8 = 1, db id u32, block id u32, block_size bytes
//!         1     tag u8 = 0: end of blocks
//!         8     block count
//!         8     xxh3-64 of every byte before it
//! ```
//!
//! The limits are the engine's (`hotblock_core::constants`); `limits.rs`
//! asserts that each fits the field that stores it.

use std::collections::HashSet;
use std::io::{self, Read, Write};

use xxhash_rust::xxh3::Xxh3;

use crate::codec::{ReadError, Source};
use crate::PERSIST_FORMAT_VERSION;
use hotblock_core::constants::{
    BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, DATABASES_MAX, INDEXES_PER_DB_MAX, NAME_LEN_MAX,
};
use hotblock_core::Engine;
use hotblock_core::Error;
use hotblock_core::Schema;
use hotblock_core::{BlockId, DbId, Lsn};

pub(crate) const SNAPSHOT_MAGIC: [u8; 4] = *b"HBSN";
const TAG_END: u8 = 0;
const TAG_BLOCK: u8 = 1;

/// Where a decoded snapshot goes: an engine in recovery, or nowhere (fuzzing).
pub(crate) trait SnapshotSink {
    fn begin(&mut self, lsn: Lsn, schemas: &[Schema]) -> Result<(), Error>;
    fn block(&mut self, db: DbId, block: BlockId, bytes: &[u8]) -> Result<(), Error>;
}

/// Discards what it is given: the decoder's checks alone.
pub(crate) struct Discard;

impl SnapshotSink for Discard {
    fn begin(&mut self, _: Lsn, _: &[Schema]) -> Result<(), Error> {
        Ok(())
    }
    fn block(&mut self, _: DbId, _: BlockId, _: &[u8]) -> Result<(), Error> {
        Ok(())
    }
}

/// Installs into a follower engine, as a resync from a peer would.
pub(crate) struct Install<'a>(pub(crate) &'a Engine);

impl SnapshotSink for Install<'_> {
    fn begin(&mut self, lsn: Lsn, schemas: &[Schema]) -> Result<(), Error> {
        self.0.reset_to_snapshot(schemas, lsn)
    }
    fn block(&mut self, db: DbId, block: BlockId, bytes: &[u8]) -> Result<(), Error> {
        self.0.install_block(db, block, bytes)
    }
}

struct Hashing<W> {
    inner: W,
    hasher: Xxh3,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `engine`'s schemas and blocks as a snapshot at `lsn`. Call it
/// inside `Engine::at_consistent_point`, which gives `lsn`: the blocks then
/// hold exactly the transactions up to it. Returns the block count.
pub(crate) fn write_snapshot<W: Write>(out: W, engine: &Engine, lsn: Lsn) -> io::Result<u64> {
    let mut w = Hashing {
        inner: out,
        hasher: Xxh3::new(),
    };
    let databases = engine.databases();
    w.write_all(&SNAPSHOT_MAGIC)?;
    w.write_all(&[PERSIST_FORMAT_VERSION, 0, 0, 0])?;
    w.write_all(&lsn.0.to_le_bytes())?;
    w.write_all(&(databases.len() as u32).to_le_bytes())?;
    for db in &databases {
        let s = db.schema();
        w.write_all(&s.id.0.to_le_bytes())?;
        w.write_all(&(s.block_size as u32).to_le_bytes())?;
        write_name(&mut w, &s.name)?;
        w.write_all(&[s.indexes.len() as u8])?;
        for index in &s.indexes {
            write_name(&mut w, index)?;
        }
    }
    let mut blocks = 0u64;
    for db in &databases {
        let mut from = BlockId(0);
        while let Some((block, bytes)) = db.block_at_or_after(from) {
            w.write_all(&[TAG_BLOCK])?;
            w.write_all(&db.id().0.to_le_bytes())?;
            w.write_all(&block.0.to_le_bytes())?;
            w.write_all(&bytes)?;
            blocks += 1;
            match block.0.checked_add(1) {
                Some(next) => from = BlockId(next),
                None => break,
            }
        }
    }
    w.write_all(&[TAG_END])?;
    w.write_all(&blocks.to_le_bytes())?;
    let sum = w.hasher.digest();
    w.inner.write_all(&sum.to_le_bytes())?;
    w.inner.flush()?;
    Ok(blocks)
}

fn write_name(w: &mut impl Write, name: &str) -> io::Result<()> {
    debug_assert!(!name.is_empty() && name.len() <= NAME_LEN_MAX);
    w.write_all(&[name.len() as u8])?;
    w.write_all(name.as_bytes())
}

/// Decodes a snapshot into `sink`, checking everything it reads; returns
/// its LSN and block count. On error, whatever `sink` received is garbage.
pub(crate) fn read_snapshot<R: Read>(
    input: R,
    sink: &mut impl SnapshotSink,
) -> Result<(Lsn, u64), ReadError> {
    let mut src = Source::new(input, true);
    let lsn = read_header(&mut src)?;
    let schemas = read_schemas(&mut src)?;
    sink.begin(lsn, &schemas)
        .map_err(|e| engine_error(&src, e))?;
    let blocks = read_blocks(&mut src, &schemas, sink)?;
    let declared = src.u64("trailer")?;
    let digest = src.digest();
    let sum = src.u64("trailer")?;
    if sum != digest {
        return Err(src.bad("snapshot checksum mismatch"));
    }
    if declared != blocks {
        return Err(src.bad(format!(
            "trailer counts {declared} blocks, the file holds {blocks}"
        )));
    }
    if !src.at_end()? {
        return Err(src.bad("bytes after the trailer"));
    }
    Ok((lsn, blocks))
}

/// Magic, version, reserved bytes; returns the LSN.
fn read_header<R: Read>(src: &mut Source<R>) -> Result<Lsn, ReadError> {
    let mut magic = [0; 4];
    src.exact(&mut magic, "snapshot header")?;
    if magic != SNAPSHOT_MAGIC {
        return Err(ReadError::bad(0, "not a hotblock snapshot (bad magic)"));
    }
    let version = src.u8("snapshot header")?;
    if version != PERSIST_FORMAT_VERSION {
        return Err(ReadError::Version(version));
    }
    let mut zero = [0; 3];
    src.exact(&mut zero, "snapshot header")?;
    if zero != [0; 3] {
        return Err(src.bad("reserved header bytes are not zero"));
    }
    Ok(Lsn(src.u64("snapshot header")?))
}

/// The database count and schemas: ids rising, names distinct.
fn read_schemas<R: Read>(src: &mut Source<R>) -> Result<Vec<Schema>, ReadError> {
    let count = src.u32("database count")? as usize;
    if count > DATABASES_MAX {
        return Err(src.bad(format!("{count} databases, at most {DATABASES_MAX}")));
    }
    let mut schemas: Vec<Schema> = Vec::new();
    let mut names = HashSet::new();
    for _ in 0..count {
        let schema = read_schema(src)?;
        if schemas.last().is_some_and(|s| s.id >= schema.id) {
            return Err(src.bad("database ids out of order"));
        }
        if !names.insert(schema.name.clone()) {
            return Err(src.bad(format!("database '{}' named twice", schema.name)));
        }
        schemas.push(schema);
    }
    Ok(schemas)
}

/// The blocks, up to the end tag, into `sink`; returns how many.
fn read_blocks<R: Read>(
    src: &mut Source<R>,
    schemas: &[Schema],
    sink: &mut impl SnapshotSink,
) -> Result<u64, ReadError> {
    let mut buf = Vec::new();
    let mut last: Option<(DbId, BlockId)> = None;
    let mut blocks = 0u64;
    loop {
        match src.u8("block tag")? {
            TAG_END => return Ok(blocks),
            TAG_BLOCK => {}
            other => return Err(src.bad(format!("unknown tag {other}"))),
        }
        let db = DbId(src.u32("block")?);
        let block = BlockId(src.u32("block")?);
        if last.is_some_and(|l| l >= (db, block)) {
            return Err(src.bad("blocks out of order"));
        }
        last = Some((db, block));
        let Ok(i) = schemas.binary_search_by_key(&db, |s| s.id) else {
            return Err(src.bad(format!(
                "block of {db}, which the snapshot does not declare"
            )));
        };
        buf.resize(schemas[i].block_size, 0);
        src.exact(&mut buf, "block")?;
        sink.block(db, block, &buf)
            .map_err(|e| engine_error(src, e))?;
        blocks += 1;
    }
}

/// The engine refused what the snapshot holds: corruption if the engine
/// says the bytes are wrong, else the engine's own error (a memory limit).
fn engine_error<R: Read>(src: &Source<R>, e: Error) -> ReadError {
    match e {
        Error::Corrupt { .. } => ReadError::bad_because(src.offset(), "refused by the engine", e),
        other => ReadError::Engine(other),
    }
}

fn read_schema<R: Read>(src: &mut Source<R>) -> Result<Schema, ReadError> {
    let id = DbId(src.u32("schema")?);
    let block_size = src.u32("schema")? as usize;
    if !block_size.is_power_of_two() || !(BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&block_size) {
        return Err(src.bad(format!("invalid block size {block_size}")));
    }
    let name = read_name(src)?;
    let count = src.u8("schema")? as usize;
    if count > INDEXES_PER_DB_MAX {
        return Err(src.bad(format!("{count} indexes, at most {INDEXES_PER_DB_MAX}")));
    }
    let mut indexes: Vec<String> = Vec::with_capacity(count);
    for _ in 0..count {
        let index = read_name(src)?;
        if indexes.contains(&index) {
            return Err(src.bad(format!("index '{index}' named twice")));
        }
        indexes.push(index);
    }
    Ok(Schema {
        id,
        name,
        block_size,
        indexes,
    })
}

fn read_name<R: Read>(src: &mut Source<R>) -> Result<String, ReadError> {
    let len = src.u8("name")? as usize;
    if len == 0 || len > NAME_LEN_MAX {
        return Err(src.bad(format!("name of {len} bytes")));
    }
    let mut bytes = vec![0; len];
    src.exact(&mut bytes, "name")?;
    // The engine's rule for names; it also makes them valid UTF-8.
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(b))
    {
        return Err(src.bad("name holds characters outside [A-Za-z0-9_.:-]"));
    }
    String::from_utf8(bytes).map_err(|_| src.bad("name is not UTF-8"))
}
