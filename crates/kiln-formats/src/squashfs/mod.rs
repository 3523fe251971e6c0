//! `squashfs` and `overlay.squashfs`: `SquashFS` 4.0 images as the kernel
//! and squashfs-tools read them, written natively.
//!
//! The image is laid out as mksquashfs lays it out: the superblock, the
//! compressor options, the data blocks of every file in tree order, the
//! fragment blocks, then the inode, directory, fragment, id and xattr
//! tables. Data and fragment blocks are compressed on `Input::threads`
//! threads and kept in the block cache under `Input::cache_dir`; all
//! the rest is small and written on one thread. Nothing depends on
//! timing or thread count, so the same tree gives the same bytes.
//!
//! Modules: `compressor` (codecs), `pool` (ordered parallel map),
//! `cache` (compressed blocks on disk), `data` (file content and
//! fragments), `metadata` (8 KiB metadata blocks), `inode` (inode,
//! directory and id tables), `xattr` (the xattr table).

mod cache;
mod compressor;
mod data;
mod inode;
mod metadata;
pub(crate) mod pool;
mod xattr;

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use cache::BlockCache;
use compressor::Codec;
use data::DataJob;
use metadata::indexed_table;

use crate::error::Error;
use crate::tree::{NodeKind, Tree};
use crate::{Input, Writer};

/// The compressor of a squashfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SquashfsCompression {
    /// Zstandard (the default).
    Zstd,
    /// XZ.
    Xz,
    /// Gzip (zlib).
    Gzip,
    /// LZ4.
    Lz4,
}

/// Options of a squashfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquashfsOptions {
    /// The compressor.
    pub compression: SquashfsCompression,
    /// Its level (`None`: the compressor's default as mksquashfs uses it).
    pub level: Option<i32>,
    /// The data block size, a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        Self {
            compression: SquashfsCompression::Zstd,
            level: None,
            block_size: 128 * 1024,
        }
    }
}

impl SquashfsOptions {
    pub(crate) fn identity(&self) -> String {
        format!(
            "v1 {:?} level={:?} block={}",
            self.compression, self.level, self.block_size
        )
    }
}

pub(crate) struct SquashfsWriter {
    pub(crate) options: SquashfsOptions,
    pub(crate) overlay: bool,
}

const MAGIC: u32 = 0x7371_7368;
const SUPERBLOCK_SIZE: usize = 96;
/// Images are padded to this, as mksquashfs does, for loop devices.
const PAD: u64 = 4096;
const NO_TABLE: u64 = u64::MAX;
/// Superblock flags.
const ALWAYS_FRAGMENTS: u16 = 0x0020;
const DUPLICATES: u16 = 0x0040;
const COMPRESSOR_OPTIONS: u16 = 0x0400;

impl Writer for SquashfsWriter {
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
        let codec = Codec::new(&self.options)?;
        let tree = if self.overlay {
            Tree::layer(input.stack, input.epoch)?
        } else {
            Tree::merged(input.stack, input.epoch)?
        };
        if !matches!(tree.nodes.first().map(|n| &n.kind), Some(NodeKind::Dir)) {
            return Err(Error::Unsupported {
                format: "squashfs",
                path: String::new(),
                reason: "the root is not a directory".into(),
            });
        }
        let cache = input
            .cache_dir
            .map(|dir| BlockCache::new(dir, codec.identity()));
        let mut out = Output::create(dest)?;
        out.write(&[0; SUPERBLOCK_SIZE])?;
        let mut flags = ALWAYS_FRAGMENTS | DUPLICATES;
        let mut enc = codec.encoder()?;
        if let Some(record) = codec.options_record() {
            // A metadata block, stored uncompressed as mksquashfs does.
            flags |= COMPRESSOR_OPTIONS;
            out.write(&(record.len() as u16 | 0x8000).to_le_bytes())?;
            out.write(&record)?;
        }

        let data = DataJob {
            tree: &tree,
            layers: &input.stack.layers,
            codec,
            block_size: self.options.block_size,
            cache: cache.as_ref(),
            threads: input.threads,
            cancel: input.cancel,
        }
        .write(&mut out)?;

        let ids = inode::IdTable::new(&tree)?;
        let xattrs = xattr::Xattrs::new(&tree, &mut enc)?;
        let tables = inode::build(
            &tree,
            &data,
            &ids,
            &xattrs.ids,
            self.options.block_size,
            &mut enc,
        )?;
        let inode_table_start = out.pos();
        out.write(&tables.inodes)?;
        let directory_table_start = out.pos();
        out.write(&tables.dirs)?;

