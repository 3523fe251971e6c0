//! The data section: every regular file's blocks, compressed on several
//! threads and written in tree order, then the fragment blocks that pack
//! the files' tail ends.
//!
//! Files with the same content are stored once (found by the blake3 of
//! their blocks). Tails are packed ordered by the layer their file comes
//! from, then by path, so a child variant's image has the same fragment
//! blocks as its parent's wherever only the child's layer changed — and
//! the block cache turns those into copies. Where a block ends depends
//! on content too (a tail whose hash hits [`CUT_ONE_IN`] ends it), so a
//! file the child replaces or deletes in a lower layer changes only the
//! fragment blocks up to the next such cut, not every block after it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Output;
use super::cache::{BlockCache, Encoded};
use super::compressor::{Codec, Encoder};
use super::pool::run_ordered;
use crate::error::Error;
use crate::tree::{NodeKind, Tree, open_source};

/// The size word bit of a block stored uncompressed.
pub(crate) const BLOCK_UNCOMPRESSED: u32 = 1 << 24;

/// On average one tail in this many ends its fragment block, whatever
/// room is left: often enough that packing falls back in step soon after
/// a change, rarely enough that blocks stay mostly full (most end because
/// the next tail does not fit).
const CUT_ONE_IN: u32 = 64;

/// Where a regular file's content is.
#[derive(Debug, Clone, Default)]
pub(crate) struct FileData {
    /// The absolute offset of its first block.
    pub(crate) blocks_start: u64,
    /// The size word of each full block (0: a sparse block of zeros).
    pub(crate) sizes: Vec<u32>,
    /// Its tail: the fragment block and the offset in it.
    pub(crate) fragment: Option<(u32, u32)>,
    /// Bytes of zero blocks not stored.
    pub(crate) sparse: u64,
}

/// The data section as written.
#[derive(Debug)]
pub(crate) struct DataSection {
    /// Indexed by node: the content of each [`NodeKind::File`].
    pub(crate) files: Vec<Option<FileData>>,
    /// Each fragment block's offset and size word.
    pub(crate) fragments: Vec<(u64, u32)>,
}

/// What the threads share.
pub(crate) struct DataJob<'a> {
    pub(crate) tree: &'a Tree,
    pub(crate) layers: &'a [PathBuf],
    pub(crate) codec: Codec,
    pub(crate) block_size: u32,
    pub(crate) cache: Option<&'a BlockCache>,
    pub(crate) threads: usize,
    pub(crate) cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

/// A piece of a file one thread reads: a full block or the tail.
struct Unit {
    node: usize,
    offset: u64,
    len: usize,
    tail: bool,
    last: bool,
}

/// A file's tail end, waiting to be packed.
struct Tail {
    layer: usize,
    node: usize,
    hash: blake3::Hash,
    bytes: Vec<u8>,
}

enum Outcome {
    Sparse(blake3::Hash),
    Block(blake3::Hash, Vec<u8>, bool),
    Tail(blake3::Hash, Vec<u8>),
}

struct WorkerState {
    enc: Encoder,
    open: Option<(usize, File)>,
}

enum Slot {
    Own(FileData),
    Same(usize),
}

/// The file being collected.
struct Current {
    start: u64,
    sizes: Vec<u32>,
    sparse: u64,
    identity: blake3::Hasher,
}

