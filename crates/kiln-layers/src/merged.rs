//! The merged view of a [`LayerStack`], read without mounting anything;
//! the rules are on [`MergedView`].

use std::collections::BTreeSet;
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::LayerStack;
use crate::error::Error;

/// How many symbolic links one lookup may follow (Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// The xattr that marks a directory as opaque.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same mark as overlayfs writes it when mounted with `userxattr`
/// (kiln's unprivileged builds, in a user namespace).
pub(crate) const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// One entry of the merged tree.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its path relative to the merged root, `/`-separated, without a
    /// leading `/`; the root itself is `""`.
    pub path: String,
    /// The layer it comes from (an index into [`LayerStack::layers`], 0 is
    /// the bottom): the topmost layer holding it. A merged directory's
    /// metadata comes from this layer, as in overlayfs.
    pub layer: usize,
    /// Its metadata in that layer (not following a symbolic link).
    pub meta: Metadata,
    /// The file on disk: `layers[layer]` joined with `path`.
    pub source: PathBuf,
    /// For a directory, every layer whose directory at this path is merged
    /// into it, top first (starting with `layer`); empty otherwise.
    pub merged_from: Vec<usize>,
}

/// The merged result of a [`LayerStack`], read from the layers' folders
/// with ordinary file system calls: no mount, no privileges.
///
/// Lookups and listings follow overlayfs (`fs/overlayfs/namei.c`),
/// component by component, top layer first:
///
/// - an entry in a higher layer hides the same path in every lower one;
/// - a whiteout (a character device 0:0) hides the path below it and is not
///   itself listed;
/// - a directory merges with the directories of the same path below it,
///   down to the first layer where that directory is opaque
///   (`trusted.overlay.opaque=y`), where the path is a whiteout, or where it
///   is not a directory (that entry and everything below are hidden);
/// - a non-directory hides whatever is below it, directories included.
///
/// What kiln never creates is not honoured: `trusted.overlay.redirect`
/// (kiln mounts with `redirect_dir=off`, so renamed directories are copied
/// up whole), metacopy-only files (`metacopy=off`), and xattr whiteouts
/// (`trusted.overlay.whiteout`, `trusted.overlay.opaque=x`, used only when
/// overlays are nested). The root directories of all layers always merge.
/// A whiteout in a directory only one layer has hides nothing; the kernel
/// still lists its name (but finds nothing there), the view does not.
/// Hard links within a layer are separate entries with the same inode
/// (`meta.ino()` and `layer`), as through a mount.
///
/// Symbolic links met while resolving a path given to [`MergedView`] are
/// followed inside the view, as in a chroot: an absolute target starts at
/// the merged root and `..` never climbs above it.
#[derive(Debug, Clone)]
pub struct MergedView {
    layers: Vec<PathBuf>,
}

impl MergedView {
    /// A view of `stack`. The layers are not read until asked.
    #[must_use]
    pub fn new(stack: &LayerStack) -> Self {
        Self {
            layers: stack.layers.clone(),
        }
    }

    /// The merged root directory.
    pub fn root(&self) -> Result<Entry, Error> {
        let Some(top) = self.layers.len().checked_sub(1) else {
            return Err(Error::InvalidPath {
                path: String::new(),
                reason: "the layer stack is empty",
            });
        };
        let source = self.layers[top].clone();
        let meta = fs::symlink_metadata(&source).map_err(|e| Error::io("read", &source, e))?;
        Ok(Entry {
            path: String::new(),
            layer: top,
            meta,
            source,
            merged_from: (0..self.layers.len()).rev().collect(),
        })
    }

