//! Staging directories, `stage/<pid>-<unique>/`: where a layer is built
//! before `commit` renames it into `layers/`, and where layers being removed
//! are moved first so that removal is atomic too. Whatever a dead process
//! left here is swept by the next [`Store::open`](crate::Store::open).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::InputKey;
use crate::layer::TREE_DIR;

/// An empty directory in the store's file system to build one layer's tree
/// in. Dropping a `Stage` that was not committed removes it.
#[derive(Debug)]
pub struct Stage {
    pub(crate) input: InputKey,
    pub(crate) dir: PathBuf,
    tree: PathBuf,
    pub(crate) committed: bool,
}

impl Stage {
    /// The directory to fill with the layer's tree (overlayfs upper-dir
    /// form). Its own owner, mode and xattrs are part of the layer.
    #[must_use]
    pub fn tree(&self) -> &Path {
        &self.tree
    }

    /// The input digest this stage will be committed as.
    #[must_use]
    pub fn input(&self) -> InputKey {
        self.input
    }

    /// Makes `<stage_root>/<pid>-<unique>/tree/`.
    pub(crate) fn create(stage_root: &Path, input: InputKey) -> std::io::Result<Stage> {
        let dir = unique_dir(stage_root)?;
        let tree = dir.join(TREE_DIR);
        let made = std::fs::create_dir(&tree).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            // Not subject to the umask: the root's mode is part of the digest.
            std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755))
        });
        if let Err(e) = made {
            let _ = remove_tree(&dir);
            return Err(e);
        }
        Ok(Stage {
            input,
            dir,
            tree,
            committed: false,
        })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}

/// Creates and returns a new, empty `<root>/<pid>-<unique>` directory.
pub(crate) fn unique_dir(root: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = root.join(format!("{pid}-{n}-{nanos:09}"));
        match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
                return Ok(dir);
            }
            // Left by a dead process that had our pid.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}

/// Removes entries of `root` whose process (the number before the first
/// `-`) is gone. Best effort: what cannot be removed now is tried again by
/// the next sweep.
pub(crate) fn sweep(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(alive) {
            continue;
        }
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = remove_tree(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn alive(pid: i32) -> bool {
    match rustix::process::Pid::from_raw(pid) {
        // EPERM: it exists and is someone else's.
        Some(pid) => match rustix::process::test_kill_process(pid) {
            Ok(()) => true,
            Err(e) => e != rustix::io::Errno::SRCH,
        },
        None => false,
    }
}

/// Removes a directory tree, making read-only directories writable first
/// when that is what stops it (only needed when not root).
pub(crate) fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path);
            std::fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mode = meta.permissions().mode() | 0o700;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode));
        if let Ok(children) = std::fs::read_dir(&dir) {
            stack.extend(children.flatten().map(|c| c.path()));
        }
    }
}