impl DataJob<'_> {
    /// Writes the data section at `out`'s position.
    pub(crate) fn write(&self, out: &mut Output) -> Result<DataSection, Error> {
        let bs = u64::from(self.block_size);
        let mut units = Vec::new();
        let mut slots: Vec<Option<Slot>> = Vec::with_capacity(self.tree.nodes.len());
        for (node, n) in self.tree.nodes.iter().enumerate() {
            let NodeKind::File { size, .. } = n.kind else {
                slots.push(None);
                continue;
            };
            slots.push(Some(Slot::Own(FileData::default())));
            let (full, tail) = (size / bs, size % bs);
            for b in 0..full {
                units.push(Unit {
                    node,
                    offset: b * bs,
                    len: self.block_size as usize,
                    tail: false,
                    last: b + 1 == full && tail == 0,
                });
            }
            if tail > 0 {
                units.push(Unit {
                    node,
                    offset: full * bs,
                    len: tail as usize,
                    tail: true,
                    last: true,
                });
            }
        }

        let mut seen: HashMap<blake3::Hash, usize> = HashMap::new();
        let mut tails: Vec<Tail> = Vec::new();
        let mut current: Option<Current> = None;
        run_ordered(
            self.threads,
            &units,
            || {
                Ok(WorkerState {
                    enc: self.codec.encoder()?,
                    open: None,
                })
            },
            |state, unit| self.read_unit(state, unit),
            |i, outcome| {
                if self
                    .cancel
                    .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
                {
                    return Err(Error::Cancelled);
                }
                let unit = &units[i];
                let cur = current.get_or_insert_with(|| Current {
                    start: out.pos(),
                    sizes: Vec::new(),
                    sparse: 0,
                    identity: file_identity(self.tree, unit.node),
                });
                let mut tail = None;
                match outcome {
                    Outcome::Sparse(hash) => {
                        cur.sizes.push(0);
                        cur.sparse += unit.len as u64;
                        cur.identity.update(hash.as_bytes());
                    }
                    Outcome::Block(hash, bytes, compressed) => {
                        out.write(&bytes)?;
                        let flag = if compressed { 0 } else { BLOCK_UNCOMPRESSED };
                        cur.sizes.push(bytes.len() as u32 | flag);
                        cur.identity.update(hash.as_bytes());
                    }
                    Outcome::Tail(hash, bytes) => {
                        cur.identity.update(hash.as_bytes());
                        tail = Some((hash, bytes));
                    }
                }
                if !unit.last {
                    return Ok(());
                }
                let Some(cur) = current.take() else {
                    return Ok(());
                };
                let id = cur.identity.finalize();
                if let Some(&first) = seen.get(&id) {
                    // Stored already: drop what this copy wrote.
                    out.rewind(cur.start)?;
                    slots[unit.node] = Some(Slot::Same(first));
                    return Ok(());
                }
                seen.insert(id, unit.node);
                slots[unit.node] = Some(Slot::Own(FileData {
                    blocks_start: cur.start,
                    sizes: cur.sizes,
                    fragment: None,
                    sparse: cur.sparse,
                }));
                if let Some((hash, bytes)) = tail {
                    tails.push(Tail {
                        layer: self.layer_of(unit.node),
                        node: unit.node,
                        hash,
                        bytes,
                    });
                }
                Ok(())
            },
        )?;

        let fragments = self.write_fragments(out, tails, &mut slots)?;
        let files = slots
            .iter()
            .map(|s| match s {
                None => None,
                Some(Slot::Own(d)) => Some(d.clone()),
                Some(Slot::Same(first)) => match &slots[*first] {
                    Some(Slot::Own(d)) => Some(d.clone()),
                    _ => None,
                },
            })
            .collect();
        Ok(DataSection { files, fragments })
    }

    /// Packs the tails into fragment blocks, by layer then path, and
    /// writes them.
    fn write_fragments(
        &self,
        out: &mut Output,
        mut tails: Vec<Tail>,
        slots: &mut [Option<Slot>],
    ) -> Result<Vec<(u64, u32)>, Error> {
        let nodes = &self.tree.nodes;
        tails.sort_by(|a, b| {
            (a.layer, Path::new(&nodes[a.node].path))
                .cmp(&(b.layer, Path::new(&nodes[b.node].path)))
        });
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        let mut block: Vec<u8> = Vec::new();
        let mut layer = 0;
        for tail in tails {
            // Layers never share a block: a child's own files cannot
            // disturb the last block of its parent's.
            let full = block.len() + tail.bytes.len() > self.block_size as usize;
            if !block.is_empty() && (full || tail.layer != layer) {
                blocks.push(std::mem::take(&mut block));
            }
            layer = tail.layer;
            if let Some(Some(Slot::Own(d))) = slots.get_mut(tail.node) {
                d.fragment = Some((blocks.len() as u32, block.len() as u32));
            }
            block.extend_from_slice(&tail.bytes);
            let h = tail.hash.as_bytes();
            if u32::from_le_bytes([h[0], h[1], h[2], h[3]]) % CUT_ONE_IN == 0 {
                blocks.push(std::mem::take(&mut block));
            }
        }
        if !block.is_empty() {
            blocks.push(block);
        }
        let mut entries = Vec::with_capacity(blocks.len());
        run_ordered(
            self.threads,
            &blocks,
            || self.codec.encoder(),
            |enc, raw| encode(enc, self.cache, &blake3::hash(raw), raw),
            |i, encoded| {
                let at = out.pos();
                let size = match encoded {
                    Encoded::Compressed(c) => {
                        out.write(&c)?;
                        c.len() as u32
                    }
                    Encoded::Raw => {
                        out.write(&blocks[i])?;
                        blocks[i].len() as u32 | BLOCK_UNCOMPRESSED
                    }
                };
                entries.push((at, size));
                Ok(())
            },
        )?;
        Ok(entries)
    }

    fn read_unit(&self, state: &mut WorkerState, unit: &Unit) -> Result<Outcome, Error> {
        let NodeKind::File { source, .. } = &self.tree.nodes[unit.node].kind else {
            return Err(Error::Compress {
                compressor: "squashfs",
                reason: "a data block of a node that is not a file".into(),
            });
        };
        let file = match &state.open {
            Some((n, f)) if *n == unit.node => f,
            _ => &state.open.insert((unit.node, open_source(source)?)).1,
        };
        let mut raw = vec![0u8; unit.len];
        file.read_exact_at(&mut raw, unit.offset).map_err(|e| {
            let e = if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(e.kind(), "the file shrank while it was being read")
            } else {
                e
            };
            Error::io("read", source, e)
        })?;
        let hash = blake3::hash(&raw);
        if unit.tail {
            return Ok(Outcome::Tail(hash, raw));
        }
        if raw.iter().all(|&b| b == 0) {
            return Ok(Outcome::Sparse(hash));
        }
        Ok(match encode(&mut state.enc, self.cache, &hash, &raw)? {
            Encoded::Compressed(c) => Outcome::Block(hash, c, true),
            Encoded::Raw => Outcome::Block(hash, raw, false),
        })
    }

    /// The index of the layer `node`'s content comes from (the topmost
    /// layer folder its source is in).
    fn layer_of(&self, node: usize) -> usize {
        let NodeKind::File { source, .. } = &self.tree.nodes[node].kind else {
            return 0;
        };
        self.layers
            .iter()
            .rposition(|l| source.starts_with(l))
            .unwrap_or(0)
    }
}

/// A file's identity starts with its size; its blocks' hashes follow.
fn file_identity(tree: &Tree, node: usize) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    if let NodeKind::File { size, .. } = tree.nodes[node].kind {
        h.update(&size.to_le_bytes());
    }
    h
}

/// `raw` compressed, from the cache when it holds it.
fn encode(
    enc: &mut Encoder,
    cache: Option<&BlockCache>,
    hash: &blake3::Hash,
    raw: &[u8],
) -> Result<Encoded, Error> {
    let key = cache.map(|c| c.key(hash));
    if let (Some(c), Some(key)) = (cache, &key) {
        match c.get(key) {
            Some(Encoded::Compressed(b)) if b.len() < raw.len() => {
                return Ok(Encoded::Compressed(b));
            }
            Some(Encoded::Raw) => return Ok(Encoded::Raw),
            _ => {}
        }
    }
    let encoded = match enc.compress(raw)? {
        Some(c) => Encoded::Compressed(c),
        None => Encoded::Raw,
    };
    if let (Some(c), Some(key)) = (cache, &key) {
        c.put(key, &encoded)?;
    }
    Ok(encoded)
}
