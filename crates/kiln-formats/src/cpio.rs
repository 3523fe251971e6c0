//! `cpio.gz`, `cpio.zst` (the full root) and `overlay.cpio.gz` (the
//! variant's own layer), in the "new ASCII" (`newc`) format the kernel
//! unpacks as an initramfs.
//!
//! - Names have no `./` prefix (the root is `.`), in tree order, so a
//!   directory comes before its content.
//! - Inode numbers count up from 1 in tree order; every name of a hard
//!   link shares its inode number and link count, and the content goes
//!   with the first name (later names have size 0), which the kernel and
//!   GNU cpio both restore as links.
//! - mtimes are clamped to the epoch (and to newc's 32-bit field);
//!   device numbers are kept. newc has no xattrs: file capabilities and
//!   other xattrs are not stored (the kernel's initramfs cannot set them
//!   either).
//! - `overlay.cpio.gz` holds the layer's whiteouts as character devices
//!   0:0, as overlayfs writes them in an upper directory. An opaque
//!   directory (which needs an xattr) becomes explicit whiteouts for
//!   every name the parent's root has there, so the archive unpacked into
//!   an empty upper directory over the parent gives the child's root.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use kiln_layers::LayerStack;

use crate::compress::{Compression, Counting, compressed};
use crate::error::Error;
use crate::tar::copy_content;
use crate::tree::{NodeKind, Tree};
use crate::{Input, Writer};

pub(crate) struct CpioWriter {
    pub(crate) compression: Compression,
    pub(crate) overlay: bool,
}

impl Writer for CpioWriter {
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
        let tree = if self.overlay {
            let layers = &input.stack.layers;
            let layer = Tree::layer(input.stack, input.epoch)?;
            if layers.len() < 2 {
                layer
            } else {
                let parent = LayerStack::new(layers[..layers.len() - 1].to_vec());
                layer.with_explicit_whiteouts(&Tree::merged(&parent, input.epoch)?)
            }
        } else {
            Tree::merged(input.stack, input.epoch)?
        };
        let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
        let out = compressed(
            BufWriter::with_capacity(1 << 20, file),
            self.compression,
            input.threads,
        )
        .map_err(|e| Error::io("write", dest, e))?;
        let mut w = Counting { inner: out, n: 0 };
        let wr = |e: io::Error| Error::io("write", dest, e);
        let links = tree.link_counts();
        let mut inos = vec![0u32; tree.nodes.len()];
        let mut next_ino = 1u32;
        for (i, node) in tree.nodes.iter().enumerate() {
            let (ino, nlink, size, rdev) = match &node.kind {
                NodeKind::HardLink { target } => (inos[*target], links[*target], 0, (0, 0)),
                NodeKind::File { size, .. } => (next_ino, links[i], *size, (0, 0)),
                NodeKind::Symlink { target } => (next_ino, 1, target.len() as u64, (0, 0)),
                NodeKind::Dir => (next_ino, 2, 0, (0, 0)),
                NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                    (next_ino, 1, 0, (*major, *minor))
                }
                NodeKind::Fifo | NodeKind::Socket | NodeKind::Whiteout => (next_ino, 1, 0, (0, 0)),
            };
            if ino == next_ino {
                next_ino += 1;
            }
            inos[i] = ino;
            if size > u64::from(u32::MAX) {
                return Err(Error::Unsupported {
                    format: "cpio",
                    path: node.path.clone(),
                    reason: format!("{size} bytes is more than newc's 4 GiB limit"),
                });
            }
            let name = if node.path.is_empty() {
                "."
            } else {
                node.path.as_str()
            };
            let mtime = u32::try_from(node.mtime.max(0)).unwrap_or(u32::MAX);
            write_header(
                &mut w,
                &Header {
                    ino,
                    mode: node.st_mode(),
                    uid: node.uid,
                    gid: node.gid,
                    nlink,
                    mtime,
                    size: size as u32,
                    rdev,
                },
                name.as_bytes(),
            )
            .map_err(wr)?;
            match &node.kind {
                NodeKind::File { size, source } => {
                    copy_content(source, *size, &mut w, dest, input.cancel)?;
                }
                NodeKind::Symlink { target } => w.write_all(target).map_err(wr)?,
                _ => {}
            }
            pad4(&mut w).map_err(wr)?;
        }
        write_header(&mut w, &TRAILER, b"TRAILER!!!").map_err(wr)?;
        // Pad to 512 bytes as cpio does; the kernel skips zeros between
        // archives.
        let rest = (512 - w.n % 512) % 512;
        w.write_all(&vec![0u8; rest as usize]).map_err(wr)?;
        w.inner.finish().map_err(wr)
    }
}

/// The header of the archive's last entry, `TRAILER!!!`.
const TRAILER: Header = Header {
    ino: 0,
    mode: 0,
    uid: 0,
    gid: 0,
    nlink: 1,
    mtime: 0,
    size: 0,
    rdev: (0, 0),
};

struct Header {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
}

fn write_header(w: &mut Counting, h: &Header, name: &[u8]) -> io::Result<()> {
    let head = format!(
        "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.size,
        0,
        0,
        h.rdev.0,
        h.rdev.1,
        name.len() + 1,
        0
    );
    w.write_all(head.as_bytes())?;
    w.write_all(name)?;
    w.write_all(&[0])?;
    pad4(w)
}

fn pad4(w: &mut Counting) -> io::Result<()> {
    let rest = (4 - w.n % 4) % 4;
    w.write_all(&[0u8; 4][..rest as usize])
}

/// One entry of [`small_cpio_gz`].
#[derive(Debug, Clone)]
pub enum SmallEntry {
    /// A directory with its mode.
    Dir(String, u32),
    /// A file with its mode and bytes.
    File(String, u32, Vec<u8>),
    /// A symbolic link and its target.
    Symlink(String, String),
}

/// A gzip-compressed newc archive of a few entries, owned by root, dated
/// `mtime`: what `kiln test` adds to a netboot guest as one more overlay.
/// Parents come before their content as listed.
pub fn small_cpio_gz(entries: &[SmallEntry], mtime: u32, dest: &Path) -> io::Result<()> {
    let file = File::create(dest)?;
    let mut w = Counting {
        inner: compressed(file, Compression::Gzip { level: 9 }, 1)?,
        n: 0,
    };
    for (i, entry) in entries.iter().enumerate() {
        let (name, mode, body): (&str, u32, &[u8]) = match entry {
            SmallEntry::Dir(name, mode) => (name, 0o040_000 | mode, &[]),
            SmallEntry::File(name, mode, bytes) => (name, 0o100_000 | mode, bytes),
            SmallEntry::Symlink(name, target) => (name, 0o120_777, target.as_bytes()),
        };
        let size = u32::try_from(body.len()).map_err(io::Error::other)?;
        let header = Header {
            ino: u32::try_from(i + 1).unwrap_or(u32::MAX),
            mode,
            uid: 0,
            gid: 0,
            nlink: if matches!(entry, SmallEntry::Dir(..)) {
                2
            } else {
                1
            },
            mtime,
            size,
            rdev: (0, 0),
        };
        write_header(&mut w, &header, name.as_bytes())?;
        w.write_all(body)?;
        pad4(&mut w)?;
    }
    write_header(&mut w, &TRAILER, b"TRAILER!!!")?;
    w.inner.finish()
}
