//! File operations inside a root that never leave it.
//!
//! As kiln-dpkg's unpacking does, every parent directory is opened with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to an
//! `O_PATH` descriptor of the root, so symlinks in the root (`lib ->
//! usr/lib`, `etc/x -> /`, `../../..`) resolve as inside a chroot; the
//! final component is never followed: files are created with `O_EXCL |
//! O_NOFOLLOW` after removing what was there, removals use `unlinkat` on
//! the parent's descriptor. Paths with `..` components are refused.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use crate::error::Error;

/// A uid and gid.
pub(crate) type Owner = (u32, u32);

/// A root, held open as an `O_PATH` directory descriptor.
#[derive(Debug)]
pub(crate) struct RootDir {
    inner: kiln_dpkg::Root,
}

/// A path in the root, checked: relative, `/`-separated, no `..`, no
/// empty or `.` components.
pub(crate) fn normalize(path: &str) -> Result<String, Error> {
    let mut out = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                return Err(Error::InvalidPath {
                    path: path.to_owned(),
                    reason: "`..` components are not allowed",
                });
            }
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

/// `rel` split into its parent and final component.
fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

impl RootDir {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let inner = kiln_dpkg::Root::open_dir_at(path).map_err(|e| Error::io("open", path, e))?;
        Ok(Self { inner })
    }

    /// The root on the host.
    pub(crate) fn path(&self) -> &Path {
        self.inner.path()
    }

    /// `rel` on the host, for messages.
    pub(crate) fn host(&self, rel: &str) -> PathBuf {
        self.inner.path().join(rel)
    }

    /// Opens `rel` with in-root resolution (a final symlink is followed
    /// inside the root unless `flags` has `NOFOLLOW`): kiln-dpkg's
    /// [`kiln_dpkg::Root`], which unpacking uses too.
    fn open_in_root(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        self.inner.open_in_root(rel, flags)
    }

    /// The directory `rel` as an `O_PATH` descriptor, or `None` if it is
    /// missing.
    fn dir(&self, rel: &str) -> Result<Option<OwnedFd>, Error> {
        match self.open_in_root(rel, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", self.host(rel), e)),
        }
    }

    /// Creates the directory `rel` and its missing parents, owned by
    /// root:root with `mode` (parents: 0755); existing directories (or
    /// symlinks to directories) are kept as they are.
    pub(crate) fn create_dirs(&self, rel: &str, mode: u32) -> Result<OwnedFd, Error> {
        let rel = normalize(rel)?;
        let mut parent = self.dir("")?.ok_or_else(|| {
            Error::io(
                "open",
                self.path(),
                io::Error::from(io::ErrorKind::NotFound),
            )
        })?;
        let mut prefix = String::new();
        let components: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.split('/').collect()
        };
        for (i, name) in components.iter().enumerate() {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(name);
            let last = i + 1 == components.len();
            let mode = if last { mode } else { 0o755 };
            match rustix::fs::mkdirat(&parent, *name, Mode::from_raw_mode(0o700)) {
                Ok(()) => {
                    rustix::fs::chownat(
                        &parent,
                        *name,
                        Some(Uid::ROOT),
                        Some(Gid::ROOT),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| Error::io("chown", self.host(&prefix), e.into()))?;
                    rustix::fs::chmodat(
                        &parent,
                        *name,
                        Mode::from_raw_mode(mode),
                        AtFlags::empty(),
                    )
                    .map_err(|e| Error::io("chmod", self.host(&prefix), e.into()))?;
                }
                Err(Errno::EXIST) => {}
                Err(e) => return Err(Error::io("create", self.host(&prefix), e.into())),
            }
            parent = self
                .open_in_root(&prefix, OFlags::PATH | OFlags::DIRECTORY)
                .map_err(|e| Error::io("open", self.host(&prefix), e))?;
        }
        Ok(parent)
    }

    /// The parent directory of `rel` (created if missing) and the final
    /// component, with whatever non-directory was at `rel` removed.
    fn make_room<'r>(&self, rel: &'r str) -> Result<(OwnedFd, &'r str), Error> {
        let (parent_rel, name) = split(rel);
        if name.is_empty() {
            return Err(Error::InvalidPath {
                path: rel.to_owned(),
                reason: "the root itself is not a file",
            });
        }
        let parent = self.create_dirs(parent_rel, 0o755)?;
        match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                return Err(Error::Unsupported {
                    path: self.host(rel),
                    reason: "a directory is in the way".to_owned(),
                });
            }
            Ok(_) => rustix::fs::unlinkat(&parent, name, AtFlags::empty())
                .map_err(|e| Error::io("remove", self.host(rel), e.into()))?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(Error::io("read", self.host(rel), e.into())),
        }
        Ok((parent, name))
    }

    /// Writes the regular file `rel` (replacing any non-directory there)
    /// from `content`, then sets its owner and mode.
    pub(crate) fn write_with(
        &self,
        rel: &str,
        mode: u32,
        owner: (u32, u32),
        content: &mut dyn Read,
    ) -> Result<(), Error> {
        let rel = normalize(rel)?;
        let (parent, name) = self.make_room(&rel)?;
        let fd = rustix::fs::openat(
            &parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io("create", self.host(&rel), e.into()))?;
        let mut file = File::from(fd);
        io::copy(content, &mut file)
            .and_then(|_| file.flush())
            .map_err(|e| Error::io("write", self.host(&rel), e))?;
        // chown clears set-id bits, so the mode comes after it.
        rustix::fs::fchown(
            &file,
            Some(Uid::from_raw(owner.0)),
            Some(Gid::from_raw(owner.1)),
        )
        .map_err(|e| Error::io("chown", self.host(&rel), e.into()))?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & 0o7777))
            .map_err(|e| Error::io("chmod", self.host(&rel), e.into()))?;
        Ok(())
    }

    /// Writes the regular file `rel` with `content`.
    pub(crate) fn write(
        &self,
        rel: &str,
        mode: u32,
        owner: (u32, u32),
        content: &[u8],
    ) -> Result<(), Error> {
        self.write_with(rel, mode, owner, &mut { content })
    }

    /// Makes `rel` a symbolic link to `target` owned by root (replacing any
    /// non-directory there).
    pub(crate) fn symlink(&self, rel: &str, target: &Path) -> Result<(), Error> {
        let rel = normalize(rel)?;
        let (parent, name) = self.make_room(&rel)?;
        rustix::fs::symlinkat(target, &parent, name)
            .map_err(|e| Error::io("create", self.host(&rel), e.into()))?;
        rustix::fs::chownat(
            &parent,
            name,
            Some(Uid::ROOT),
            Some(Gid::ROOT),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| Error::io("chown", self.host(&rel), e.into()))
    }

    /// Sets the owner and mode of the existing directory `rel`.
    pub(crate) fn set_dir_owner(
        &self,
        rel: &str,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<(), Error> {
        let rel = normalize(rel)?;
        let fd = self
            .open_in_root(&rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW)
            .map_err(|e| Error::io("open", self.host(&rel), e))?;
        rustix::fs::fchown(
            &fd,
            Some(Uid::from_raw(owner.0)),
            Some(Gid::from_raw(owner.1)),
        )
        .map_err(|e| Error::io("chown", self.host(&rel), e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io("chmod", self.host(&rel), e.into()))
    }

    /// The content of the file `rel` (symlinks followed inside the root),
    /// or `None` if there is none.
    pub(crate) fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, Error> {
        let rel = normalize(rel)?;
        match self.open_in_root(&rel, OFlags::RDONLY) {
            Ok(fd) => {
                let mut out = Vec::new();
                File::from(fd)
                    .read_to_end(&mut out)
                    .map_err(|e| Error::io("read", self.host(&rel), e))?;
                Ok(Some(out))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", self.host(&rel), e)),
        }
    }

    /// Whether `rel` exists (symlinks followed inside the root).
    pub(crate) fn exists(&self, rel: &str) -> Result<bool, Error> {
        let rel = normalize(rel)?;
        match self.open_in_root(&rel, OFlags::PATH) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("read", self.host(&rel), e)),
        }
    }

    /// The type and size of `rel` itself (a final symlink not followed),
    /// or `None` if it is missing.
    pub(crate) fn lstat(&self, rel: &str) -> Result<Option<(FileType, u64)>, Error> {
        let rel = normalize(rel)?;
        let (parent_rel, name) = split(&rel);
        let Some(parent) = self.dir(parent_rel)? else {
            return Ok(None);
        };
        let name = if name.is_empty() { "." } else { name };
        match rustix::fs::statat(&parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some((
                FileType::from_raw_mode(stat.st_mode),
                u64::try_from(stat.st_size).unwrap_or(0),
            ))),
            Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
            Err(e) => Err(Error::io("read", self.host(&rel), e.into())),
        }
    }

    /// The permission bits and owner (uid, gid) of `rel` (symlinks followed inside
    /// the root), or `None` if it is missing.
    pub(crate) fn mode_owner(&self, rel: &str) -> Result<Option<(u32, Owner)>, Error> {
        let rel = normalize(rel)?;
        match self.open_in_root(&rel, OFlags::PATH) {
            Ok(fd) => {
                let stat = rustix::fs::fstat(&fd)
                    .map_err(|e| Error::io("read", self.host(&rel), e.into()))?;
                Ok(Some((stat.st_mode & 0o7777, (stat.st_uid, stat.st_gid))))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", self.host(&rel), e)),
        }
    }

    /// The entries of the directory `rel` (symlinks followed inside the
    /// root), sorted by name; empty if it is missing.
    pub(crate) fn list(&self, rel: &str) -> Result<Vec<(String, FileType)>, Error> {
        let rel = normalize(rel)?;
        let fd = match self.open_in_root(&rel, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", self.host(&rel), e)),
        };
        let mut out = list_fd(&fd).map_err(|e| Error::io("read", self.host(&rel), e))?;
        for (name, kind) in &mut out {
            if *kind == FileType::Unknown {
                let stat = rustix::fs::statat(&fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| Error::io("read", self.host(&rel), e.into()))?;
                *kind = FileType::from_raw_mode(stat.st_mode);
            }
        }
        Ok(out)
    }

    /// Removes `rel` and, for a directory, everything in it. Returns
    /// whether there was anything to remove.
    pub(crate) fn remove_all(&self, rel: &str) -> Result<bool, Error> {
        let rel = normalize(rel)?;
        let (parent_rel, name) = split(&rel);
        if name.is_empty() {
            return Err(Error::InvalidPath {
                path: rel.clone(),
                reason: "the root itself cannot be removed",
            });
        }
        let Some(parent) = self.dir(parent_rel)? else {
            return Ok(false);
        };
        remove_at(&parent, name).map_err(|e| Error::io("remove", self.host(&rel), e))
    }

    /// Truncates the regular file `rel` to zero bytes.
    pub(crate) fn truncate(&self, rel: &str) -> Result<(), Error> {
        let rel = normalize(rel)?;
        let fd = self
            .open_in_root(&rel, OFlags::WRONLY | OFlags::NOFOLLOW)
            .map_err(|e| Error::io("open", self.host(&rel), e))?;
        rustix::fs::ftruncate(&fd, 0).map_err(|e| Error::io("truncate", self.host(&rel), e.into()))
    }
}

/// The entries of an open directory, sorted by name, without `.` and `..`.
fn list_fd(fd: &OwnedFd) -> io::Result<Vec<(String, FileType)>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"))?;
        out.push((name, entry.file_type()));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Removes `name` in `parent`, recursively; `Ok(false)` if it is missing.
fn remove_at(parent: &OwnedFd, name: &str) -> io::Result<bool> {
    let stat = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
        let dir = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        for (child, _) in list_fd(&dir)? {
            remove_at(&dir, &child)?;
        }
        rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
    }
    Ok(true)
}
