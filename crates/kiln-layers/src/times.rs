//! A layer's times clamped to the build's epoch: everything a build
//! creates or touches is dated by the moment it ran, and clamping makes
//! the layer's tree the same whenever and wherever it was built (the
//! `dir` output and every reader of the layer see it so, not only the
//! writers, which clamp too).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, UTIME_OMIT};

use crate::error::Error;

/// Sets every access and modification time later than `epoch` in the
/// tree at `tree` (itself included; symbolic links themselves, never
/// their targets) to `epoch`; earlier times are kept. Returns how many
/// entries changed.
pub fn clamp_times(tree: &Path, epoch: i64) -> Result<u64, Error> {
    let mut changed = 0;
    let mut pending = vec![tree.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        // Listed before its times are set: reading a directory sets its
        // access time.
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(|e| Error::io("read", &path, e))? {
                pending.push(entry.map_err(|e| Error::io("read", &path, e))?.path());
            }
        }
        let clamp = |secs: i64| Timespec {
            tv_sec: epoch,
            tv_nsec: if secs > epoch { 0 } else { UTIME_OMIT },
        };
        if meta.mtime() > epoch || meta.atime() > epoch {
            let times = Timestamps {
                last_access: clamp(meta.atime()),
                last_modification: clamp(meta.mtime()),
            };
            rustix::fs::utimensat(CWD, &path, &times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Error::io("set the times of", &path, e.into()))?;
            changed += 1;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(path: &Path) -> (i64, i64) {
        let m = fs::symlink_metadata(path).unwrap();
        (m.atime(), m.mtime())
    }

    fn set(path: &Path, secs: i64) {
        let t = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    #[test]
    fn later_times_become_the_epoch_and_earlier_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/new"), b"x").unwrap();
        fs::write(root.join("a/old"), b"y").unwrap();
        std::os::unix::fs::symlink("/nowhere", root.join("a/link")).unwrap();
        set(&root.join("a/old"), 1_000);
        let changed = clamp_times(root, 5_000).unwrap();
        // The root, a, a/b, a/b/new and the link; not a/old.
        assert_eq!(changed, 5);
        for p in ["", "a", "a/b", "a/b/new", "a/link"] {
            assert_eq!(times(&root.join(p)), (5_000, 5_000), "{p}");
        }
        assert_eq!(times(&root.join("a/old")), (1_000, 1_000));
        assert_eq!(clamp_times(root, 5_000).unwrap(), 0, "nothing left to do");
    }
}
