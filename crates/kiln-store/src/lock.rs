//! Per-layer `flock(2)` locks on `locks/<input>.lock`.
//!
//! One lock file per input digest: exclusive while a layer is built,
//! removed or replaced ([`BuildLock`]), shared while it serves as an overlay
//! lower dir ([`UseGuard`]). `gc` only tries the exclusive lock and skips
//! what it cannot get. Locks belong to an open file description, so two
//! threads of one process exclude each other like two processes do, and the
//! kernel drops a lock when its process dies: a lock file left behind means
//! nothing. Lock files are never removed (removing one would let two
//! holders lock different inodes under the same name).
//!
//! A thread that holds a [`BuildLock`] and then asks for a shared lock on
//! the same layer (to use or verify what it just found or built) would wait
//! for itself forever; instead it shares its own lock: the [`UseGuard`]
//! keeps a duplicate of the locked file descriptor, so the layer stays
//! locked until both are dropped.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::ThreadId;

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::digest::InputKey;
use crate::error::Error;
use crate::layer::Layer;

/// The exclusive right to build (or remove) one layer. Dropping it releases
/// the lock.
///
/// [`Store::use_layers`](crate::Store::use_layers) and
/// [`Store::verify`](crate::Store::verify) on the thread that holds it share
/// it instead of waiting for it; on other threads they wait. Calling
/// [`Store::lock`](crate::Store::lock) again for the same input while this
/// lock (or a [`UseGuard`] sharing it) lives waits forever.
#[derive(Debug)]
pub struct BuildLock {
    pub(crate) input: InputKey,
    path: PathBuf,
    file: Arc<File>,
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let mut held = held()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held
            .get(&self.path)
            .is_some_and(|h| h.file.as_ptr() == Arc::as_ptr(&self.file))
        {
            held.remove(&self.path);
        }
    }
}

/// A build lock some thread of this process holds.
#[derive(Debug)]
struct Held {
    thread: ThreadId,
    file: Weak<File>,
}

/// Build locks held in this process, by lock file.
fn held() -> &'static Mutex<HashMap<PathBuf, Held>> {
    static HELD: OnceLock<Mutex<HashMap<PathBuf, Held>>> = OnceLock::new();
    HELD.get_or_init(Mutex::default)
}

fn register(path: &Path, input: InputKey, file: File) -> BuildLock {
    let file = Arc::new(file);
    held()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(
            path.to_owned(),
            Held {
                thread: std::thread::current().id(),
                file: Arc::downgrade(&file),
            },
        );
    BuildLock {
        input,
        path: path.to_owned(),
        file,
    }
}

/// The file of a build lock on `path` that this thread holds.
fn held_here(path: &Path) -> Option<Arc<File>> {
    let held = held()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    held.get(path)
        .filter(|h| h.thread == std::thread::current().id())
        .and_then(|h| h.file.upgrade())
}

impl BuildLock {
    /// The input digest it locks.
    #[must_use]
    pub fn input(&self) -> InputKey {
        self.input
    }

    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Shared locks on layers serving as overlay lower dirs: while it lives, no
/// `gc` removes them (nor, since a layer with a child in use is kept, their
/// ancestors). Dropping it releases the locks.
#[derive(Debug)]
pub struct UseGuard {
    pub(crate) layers: Vec<Layer>,
    // Held for their locks.
    pub(crate) files: Vec<File>,
}

impl UseGuard {
    /// The layers in use, sorted by input digest.
    #[must_use]
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
}

/// Waits for the exclusive lock on `path`.
pub(crate) fn exclusive(path: &Path, input: InputKey) -> Result<BuildLock, Error> {
    let file = open(path)?;
    flock(&file, FlockOperation::LockExclusive, path)?;
    Ok(register(path, input, file))
}

/// Waits for a shared lock on `path`, or shares this thread's build lock.
pub(crate) fn shared(path: &Path) -> Result<File, Error> {
    if let Some(file) = held_here(path) {
        // Same open file description, so the same (exclusive) lock.
        return file.try_clone().map_err(|source| Error::Lock {
            path: path.to_owned(),
            source,
        });
    }
    let file = open(path)?;
    flock(&file, FlockOperation::LockShared, path)?;
    Ok(file)
}

/// The exclusive lock on `path` if nobody holds any lock on it now.
pub(crate) fn try_exclusive(path: &Path, input: InputKey) -> Result<Option<BuildLock>, Error> {
    let file = open(path)?;
    match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(register(path, input, file))),
        Err(Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(Error::Lock {
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}

fn open(path: &Path) -> Result<File, Error> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| Error::Lock {
            path: path.to_owned(),
            source,
        })
}

fn flock(file: &File, op: FlockOperation, path: &Path) -> Result<(), Error> {
    loop {
        match rustix::fs::flock(file, op) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(e) => {
                return Err(Error::Lock {
                    path: path.to_owned(),
                    source: e.into(),
                });
            }
        }
    }
}
