//! Opening the files of a tree, never anything outside it.
//!
//! Every file a tree names (`kiln.toml`, each `image.toml`, the files of
//! image folders and of `rootfs` folders, `files` sources, `run` scripts,
//! keyrings) is opened by [`TreeRoot::open`]: `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` relative to a descriptor of
//! the tree root. A symbolic link anywhere in the path may lead elsewhere
//! in the tree; one that leads out of it (an absolute target, or `..`
//! climbing above the root) is refused with [`OpenError::Outside`], so a
//! link to `/etc/shadow` in an image folder cannot bring the host's file
//! into an image.
//!
//! [`TreeInputs`] is what provisioning reads an image's inputs through: the
//! same opening, and each file checked against the BLAKE3 digest the loader
//! recorded (the digest the plan's input digests are made of), so a file
//! edited after loading is never built under the old digest.

use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::diagnostic::FileId;
use crate::settings::ConfigPath;
use crate::tree::{FileEntry, FileKind, LinkTarget, Tree};

/// The root folder of a tree, held open: every file of the tree is opened
/// beneath it.
#[derive(Debug)]
pub struct TreeRoot {
    fd: OwnedFd,
    path: PathBuf,
}

/// Why a file of the tree could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// The path goes through a symbolic link that leads out of the tree.
    Outside,
    /// Any other reason (no such file, too many links, permissions, …).
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Outside => f.write_str("it is a symbolic link leading out of the tree"),
            Self::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// The help line of every diagnostic about a link leading out of the tree.
pub const OUTSIDE_HELP: &str = "kiln reads only files inside the tree (the folder of kiln.toml); copy the file into the tree, or make the link relative and keep its target inside the tree";