        let mut fragments = Vec::with_capacity(data.fragments.len() * 16);
        for &(start, size) in &data.fragments {
            fragments.extend_from_slice(&start.to_le_bytes());
            fragments.extend_from_slice(&size.to_le_bytes());
            fragments.extend_from_slice(&0u32.to_le_bytes());
        }
        let (bytes, fragment_table_start) = indexed_table(&mut enc, &fragments, out.pos())?;
        out.write(&bytes)?;

        let id_entries: Vec<u8> = ids.ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        let (bytes, id_table_start) = indexed_table(&mut enc, &id_entries, out.pos())?;
        out.write(&bytes)?;

        let xattr_table_start = if xattrs.is_empty() {
            NO_TABLE
        } else {
            let (bytes, start) = xattrs.finish(&mut enc, out.pos())?;
            out.write(&bytes)?;
            start
        };

        let bytes_used = out.pos();
        let padded = bytes_used.div_ceil(PAD) * PAD;
        out.write(&vec![0; (padded - bytes_used) as usize])?;

        let fragment_count = u32::try_from(data.fragments.len()).map_err(|_| Error::TooLarge {
            format: "squashfs",
            reason: "more than 2^32 fragment blocks".into(),
        })?;
        let mut sb = Vec::with_capacity(SUPERBLOCK_SIZE);
        sb.extend_from_slice(&MAGIC.to_le_bytes());
        sb.extend_from_slice(&tables.inode_count.to_le_bytes());
        sb.extend_from_slice(&seconds(input.epoch).to_le_bytes());
        sb.extend_from_slice(&self.options.block_size.to_le_bytes());
        sb.extend_from_slice(&fragment_count.to_le_bytes());
        sb.extend_from_slice(&codec.id().to_le_bytes());
        sb.extend_from_slice(&(self.options.block_size.trailing_zeros() as u16).to_le_bytes());
        sb.extend_from_slice(&flags.to_le_bytes());
        sb.extend_from_slice(&(ids.ids.len() as u16).to_le_bytes());
        sb.extend_from_slice(&4u16.to_le_bytes());
        sb.extend_from_slice(&0u16.to_le_bytes());
        sb.extend_from_slice(&tables.root.packed().to_le_bytes());
        sb.extend_from_slice(&bytes_used.to_le_bytes());
        sb.extend_from_slice(&id_table_start.to_le_bytes());
        sb.extend_from_slice(&xattr_table_start.to_le_bytes());
        sb.extend_from_slice(&inode_table_start.to_le_bytes());
        sb.extend_from_slice(&directory_table_start.to_le_bytes());
        sb.extend_from_slice(&fragment_table_start.to_le_bytes());
        // No export table: images are not NFS-exported.
        sb.extend_from_slice(&NO_TABLE.to_le_bytes());
        out.rewind(0)?;
        out.write(&sb)?;
        out.finish(padded)
    }
}

/// A time as squashfs stores it: unsigned 32-bit seconds, clamped.
pub(crate) fn seconds(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// The image file: a buffered writer that knows its position and can go
/// back (to drop a duplicate file's blocks, to fill in the superblock).
pub(crate) struct Output {
    file: BufWriter<File>,
    pos: u64,
    path: PathBuf,
}

impl Output {
    fn create(path: &Path) -> Result<Self, Error> {
        let file = File::create(path).map_err(|e| Error::io("create", path, e))?;
        Ok(Self {
            file: BufWriter::with_capacity(1 << 20, file),
            pos: 0,
            path: path.to_path_buf(),
        })
    }

    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Continues writing at `pos`; what follows is overwritten.
    pub(crate) fn rewind(&mut self, pos: u64) -> Result<(), Error> {
        self.file
            .seek(SeekFrom::Start(pos))
            .map_err(|e| Error::io("seek in", &self.path, e))?;
        self.pos = pos;
        Ok(())
    }

    /// Flushes and cuts the file at `len` (bytes of a dropped duplicate
    /// may lie past the end).
    fn finish(mut self, len: u64) -> Result<(), Error> {
        self.file
            .flush()
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.file
            .get_ref()
            .set_len(len)
            .map_err(|e| Error::io("write", &self.path, e))
    }
}
