//! Content-addressed files on disk: hashing, atomic writes, verified reads.
//!
//! Shared by the index cache and the package cache so both follow one rule:
//! a file appears under its final name only after its content was verified,
//! and is re-verified before every use.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::Error;

/// SHA256 of `bytes`, lowercase hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Whether `name` is a lowercase SHA256 hex digest (safe as a file name).
pub(crate) fn is_sha256_hex(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn cache_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Cache {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so readers never see a partial file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    kiln_store::write_atomic(path, bytes, 0o644).map_err(cache_err(path))
}

/// Reads `path` if it exists and its SHA256 and size match; a file that
/// does not match is removed so it gets fetched again.
pub(crate) fn read_verified(
    path: &Path,
    sha256: &str,
    size: u64,
) -> Result<Option<Vec<u8>>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(cache_err(path)(source)),
    };
    if bytes.len() as u64 == size && sha256_hex(&bytes) == sha256 {
        Ok(Some(bytes))
    } else {
        remove_corrupt(path)?;
        Ok(None)
    }
}

/// Whether the file at `path` has the given SHA256 and size, hashing it
/// in a streaming fashion. A mismatching file is removed.
pub(crate) fn file_matches(path: &Path, sha256: &str, size: u64) -> Result<bool, Error> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(cache_err(path)(source)),
    };
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(cache_err(path))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        hasher.update(&buf[..n]);
    }
    if total == size && hex(&hasher.finalize()) == sha256 {
        Ok(true)
    } else {
        remove_corrupt(path)?;
        Ok(false)
    }
}

/// Writes `bytes`, made from a verified file (a decompressed index), to
/// `path` atomically, followed by their SHA256: [`read_derived`] uses it
/// only while the two agree, so a torn or damaged copy is made again
/// rather than read.
pub(crate) fn write_derived(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut with_digest = Vec::with_capacity(bytes.len() + 32);
    with_digest.extend_from_slice(bytes);
    with_digest.extend_from_slice(&Sha256::digest(bytes));
    write_atomic(path, &with_digest)
}

/// The bytes [`write_derived`] wrote to `path`, if they are there intact;
/// a damaged file is removed.
pub(crate) fn read_derived(path: &Path) -> Result<Option<Vec<u8>>, Error> {
    let mut bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(cache_err(path)(source)),
    };
    let Some(split) = bytes.len().checked_sub(32) else {
        remove_corrupt(path)?;
        return Ok(None);
    };
    if Sha256::digest(&bytes[..split]).as_slice() != &bytes[split..] {
        remove_corrupt(path)?;
        return Ok(None);
    }
    bytes.truncate(split);
    Ok(Some(bytes))
}

fn remove_corrupt(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(cache_err(path)(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_files_are_used_only_while_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.text");
        assert!(read_derived(&path).unwrap().is_none());
        write_derived(&path, b"Package: a\n").unwrap();
        assert_eq!(read_derived(&path).unwrap().unwrap(), b"Package: a\n");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[0] = b'p';
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_derived(&path).unwrap().is_none());
        assert!(!path.exists(), "a damaged copy is removed");
        std::fs::write(&path, b"short").unwrap();
        assert!(read_derived(&path).unwrap().is_none());
        assert!(!path.exists());
    }

    #[test]
    fn writes_atomically_and_rejects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("file");
        write_atomic(&path, b"hello").unwrap();
        let digest = sha256_hex(b"hello");
        assert!(is_sha256_hex(&digest));
        assert_eq!(read_verified(&path, &digest, 5).unwrap().unwrap(), b"hello");
        assert!(file_matches(&path, &digest, 5).unwrap());
        std::fs::write(&path, b"hellO").unwrap();
        assert!(read_verified(&path, &digest, 5).unwrap().is_none());
        assert!(!path.exists(), "a corrupt entry is removed");
        // No temporary files are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert!(leftovers.is_empty());
    }
}