impl TreeRoot {
    /// Opens the tree root `path` (itself followed as given).
    pub fn open_root(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root's path, as given to [`TreeRoot::open_root`].
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` relative to the root, if it is below it (as a path, without
    /// resolving anything).
    #[must_use]
    pub fn relative<'p>(&self, path: &'p Path) -> Option<&'p Path> {
        path.strip_prefix(&self.path).ok()
    }

    /// Opens `rel` (relative to the root) for reading, following symbolic
    /// links only while they stay beneath the root. This is the one way
    /// kiln opens a file of a tree.
    pub fn open(&self, rel: &Path) -> Result<File, OpenError> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        match rustix::fs::openat2(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(File::from(fd)),
            Err(rustix::io::Errno::XDEV) => Err(OpenError::Outside),
            Err(e) => Err(OpenError::Io(e.into())),
        }
    }

    /// Opens `rel` and returns it with its metadata (of what a link led
    /// to).
    pub fn open_stat(&self, rel: &Path) -> Result<(File, Metadata), OpenError> {
        let file = self.open(rel)?;
        let meta = file.metadata()?;
        Ok((file, meta))
    }

    /// The content of the regular file `rel`.
    pub fn read(&self, rel: &Path) -> Result<Vec<u8>, OpenError> {
        let (mut file, meta) = self.open_stat(rel)?;
        if meta.is_dir() {
            return Err(OpenError::Io(io::Error::from(io::ErrorKind::IsADirectory)));
        }
        if !meta.is_file() {
            return Err(OpenError::Io(io::Error::other(
                "not a regular file (a device, socket or FIFO)",
            )));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Where the symbolic link `rel` leads, resolved beneath the root.
    #[must_use]
    pub fn follow(&self, rel: &Path) -> LinkTarget {
        match self.open_stat(rel) {
            Ok((file, meta)) if meta.is_file() => match hash_reader(file) {
                Ok(digest) => LinkTarget::File {
                    mode: meta.permissions().mode() & 0o7777,
                    size: meta.len(),
                    digest,
                },
                Err(_) => LinkTarget::Missing,
            },
            Ok((_, meta)) if meta.is_dir() => LinkTarget::Dir,
            Ok(_) | Err(OpenError::Io(_)) => LinkTarget::Missing,
            Err(OpenError::Outside) => LinkTarget::Outside,
        }
    }
}

/// BLAKE3 of everything `reader` holds.
pub(crate) fn hash_reader(reader: impl Read) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(reader)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Why an input of an image could not be read for a build.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file is not what the loader recorded: its content or kind
    /// changed, it is gone, or a link now leads out of the tree.
    #[error("`{}` changed since the build started", path.display())]
    Changed {
        /// The file (the tree root joined with its path).
        path: PathBuf,
    },
    /// It could not be read.
    #[error("failed to read `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// An entry below a folder named by a setting (`rootfs`), as the loader
/// recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderEntry {
    /// Path relative to the folder, `/`-separated.
    pub path: String,
    /// What it was when the tree was loaded.
    pub kind: FileKind,
}

/// The files one image's settings may name, with what the loader recorded
/// of them; every read goes through [`TreeRoot::open`] and is checked
/// against the recorded digest.
#[derive(Debug)]
pub struct TreeInputs {
    root: TreeRoot,
    image_dir: PathBuf,
    root_file: FileId,
    image_files: Vec<FileEntry>,
    shared_files: Vec<FileEntry>,
}

impl TreeInputs {
    /// The inputs of image `image` of a loaded tree.
    pub fn of_image(tree: &Tree, image: &str) -> io::Result<Self> {
        let def = tree
            .images
            .iter()
            .find(|i| i.name == image)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("no image `{image}`"))
            })?;
        Ok(Self {
            root: TreeRoot::open_root(&tree.root)?,
            image_dir: def.dir.clone(),
            root_file: tree.root_file,
            image_files: def.files.clone(),
            shared_files: tree.shared_files.clone(),
        })
    }

    /// The inputs of the image folder `image_dir` (relative to
    /// `tree_root`), inventoried now, for callers without a loaded tree:
    /// paths written in `kiln.toml` (file 0) are relative to the root,
    /// others to the image folder.
    pub fn scan(tree_root: &Path, image_dir: &Path) -> io::Result<Self> {
        let root = TreeRoot::open_root(tree_root)?;
        let image_files = crate::tree::scan_folder(&root, &tree_root.join(image_dir))?;
        let shared_files = crate::tree::scan_folder(&root, tree_root)?;
        Ok(Self {
            root,
            image_dir: image_dir.to_path_buf(),
            root_file: FileId::from_index(0),
            image_files,
            shared_files,
        })
    }

    /// The tree root.
    #[must_use]
    pub fn root(&self) -> &TreeRoot {
        &self.root
    }

    fn place(&self, p: &ConfigPath) -> (PathBuf, &[FileEntry]) {
        if p.origin.file == self.root_file {
            (PathBuf::from(&p.path), &self.shared_files)
        } else {
            (self.image_dir.join(&p.path), &self.image_files)
        }
    }

    /// The path on disk of a path named by a setting (for messages).
    #[must_use]
    pub fn path_of(&self, p: &ConfigPath) -> PathBuf {
        self.root.path.join(self.place(p).0)
    }

    /// The content of the file a setting names, as recorded at load.
    pub fn read(&self, p: &ConfigPath) -> Result<Vec<u8>, InputError> {
        let (rel, list) = self.place(p);
        let digest = list
            .iter()
            .find(|f| f.path == p.path)
            .and_then(|f| match &f.kind {
                FileKind::File { digest, .. }
                | FileKind::Symlink {
                    leads: LinkTarget::File { digest, .. },
                    ..
                } => Some(*digest),
                _ => None,
            });
        self.read_checked(&rel, digest)
    }

    /// The entries below the folder a setting names (not the folder
    /// itself), in path order, as recorded at load.
    pub fn folder(&self, p: &ConfigPath) -> Result<Vec<FolderEntry>, InputError> {
        let (rel, list) = self.place(p);
        if !list
            .iter()
            .any(|f| f.path == p.path && matches!(f.kind, FileKind::Dir { .. }))
        {
            return Err(InputError::Changed {
                path: self.root.path.join(rel),
            });
        }
        let prefix = format!("{}/", p.path);
        Ok(list
            .iter()
            .filter_map(|f| {
                f.path.strip_prefix(&prefix).map(|sub| FolderEntry {
                    path: sub.to_string(),
                    kind: f.kind.clone(),
                })
            })
            .collect())
    }

    /// The content of a regular file of [`TreeInputs::folder`]`(p)`.
    pub fn read_in(&self, p: &ConfigPath, entry: &FolderEntry) -> Result<Vec<u8>, InputError> {
        let rel = self.place(p).0.join(&entry.path);
        let digest = match &entry.kind {
            FileKind::File { digest, .. } => Some(*digest),
            _ => None,
        };
        self.read_checked(&rel, digest)
    }

    fn read_checked(&self, rel: &Path, digest: Option<[u8; 32]>) -> Result<Vec<u8>, InputError> {
        let path = self.root.path.join(rel);
        let Some(digest) = digest else {
            return Err(InputError::Changed { path });
        };
        let bytes = match self.root.read(rel) {
            Ok(b) => b,
            Err(OpenError::Outside) => return Err(InputError::Changed { path }),
            Err(OpenError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(InputError::Changed { path });
            }
            Err(OpenError::Io(source)) => return Err(InputError::Io { path, source }),
        };
        if *blake3::hash(&bytes).as_bytes() != digest {
            return Err(InputError::Changed { path });
        }
        Ok(bytes)
    }
}
