//! Reading a layer tree: its content digest, its size on disk and its entry
//! count, in one walk.
//!
//! The content digest is BLAKE3 over a canonical, length-prefixed encoding,
//! versioned by [`DOMAIN`]: every entry, sorted by its relative path's bytes
//! (the root is the empty path), with its file type, permission bits
//! (including setuid, setgid and sticky), owner, group and extended
//! attributes sorted by name (`trusted.overlay.*`, `security.capability`,
//! ACLs: all of them), then by type: a regular file's size and the BLAKE3 of
//! its content, a symlink's target, a device's major and minor numbers (an
//! overlayfs whiteout is a character device 0:0). Entries that share an
//! inode (hard links) also record the first path of their link group.
//!
//! Deliberately left out: timestamps (the writers clamp them to the epoch,
//! and a digest that saw them would differ for a tree copied without them),
//! inode numbers, directory sizes and read order, and where the tree is. Run
//! as non-root, `trusted.*` attributes cannot be listed and so are not seen.
//!
//! This module reads and never changes a tree.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::digest::ContentDigest;
use crate::error::Error;

/// The domain string that starts every content digest's encoding; a change
/// to the encoding changes it.
pub const DOMAIN: &str = "kiln layer content digest v1";

/// Regular files at most this many are hashed on the calling thread.
const PARALLEL_THRESHOLD: usize = 32;

/// What one walk of a tree found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TreeScan {
    pub(crate) digest: ContentDigest,
    /// Allocated bytes (`st_blocks * 512`), every inode counted once.
    pub(crate) size: u64,
    /// Entries below the root, of any type.
    pub(crate) files: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory = 1,
    Regular = 2,
    Symlink = 3,
    CharDevice = 4,
    BlockDevice = 5,
    Fifo = 6,
    Socket = 7,
}

struct Entry {
    rel: Vec<u8>,
    path: PathBuf,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: u64,
    ino: u64,
    blocks: u64,
    target: Vec<u8>,
    xattrs: Vec<Xattr>,
}

/// An extended attribute: name and value.
type Xattr = (Vec<u8>, Vec<u8>);

/// The content digest of the tree at `tree` (see the module docs for what it
/// covers). Deterministic: independent of creation order, timestamps and the
/// tree's location.
pub fn content_digest(tree: &Path) -> Result<ContentDigest, Error> {
    scan(tree).map(|s| s.digest)
}

/// Walks `root` once: digest, size and entry count.
pub(crate) fn scan(root: &Path) -> Result<TreeScan, Error> {
    let mut entries = walk(root)?;
    entries.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));

    // Link groups: every non-directory inode with more than one name in the
    // tree is recorded by its first path (in sorted order).
    let mut first_of_inode: HashMap<u64, usize> = HashMap::new();
    let mut names_of_inode: HashMap<u64, usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.kind != Kind::Directory {
            first_of_inode.entry(e.ino).or_insert(i);
            *names_of_inode.entry(e.ino).or_insert(0) += 1;
        }
    }

    // Each regular inode's content is read once.
    let to_hash: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| e.kind == Kind::Regular && first_of_inode[&e.ino] == *i)
        .map(|(i, _)| i)
        .collect();
    let hashes = hash_files(&entries, &to_hash)?;
    let content_of: HashMap<u64, [u8; 32]> = to_hash
        .iter()
        .zip(hashes)
        .map(|(&i, h)| (entries[i].ino, h))
        .collect();

    let mut enc = Encoder::new();
    enc.bytes(DOMAIN.as_bytes());
    let mut size = 0u64;
    for (i, e) in entries.iter().enumerate() {
        enc.bytes(&e.rel);
        enc.u8(e.kind as u8);
        enc.u32(e.mode & 0o7777);
        enc.u32(e.uid);
        enc.u32(e.gid);
        match e.kind {
            Kind::Regular => {
                enc.u64(e.size);
                enc.raw(&content_of[&e.ino]);
            }
            Kind::Symlink => enc.bytes(&e.target),
            Kind::CharDevice | Kind::BlockDevice => {
                enc.u32(rustix::fs::major(e.rdev));
                enc.u32(rustix::fs::minor(e.rdev));
            }
            Kind::Directory | Kind::Fifo | Kind::Socket => {}
        }
        if e.kind == Kind::Directory || names_of_inode[&e.ino] == 1 {
            enc.u8(0);
        } else {
            enc.u8(1);
            enc.bytes(&entries[first_of_inode[&e.ino]].rel);
        }
        enc.u64(e.xattrs.len() as u64);
        for (name, value) in &e.xattrs {
            enc.bytes(name);
            enc.bytes(value);
        }
        let counted_before = e.kind != Kind::Directory && first_of_inode[&e.ino] != i;
        if !counted_before {
            size += e.blocks * 512;
        }
    }
    enc.u64(entries.len() as u64);
    Ok(TreeScan {
        digest: ContentDigest(*enc.hasher.finalize().as_bytes()),
        size,
        files: entries.len() as u64 - 1,
    })
}

