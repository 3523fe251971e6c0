//! `ext4`: raw ext4 filesystem images of the full root, written natively
//! — no mkfs, no mount, no copy of the root — and the same bytes for the
//! same tree, options, epoch and seed on any machine.
//!
//! The filesystem is what `mkfs.ext4 -b 4096 -O ^resize_inode` on Debian
//! bookworm makes of the same size: 4 KiB blocks, 256-byte inodes with
//! 32 extra bytes, `has_journal ext_attr dir_index filetype extent 64bit
//! flex_bg sparse_super large_file huge_file dir_nlink extra_isize
//! metadata_csum` (CRC32C), 16 groups to a flex group, mke2fs's inode
//! count for the size (one per 4 KiB below 512 MiB, per 16 KiB below
//! 4 TiB, …) and its 5 % reserved for root. Its journal is inode 8, as
//! large as mke2fs makes it for the size, a clean jbd2 v2 superblock and
//! zeros. The root is inode 2 and lost+found (four blocks, as mke2fs
//! preallocates it) inode 11; the tree's entries follow from inode 12 in
//! tree order. Files are contiguous extents allocated in tree order;
//! directories are linear; xattrs go into the inode while they fit, then
//! into one EA block shared by identical sets; POSIX ACLs are stored in
//! ext4's own format. Every timestamp is the node's clamped mtime, and
//! the superblock's the epoch; the UUID and the directory hash seed are
//! derived from [`Input::seed`] (BLAKE3 key derivation, version-4 bits
//! set), so nothing is random.
//!
//! The image is created at its full size (sparse) — or is a range of a
//! file already that size, the root partition of a `disk` artifact,
//! written in place through [`Planned::write_into`] rather than copied
//! there — and only blocks that hold something are written, through one
//! large buffer: the metadata
//! first, then the content streamed from the layers in allocation order
//! (holes of large source files are skipped, not read: every block of a
//! file is allocated, whatever holes its layer has, so the bytes do not
//! depend on them). One thread does it all: copying from the page cache
//! is the work, and `Input::threads` is not used.
//!
//! Modules: `layout` (geometry), `size` (auto and fixed sizes), `plan`
//! (inode numbers, allocation), `image` (the writing pass), `output`
//! (the sparse, buffered file), `superblock` (superblock, descriptors,
//! bitmaps), `inode`, `extent`, `dir`, `xattr`, `journal`, `checksum`.

mod checksum;
mod dir;
mod extent;
mod image;
mod inode;
mod journal;
mod layout;
mod output;
mod plan;
mod size;
mod superblock;
mod xattr;

use std::fs::File;
use std::path::Path;

use crate::error::Error;
use crate::tree::Tree;
use crate::{Input, Writer};

/// Options of an ext4 image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ext4Options {
    /// A fixed size in bytes; `None` for `auto`: what the root uses
    /// (content, metadata and journal) plus the headroom, rounded up to a
    /// whole MiB.
    pub size: Option<u64>,
    /// Free space added to the content with `auto` (`None`: a quarter of
    /// what the root uses, at least 64 MiB).
    pub headroom: Option<u64>,
    /// The filesystem label, at most 16 bytes.
    pub label: Option<String>,
}

impl Ext4Options {
    pub(crate) fn identity(&self) -> String {
        format!(
            "v1 size={:?} headroom={:?} label={:?}",
            self.size, self.headroom, self.label
        )
    }

    /// The label as the superblock holds it.
    fn label_bytes(&self) -> Result<[u8; 16], Error> {
        let mut out = [0u8; 16];
        if let Some(label) = &self.label {
            if label.len() > out.len() {
                return Err(Error::Options {
                    format: "ext4",
                    reason: format!(
                        "the label `{label}` has {} bytes, more than the 16 ext4 stores",
                        label.len()
                    ),
                });
            }
            out[..label.len()].copy_from_slice(label.as_bytes());
        }
        Ok(out)
    }
}

pub(crate) struct Ext4Writer {
    pub(crate) options: Ext4Options,
}

impl Writer for Ext4Writer {
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
        let tree = Tree::merged(input.stack, input.epoch)?;
        let fs = Planned::new(&tree, &self.options, input.seed, input.epoch)?;
        let file = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
        file.set_len(fs.len())
            .map_err(|e| Error::io("write", dest, e))?;
        fs.write_into(&file, dest, 0, input.cancel)
    }
}

/// The ext4 filesystem of a tree, planned and sized but not written:
/// [`Planned::len`] is known before a byte is, so a disk can be laid out
/// around it and the filesystem written straight into its partition.
#[derive(Debug)]
pub(crate) struct Planned<'t> {
    prep: plan::Prepared<'t>,
    plan: plan::Plan,
    len: u64,
    id: image::Identity,
}

impl<'t> Planned<'t> {
    /// Plans the filesystem of `tree` as `options` size and label it,
    /// its UUID and hash seed derived from `seed`, its times `epoch`.
    pub(crate) fn new(
        tree: &'t Tree,
        options: &Ext4Options,
        seed: &[u8],
        epoch: i64,
    ) -> Result<Self, Error> {
        let label = options.label_bytes()?;
        let prep = plan::Prepared::new(tree)?;
        let (plan, len) = match options.size {
            Some(size) => (size::fixed(&prep, size)?, size),
            None => size::auto(&prep, options.headroom, true)?,
        };
        let id = image::Identity {
            uuid: derived_uuid(seed, "filesystem UUID"),
            hash_seed: derived_uuid(seed, "directory hash seed"),
            label,
            epoch,
        };
        Ok(Self {
            prep,
            plan,
            len,
            id,
        })
    }

    /// Its size in bytes: the fixed size asked for, or `auto`'s.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Writes it into `file` (`path` in errors) from `offset` on, over
    /// [`Planned::len`] bytes that must read as zeros (a file just
    /// created at its full size): zero blocks are not written.
    pub(crate) fn write_into(
        &self,
        file: &File,
        path: &Path,
        offset: u64,
        cancel: crate::Cancel<'_>,
    ) -> Result<(), Error> {
        image::write(&self.prep, &self.plan, &self.id, file, path, offset, cancel)
    }
}

/// A version-4 UUID derived from the variant's seed: BLAKE3 in key
/// derivation mode, one context per use.
fn derived_uuid(seed: &[u8], what: &str) -> [u8; 16] {
    let mut h = blake3::Hasher::new_derive_key(&format!("kiln ext4 v1 {what}"));
    h.update(seed);
    let mut u = [0u8; 16];
    u.copy_from_slice(&h.finalize().as_bytes()[..16]);
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    u
}
