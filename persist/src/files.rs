//! The directory itself: checking it, locking it, naming and listing its
//! files, and the fsync-and-rename dance that makes a file appear whole or
//! not at all.
//!
//! LSNs in names are 20 zero-padded digits, so that names sort as LSNs do.
//! Files being written end in `.tmp` and are removed on open; files
//! recovery could not use end in `.corrupt` and are kept for the operator.
//! `LOCK` is empty; it is held with an exclusive `flock` while a
//! `Persister` lives, so two processes never share a directory, and the
//! kernel drops it when the process dies.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::PersistError;
use hotblock_core::Lsn;

pub(crate) const LOCK_FILE: &str = "LOCK";
pub(crate) const STATE_FILE: &str = "state.hb";
/// A file being written; removed on open (it never became part of the state).
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// A file recovery could not use, kept for the operator to inspect.
pub(crate) const CORRUPT_SUFFIX: &str = ".corrupt";
/// Where a checkpoint writes its snapshot before it knows the LSN.
pub(crate) const SNAPSHOT_TMP: &str = "snapshot.hb.tmp";
/// LSNs in file names are zero-padded so names sort as LSNs do: as many
/// digits as the largest LSN has.
const LSN_DIGITS: usize = 20;
const _: () = assert!(u64::MAX.ilog10() as usize + 1 == LSN_DIGITS);

pub(crate) fn snapshot_name(lsn: Lsn) -> String {
    format!("snapshot-{:0LSN_DIGITS$}.hb", lsn.0)
}

pub(crate) fn log_name(base: Lsn) -> String {
    format!("log-{:0LSN_DIGITS$}.hb", base.0)
}

fn parse_name(name: &str, prefix: &str) -> Option<Lsn> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(".hb")?;
    if digits.len() != LSN_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// The snapshots and logs of a directory, each in rising LSN order.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) snapshots: Vec<(Lsn, PathBuf)>,
    pub(crate) logs: Vec<(Lsn, PathBuf)>,
}

pub(crate) fn list(dir: &Path) -> Result<Listing, PersistError> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir).map_err(PersistError::io("listing the data directory", dir))? {
        let entry = entry.map_err(PersistError::io("listing the data directory", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(lsn) = parse_name(&name, "snapshot-") {
            listing.snapshots.push((lsn, entry.path()));
        } else if let Some(lsn) = parse_name(&name, "log-") {
            listing.logs.push((lsn, entry.path()));
        }
    }
    listing.snapshots.sort();
    listing.logs.sort();
    Ok(listing)
}

/// Checks that `dir` is a writable directory, then takes its lock.
pub(crate) fn open_and_lock(dir: &Path) -> Result<File, PersistError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(PersistError::NotADirectory { dir: dir.into() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(PersistError::MissingDir { dir: dir.into() })
        }
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            return Err(PersistError::NotADirectory { dir: dir.into() })
        }
        Err(e) => return Err(PersistError::io("checking the data directory", dir)(e)),
    }
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .map_err(|source| PersistError::NotWritable {
            dir: dir.into(),
            source,
        })?;
    match try_flock(&lock) {
        Ok(true) => Ok(lock),
        Ok(false) => Err(PersistError::Locked { dir: dir.into() }),
        Err(e) => Err(PersistError::io("locking", dir.join(LOCK_FILE))(e)),
    }
}

/// Takes an exclusive `flock` on `file` without waiting; `Ok(false)` if
/// another open file description holds one. An flock is released by the
/// kernel when the process dies, so a crash never leaves the directory
/// locked. (`File::try_lock` does the same without `unsafe`, but is newer
/// than the workspace's MSRV, 1.85.)
fn try_flock(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock(2) takes a descriptor number and flags and touches
        // no memory of ours; `file` keeps the descriptor open for the call.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// The order of durability steps, recorded in tests: a file's directory
/// entry must be made durable before anything written to it is relied on.
#[cfg(test)]
pub(crate) mod trace {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Step {
        /// A log file was created.
        Created,
        /// The directory was fsynced.
        DirSynced,
        /// A record was appended to a log file.
        Appended,
    }

    pub(crate) static STEPS: Mutex<Vec<(Step, PathBuf)>> = Mutex::new(Vec::new());

    pub(crate) fn record(step: Step, path: &Path) {
        STEPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((step, path.to_path_buf()));
    }
}

/// Makes the directory's entries (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    #[cfg(test)]
    trace::record(trace::Step::DirSynced, dir);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(PersistError::io("fsyncing the directory", dir))
}

/// Writes `bytes` as `dir/name`, whole or not at all: to a temporary name,
/// fsynced, renamed over, directory fsynced.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), PersistError> {
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(PersistError::io("writing", &tmp))?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(PersistError::io("renaming the .tmp file to", &path))?;
    sync_dir(dir)
}

/// Removes files a crash left half-written.
pub(crate) fn remove_tmp_files(dir: &Path) -> Result<(), PersistError> {
    for entry in fs::read_dir(dir).map_err(PersistError::io("listing the data directory", dir))? {
        let path = entry
            .map_err(PersistError::io("listing the data directory", dir))?
            .path();
        if path.to_str().is_some_and(|p| p.ends_with(TMP_SUFFIX)) {
            fs::remove_file(&path).map_err(PersistError::io("removing", &path))?;
        }
    }
    Ok(())
}

/// Renames a file recovery will not use to `<name>.corrupt` (or
/// `<name>.corrupt.<n>` if that exists), keeping it for inspection.
pub(crate) fn set_aside(path: &Path) -> Result<PathBuf, PersistError> {
    let base = format!("{}{CORRUPT_SUFFIX}", path.display());
    let mut to = PathBuf::from(&base);
    let mut n = 1;
    while to.exists() {
        to = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    fs::rename(path, &to).map_err(PersistError::io("setting aside", path))?;
    Ok(to)
}

pub(crate) fn remove(path: &Path) -> Result<(), PersistError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(PersistError::io("removing", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse_as_lsns() {
        assert_eq!(parse_name(&log_name(Lsn(42)), "log-"), Some(Lsn(42)));
        assert_eq!(
            parse_name(&snapshot_name(Lsn(u64::MAX)), "snapshot-"),
            Some(Lsn(u64::MAX))
        );
        assert!(snapshot_name(Lsn(9)) < snapshot_name(Lsn(10)));
        assert_eq!(parse_name("log-42.hb", "log-"), None);
        assert_eq!(
            parse_name("log-00000000000000000042.hb.corrupt", "log-"),
            None
        );
    }
}