/// Allocated bytes of a tree, every inode counted once; unreadable parts
/// count as empty. For directories that are no complete layer.
pub(crate) fn disk_usage(root: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir() {
            if let Ok(children) = std::fs::read_dir(&path) {
                stack.extend(children.flatten().map(|c| c.path()));
            }
        }
    }
    total
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::ReadTree {
        path: path.to_owned(),
        source,
    }
}

fn walk(root: &Path) -> Result<Vec<Entry>, Error> {
    let root_meta = std::fs::symlink_metadata(root).map_err(read_err(root))?;
    if !root_meta.is_dir() {
        return Err(Error::NotADirectory {
            path: root.to_owned(),
        });
    }
    let dev = root_meta.dev();
    let mut entries = vec![entry(root, Vec::new(), &root_meta)?];
    let mut dirs = vec![0usize];
    while let Some(d) = dirs.pop() {
        let dir_path = entries[d].path.clone();
        let dir_rel = entries[d].rel.clone();
        let children = std::fs::read_dir(&dir_path).map_err(read_err(&dir_path))?;
        for child in children {
            let child = child.map_err(read_err(&dir_path))?;
            let path = child.path();
            let meta = std::fs::symlink_metadata(&path).map_err(read_err(&path))?;
            if meta.dev() != dev {
                return Err(Error::MountPoint { path });
            }
            let mut rel = dir_rel.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(child.file_name().as_bytes());
            let e = entry(&path, rel, &meta)?;
            if e.kind == Kind::Directory {
                dirs.push(entries.len());
            }
            entries.push(e);
        }
    }
    Ok(entries)
}

fn entry(path: &Path, rel: Vec<u8>, meta: &std::fs::Metadata) -> Result<Entry, Error> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Directory
    } else if ft.is_file() {
        Kind::Regular
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::CharDevice
    } else if ft.is_block_device() {
        Kind::BlockDevice
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let target = if kind == Kind::Symlink {
        std::fs::read_link(path)
            .map_err(read_err(path))?
            .into_os_string()
            .into_vec()
    } else {
        Vec::new()
    };
    Ok(Entry {
        xattrs: xattrs(path)?,
        rel,
        path: path.to_owned(),
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        rdev: meta.rdev(),
        ino: meta.ino(),
        blocks: meta.blocks(),
        target,
    })
}

/// All extended attributes of `path` (not following a final symlink),
/// sorted by name.
fn xattrs(path: &Path) -> Result<Vec<Xattr>, Error> {
    use rustix::io::Errno;
    let unsupported = |e: Errno| e == Errno::NOTSUP || e == Errno::OPNOTSUPP;
    let names = loop {
        let len = match rustix::fs::llistxattr_query(path) {
            Ok(len) => len,
            Err(e) if unsupported(e) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(path)(e.into())),
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; len];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            // The list grew between the two calls.
            Err(Errno::RANGE) => {}
            Err(e) => return Err(read_err(path)(e.into())),
        }
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name_os = OsStr::from_bytes(name);
        let value = loop {
            let len = match rustix::fs::lgetxattr_query(path, name_os) {
                Ok(len) => len,
                // Removed between the two calls.
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(read_err(path)(e.into())),
            };
            let mut buf = vec![0u8; len];
            match rustix::fs::lgetxattr(path, name_os, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    break Some(buf);
                }
                Err(Errno::RANGE) => {}
                Err(Errno::NODATA) => break None,
                Err(e) => return Err(read_err(path)(e.into())),
            }
        };
        if let Some(value) = value {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// BLAKE3 of each `entries[i]` for `i` in `which`, in that order; on several
/// threads when there are many.
fn hash_files(entries: &[Entry], which: &[usize]) -> Result<Vec<[u8; 32]>, Error> {
    if which.len() <= PARALLEL_THRESHOLD {
        return which.iter().map(|&i| hash_file(&entries[i].path)).collect();
    }
    // rayon stops starting work at the first error.
    which
        .par_iter()
        .map(|&i| hash_file(&entries[i].path))
        .collect()
}

fn hash_file(path: &Path) -> Result<[u8; 32], Error> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| read_err(path)(e.into()))?;
    let mut file = std::fs::File::from(fd);
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(read_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// A canonical, length-prefixed encoder feeding BLAKE3.
struct Encoder {
    hasher: blake3::Hasher,
}

impl Encoder {
    fn new() -> Self {
        Self {
            hasher: blake3::Hasher::new(),
        }
    }

    fn raw(&mut self, b: &[u8]) {
        self.hasher.update(b);
    }

    fn u8(&mut self, v: u8) {
        self.raw(&[v]);
    }

    fn u32(&mut self, v: u32) {
        self.raw(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.raw(b);
    }
}
