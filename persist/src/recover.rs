//! Recovery: the newest readable snapshot, then every logged delta after
//! it, into a new follower engine.
//!
//! The rules, and why:
//! - A snapshot is only ever renamed into place whole, so one that fails
//!   its checks rotted on disk. Recovery falls back to the next older one
//!   (checkpoints keep two, with the logs from the older on) and sets the
//!   bad one aside as `*.corrupt`.
//! - Logs chain by base LSN. A record that fails its checks ends the
//!   history: the log is cut there (the bytes past a bad checksum are
//!   copied aside first; a torn tail, which a crash leaves, is dropped),
//!   and any later log is set aside, because applying it would skip the
//!   transactions that were lost — a gap, never allowed.
//! - I/O errors and unknown format versions are errors, never reasons to
//!   cut or set aside anything: they say nothing about the bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::checkpoint::{publish_snapshot, write_snapshot_tmp};
use crate::codec::ReadError;
use crate::error::{caused_by, PersistError};
use crate::files::{self, log_name, CORRUPT_SUFFIX};
use crate::limits::READ_BUFFER_BYTES;
use crate::log::{self, LogReader, OpenLog};
use crate::snapshot::{self, Install};
use hotblock_core::Lsn;
use hotblock_core::{Engine, EngineConfig};

#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) engine: Engine,
    pub(crate) lsn: Lsn,
    pub(crate) snapshot: Lsn,
    pub(crate) log: OpenLog,
}

/// The last log replayed: appends continue there if it ends at the
/// recovered LSN.
struct Tail {
    base: Lsn,
    path: PathBuf,
    /// How far it read whole.
    good_end: u64,
    /// The LSN of its last whole record.
    last: Lsn,
}

pub(crate) fn recover(dir: &Path, config: &EngineConfig) -> Result<Recovered, PersistError> {
    files::remove_tmp_files(dir)?;
    let listing = files::list(dir)?;
    if listing.snapshots.is_empty() {
        if !listing.logs.is_empty() {
            return Err(PersistError::NoSnapshot { dir: dir.into() });
        }
        return start_empty(dir, config);
    }
    let (snapshot_lsn, engine) = newest_readable_snapshot(dir, &listing.snapshots, config)?;
    let chain: Vec<&(Lsn, PathBuf)> = listing
        .logs
        .iter()
        .filter(|(base, _)| *base >= snapshot_lsn)
        .collect();
    let (lsn, tail) = replay_chain(&engine, snapshot_lsn, &chain)?;
    let log = open_tail(dir, lsn, tail)?;
    Ok(Recovered {
        engine,
        lsn,
        snapshot: snapshot_lsn,
        log,
    })
}

/// Replays `chain` (the logs from the snapshot's LSN on, in rising base
/// order) onto `engine`, which holds the snapshot at `lsn`, up to the first
/// gap or bad record; sets aside the logs it cannot use. Returns the LSN
/// reached and the last log read.
fn replay_chain(
    engine: &Engine,
    mut lsn: Lsn,
    chain: &[&(Lsn, PathBuf)],
) -> Result<(Lsn, Option<Tail>), PersistError> {
    let mut tail = None;
    for (i, (base, path)) in chain.iter().enumerate() {
        if *base > lsn {
            tracing::error!(
                log = %path.display(), reached = lsn.0,
                "log starts after the last recovered transaction (a gap): setting it and later logs aside"
            );
            set_aside_all(&chain[i..])?;
            break;
        }
        let Some((mut reader, file_len)) = open_log(path, *base, lsn)? else {
            set_aside_all(&chain[i..])?;
            break;
        };
        let later = &chain[i + 1..];
        let whole = replay_log(engine, &mut reader, path, file_len, &mut lsn, later)?;
        tail = Some(Tail {
            base: *base,
            path: path.to_path_buf(),
            good_end: reader.good_end(),
            last: reader.last(),
        });
        if !whole {
            break;
        }
    }
    Ok((lsn, tail))
}

type FileLogReader = LogReader<BufReader<File>>;

