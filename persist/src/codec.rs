//! What the file decoders share: a reader that counts (and optionally
//! hashes) the bytes it hands out, and the decoders' error.
//!
//! The decoders read from any `Read`, not only files, so that the fuzz
//! entry points run them over bytes in memory. They never allocate a length
//! read from the input before the bytes are there, and every loop consumes
//! input, so bad bytes end in an error, not a hang.

use std::io::{self, Read};
use std::path::Path;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Cause, PersistError};
use crate::limits::READ_CHUNK_BYTES;
use hotblock_core::Error;

/// Why a file could not be decoded.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Reading failed: says nothing about the bytes, so never a reason to
    /// cut or set aside a file.
    Io(io::Error),
    /// A format version this build does not read.
    Version(u8),
    /// The bytes end early (`torn`: a write the process did not finish) or
    /// are wrong, at `offset`; `source` is what a decoder underneath said.
    Bad {
        offset: u64,
        torn: bool,
        why: String,
        source: Option<Cause>,
    },
    /// The engine refused a decoded snapshot for a reason that is not about
    /// the bytes (memory limit, say).
    Engine(Error),
}

impl ReadError {
    /// Wrong bytes at `offset`.
    pub(crate) fn bad(offset: u64, why: impl Into<String>) -> ReadError {
        ReadError::Bad {
            offset,
            torn: false,
            why: why.into(),
            source: None,
        }
    }

    /// The input ends at `offset`, inside what it was reading.
    fn torn(offset: u64, why: String) -> ReadError {
        ReadError::Bad {
            offset,
            torn: true,
            why,
            source: None,
        }
    }

    /// Wrong bytes at `offset`, as a decoder underneath found.
    pub(crate) fn bad_because(
        offset: u64,
        why: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ReadError {
        ReadError::Bad {
            offset,
            torn: false,
            why: why.into(),
            source: Some(Box::new(source)),
        }
    }

    pub(crate) fn into_persist(self, path: &Path) -> PersistError {
        match self {
            ReadError::Io(source) => PersistError::Io {
                what: "reading",
                path: path.to_path_buf(),
                source,
            },
            ReadError::Version(version) => PersistError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            },
            ReadError::Bad {
                offset,
                why,
                source,
                ..
            } => PersistError::Corrupt {
                path: path.to_path_buf(),
                offset,
                why,
                source,
            },
            ReadError::Engine(source) => PersistError::Engine {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}

/// A reader that knows its offset and can hash what passes through.
pub(crate) struct Source<R> {
    inner: R,
    offset: u64,
    hasher: Option<Xxh3>,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R, hashed: bool) -> Self {
        Source {
            inner,
            offset: 0,
            hasher: hashed.then(Xxh3::new),
        }
    }

    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    pub(crate) fn digest(&self) -> u64 {
        self.hasher.as_ref().map_or(0, Xxh3::digest)
    }

    pub(crate) fn bad(&self, why: impl Into<String>) -> ReadError {
        ReadError::bad(self.offset, why)
    }

    /// Fills `buf`, or says how far it got before the input ended.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..got]);
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// Fills `buf` or fails as torn, naming `what` was cut.
    pub(crate) fn exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), ReadError> {
        let start = self.offset;
        let got = self.fill(buf)?;
        if got < buf.len() {
            return Err(ReadError::torn(
                start,
                format!("{what} cut short: {got} of {} bytes", buf.len()),
            ));
        }
        Ok(())
    }

    /// Like `exact`, but `Ok(false)` if the input ends before the first
    /// byte: a clean end between records.
    pub(crate) fn exact_or_end(&mut self, buf: &mut [u8], what: &str) -> Result<bool, ReadError> {
        let start = self.offset;
        let got = self.fill(buf)?;
        match got {
            0 => Ok(false),
            n if n == buf.len() => Ok(true),
            n => Err(ReadError::torn(
                start,
                format!("{what} cut short: {n} of {} bytes", buf.len()),
            )),
        }
    }

    /// `len` bytes into a new buffer that grows only as bytes arrive, so a
    /// corrupt length costs at most the bytes the input really holds.
    pub(crate) fn bytes(&mut self, len: usize, what: &str) -> Result<Vec<u8>, ReadError> {
        let start = self.offset;
        let mut out = Vec::new();
        while out.len() < len {
            let chunk = (len - out.len()).min(READ_CHUNK_BYTES);
            let at = out.len();
            out.resize(at + chunk, 0);
            let got = self.fill(&mut out[at..])?;
            if got < chunk {
                return Err(ReadError::torn(
                    start,
                    format!("{what} cut short: {} of {len} bytes", at + got),
                ));
            }
        }
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &str) -> Result<u8, ReadError> {
        let mut b = [0; 1];
        self.exact(&mut b, what)?;
        Ok(b[0])
    }

    pub(crate) fn u32(&mut self, what: &str) -> Result<u32, ReadError> {
        let mut b = [0; 4];
        self.exact(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, ReadError> {
        let mut b = [0; 8];
        self.exact(&mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Whether the input holds nothing more.
    pub(crate) fn at_end(&mut self) -> Result<bool, ReadError> {
        let mut b = [0; 1];
        Ok(self.fill(&mut b)? == 0)
    }
}
