//! The inode and directory tables, and the uid/gid table they index.
//!
//! Inodes are written as mksquashfs writes them: a directory's entries
//! first (a subdirectory's whole content before the subdirectory's own
//! inode), then the directory's listing, then its inode, so every
//! reference points backwards and is known when written. Inode numbers
//! follow the same order; the root comes last. Extended inodes are used
//! only where the basic ones cannot say it (xattrs, more than one link,
//! large or sparse files, big or indexed directories).

use std::collections::HashMap;

use super::compressor::Encoder;
use super::data::DataSection;
use super::metadata::{METADATA_SIZE, MetaRef, MetadataWriter};
use crate::error::Error;
use crate::tree::{Node, NodeKind, Tree};

/// "No xattrs" and "no fragment".
const NONE: u32 = u32::MAX;
const DIR_HEADER_SIZE: usize = 12;
const DIR_ENTRY_SIZE: usize = 8;
/// Entries one directory header may cover.
const MAX_HEADER_ENTRIES: usize = 256;

/// The uids and gids of a tree, each stored once; inodes hold indices.
#[derive(Debug)]
pub(crate) struct IdTable {
    pub(crate) ids: Vec<u32>,
    index: HashMap<u32, u16>,
}

impl IdTable {
    pub(crate) fn new(tree: &Tree) -> Result<Self, Error> {
        let mut ids: Vec<u32> = tree.nodes.iter().flat_map(|n| [n.uid, n.gid]).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > usize::from(u16::MAX) {
            return Err(Error::Unsupported {
                format: "squashfs",
                path: String::new(),
                reason: format!("{} distinct uids and gids (at most 65535)", ids.len()),
            });
        }
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u16))
            .collect();
        Ok(Self { ids, index })
    }

    fn of(&self, id: u32) -> u16 {
        self.index.get(&id).copied().unwrap_or(0)
    }
}

/// The two tables, compressed, and what the superblock needs of them.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) inodes: Vec<u8>,
    pub(crate) dirs: Vec<u8>,
    pub(crate) root: MetaRef,
    pub(crate) inode_count: u32,
}

/// One directory index entry: where a header run starts.
struct IndexEntry {
    /// Its offset in the listing.
    offset: usize,
    /// The directory table block it is in.
    block: u32,
    /// The run's first name.
    name: Vec<u8>,
}

struct Builder<'a> {
    tree: &'a Tree,
    children: Vec<Vec<usize>>,
    links: Vec<u32>,
    numbers: Vec<u32>,
    refs: Vec<MetaRef>,
    data: &'a DataSection,
    ids: &'a IdTable,
    xattrs: &'a [Option<u32>],
    block_size: u32,
    inodes: MetadataWriter,
    dirs: MetadataWriter,
    count: u32,
}

pub(crate) fn build(
    tree: &Tree,
    data: &DataSection,
    ids: &IdTable,
    xattrs: &[Option<u32>],
    block_size: u32,
    enc: &mut Encoder,
) -> Result<Tables, Error> {
    let mut b = Builder {
        tree,
        children: tree.children(),
        links: tree.link_counts(),
        numbers: vec![0; tree.nodes.len()],
        refs: vec![
            MetaRef {
                block: 0,
                offset: 0
            };
            tree.nodes.len()
        ],
        data,
        ids,
        xattrs,
        block_size,
        inodes: MetadataWriter::new(),
        dirs: MetadataWriter::new(),
        count: 0,
    };
    b.number(0)?;
    // The root's parent is one past the last inode, as in mksquashfs.
    let root_parent = b.count + 1;
    b.write_dir(0, root_parent, enc)?;
    let (inodes, _) = b.inodes.finish(enc)?;
    let (dirs, _) = b.dirs.finish(enc)?;
    Ok(Tables {
        inodes,
        dirs,
        root: b.refs[0],
        inode_count: b.count,
    })
}

