//! Extent trees: where an inode's blocks are. Up to four extents sit in
//! the inode's `i_block`; more get leaf blocks of 340 extents each (and
//! index blocks above them while a level has more than four blocks),
//! each ending in its CRC32C. Leaves are packed full and the tree is as
//! shallow as it can be, which is what e2fsck checks for.

use super::checksum::crc32c;
use super::layout::BLOCK;

/// The longest initialized extent, in blocks.
pub(crate) const MAX_LEN: u64 = 32768;
/// Extents (or index entries) in a tree block.
const PER_BLOCK: usize = (BLOCK - HEADER) / ENTRY;
/// Extents (or index entries) in `i_block`.
const IN_INODE: usize = 4;
const HEADER: usize = 12;
const ENTRY: usize = 12;
const MAGIC: u16 = 0xF30A;

/// A run of blocks of a file: `len` blocks from `logical` in the file,
/// at `start` on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    /// The first block in the file.
    pub(crate) logical: u32,
    /// The first block on disk.
    pub(crate) start: u64,
    /// Blocks, at most [`MAX_LEN`].
    pub(crate) len: u32,
}

/// The tree blocks `extents` extents need, level by level from the
/// leaves up (empty when they fit into the inode).
pub(crate) fn levels(extents: usize) -> Vec<usize> {
    let mut levels = Vec::new();
    let mut entries = extents;
    while entries > IN_INODE {
        entries = entries.div_ceil(PER_BLOCK);
        levels.push(entries);
    }
    levels
}

/// The tree blocks of one inode: each block number with its bytes.
pub(crate) type TreeBlocks = Vec<(u64, Vec<u8>)>;

/// Encodes the tree of `extents` into `i_block` and, when they do not fit
/// there, into the blocks `tree` (numbered as [`levels`] counts them,
/// leaves first). `seed` is the inode's checksum seed.
pub(crate) fn encode(extents: &[Extent], tree: &[u64], seed: u32) -> ([u8; 60], TreeBlocks) {
    let mut blocks = Vec::with_capacity(tree.len());
    // (first logical block, entry bytes) of the level being built.
    let mut entries: Vec<(u32, [u8; ENTRY])> = extents
        .iter()
        .map(|e| {
            let mut b = [0u8; ENTRY];
            b[0..4].copy_from_slice(&e.logical.to_le_bytes());
            b[4..6].copy_from_slice(&(e.len as u16).to_le_bytes());
            b[6..8].copy_from_slice(&((e.start >> 32) as u16).to_le_bytes());
            b[8..12].copy_from_slice(&(e.start as u32).to_le_bytes());
            (e.logical, b)
        })
        .collect();
    let mut depth = 0u16;
    let mut next_block = tree.iter();
    while entries.len() > IN_INODE {
        let mut up = Vec::with_capacity(entries.len().div_ceil(PER_BLOCK));
        for chunk in entries.chunks(PER_BLOCK) {
            let at = *next_block
                .next()
                .expect("the planner allocates every tree block");
            let mut block = vec![0u8; BLOCK];
            header(&mut block, chunk.len(), PER_BLOCK, depth);
            for (i, (_, e)) in chunk.iter().enumerate() {
                block[HEADER + i * ENTRY..HEADER + (i + 1) * ENTRY].copy_from_slice(e);
            }
            let tail = HEADER + PER_BLOCK * ENTRY;
            let sum = crc32c(seed, &block[..tail]);
            block[tail..tail + 4].copy_from_slice(&sum.to_le_bytes());
            blocks.push((at, block));
            let mut index = [0u8; ENTRY];
            index[0..4].copy_from_slice(&chunk[0].0.to_le_bytes());
            index[4..8].copy_from_slice(&(at as u32).to_le_bytes());
            index[8..10].copy_from_slice(&((at >> 32) as u16).to_le_bytes());
            up.push((chunk[0].0, index));
        }
        entries = up;
        depth += 1;
    }
    let mut root = [0u8; 60];
    header(&mut root, entries.len(), IN_INODE, depth);
    for (i, (_, e)) in entries.iter().enumerate() {
        root[HEADER + i * ENTRY..HEADER + (i + 1) * ENTRY].copy_from_slice(e);
    }
    (root, blocks)
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    buf[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    buf[2..4].copy_from_slice(&(entries as u16).to_le_bytes());
    buf[4..6].copy_from_slice(&(max as u16).to_le_bytes());
    buf[6..8].copy_from_slice(&depth.to_le_bytes());
}

/// Cuts physically contiguous runs (`(start, len)`, in file order) into
/// extents of at most [`MAX_LEN`] blocks.
pub(crate) fn from_runs(runs: &[(u64, u64)]) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut logical = 0u64;
    for &(start, len) in runs {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_LEN);
            out.push(Extent {
                logical: logical as u32,
                start: start + done,
                len: n as u32,
            });
            done += n;
            logical += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_grow_only_past_four_entries() {
        assert!(levels(0).is_empty());
        assert!(levels(4).is_empty());
        assert_eq!(levels(5), [1]);
        assert_eq!(levels(340 * 4), [4]);
        assert_eq!(levels(340 * 4 + 1), [5, 1]);
    }

    #[test]
    fn runs_are_cut_at_the_longest_extent() {
        let e = from_runs(&[(100, 70_000), (200_000, 3)]);
        assert_eq!(
            e,
            [
                Extent {
                    logical: 0,
                    start: 100,
                    len: 32768
                },
                Extent {
                    logical: 32768,
                    start: 100 + 32768,
                    len: 32768
                },
                Extent {
                    logical: 65536,
                    start: 100 + 65536,
                    len: 70_000 - 65536
                },
                Extent {
                    logical: 70_000,
                    start: 200_000,
                    len: 3
                },
            ]
        );
    }

    #[test]
    fn a_deep_tree_uses_every_block_once() {
        let extents: Vec<Extent> = (0..2000)
            .map(|i| Extent {
                logical: i * 2,
                start: u64::from(i) * 10,
                len: 1,
            })
            .collect();
        let tree: Vec<u64> = (1000..1000 + levels(2000).iter().sum::<usize>() as u64).collect();
        let (root, blocks) = encode(&extents, &tree, 0);
        assert!(blocks.iter().all(|(_, b)| b.len() == BLOCK));
        let seen: Vec<u64> = blocks.iter().map(|(at, _)| *at).collect();
        assert_eq!(seen, tree);
        assert_eq!(u16::from_le_bytes([root[6], root[7]]), 2, "depth");
        assert_eq!(u16::from_le_bytes([root[2], root[3]]), 1, "entries");
    }
}
