//! The writers' caches under a build's cache folder (`<cache_dir>/blocks/`):
//! `squashfs-blocks/` (compressed squashfs blocks, see `squashfs/cache.rs`)
//! and `oci-blobs/` (finished OCI layer blobs, see `oci/cache.rs`). Both are
//! pure caches — a hit gives the bytes the writer would have made — keyed
//! by content, not by layer, so they are cleaned by time of last use: every
//! hit refreshes an entry's mtime ([`touch`]) and [`gc`] removes the
//! entries not used since a given time. `kiln store gc` passes the time the
//! oldest layer it keeps was made: an entry unused since then served no
//! artifact of any layer still in the store.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::Error;

/// The cache folders under `<cache_dir>/blocks/`, with how deep their
/// entries lie (squashfs fans out by the first two hex digits).
const CACHES: [(&str, usize); 2] = [("squashfs-blocks", 2), ("oci-blobs", 1)];

/// A temporary entry older than this belongs to a writer that died.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

/// Marks the entry at `path` as used now (best effort: a cache entry that
/// cannot be touched is at worst removed early and made again).
pub(crate) fn touch(path: &Path) {
    let now = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: now,
            last_modification: now,
        },
        rustix::fs::AtFlags::empty(),
    );
}

/// What [`gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheGc {
    /// Entries removed (temporaries of dead writers included).
    pub removed: u64,
    /// Bytes they took.
    pub freed: u64,
    /// Entries kept.
    pub kept: u64,
    /// Bytes the kept entries take.
    pub kept_bytes: u64,
}

/// Removes the entries of the writer caches in `blocks_dir` last used
/// before `unused_since` (all of them for `None`), and temporaries older
/// than an hour. A cache folder that does not exist is empty.
pub fn gc(blocks_dir: &Path, unused_since: Option<SystemTime>) -> Result<CacheGc, Error> {
    let mut report = CacheGc::default();
    for (name, depth) in CACHES {
        sweep(&blocks_dir.join(name), depth, unused_since, &mut report)?;
    }
    Ok(report)
}

fn sweep(
    dir: &Path,
    depth: usize,
    unused_since: Option<SystemTime>,
    report: &mut CacheGc,
) -> Result<(), Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", dir, e)),
    };
    let now = SystemTime::now();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue; // removed meanwhile
        };
        if meta.is_dir() && depth > 1 {
            sweep(&path, depth - 1, unused_since, report)?;
            // Empty fan-out folders go too (a writer recreates them).
            let _ = fs::remove_dir(&path);
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let temporary = entry.file_name().to_string_lossy().starts_with(".tmp-");
        let expired = if temporary {
            now.duration_since(used).unwrap_or_default() > STALE_TEMPORARY
        } else {
            unused_since.is_none_or(|since| used < since)
        };
        if expired {
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.removed += 1;
                    report.freed += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &path, e)),
            }
        } else {
            report.kept += 1;
            report.kept_bytes += meta.len();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{gc, touch};
    use std::time::{Duration, SystemTime};

    fn age(path: &std::path::Path, secs: u64) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn removes_what_was_not_used_since() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = dir.path();
        let old = blocks.join("squashfs-blocks/ab/abcd");
        let used = blocks.join("squashfs-blocks/ab/abef");
        let blob = blocks.join("oci-blobs/0123");
        let temp = blocks.join("oci-blobs/.tmp-1-0");
        for p in [&old, &used, &blob, &temp] {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"12345").unwrap();
            age(p, 7200);
        }
        touch(&used);
        let since = SystemTime::now() - Duration::from_secs(60);
        let report = gc(blocks, Some(since)).unwrap();
        assert_eq!((report.removed, report.freed), (3, 15));
        assert_eq!((report.kept, report.kept_bytes), (1, 5));
        assert!(used.exists() && !old.exists() && !blob.exists() && !temp.exists());
        let report = gc(blocks, None).unwrap();
        assert_eq!(report.removed, 1);
        assert!(!blocks.join("squashfs-blocks/ab").exists());
        assert_eq!(gc(&blocks.join("none"), None).unwrap().removed, 0);
    }
}
