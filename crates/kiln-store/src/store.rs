//! [`Store`]: the layout on disk, lookups, locks, staging and commits.
//!
//! ```text
//! <store>/layers/<input-hex>/meta.json   complete layers only
//! <store>/layers/<input-hex>/tree/       the layer, overlayfs upper-dir form
//! <store>/stage/<pid>-<unique>/          layers being built or removed
//! <store>/locks/<input-hex>.lock         flock(2) files, never removed
//! ```
//!
//! A layer reaches `layers/` by one `rename(2)` of a staged directory that
//! already holds its tree and its `meta.json`, after a `syncfs(2)`; it
//! leaves by a rename back into `stage/` before it is deleted. So a
//! directory under `layers/` is complete, and whatever an interrupted
//! process leaves is a stage dir that the next [`Store::open`] sweeps.

use std::path::{Path, PathBuf};

use crate::digest::InputKey;
use crate::error::Error;
use crate::layer::{self, Found, Layer, LayerMeta, NewLayer};
use crate::lock::{self, BuildLock, UseGuard};
use crate::stage::{self, Stage};
use crate::tree;

/// The layer store in one directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens the store in `dir`, creating its layout if needed, and removes
    /// the staging directories of processes that are gone.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        let dir = std::path::absolute(dir).map_err(|source| Error::CreateStore {
            path: dir.to_owned(),
            source,
        })?;
        let store = Store { dir };
        for sub in [store.layers_dir(), store.stage_dir(), store.locks_dir()] {
            std::fs::create_dir_all(&sub)
                .map_err(|source| Error::CreateStore { path: sub, source })?;
        }
        stage::sweep(&store.stage_dir());
        Ok(store)
    }

    /// Opens the store in `dir` for reading only: creates nothing and
    /// sweeps nothing, so commands that only look (`kiln plan`,
    /// `kiln inspect`) leave the store as they found it. A store that does
    /// not exist holds no layers.
    pub fn open_read_only(dir: &Path) -> Result<Store, Error> {
        let dir = std::path::absolute(dir).map_err(|source| Error::CreateStore {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Store { dir })
    }

    /// The store's directory (absolute).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The complete layer stored under `input`, if there is one. A directory
    /// without valid metadata is not a layer: it is ignored here and
    /// replaced by the next commit of that input.
    pub fn get(&self, input: &InputKey) -> Result<Option<Layer>, Error> {
        match layer::read(&self.layer_dir(input), *input)? {
            Found::Complete(layer) => Ok(Some(*layer)),
            Found::Absent | Found::Incomplete(_) => Ok(None),
        }
    }

    /// Waits for the exclusive right to build `input`. Whoever gets it
    /// should look with [`Store::get`] first: another process may have
    /// built the layer while this one waited.
    pub fn lock(&self, input: &InputKey) -> Result<BuildLock, Error> {
        lock::exclusive(&self.lock_path(input), *input)
    }

    /// A new, empty staging directory to build the layer for `input` in,
    /// on the store's file system so that [`Store::commit`] is a rename.
    pub fn stage(&self, input: &InputKey) -> Result<Stage, Error> {
        Stage::create(&self.stage_dir(), *input).map_err(|source| Error::Stage {
            path: self.stage_dir(),
            source,
        })
    }

    /// Makes the staged tree the layer for its input: computes its content
    /// digest, size and entry count, writes `meta.json` beside it, flushes
    /// the file system and renames the staged directory into `layers/`.
    ///
    /// `lock` must be the build lock of the stage's input. The parent, if
    /// given, must be in the store. An incomplete directory in the way is
    /// removed; a complete layer in the way is an error
    /// ([`Error::LayerExists`]): see [`Store::replace`].
    pub fn commit(&self, lock: &BuildLock, stage: Stage, meta: NewLayer) -> Result<Layer, Error> {
        self.commit_inner(lock, stage, meta, false)
    }

    /// As [`Store::commit`], but a complete layer in the way (a rebuild,
    /// `kiln build --revise`) is exchanged with the new one in one atomic
    /// `renameat2(RENAME_EXCHANGE)` and only then removed: at every moment
    /// some complete layer is stored under the key, so the layers built
    /// on it never lose their parent, whenever the process is killed.
    pub fn replace(&self, lock: &BuildLock, stage: Stage, meta: NewLayer) -> Result<Layer, Error> {
        self.commit_inner(lock, stage, meta, true)
    }

    fn commit_inner(
        &self,
        lock: &BuildLock,
        mut stage: Stage,
        meta: NewLayer,
        replace: bool,
    ) -> Result<Layer, Error> {
        let input = stage.input;
        if lock.input != input {
            return Err(Error::LockMismatch {
                lock: lock.input,
                stage: input,
            });
        }
        let ours = self.stage_dir();
        let same = |a: &Path, b: &Path| {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
        };
        if !stage.dir.parent().is_some_and(|p| same(p, &ours)) {
            return Err(Error::ForeignStage {
                path: stage.dir.clone(),
            });
        }
        if let Some(parent) = &meta.parent {
            if self.get(parent)?.is_none() {
                return Err(Error::LayerMissing { input: *parent });
            }
        }
        let scan = tree::scan(stage.tree())?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let layer_meta = LayerMeta {
            variant: meta.variant,
            parent: meta.parent.map(|p| p.to_hex()),
            content_digest: scan.digest.to_hex(),
            size: scan.size,
            files: scan.files,
            created,
            kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
            epoch: meta.epoch,
        };
        layer::write_meta(&stage.dir, &layer_meta)?;
        // Everything in the tree reaches the disk before the rename makes
        // the layer visible.
        sync_fs(&stage.dir)?;

        let dest = self.layer_dir(&input);
        let commit_err = |source| Error::Commit {
            input,
            path: dest.clone(),
            source,
        };
        let mut exchanged = false;
        match layer::read(&dest, input)? {
            Found::Absent => std::fs::rename(&stage.dir, &dest).map_err(commit_err)?,
            Found::Incomplete(_) => {
                self.discard(&dest)?;
                std::fs::rename(&stage.dir, &dest).map_err(commit_err)?;
            }
            Found::Complete(_) if replace => {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &stage.dir,
                    rustix::fs::CWD,
                    &dest,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .map_err(|e| commit_err(e.into()))?;
                exchanged = true;
            }
            Found::Complete(_) => return Err(Error::LayerExists { input }),
        }
        sync_dir(&self.layers_dir()).map_err(commit_err)?;
        // After an exchange the stage holds the old layer: dropping it
        // uncommitted removes it (and if this process dies first, the
        // next `open` does).
        stage.committed = !exchanged;
        drop(stage);
        Ok(Layer {
            input,
            content: scan.digest,
            parent: meta.parent,
            tree: dest.join(layer::TREE_DIR),
            meta: layer_meta,
        })
    }

    /// Removes the layer `lock` is for, if it is there (for a rebuild).
    /// Nobody uses it meanwhile: the exclusive lock excludes every
    /// [`UseGuard`].
    pub fn remove(&self, lock: &BuildLock) -> Result<Option<Layer>, Error> {
        let dest = self.layer_dir(&lock.input);
        match layer::read(&dest, lock.input)? {
            Found::Absent => Ok(None),
            Found::Incomplete(_) => {
                self.discard(&dest)?;
                Ok(None)
            }
            Found::Complete(layer) => {
                self.discard(&dest)?;
                Ok(Some(*layer))
            }
        }
    }

    /// Takes shared locks on `inputs` (waiting while one is being built or
    /// removed), so that no `gc` removes them while they serve as overlay
    /// lower dirs. Fails if one of them is not in the store. A layer whose
    /// [`BuildLock`] the calling thread holds is not waited for: the guard
    /// shares that lock.
    pub fn use_layers(&self, inputs: &[InputKey]) -> Result<UseGuard, Error> {
        let mut inputs = inputs.to_vec();
        // One order for everyone: no two callers wait for each other.
        inputs.sort_unstable();
        inputs.dedup();
        let mut guard = UseGuard {
            layers: Vec::with_capacity(inputs.len()),
            files: Vec::with_capacity(inputs.len()),
        };
        for input in inputs {
            guard.files.push(lock::shared(&self.lock_path(&input))?);
            match self.get(&input)? {
                Some(layer) => guard.layers.push(layer),
                None => return Err(Error::LayerMissing { input }),
            }
        }
        Ok(guard)
    }

    /// Every complete layer, oldest first (by `created`, then input digest).
    pub fn layers(&self) -> Result<Vec<Layer>, Error> {
        let mut out = Vec::new();
        for (input, dir) in self.layer_dirs()? {
            if let Found::Complete(layer) = layer::read(&dir, input)? {
                out.push(*layer);
            }
        }
        out.sort_by_key(|l| (l.meta.created, l.input));
        Ok(out)
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }

    pub(crate) fn stage_dir(&self) -> PathBuf {
        self.dir.join("stage")
    }

    fn locks_dir(&self) -> PathBuf {
        self.dir.join("locks")
    }

    pub(crate) fn layer_dir(&self, input: &InputKey) -> PathBuf {
        self.layers_dir().join(input.to_hex())
    }

    pub(crate) fn lock_path(&self, input: &InputKey) -> PathBuf {
        self.locks_dir().join(format!("{}.lock", input.to_hex()))
    }

    /// Every directory entry of `layers/` named by an input digest.
    pub(crate) fn layer_dirs(&self) -> Result<Vec<(InputKey, PathBuf)>, Error> {
        let dir = self.layers_dir();
        let list_err = |source| Error::List {
            path: dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(list_err)? {
            let entry = entry.map_err(list_err)?;
            let name = entry.file_name();
            if let Some(input) = name.to_str().and_then(|n| InputKey::from_hex(n).ok()) {
                out.push((input, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Moves a layer directory into `stage/` (one atomic rename) and deletes
    /// it there; if this process dies midway, the next `open` finishes.
    pub(crate) fn discard(&self, layer_dir: &Path) -> Result<(), Error> {
        let remove_err = |source| Error::Remove {
            path: layer_dir.to_owned(),
            source,
        };
        if !std::fs::symlink_metadata(layer_dir).is_ok_and(|m| m.is_dir()) {
            return match std::fs::remove_file(layer_dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(remove_err(e)),
                _ => Ok(()),
            };
        }
        // An empty directory that the rename replaces.
        let trash = stage::unique_dir(&self.stage_dir()).map_err(remove_err)?;
        if let Err(e) = std::fs::rename(layer_dir, &trash) {
            let _ = std::fs::remove_dir(&trash);
            return Err(remove_err(e));
        }
        stage::remove_tree(&trash).map_err(|source| Error::Remove {
            path: trash.clone(),
            source,
        })
    }
}

fn sync_fs(dir: &Path) -> Result<(), Error> {
    let err = |source| Error::WriteMeta {
        path: dir.to_owned(),
        source,
    };
    let file = std::fs::File::open(dir).map_err(err)?;
    rustix::fs::syncfs(&file).map_err(|e| err(e.into()))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
