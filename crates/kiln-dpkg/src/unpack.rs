//! Safe unpacking of a package's data archive into a root.
//!
//! Every parent directory is opened with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` relative to an `O_PATH` descriptor of the root,
//! so symlinks already in the root resolve as they would inside a chroot
//! (`bin -> usr/bin` works, `etc/x -> /` or `../../..` stay in the root)
//! and nothing can be reached outside it. The final component is never
//! followed: files are created with `O_EXCL | O_NOFOLLOW`, links and nodes
//! with the `*at` calls on the parent descriptor, metadata is set on
//! descriptors or with `AT_SYMLINK_NOFOLLOW`. Entries with `..` components
//! or absolute paths are refused before anything is touched.
//!
//! Directories follow dpkg's rules when several packages ship one: an
//! existing directory (or a symlink to one, such as merged-`/usr`'s `bin`)
//! is kept; the metadata of directories created here is applied once all
//! packages are unpacked, from the first package (in input order) that
//! ships it, so parallel unpacking gives the same result as a serial one.
//!
//! Conffiles are written in place and their MD5 recorded, the state of a
//! configured system, so every maintainer script sees every package's
//! configuration (mmdebstrap extracts the essential set before running any
//! script for the same reason: `passwd`'s postinst reads `login`'s
//! `/etc/login.defs`). `dpkg --configure` leaves such a conffile alone (it
//! only acts on a `<path>.dpkg-new`). Only where a file is already in the
//! way (a parent image) is the conffile written as `<path>.dpkg-new` and
//! recorded as `newconffile`, as `dpkg --unpack` does, so dpkg's conffile
//! logic decides.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use md5::Digest as _;
use rustix::fs::{
    AtFlags, CWD, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;

use crate::deb::Deb;
use crate::error::Error;

const WRITE_BUFFER: usize = 256 * 1024;

/// A root directory, held open as an `O_PATH` descriptor, in which paths
/// resolve as inside a chroot (`openat2` with `RESOLVE_IN_ROOT`): `..` and
/// symlinks, absolute ones included, cannot lead out of it. Everything
/// that writes into an image root (unpacking here, provisioning in
/// kiln-layers) opens paths through it.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        Self::open_dir_at(path).map_err(|e| Error::io("open", path, e))
    }

    /// Opens the root at `path`.
    pub fn open_dir_at(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_owned(),
        })
    }

    /// The root on the host.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` (no leading `/`) with in-root resolution; `CLOEXEC` is
    /// always added.
    pub fn open_in_root(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        let rel = if rel.is_empty() { "." } else { rel };
        rustix::fs::openat2(
            &self.fd,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(io::Error::from)
    }

    /// Opens the directory `rel` for use as a parent (`O_PATH`).
    pub fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        self.open_in_root(rel, OFlags::PATH | OFlags::DIRECTORY)
    }
}

/// Metadata of a directory entry, applied after all packages are unpacked.
#[derive(Debug, Clone)]
pub(crate) struct DirMeta {
    /// Path relative to the root, no leading `./`, no trailing `/`.
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    /// Whether this package created it (not already there).
    pub created: bool,
}

/// What unpacking one package did.
#[derive(Debug, Default)]
pub(crate) struct Unpacked {
    /// Paths for `info/<pkg>.list`: `/.`, then every entry.
    pub files: Vec<String>,
    /// The package's directory entries.
    pub dirs: Vec<DirMeta>,
    /// Number of entries written.
    pub entries: usize,
    /// Each conffile (absolute path) with the MD5 of its content, or
    /// `newconffile` if it was written as `.dpkg-new`; in `conffiles`
    /// order.
    pub conffiles: Vec<(String, String)>,
}

/// Where a conffile went.
enum Conffile {
    /// In place, with this MD5.
    InPlace(String),
    /// As `<path>.dpkg-new`.
    New,
}

/// A data.tar path checked and split: `components` relative to the root.
fn normalize(raw: &str) -> Result<Vec<&str>, &'static str> {
    if raw.starts_with('/') {
        return Err("absolute paths are not allowed");
    }
    let mut out = Vec::new();
    for component in raw.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("`..` components are not allowed"),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The single-entry cache of the last parent directory opened.
