//! The catalog file of a directory-backed engine: which databases exist, so
//! that `Engine::open` can map their block files again.
//!
//! Format version 1, text, one database per line (names are restricted to
//! `[A-Za-z0-9_.:-]`, so spaces separate fields safely):
//!
//! ```text
//! hotblock-catalog 1
//! db <id> <block_size> <name> [<index name> ...]
//! xxh3 <16 hex digits: xxh3-64 of every byte above this line>
//! ```
//!
//! It is rewritten whole (to a temporary file, then renamed) when a database
//! is created, so a crash leaves the old or the new catalog, never half.

use std::fs;
use std::io::{Error as IoError, ErrorKind};
use std::path::Path;

use xxhash_rust::xxh3::xxh3_64;

use crate::database::Schema;
use crate::error::Error;
use crate::ids::DbId;

pub(crate) const CATALOG_FILE: &str = "catalog.hb";
const HEADER: &str = "hotblock-catalog 1";

pub(crate) fn write(dir: &Path, schemas: &[Schema]) -> Result<(), Error> {
    let mut text = format!("{HEADER}\n");
    for s in schemas {
        text.push_str(&format!("db {} {} {}", s.id.0, s.block_size, s.name));
        for index in &s.indexes {
            text.push(' ');
            text.push_str(index);
        }
        text.push('\n');
    }
    text.push_str(&format!("xxh3 {:016x}\n", xxh3_64(text.as_bytes())));
    let tmp = dir.join(format!("{CATALOG_FILE}.tmp"));
    fs::write(&tmp, text)?;
    fs::rename(&tmp, dir.join(CATALOG_FILE))?;
    Ok(())
}

/// The databases recorded in `dir`, or `None` if it holds no catalog.
pub(crate) fn read(dir: &Path) -> Result<Option<Vec<Schema>>, Error> {
    let path = dir.join(CATALOG_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let bad = |why: &str| {
        Error::Io(IoError::new(
            ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        ))
    };
    let body_end = text.rfind("xxh3 ").ok_or_else(|| bad("no checksum line"))?;
    let sum = u64::from_str_radix(text[body_end + 5..].trim_end(), 16)
        .map_err(|_| bad("bad checksum line"))?;
    if xxh3_64(&text.as_bytes()[..body_end]) != sum {
        return Err(bad("checksum mismatch"));
    }
    let mut lines = text[..body_end].lines();
    if lines.next() != Some(HEADER) {
        return Err(bad("not a hotblock catalog of format version 1"));
    }
    let mut schemas = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split(' ').collect();
        let ["db", id, block_size, name, indexes @ ..] = fields.as_slice() else {
            return Err(bad("malformed line"));
        };
        let id: u32 = id.parse().map_err(|_| bad("bad database id"))?;
        if schemas.last().is_some_and(|s: &Schema| s.id.0 >= id) {
            return Err(bad("database ids out of order"));
        }
        schemas.push(Schema {
            id: DbId(id),
            name: name.to_string(),
            block_size: block_size.parse().map_err(|_| bad("bad block size"))?,
            indexes: indexes.iter().map(|s| s.to_string()).collect(),
        });
    }
    Ok(Some(schemas))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_checksum() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_none());
        let schemas = vec![
            Schema {
                id: DbId(0),
                name: "0".into(),
                block_size: 65536,
                indexes: vec![],
            },
            Schema {
                id: DbId(1),
                name: "users".into(),
                block_size: 4096,
                indexes: vec!["city".into(), "team".into()],
            },
        ];
        write(dir.path(), &schemas).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap(), schemas);
        let path = dir.path().join(CATALOG_FILE);
        let text = fs::read_to_string(&path).unwrap().replace("4096", "8192");
        fs::write(&path, text).unwrap();
        assert!(read(dir.path()).is_err());
    }
}