impl Builder<'_> {
    /// Numbers the inodes in the order they will be written.
    fn number(&mut self, dir: usize) -> Result<(), Error> {
        for i in 0..self.children[dir].len() {
            let c = self.children[dir][i];
            match self.tree.nodes[c].kind {
                NodeKind::Dir => self.number(c)?,
                NodeKind::HardLink { target } => self.numbers[c] = self.numbers[target],
                _ => self.numbers[c] = self.next()?,
            }
        }
        self.numbers[dir] = self.next()?;
        Ok(())
    }

    fn next(&mut self) -> Result<u32, Error> {
        self.count = self.count.checked_add(1).ok_or_else(|| Error::TooLarge {
            format: "squashfs",
            reason: "more than 2^32 inodes".into(),
        })?;
        Ok(self.count)
    }

    /// Writes `dir`'s content, listing and inode; `parent` is the
    /// number of the directory holding it.
    fn write_dir(&mut self, dir: usize, parent: u32, enc: &mut Encoder) -> Result<(), Error> {
        for i in 0..self.children[dir].len() {
            let c = self.children[dir][i];
            match self.tree.nodes[c].kind {
                NodeKind::Dir => self.write_dir(c, self.numbers[dir], enc)?,
                NodeKind::HardLink { target } => self.refs[c] = self.refs[target],
                _ => {
                    self.refs[c] = self.inodes.position()?;
                    let bytes = self.inode(c)?;
                    self.inodes.write(enc, &bytes)?;
                }
            }
        }
        let (listing, size, index) = self.write_listing(dir, enc)?;
        self.refs[dir] = self.inodes.position()?;
        let bytes = self.dir_inode(dir, listing, size, parent, &index)?;
        self.inodes.write(enc, &bytes)
    }

    /// Writes `dir`'s entries to the directory table: runs under headers,
    /// a new run (and an index entry) whenever the listing enters a new
    /// metadata block, so a lookup can skip to the right block.
    fn write_listing(
        &mut self,
        dir: usize,
        enc: &mut Encoder,
    ) -> Result<(MetaRef, usize, Vec<IndexEntry>), Error> {
        let nodes = &self.tree.nodes;
        let mut entries: Vec<usize> = self.children[dir].clone();
        entries.sort_by(|&a, &b| nodes[a].name().as_bytes().cmp(nodes[b].name().as_bytes()));
        let start = self.dirs.position()?;
        let first = self.dirs.uncompressed_len();
        let mut index = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let here = self.dirs.uncompressed_len();
            let block = here / METADATA_SIZE;
            let base = entries[i];
            let (inode_block, base_number) = (self.refs[base].block, self.numbers[base]);
            let mut end = i;
            let mut at = here + DIR_HEADER_SIZE;
            while end < entries.len() && end - i < MAX_HEADER_ENTRIES {
                let e = entries[end];
                let delta = i64::from(self.numbers[e]) - i64::from(base_number);
                let same_block = end == i || at / METADATA_SIZE == block;
                if self.refs[e].block != inode_block || i16::try_from(delta).is_err() || !same_block
                {
                    break;
                }
                at += DIR_ENTRY_SIZE + nodes[e].name().len();
                end += 1;
            }
            let header_at = self.dirs.position()?;
            let last_indexed = first + index.last().map_or(0, |e: &IndexEntry| e.offset);
            if here != first && block != last_indexed / METADATA_SIZE {
                index.push(IndexEntry {
                    offset: here - first,
                    block: header_at.block,
                    name: nodes[base].name().as_bytes().to_vec(),
                });
            }
            let mut run = Vec::with_capacity(at - here);
            run.extend_from_slice(&((end - i - 1) as u32).to_le_bytes());
            run.extend_from_slice(&inode_block.to_le_bytes());
            run.extend_from_slice(&base_number.to_le_bytes());
            for &e in &entries[i..end] {
                let name = nodes[e].name().as_bytes();
                if name.is_empty() || name.len() > 256 {
                    return Err(Error::Unsupported {
                        format: "squashfs",
                        path: nodes[e].path.clone(),
                        reason: "a name must have 1 to 256 bytes".into(),
                    });
                }
                let delta = (i64::from(self.numbers[e]) - i64::from(base_number)) as i16;
                run.extend_from_slice(&self.refs[e].offset.to_le_bytes());
                run.extend_from_slice(&delta.to_le_bytes());
                run.extend_from_slice(&basic_type(&nodes[e].kind).to_le_bytes());
                run.extend_from_slice(&(name.len() as u16 - 1).to_le_bytes());
                run.extend_from_slice(name);
            }
            self.dirs.write(enc, &run)?;
            i = end;
        }
        Ok((start, self.dirs.uncompressed_len() - first, index))
    }

    fn header(&self, node: usize, kind: u16) -> Vec<u8> {
        let n = &self.tree.nodes[node];
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&kind.to_le_bytes());
        b.extend_from_slice(&((n.mode & 0o7777) as u16).to_le_bytes());
        b.extend_from_slice(&self.ids.of(n.uid).to_le_bytes());
        b.extend_from_slice(&self.ids.of(n.gid).to_le_bytes());
        b.extend_from_slice(&super::seconds(n.mtime).to_le_bytes());
        b.extend_from_slice(&self.numbers[node].to_le_bytes());
        b
    }

    fn dir_inode(
        &self,
        dir: usize,
        listing: MetaRef,
        size: usize,
        parent: u32,
        index: &[IndexEntry],
    ) -> Result<Vec<u8>, Error> {
        let node = &self.tree.nodes[dir];
        let subdirs = self.children[dir]
            .iter()
            .filter(|&&c| matches!(self.tree.nodes[c].kind, NodeKind::Dir))
            .count() as u32;
        let nlink = 2 + subdirs;
        // `.` and `..` count for 3 bytes, as in squashfs-tools.
        let file_size = u32::try_from(size + 3).map_err(|_| too_large(node))?;
        let xattr = self.xattrs[dir];
        let index_count = u16::try_from(index.len()).map_err(|_| too_large(node))?;
        if xattr.is_none() && index.is_empty() && u16::try_from(file_size).is_ok() {
            let mut b = self.header(dir, 1);
            b.extend_from_slice(&listing.block.to_le_bytes());
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(&(file_size as u16).to_le_bytes());
            b.extend_from_slice(&listing.offset.to_le_bytes());
            b.extend_from_slice(&parent.to_le_bytes());
            return Ok(b);
        }
        let mut b = self.header(dir, 8);
        b.extend_from_slice(&nlink.to_le_bytes());
        b.extend_from_slice(&file_size.to_le_bytes());
        b.extend_from_slice(&listing.block.to_le_bytes());
        b.extend_from_slice(&parent.to_le_bytes());
        b.extend_from_slice(&index_count.to_le_bytes());
        b.extend_from_slice(&listing.offset.to_le_bytes());
        b.extend_from_slice(&xattr.unwrap_or(NONE).to_le_bytes());
        for e in index {
            b.extend_from_slice(&(e.offset as u32).to_le_bytes());
            b.extend_from_slice(&e.block.to_le_bytes());
            b.extend_from_slice(&(e.name.len() as u32 - 1).to_le_bytes());
            b.extend_from_slice(&e.name);
        }
        Ok(b)
    }

    fn inode(&self, i: usize) -> Result<Vec<u8>, Error> {
        let node = &self.tree.nodes[i];
        let xattr = self.xattrs[i];
        let ext = xattr.is_some();
        let x = xattr.unwrap_or(NONE).to_le_bytes();
        let b = match &node.kind {
            NodeKind::File { size, .. } => return self.file_inode(i, *size),
            NodeKind::Symlink { target } => {
                let mut b = self.header(i, if ext { 10 } else { 3 });
                let len = u32::try_from(target.len()).map_err(|_| too_large(node))?;
                b.extend_from_slice(&1u32.to_le_bytes());
                b.extend_from_slice(&len.to_le_bytes());
                b.extend_from_slice(target);
                if ext {
                    b.extend_from_slice(&x);
                }
                b
            }
            NodeKind::CharDevice { .. } | NodeKind::BlockDevice { .. } | NodeKind::Whiteout => {
                let (major, minor, basic) = match node.kind {
                    NodeKind::CharDevice { major, minor } => (major, minor, 5),
                    NodeKind::BlockDevice { major, minor } => (major, minor, 4),
                    _ => (0, 0, 5),
                };
                let mut b = self.header(i, if ext { basic + 7 } else { basic });
                b.extend_from_slice(&1u32.to_le_bytes());
                // The kernel's "new" dev_t encoding.
                let rdev = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
                b.extend_from_slice(&rdev.to_le_bytes());
                if ext {
                    b.extend_from_slice(&x);
                }
                b
            }
            NodeKind::Fifo | NodeKind::Socket => {
                let basic = if matches!(node.kind, NodeKind::Fifo) {
                    6
                } else {
                    7
                };
                let mut b = self.header(i, if ext { basic + 7 } else { basic });
                b.extend_from_slice(&1u32.to_le_bytes());
                if ext {
                    b.extend_from_slice(&x);
                }
                b
            }
            NodeKind::Dir | NodeKind::HardLink { .. } => {
                return Err(Error::Unsupported {
                    format: "squashfs",
                    path: node.path.clone(),
                    reason: "written as a directory or a link, not an inode of its own".into(),
                });
            }
        };
        Ok(b)
    }

    fn file_inode(&self, i: usize, size: u64) -> Result<Vec<u8>, Error> {
        let node = &self.tree.nodes[i];
        let empty = super::data::FileData::default();
        let data = self.data.files[i].as_ref().unwrap_or(&empty);
        let (frag, frag_offset) = data.fragment.unwrap_or((NONE, 0));
        let full = size / u64::from(self.block_size);
        if data.sizes.len() as u64 != full {
            return Err(Error::Unsupported {
                format: "squashfs",
                path: node.path.clone(),
                reason: "its blocks do not match its size".into(),
            });
        }
        let nlink = self.links[i];
        let xattr = self.xattrs[i];
        let basic = xattr.is_none()
            && nlink == 1
            && data.sparse == 0
            && u32::try_from(size).is_ok()
            && u32::try_from(data.blocks_start).is_ok();
        let mut b;
        if basic {
            b = self.header(i, 2);
            b.extend_from_slice(&(data.blocks_start as u32).to_le_bytes());
            b.extend_from_slice(&frag.to_le_bytes());
            b.extend_from_slice(&frag_offset.to_le_bytes());
            b.extend_from_slice(&(size as u32).to_le_bytes());
        } else {
            b = self.header(i, 9);
            b.extend_from_slice(&data.blocks_start.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            b.extend_from_slice(&data.sparse.to_le_bytes());
            b.extend_from_slice(&nlink.to_le_bytes());
            b.extend_from_slice(&frag.to_le_bytes());
            b.extend_from_slice(&frag_offset.to_le_bytes());
            b.extend_from_slice(&xattr.unwrap_or(NONE).to_le_bytes());
        }
        for s in &data.sizes {
            b.extend_from_slice(&s.to_le_bytes());
        }
        Ok(b)
    }
}

fn basic_type(kind: &NodeKind) -> u16 {
    match kind {
        NodeKind::Dir => 1,
        NodeKind::File { .. } | NodeKind::HardLink { .. } => 2,
        NodeKind::Symlink { .. } => 3,
        NodeKind::BlockDevice { .. } => 4,
        NodeKind::CharDevice { .. } | NodeKind::Whiteout => 5,
        NodeKind::Fifo => 6,
        NodeKind::Socket => 7,
    }
}

fn too_large(node: &Node) -> Error {
    Error::Unsupported {
        format: "squashfs",
        path: node.path.clone(),
        reason: "it is too large for squashfs".into(),
    }
}