/// Opens the log `path`, named after `base`, and reads its header; returns
/// the reader and the file's length, or `None` if the header is unreadable
/// (the log and the later ones must then be set aside).
fn open_log(
    path: &Path,
    base: Lsn,
    lsn: Lsn,
) -> Result<Option<(FileLogReader, u64)>, PersistError> {
    let file = File::open(path).map_err(PersistError::io("opening", path))?;
    let file_len = file
        .metadata()
        .map_err(PersistError::io("reading the size of", path))?
        .len();
    let header = LogReader::new(BufReader::with_capacity(READ_BUFFER_BYTES, file));
    let header = match header {
        Ok(reader) if reader.base() != base => Err(ReadError::bad(
            8,
            format!("header says base {}, the name {}", reader.base(), base),
        )),
        other => other,
    };
    match header {
        Ok(reader) => Ok(Some((reader, file_len))),
        Err(ReadError::Bad { why, source, .. }) => {
            // A crash while the log was being created leaves a short
            // header; anything else there is rot. Either way it holds
            // no transaction we can use.
            tracing::warn!(
                log = %path.display(), reached = lsn.0, why = %format!("{why}{}", caused_by(&source)),
                "log header unreadable: setting it and later logs aside"
            );
            Ok(None)
        }
        Err(e) => Err(e.into_persist(path)),
    }
}

/// Applies the records of one log after `lsn` to `engine`, advancing `lsn`.
/// Returns whether the log read whole; if not, it is cut after its last
/// whole record and the `later` logs are set aside.
fn replay_log(
    engine: &Engine,
    reader: &mut FileLogReader,
    path: &Path,
    file_len: u64,
    lsn: &mut Lsn,
    later: &[&(Lsn, PathBuf)],
) -> Result<bool, PersistError> {
    loop {
        match reader.next_delta() {
            Ok(None) => return Ok(true),
            Ok(Some(delta)) if delta.lsn() <= *lsn => {}
            Ok(Some(delta)) => {
                // The reader checks LSNs run on from the base, and the
                // base is at most `lsn`.
                debug_assert_eq!(delta.lsn(), lsn.next());
                // An empty transaction may name a database this
                // (subscribing) node does not hold.
                let applied = match delta.ops().len() {
                    2 => engine.skip(&delta),
                    _ => engine.apply(&delta),
                };
                applied.map_err(|source| PersistError::Replay {
                    path: path.to_path_buf(),
                    lsn: delta.lsn(),
                    source,
                })?;
                *lsn = delta.lsn();
            }
            Err(ReadError::Bad {
                offset,
                torn,
                why,
                source,
            }) => {
                cut(path, reader.good_end(), file_len, torn)?;
                let why = format!("{why}{}", caused_by(&source));
                if later.is_empty() {
                    tracing::warn!(
                        log = %path.display(), offset, reached = lsn.0, %why,
                        "log tail unreadable (a crash mid-write, or rot): cut after the last whole record"
                    );
                } else {
                    tracing::error!(
                        log = %path.display(), offset, reached = lsn.0, %why,
                        "bad record before the last log: recovery stops here, later logs set aside"
                    );
                    set_aside_all(later)?;
                }
                return Ok(false);
            }
            Err(e) => return Err(e.into_persist(path)),
        }
    }
}

/// The log appends continue in: the last one replayed if it ends at `lsn`,
/// else a new one after `lsn` (any file in its way set aside).
fn open_tail(dir: &Path, lsn: Lsn, tail: Option<Tail>) -> Result<OpenLog, PersistError> {
    match tail {
        Some(tail) if tail.last == lsn => {
            let file = OpenOptions::new()
                .append(true)
                .open(&tail.path)
                .map_err(PersistError::io("opening for appending", &tail.path))?;
            Ok(OpenLog {
                file,
                path: tail.path,
                base: tail.base,
                len: tail.good_end,
            })
        }
        _ => {
            let name = log_name(lsn);
            if dir.join(&name).exists() {
                files::set_aside(&dir.join(&name))?;
            }
            let log = log::create(dir, &name, lsn)?;
            files::sync_dir(dir)?;
            Ok(log)
        }
    }
}

