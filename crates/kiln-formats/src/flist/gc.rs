//! Cleaning a directory store: the blocks that no kept flist names are
//! removed, so a store that every build adds to does not grow forever.
//!
//! Writers ([`FlistWriter`](super::write)) hold the store's lock file
//! ([`LOCK_FILE`]) shared while they put blocks and write the database;
//! [`gc_store`] holds it exclusively, so it never removes a block that an
//! flist being written will name. Only names the store's layout gives
//! blocks (`<hex[..2]>/<hex>`, or `<hex>` in the flat layout of older
//! stores) and writers' leftover `.partial` files are touched; anything
//! else in the folder is left alone.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::Path;

use super::read::Flist;
use crate::error::Error;

/// The lock file at the top of a directory store.
pub const LOCK_FILE: &str = ".kiln-lock";

/// What [`gc_store`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blocks removed.
    pub removed: u64,
    /// Their bytes.
    pub freed: u64,
    /// Blocks kept: named by one of the flists.
    pub kept: u64,
    /// Their bytes.
    pub kept_bytes: u64,
    /// Blocks the flists name that the store does not hold.
    pub missing: u64,
}

/// Opens (creating it) and locks the store's [`LOCK_FILE`]: shared for a
/// writer, exclusive for [`gc_store`]. The lock lasts as long as the file.
pub(crate) fn lock(store_dir: &Path, exclusive: bool) -> Result<File, Error> {
    let path = store_dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    let how = if exclusive {
        rustix::fs::FlockOperation::LockExclusive
    } else {
        rustix::fs::FlockOperation::LockShared
    };
    rustix::fs::flock(&file, how).map_err(|e| Error::io("lock", &path, e.into()))?;
    Ok(file)
}

/// Removes from the directory store at `store_dir` every block that none
/// of `keep` names, and writers' leftover temporary files; with `dry_run`
/// only counts them. Waits for writers of the store to finish first.
pub fn gc_store(store_dir: &Path, keep: &[Flist], dry_run: bool) -> Result<GcReport, Error> {
    let mut wanted: HashSet<[u8; 32]> = HashSet::new();
    for flist in keep {
        wanted.extend(flist.block_ids()?);
    }
    let _lock = lock(store_dir, true)?;
    let mut report = GcReport::default();
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut visit = |path: &Path, name: &str, report: &mut GcReport| -> Result<(), Error> {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return Ok(());
        };
        if !meta.is_file() {
            return Ok(());
        }
        let remove = if name.starts_with('.') && name.ends_with(".partial") {
            true
        } else if let Some(id) = parse_id(name) {
            if wanted.contains(&id) {
                seen.insert(id);
                report.kept += 1;
                report.kept_bytes += meta.len();
                false
            } else {
                true
            }
        } else {
            return Ok(());
        };
        if remove {
            if !dry_run {
                fs::remove_file(path).map_err(|e| Error::io("remove", path, e))?;
            }
            report.removed += 1;
            report.freed += meta.len();
        }
        Ok(())
    };
    for entry in sorted_names(store_dir)? {
        let path = store_dir.join(&entry);
        let is_shard = entry.len() == 2
            && entry
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            && fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        if is_shard {
            for name in sorted_names(&path)? {
                // A block belongs in the shard its name starts with.
                if name.starts_with(&entry) || name.starts_with('.') {
                    visit(&path.join(&name), &name, &mut report)?;
                }
            }
            if !dry_run {
                // Gone only if empty.
                let _ = fs::remove_dir(&path);
            }
        } else if entry != LOCK_FILE {
            visit(&path, &entry, &mut report)?;
        }
    }
    report.missing = wanted.difference(&seen).count() as u64;
    Ok(report)
}

/// The entries of `dir`, sorted (an error names the folder).
fn sorted_names(dir: &Path) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort_unstable();
    Ok(names)
}

/// A block id from its file name: 64 lower-case hex digits.
fn parse_id(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, pair) in name.as_bytes().chunks(2).enumerate() {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        id[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_from_names() {
        let hex = "00ff".repeat(16);
        let id = parse_id(&hex).unwrap();
        assert_eq!(id[0], 0x00);
        assert_eq!(id[1], 0xff);
        assert_eq!(parse_id(&hex.to_uppercase()), None);
        assert_eq!(parse_id("abc"), None);
        assert_eq!(parse_id(&"g".repeat(64)), None);
    }
}
