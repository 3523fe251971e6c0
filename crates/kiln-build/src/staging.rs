//! Staging folders: a result is built beside its destination and renamed
//! into place only when complete, so an interrupted build never leaves a
//! half-written root where a finished one is expected.
//!
//! Staging folders are named `.kiln-stage-<pid>-<variant>` in the output
//! folder. One whose process is gone is removed by the next build.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Staging folders of this process, removed on Ctrl-C.
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

const PREFIX: &str = ".kiln-stage-";

/// A staging folder.
#[derive(Debug)]
pub struct Stage {
    path: PathBuf,
}

impl Stage {
    /// Creates a fresh staging folder for `variant` in `out`.
    pub fn new(out: &Path, variant: &str) -> std::io::Result<Self> {
        let path = out.join(format!("{PREFIX}{}-{variant}", std::process::id()));
        if path.exists() {
            remove(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        LIVE.lock().expect("not poisoned").push(path.clone());
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = remove(&self.path);
        forget(&self.path);
    }
}

fn forget(path: &Path) {
    LIVE.lock().expect("not poisoned").retain(|p| p != path);
}

/// Removes a tree that may hold read-only folders (as roots do).
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            std::fs::remove_dir_all(path)
        }
    }
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.is_dir() {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
            if let Ok(rd) = std::fs::read_dir(path) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

/// Removes staging folders of processes that no longer run.
pub fn clean_stale(out: &Path) {
    let Ok(rd) = std::fs::read_dir(out) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        let alive = pid
            .is_some_and(|p| Path::new(&format!("/proc/{p}")).exists() && p != std::process::id());
        if !alive {
            let _ = remove(&e.path());
        }
    }
}

/// Removes this process's staging folders (on Ctrl-C).
pub fn remove_live() {
    let paths: Vec<PathBuf> = LIVE.lock().map(|l| l.clone()).unwrap_or_default();
    for p in paths {
        let _ = remove(&p);
    }
}
