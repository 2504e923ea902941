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

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::codec::ReadError;
use super::error::PersistError;
use super::files::{self, log_name, snapshot_name, CORRUPT_SUFFIX, SNAPSHOT_TMP};
use super::log::{self, LogReader, LOG_HEADER_SIZE};
use super::snapshot::{self, Install};
use super::{READ_BUFFER_BYTES, WRITE_BUFFER_BYTES};
use hotblock_core::Lsn;
use hotblock_core::{Engine, EngineConfig};

/// A log open for appending, positioned at its end.
#[derive(Debug)]
pub(crate) struct OpenLog {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) base: Lsn,
    pub(crate) len: u64,
}

#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) engine: Engine,
    pub(crate) lsn: Lsn,
    pub(crate) snapshot: Lsn,
    pub(crate) log: OpenLog,
}

/// Creates `dir/name` as an empty log after `base` and opens it for
/// appending. Not fsynced: the caller syncs it with whatever must be durable
/// alongside it.
pub(crate) fn create_log(dir: &Path, name: &str, base: Lsn) -> Result<OpenLog, PersistError> {
    let path = dir.join(name);
    let create = || -> io::Result<File> {
        let mut f = File::create(&path)?;
        f.write_all(&log::encode_header(base))?;
        drop(f);
        // O_APPEND: every record lands at the end, even after a failed
        // write was cut off with `set_len`.
        OpenOptions::new().append(true).open(&path)
    };
    let file = create().map_err(PersistError::io(&path))?;
    Ok(OpenLog {
        file,
        path,
        base,
        len: LOG_HEADER_SIZE as u64,
    })
}

/// Writes `engine`'s blocks at a consistent point to the temporary snapshot
/// file; returns the file (written, not fsynced) and the LSN. Commits wait
/// while the blocks are copied.
pub(crate) fn write_snapshot_tmp<T>(
    dir: &Path,
    engine: &Engine,
    at_point: impl FnOnce(Lsn) -> Result<T, PersistError>,
) -> Result<(File, Lsn, T), PersistError> {
    let path = dir.join(SNAPSHOT_TMP);
    let file = File::create(&path).map_err(PersistError::io(&path))?;
    let (lsn, then) = engine.at_consistent_point(|lsn| {
        let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, &file);
        snapshot::write_snapshot(&mut w, engine, lsn).map_err(PersistError::io(&path))?;
        drop(w);
        Ok::<_, PersistError>((lsn, at_point(lsn)?))
    })?;
    Ok((file, lsn, then))
}

/// Makes the temporary snapshot durable under its final name.
pub(crate) fn publish_snapshot(dir: &Path, file: &File, lsn: Lsn) -> Result<(), PersistError> {
    let tmp = dir.join(SNAPSHOT_TMP);
    file.sync_all().map_err(PersistError::io(&tmp))?;
    let path = dir.join(snapshot_name(lsn));
    fs::rename(&tmp, &path).map_err(PersistError::io(&path))?;
    files::sync_dir(dir)
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
    let mut lsn = snapshot_lsn;
    // The last log replayed, how far it read whole and its last LSN:
    // appends continue there if that is the recovered LSN.
    let mut tail: Option<(Lsn, PathBuf, u64, Lsn)> = None;
    for (i, (base, path)) in chain.iter().enumerate() {
        let later = &chain[i + 1..];
        if *base > lsn {
            tracing::error!(
                log = %path.display(), reached = lsn.0,
                "log starts after the last recovered transaction (a gap): setting it and later logs aside"
            );
            set_aside_all(&chain[i..])?;
            break;
        }
        let file = File::open(path).map_err(PersistError::io(path))?;
        let file_len = file.metadata().map_err(PersistError::io(path))?.len();
        let header = LogReader::new(BufReader::with_capacity(READ_BUFFER_BYTES, file));
        let header = match header {
            Ok(reader) if reader.base() != *base => Err(ReadError::Bad {
                offset: 8,
                torn: false,
                why: format!("header says base {}, the name {}", reader.base(), base),
            }),
            other => other,
        };
        let mut reader = match header {
            Ok(reader) => reader,
            Err(ReadError::Bad { why, .. }) => {
                // A crash while the log was being created leaves a short
                // header; anything else there is rot. Either way it holds
                // no transaction we can use.
                tracing::warn!(
                    log = %path.display(), reached = lsn.0, %why,
                    "log header unreadable: setting it and later logs aside"
                );
                set_aside_all(&chain[i..])?;
                break;
            }
            Err(e) => return Err(e.into_persist(path)),
        };
        let mut stop = false;
        loop {
            match reader.next_delta() {
                Ok(None) => break,
                Ok(Some(delta)) if delta.lsn() <= lsn => {}
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
                    lsn = delta.lsn();
                }
                Err(ReadError::Bad { offset, torn, why }) => {
                    cut(path, reader.good_end(), file_len, torn)?;
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
                    stop = true;
                    break;
                }
                Err(e) => return Err(e.into_persist(path)),
            }
        }
        tail = Some((*base, path.to_path_buf(), reader.good_end(), reader.last()));
        if stop {
            break;
        }
    }

    let log = match tail {
        Some((base, path, len, last)) if last == lsn => {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(PersistError::io(&path))?;
            OpenLog {
                file,
                path,
                base,
                len,
            }
        }
        _ => {
            let name = log_name(lsn);
            if dir.join(&name).exists() {
                files::set_aside(&dir.join(&name))?;
            }
            let log = create_log(dir, &name, lsn)?;
            files::sync_dir(dir)?;
            log
        }
    };
    Ok(Recovered {
        engine,
        lsn,
        snapshot: snapshot_lsn,
        log,
    })
}

/// An empty directory: an empty engine at LSN 0, with the layout written so
/// that the next open finds a snapshot and a log.
fn start_empty(dir: &Path, config: &EngineConfig) -> Result<Recovered, PersistError> {
    let engine = Engine::new(config.clone());
    let (file, lsn, ()) = write_snapshot_tmp(dir, &engine, |_| Ok(()))?;
    let log = create_log(dir, &log_name(lsn), lsn)?;
    log.file.sync_all().map_err(PersistError::io(&log.path))?;
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
            Err(ReadError::Bad { offset, why, .. }) => bad.push((
                path,
                PersistError::Corrupt {
                    path: path.clone(),
                    offset,
                    why,
                },
            )),
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
        return Err(ReadError::Bad {
            offset: 8,
            torn: false,
            why: format!("holds {lsn}, its name says {named}"),
        });
    }
    engine.finish_snapshot().map_err(ReadError::Engine)?;
    tracing::info!(snapshot = %path.display(), lsn = lsn.0, blocks, "snapshot loaded");
    Ok(())
}

/// Cuts a log to `good_end`. Bytes past a record that failed its checksum
/// (not merely cut short) are copied aside first, for inspection.
fn cut(path: &Path, good_end: u64, file_len: u64, torn: bool) -> Result<(), PersistError> {
    let io = PersistError::io(path);
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