    /// The entry at `rel` (symbolic links in its parents are followed
    /// inside the view, a final one is not), or `None` if the merged tree
    /// has nothing there.
    pub fn entry(&self, rel: &str) -> Result<Option<Entry>, Error> {
        match self.resolve(rel, false) {
            Ok(entry) => Ok(Some(entry)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The metadata of `rel`, like [`std::fs::symlink_metadata`]: a final
    /// symbolic link is not followed.
    pub fn metadata(&self, rel: &str) -> Result<Metadata, Error> {
        self.resolve(rel, false).map(|e| e.meta)
    }

    /// The target of the symbolic link `rel`, as written.
    pub fn read_link(&self, rel: &str) -> Result<PathBuf, Error> {
        let entry = self.resolve(rel, false)?;
        if !entry.meta.file_type().is_symlink() {
            return Err(Error::InvalidPath {
                path: rel.to_owned(),
                reason: "not a symbolic link",
            });
        }
        fs::read_link(&entry.source).map_err(|e| Error::io("read", &entry.source, e))
    }

    /// Opens `rel` for reading, following symbolic links inside the view.
    pub fn open(&self, rel: &str) -> Result<File, Error> {
        let entry = self.resolve(rel, true)?;
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&entry.source)
            .map_err(|e| Error::io("open", &entry.source, e))
    }

    /// The entries of the directory `rel` (symbolic links followed inside
    /// the view), sorted by name (bytes).
    pub fn read_dir(&self, rel: &str) -> Result<Vec<Entry>, Error> {
        let dir = self.resolve(rel, true)?;
        if !dir.meta.is_dir() {
            return Err(Error::InvalidPath {
                path: rel.to_owned(),
                reason: "not a directory",
            });
        }
        self.children(&dir)
    }

    /// Every entry of the merged tree, the root (`""`) first, then
    /// depth-first with each directory's entries sorted by name: the order
    /// of [`Path`]'s `Ord`, bytes compared component by component, so a
    /// directory comes right before its content. Symbolic links are not
    /// followed. After an error the walk goes on with the next entry.
    pub fn walk(&self) -> impl Iterator<Item = Result<Entry, Error>> + '_ {
        Walk {
            view: self,
            pending: Vec::new(),
            root: Some(self.root()),
            error: None,
        }
    }

    /// The children of the merged directory `dir`, sorted by name.
    fn children(&self, dir: &Entry) -> Result<Vec<Entry>, Error> {
        let mut names = BTreeSet::new();
        for &layer in &dir.merged_from {
            let path = self.layers[layer].join(&dir.path);
            let entries = fs::read_dir(&path).map_err(|e| Error::io("read", &path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("read", &path, e))?;
                let name = entry
                    .file_name()
                    .into_string()
                    .map_err(|name| Error::InvalidPath {
                        path: path.join(name).display().to_string(),
                        reason: "the file name is not UTF-8",
                    })?;
                names.insert(name);
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(entry) = self.child(dir, &name)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// Looks `name` up in the merged directory `dir`, as overlayfs does.
    fn child(&self, dir: &Entry, name: &str) -> Result<Option<Entry>, Error> {
        let rel = if dir.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", dir.path)
        };
        let mut found: Option<Entry> = None;
        for &layer in &dir.merged_from {
            let source = self.layers[layer].join(&rel);
            let meta = match fs::symlink_metadata(&source) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read", &source, e)),
            };
            if is_whiteout(&meta) {
                break;
            }
            let is_dir = meta.is_dir();
            match &mut found {
                None if !is_dir => {
                    return Ok(Some(Entry {
                        path: rel,
                        layer,
                        meta,
                        source,
                        merged_from: Vec::new(),
                    }));
                }
                None => {
                    let opaque = is_opaque(&source)?;
                    found = Some(Entry {
                        path: rel.clone(),
                        layer,
                        meta,
                        source,
                        merged_from: vec![layer],
                    });
                    if opaque {
                        break;
                    }
                }
                Some(_) if !is_dir => break,
                Some(merged) => {
                    merged.merged_from.push(layer);
                    if is_opaque(&source)? {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// Resolves `rel` component by component; symbolic links in parents
    /// (and the last one with `follow`) are followed inside the view.
    fn resolve(&self, rel: &str, follow: bool) -> Result<Entry, Error> {
        let root = self.root()?;
        let mut pending: Vec<String> = components(rel).rev().map(str::to_owned).collect();
        let mut stack: Vec<Entry> = Vec::new();
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == ".." {
                stack.pop();
                continue;
            }
            let dir = stack.last().unwrap_or(&root);
            if !dir.meta.is_dir() {
                return Err(Error::NotFound {
                    path: rel.to_owned(),
                });
            }
            let Some(entry) = self.child(dir, &name)? else {
                return Err(Error::NotFound {
                    path: rel.to_owned(),
                });
            };
            if entry.meta.file_type().is_symlink() && (follow || !pending.is_empty()) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::InvalidPath {
                        path: rel.to_owned(),
                        reason: "too many levels of symbolic links",
                    });
                }
                let target = fs::read_link(&entry.source)
                    .map_err(|e| Error::io("read", &entry.source, e))?;
                let target = target.to_str().ok_or_else(|| Error::InvalidPath {
                    path: rel.to_owned(),
                    reason: "a symbolic link's target is not UTF-8",
                })?;
                if target.starts_with('/') {
                    stack.clear();
                }
                pending.extend(components(target).rev().map(str::to_owned));
                continue;
            }
            stack.push(entry);
        }
        Ok(stack.pop().unwrap_or(root))
    }
}

/// The components of a path, without empty ones and `.`.
fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// Whether `meta` is an overlayfs whiteout: a character device 0:0.
pub(crate) fn is_whiteout(meta: &Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Whether the directory at `path` is marked opaque (by a mount as root,
/// `trusted.overlay.opaque`, or in a user namespace, `user.overlay.opaque`).
pub(crate) fn is_opaque(path: &Path) -> Result<bool, Error> {
    for name in [OPAQUE_XATTR, USER_OPAQUE_XATTR] {
        let mut value = [0u8; 8];
        match rustix::fs::lgetxattr(path, name, &mut value[..]) {
            Ok(len) if &value[..len] == b"y" => return Ok(true),
            Ok(_)
            | Err(
                rustix::io::Errno::NODATA | rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::RANGE,
            ) => {}
            Err(e) => return Err(Error::io("read the xattrs of", path, e.into())),
        }
    }
    Ok(false)
}

/// The iterator of [`MergedView::walk`].
struct Walk<'a> {
    view: &'a MergedView,
    /// Entries still to return, the next one last.
    pending: Vec<Entry>,
    root: Option<Result<Entry, Error>>,
    /// An error reading the directory just returned, returned next.
    error: Option<Error>,
}

impl Iterator for Walk<'_> {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            return Some(Err(e));
        }
        let entry = match self.root.take() {
            Some(Err(e)) => return Some(Err(e)),
            Some(Ok(root)) => root,
            None => self.pending.pop()?,
        };
        if entry.meta.is_dir() {
            match self.view.children(&entry) {
                Ok(children) => self.pending.extend(children.into_iter().rev()),
                Err(e) => self.error = Some(e),
            }
        }
        Some(Ok(entry))
    }
}
