//! Writes an flist: blocks into the store on a thread pool, then every
//! row of the database in one transaction on the calling thread.

#![allow(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "SQLite integers are i64: sizes, modes, device and inode numbers go through them with `as`, both ways, as rfs does"
)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rusqlite::{Connection, params};

use super::FlistOptions;
use super::block::{BLOCK_SIZE, BlockRef, encode_with, store_block};
use crate::error::Error;
use crate::squashfs::pool::run_ordered;
use crate::tree::{Node, NodeKind, Tree, open_source};
use crate::{Input, Writer};

/// What `st_size` a directory gets: what ext4 reports for a directory of
/// one block, which is what `rfs pack` copies from the trees it packs.
const DIR_SIZE: u64 = 4096;

pub(crate) struct FlistWriter {
    pub(crate) options: FlistOptions,
}

impl Writer for FlistWriter {
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
        let tree = Tree::merged(input.stack, input.epoch)?;
        if !matches!(tree.nodes.first().map(|n| &n.kind), Some(NodeKind::Dir)) {
            return Err(Error::Unsupported {
                format: "flist",
                path: String::new(),
                reason: "the root is not a directory".into(),
            });
        }
        let store = &self.options.store_dir;
        std::fs::create_dir_all(store).map_err(|e| Error::io("create", store, e))?;
        // Held until the flist naming the blocks is written: `gc_store`
        // waits for it, so it never removes a block this flist reuses.
        let _lock = super::gc::lock(store, false)?;
        let blocks = write_blocks(&tree, store, input.threads, input.cancel)?;
        // The blocks must be on disk before an flist naming them is.
        sync_store(store)?;
        write_database(&tree, &blocks, &self.options, dest)
    }
}

/// One block of one file.
struct Chunk<'a> {
    node: usize,
    source: &'a Path,
    offset: u64,
    len: usize,
}

/// A worker's state: its Snappy encoder, a buffer, the file it read last.
struct Worker {
    snappy: snap::raw::Encoder,
    buffer: Vec<u8>,
    open: Option<(usize, File)>,
}

/// Encodes every block of every file and puts it into the store; gives
/// each file node's blocks in order (empty for other nodes).
fn write_blocks(
    tree: &Tree,
    store: &Path,
    threads: usize,
    cancel: crate::Cancel<'_>,
) -> Result<Vec<Vec<BlockRef>>, Error> {
    let mut chunks = Vec::new();
    for (node, n) in tree.nodes.iter().enumerate() {
        if let NodeKind::File { size, source } = &n.kind {
            let mut offset = 0;
            while offset < *size {
                let len = (*size - offset).min(BLOCK_SIZE as u64) as usize;
                chunks.push(Chunk {
                    node,
                    source,
                    offset,
                    len,
                });
                offset += len as u64;
            }
        }
    }
    let mut blocks = vec![Vec::new(); tree.nodes.len()];
    run_ordered(
        threads,
        &chunks,
        || {
            Ok(Worker {
                snappy: snap::raw::Encoder::new(),
                buffer: vec![0; BLOCK_SIZE],
                open: None,
            })
        },
        |w, chunk| {
            crate::check(cancel)?;
            if w.open.as_ref().is_none_or(|(n, _)| *n != chunk.node) {
                w.open = Some((chunk.node, open_source(chunk.source)?));
            }
            let Some((_, file)) = &w.open else {
                unreachable!("opened above")
            };
            let buf = &mut w.buffer[..chunk.len];
            file.read_exact_at(buf, chunk.offset)
                .map_err(|e| Error::io("read", chunk.source, e))?;
            let (block, sealed) = encode_with(&mut w.snappy, buf)?;
            store_block(store, &block.id, &sealed)?;
            Ok(block)
        },
        |i, block| {
            blocks[chunks[i].node].push(block);
            Ok(())
        },
    )?;
    Ok(blocks)
}

/// Flushes the store's file system, so that no flist names a block
/// whose bytes are not on disk.
fn sync_store(store: &Path) -> Result<(), Error> {
    let dir = File::open(store).map_err(|e| Error::io("open", store, e))?;
    rustix::fs::syncfs(&dir).map_err(|e| Error::io("sync", store, e.into()))
}