struct Parents<'r> {
    root: &'r Root,
    last: Option<(String, OwnedFd)>,
}

impl Parents<'_> {
    fn get(&mut self, rel: &str) -> io::Result<&OwnedFd> {
        if self.last.as_ref().is_none_or(|(p, _)| p != rel) {
            let fd = self.root.open_dir(rel)?;
            self.last = Some((rel.to_owned(), fd));
        }
        Ok(&self.last.as_ref().expect("set above").1)
    }

    fn forget(&mut self) {
        self.last = None;
    }
}

/// Unpacks `deb`'s data archive into `root`.
pub(crate) fn unpack(root: &Root, deb: &Deb) -> Result<Unpacked, Error> {
    let package = deb.name();
    let conffile_list = deb.conffiles();
    let conffiles: HashSet<String> = conffile_list
        .iter()
        .map(|p| p.trim_start_matches('/').to_owned())
        .collect();
    let mut written: HashMap<String, Conffile> = HashMap::new();
    let member_error = |source| Error::Member {
        path: deb.path.clone(),
        member: deb.data_member.clone(),
        source,
    };
    let stream = crate::data_cache::DataStream::open(deb)?;
    let mut archive = tar::Archive::new(stream);
    let mut parents = Parents { root, last: None };
    let mut out = Unpacked::default();
    let mut buffer = vec![0u8; WRITE_BUFFER];
    for entry in archive.entries().map_err(member_error)? {
        let mut entry = entry.map_err(member_error)?;
        let raw_bytes = entry.path_bytes().into_owned();
        let raw = String::from_utf8_lossy(&raw_bytes).into_owned();
        let unsafe_entry = |reason| Error::UnsafeEntry {
            package: package.to_owned(),
            entry: raw.clone(),
            reason,
        };
        if std::str::from_utf8(&raw_bytes).is_err() {
            return Err(unsafe_entry("the path is not UTF-8"));
        }
        let components = normalize(&raw).map_err(unsafe_entry)?;
        let rel = components.join("/");
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(member_error)? & 0o7777;
        let uid = header.uid().map_err(member_error)? as u32;
        let gid = header.gid().map_err(member_error)? as u32;
        let mtime = header.mtime().map_err(member_error)?;
        let fail = |source: io::Error| Error::Unpack {
            package: package.to_owned(),
            entry: raw.clone(),
            source,
        };
        out.files.push(if rel.is_empty() {
            "/.".to_owned()
        } else {
            format!("/{rel}")
        });
        out.entries += 1;
        let Some((name, parent_components)) = components.split_last() else {
            // `./`: the root itself.
            if !kind.is_dir() {
                return Err(unsafe_entry("only a directory may name the root"));
            }
            out.dirs.push(DirMeta {
                path: String::new(),
                mode,
                uid,
                gid,
                mtime,
                created: false,
            });
            continue;
        };
        let parent_rel = parent_components.join("/");
        let parent = parents.get(&parent_rel).map_err(fail)?;
        let is_conffile = conffiles.contains(&rel) && !kind.is_dir();
        let in_the_way =
            is_conffile && rustix::fs::statat(parent, *name, AtFlags::SYMLINK_NOFOLLOW).is_ok();
        let target_name = if in_the_way {
            format!("{name}.dpkg-new")
        } else {
            (*name).to_owned()
        };
        let mut hasher = is_conffile.then(md5::Md5::new);
        let owner = (Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
        let times = timestamps(mtime);
        match kind {
            tar::EntryType::Directory => {
                let created = ensure_dir(root, parent, name, &rel).map_err(fail)?;
                out.dirs.push(DirMeta {
                    path: rel.clone(),
                    mode,
                    uid,
                    gid,
                    mtime,
                    created,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let fd = replace(parent, &target_name, |p, n| {
                    rustix::fs::openat(
                        p,
                        n,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                })
                .map_err(fail)?;
                let mut file = File::from(fd);
                copy(&mut entry, &mut file, &mut buffer, hasher.as_mut()).map_err(fail)?;
                rustix::fs::fchown(&file, owner.0, owner.1).map_err(|e| fail(e.into()))?;
                rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(|e| fail(e.into()))?;
                rustix::fs::futimens(&file, &times).map_err(|e| fail(e.into()))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("the symlink has no target"))?
                    .into_owned();
                replace(parent, &target_name, |p, n| {
                    rustix::fs::symlinkat(target.as_slice(), p, n)
                })
                .map_err(fail)?;
                rustix::fs::chownat(
                    parent,
                    target_name.as_str(),
                    owner.0,
                    owner.1,
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| fail(e.into()))?;
                rustix::fs::utimensat(
                    parent,
                    target_name.as_str(),
                    &times,
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| fail(e.into()))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| unsafe_entry("the hard link has no target"))?
                    .into_owned();
                let link = String::from_utf8(link)
                    .map_err(|_| unsafe_entry("the hard link target is not UTF-8"))?;
                let link_components = normalize(&link).map_err(unsafe_entry)?;
                let Some((link_name, link_parent)) = link_components.split_last() else {
                    return Err(unsafe_entry("the hard link points at the root"));
                };
                let link_rel = link_components.join("/");
                let link_name = if matches!(written.get(&link_rel), Some(Conffile::New)) {
                    format!("{link_name}.dpkg-new")
                } else {
                    (*link_name).to_owned()
                };
                let source_dir = root.open_dir(&link_parent.join("/")).map_err(fail)?;
                let parent = parents.get(&parent_rel).map_err(fail)?;
                replace(parent, &target_name, |p, n| {
                    rustix::fs::linkat(&source_dir, link_name.as_str(), p, n, AtFlags::empty())
                })
                .map_err(fail)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let major = header.device_major().map_err(member_error)?.unwrap_or(0);
                let minor = header.device_minor().map_err(member_error)?.unwrap_or(0);
                replace(parent, &target_name, |p, n| {
                    rustix::fs::mknodat(
                        p,
                        n,
                        file_type,
                        Mode::from_raw_mode(0o600),
                        rustix::fs::makedev(major, minor),
                    )
                })
                .map_err(fail)?;
                rustix::fs::chownat(
                    parent,
                    target_name.as_str(),
                    owner.0,
                    owner.1,
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| fail(e.into()))?;
                set_node_mode(parent, &target_name, mode, &times).map_err(fail)?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {
                out.files.pop();
                out.entries -= 1;
            }
            _ => return Err(unsafe_entry("unsupported tar entry type")),
        }
        if is_conffile {
            let record = match hasher {
                _ if in_the_way => Conffile::New,
                Some(hasher) if kind == tar::EntryType::Regular => {
                    Conffile::InPlace(hex(&hasher.finalize()))
                }
                // dpkg hashes what the path resolves to; a conffile that
                // is a link is rare enough to leave to dpkg.
                _ => Conffile::New,
            };
            written.insert(rel, record);
        }
        if kind.is_dir() {
            // A directory created or replaced can change what the cached
            // parent path resolves to only if it was a symlink; be simple.
            parents.forget();
        }
    }
    out.conffiles = conffile_list
        .into_iter()
        .map(|path| {
            let hash = match written.get(path.trim_start_matches('/')) {
                Some(Conffile::InPlace(md5)) => md5.clone(),
                Some(Conffile::New) | None => "newconffile".to_owned(),
            };
            (path, hash)
        })
        .collect();
    archive.into_inner().finish().map_err(member_error)?;
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Runs `create`; if the name exists (another package's file, a previous
/// build), removes it (never a directory) and runs `create` again.
fn replace<T>(
    parent: &OwnedFd,
    name: &str,
    create: impl Fn(&OwnedFd, &str) -> rustix::io::Result<T>,
) -> io::Result<T> {
    match create(parent, name) {
        Err(Errno::EXIST) => {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())?;
            Ok(create(parent, name)?)
        }
        other => Ok(other?),
    }
}

/// Makes sure directory `name` exists in `parent`; returns whether it was
/// created. An existing symlink to a directory inside the root is kept,
/// as dpkg keeps it.
fn ensure_dir(root: &Root, parent: &OwnedFd, name: &str, rel: &str) -> io::Result<bool> {
    for _ in 0..2 {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let file_type = FileType::from_raw_mode(stat.st_mode);
                return match file_type {
                    FileType::Directory => Ok(false),
                    FileType::Symlink => {
                        // Resolved in the root: a symlink to a directory
                        // stays (merged /usr), anything else is an error.
                        root.open_dir(rel).map(|_| false)
                    }
                    _ => Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a file that is not a directory is in the way",
                    )),
                };
            }
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) => return Ok(true),
                    // Another package created it meanwhile.
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(
        "the directory changed while it was created",
    ))
}