/// An empty directory: an empty engine at LSN 0, with the layout written so
/// that the next open finds a snapshot and a log.
fn start_empty(dir: &Path, config: &EngineConfig) -> Result<Recovered, PersistError> {
    let engine = Engine::new(config.clone());
    let (file, lsn, ()) = write_snapshot_tmp(dir, &engine, |_| Ok(()))?;
    let log = log::create(dir, &log_name(lsn), lsn)?;
    log.file
        .sync_all()
        .map_err(PersistError::io("fsyncing", &log.path))?;
    publish_snapshot(dir, &file, lsn)?;
    tracing::info!(dir = %dir.display(), "new data directory");
    Ok(Recovered {
        engine,
        lsn,
        snapshot: lsn,
        log,
    })
}

/// Loads snapshots newest first until one reads whole; sets the unreadable
/// newer ones aside. All unreadable: the newest one's error.
fn newest_readable_snapshot(
    dir: &Path,
    snapshots: &[(Lsn, PathBuf)],
    config: &EngineConfig,
) -> Result<(Lsn, Engine), PersistError> {
    let mut bad: Vec<(&Path, PersistError)> = Vec::new();
    for (lsn, path) in snapshots.iter().rev() {
        let engine = Engine::new(config.clone());
        match load_snapshot(path, *lsn, &engine) {
            Ok(()) => {
                for (path, error) in &bad {
                    tracing::error!(snapshot = %path.display(), %error, "snapshot unreadable: set aside, recovering from an older one");
                    files::set_aside(path)?;
                }
                if !bad.is_empty() {
                    files::sync_dir(dir)?;
                }
                return Ok((*lsn, engine));
            }
            Err(e @ ReadError::Bad { .. }) => bad.push((path, e.into_persist(path))),
            Err(e) => return Err(e.into_persist(path)),
        }
    }
    Err(bad
        .into_iter()
        .next()
        .map(|(_, e)| e)
        .unwrap_or(PersistError::NoSnapshot { dir: dir.into() }))
}

fn load_snapshot(path: &Path, named: Lsn, engine: &Engine) -> Result<(), ReadError> {
    let file = File::open(path).map_err(ReadError::Io)?;
    let reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let (lsn, blocks) = snapshot::read_snapshot(reader, &mut Install(engine))?;
    if lsn != named {
        return Err(ReadError::bad(
            8,
            format!("holds {lsn}, its name says {named}"),
        ));
    }
    engine.finish_snapshot().map_err(ReadError::Engine)?;
    tracing::info!(snapshot = %path.display(), lsn = lsn.0, blocks, "snapshot loaded");
    Ok(())
}

/// Cuts a log to `good_end`. Bytes past a record that failed its checksum
/// (not merely cut short) are copied aside first, for inspection.
fn cut(path: &Path, good_end: u64, file_len: u64, torn: bool) -> Result<(), PersistError> {
    let io = PersistError::io("cutting the bad tail of", path);
    let keep_tail = !torn && file_len > good_end;
    let cut = || -> io::Result<()> {
        let mut file = OpenOptions::new().read(true).write(true).open(path)?;
        if keep_tail {
            let aside = PathBuf::from(format!("{}.cut-{good_end}{CORRUPT_SUFFIX}", path.display()));
            file.seek(SeekFrom::Start(good_end))?;
            let mut out = File::create(&aside)?;
            io::copy(&mut file, &mut out)?;
            out.sync_all()?;
        }
        file.set_len(good_end)?;
        file.sync_all()
    };
    cut().map_err(io)
}

fn set_aside_all(logs: &[&(Lsn, PathBuf)]) -> Result<(), PersistError> {
    for (_, path) in logs {
        let to = files::set_aside(path)?;
        tracing::error!(log = %path.display(), to = %to.display(), "log set aside");
    }
    Ok(())
}