/// The row values rfs records for `node`: size, rdev and link target.
fn inode_values<'a>(tree: &Tree, node: &'a Node) -> (u64, u64, Option<&'a [u8]>) {
    match &node.kind {
        NodeKind::Dir => (DIR_SIZE, 0, None),
        NodeKind::File { size, .. } => (*size, 0, None),
        NodeKind::HardLink { target } => match &tree.nodes[*target].kind {
            NodeKind::File { size, .. } => (*size, 0, None),
            _ => (0, 0, None),
        },
        NodeKind::Symlink { target } => (target.len() as u64, 0, Some(target.as_slice())),
        NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
            (0, libc::makedev(*major, *minor), None)
        }
        NodeKind::Whiteout => (0, libc::makedev(0, 0), None),
        NodeKind::Fifo | NodeKind::Socket => (0, 0, None),
    }
}

fn write_database(
    tree: &Tree,
    blocks: &[Vec<BlockRef>],
    options: &FlistOptions,
    dest: &Path,
) -> Result<(), Error> {
    let db = |action: &'static str| {
        move |source: rusqlite::Error| Error::Database {
            action,
            path: dest.to_path_buf(),
            source,
        }
    };
    let _ = std::fs::remove_file(dest);
    let mut conn = Connection::open(dest).map_err(db("create"))?;
    // Fixed before the first table exists; no journal (nothing to roll
    // back into: a failed write leaves a temporary file that is removed)
    // and no WAL, whose header bytes differ.
    conn.execute_batch(
        "PRAGMA page_size = 4096;
         PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;",
    )
    .map_err(db("create"))?;
    conn.execute_batch(super::SCHEMA)
        .map_err(db("create the tables of"))?;

    let tx = conn.transaction().map_err(db("write"))?;
    {
        // rfs writes the routes first, then the tree.
        tx.execute(
            "insert into route (start, end, url) values (?, ?, ?)",
            params![0u8, 255u8, options.store_url()],
        )
        .map_err(db("write the routes of"))?;
        let mut tag = tx
            .prepare("insert into tag (key, value) values (?, ?)")
            .map_err(db("write the tags of"))?;
        for (key, value) in &options.tags {
            tag.execute(params![key, value])
                .map_err(db("write the tags of"))?;
        }

        let mut inode = tx
            .prepare(
                "insert into inode (parent, name, size, uid, gid, mode, rdev, ctime, mtime)
                 values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .map_err(db("write the inodes of"))?;
        let mut extra = tx
            .prepare("insert into extra (ino, data) values (?, ?)")
            .map_err(db("write the inodes of"))?;
        // Inode numbers are tree indices + 1; a directory's own comes
        // before its entries', so parents are always known.
        let mut dirs: Vec<(usize, i64)> = Vec::new();
        for (i, node) in tree.nodes.iter().enumerate() {
            let ino = i as i64 + 1;
            let (parent, name) = if i == 0 {
                (0, "/")
            } else {
                let parent_path = node.parent_path();
                while let Some(&(d, _)) = dirs.last() {
                    if tree.nodes[d].path == parent_path {
                        break;
                    }
                    dirs.pop();
                }
                (dirs.last().map_or(1, |&(_, p)| p), node.name())
            };
            let (size, rdev, target) = inode_values(tree, node);
            inode
                .execute(params![
                    parent,
                    name,
                    size as i64,
                    node.uid,
                    node.gid,
                    node.st_mode(),
                    rdev as i64,
                    node.mtime,
                    node.mtime,
                ])
                .map_err(db("write the inodes of"))?;
            debug_assert_eq!(tx.last_insert_rowid(), ino);
            if let Some(target) = target {
                extra
                    .execute(params![ino, target])
                    .map_err(db("write the inodes of"))?;
            }
            if matches!(node.kind, NodeKind::Dir) {
                dirs.push((i, ino));
            }
        }

        let mut block = tx
            .prepare("insert into block (ino, id, key) values (?, ?, ?)")
            .map_err(db("write the blocks of"))?;
        for (i, node) in tree.nodes.iter().enumerate() {
            let own = match node.kind {
                NodeKind::HardLink { target } => &blocks[target],
                _ => &blocks[i],
            };
            for b in own {
                block
                    .execute(params![i as i64 + 1, &b.id[..], &b.key[..]])
                    .map_err(db("write the blocks of"))?;
            }
        }
    }
    tx.commit().map_err(db("write"))?;
    conn.close().map_err(|(_, e)| db("close")(e))
}