/// Sets mode and times of a node just created by `mknodat`, through an
/// `O_PATH` descriptor so a symlink swapped in cannot redirect it.
fn set_node_mode(parent: &OwnedFd, name: &str, mode: u32, times: &Timestamps) -> io::Result<()> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
        return Err(io::Error::other("the node was replaced by a symlink"));
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    rustix::fs::chmodat(
        CWD,
        proc_path.as_str(),
        Mode::from_raw_mode(mode),
        AtFlags::empty(),
    )?;
    rustix::fs::utimensat(CWD, proc_path.as_str(), times, AtFlags::empty())?;
    Ok(())
}

fn copy(
    reader: &mut impl Read,
    file: &mut File,
    buffer: &mut [u8],
    mut hasher: Option<&mut md5::Md5>,
) -> io::Result<()> {
    loop {
        let n = match reader.read(buffer) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(&buffer[..n]);
        }
        file.write_all(&buffer[..n])?;
    }
}

pub(crate) fn timestamps(mtime: u64) -> Timestamps {
    let time = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: time,
        last_modification: time,
    }
}

/// Applies directory metadata: for each path created in this run (every
/// path if `all`), the entry of the first package (in `per_package` order)
/// that ships it. A path that is a symlink in the root (merged `/usr`) is
/// left alone.
pub(crate) fn apply_dir_metadata(
    root: &Root,
    per_package: &[&[DirMeta]],
    all: bool,
) -> Result<(), Error> {
    let created: HashSet<&str> = per_package
        .iter()
        .flat_map(|dirs| dirs.iter())
        .filter(|d| all || d.created)
        .map(|d| d.path.as_str())
        .collect();
    let mut done = HashSet::new();
    // Deepest first, so setting a parent's mtime comes after its children
    // are final.
    let mut chosen: Vec<&DirMeta> = per_package
        .iter()
        .flat_map(|dirs| dirs.iter())
        .filter(|d| created.contains(d.path.as_str()) && done.insert(d.path.as_str()))
        .collect();
    chosen.sort_by_key(|d| {
        std::cmp::Reverse(d.path.matches('/').count() + usize::from(!d.path.is_empty()))
    });
    for dir in chosen {
        let fail =
            |source: io::Error| Error::io("set metadata of", root.path().join(&dir.path), source);
        let fd = match root.open_in_root(
            &dir.path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW,
        ) {
            Ok(fd) => fd,
            // A symlink (merged `/usr`'s `bin`): `O_NOFOLLOW` refuses it
            // with `ELOOP`, or `ENOTDIR` together with `O_DIRECTORY`.
            Err(e)
                if e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
                    || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                continue;
            }
            Err(e) => return Err(fail(e)),
        };
        set_dir_metadata(&fd, dir.uid, dir.gid, dir.mode, dir.mtime).map_err(fail)?;
    }
    Ok(())
}

pub(crate) fn set_dir_metadata(
    fd: impl AsFd,
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: u64,
) -> io::Result<()> {
    rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    rustix::fs::futimens(&fd, &timestamps(mtime))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize("./usr/bin/").unwrap(), ["usr", "bin"]);
        assert_eq!(normalize("./").unwrap(), Vec::<&str>::new());
        assert_eq!(normalize("usr//./lib").unwrap(), ["usr", "lib"]);
        assert_eq!(
            normalize("./usr/../../etc").unwrap_err(),
            "`..` components are not allowed"
        );
        assert_eq!(
            normalize("/etc/passwd").unwrap_err(),
            "absolute paths are not allowed"
        );
    }
}
