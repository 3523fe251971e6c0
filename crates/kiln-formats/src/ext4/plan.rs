//! The plan: every inode's number, link count and blocks, decided before
//! a byte is written, so the image is a function of the tree alone.
//!
//! [`Prepared`] is what does not depend on the geometry: inode numbers
//! (root 2, lost+found 11, then 12… in tree order, hard links sharing
//! their file's), link counts, how many blocks each node's content takes,
//! where its xattrs go. [`Plan`] places it all in a [`Geometry`]: one
//! cursor hands out blocks in order — the journal, the root directory,
//! lost+found, then each node's EA block, content and extent tree blocks
//! in tree order — so every file is contiguous but where group metadata
//! interrupts it, and the used blocks of every group are a prefix.

use std::collections::HashMap;

use super::dir;
use super::extent::{self, Extent};
use super::layout::{BLOCK_SIZE, FIRST_INODE, Geometry, group_start};
use super::xattr::{self, Attr};
use crate::error::Error;
use crate::tree::{NodeKind, Tree};

/// The root directory's inode.
pub(crate) const ROOT_INODE: u32 = 2;
/// lost+found's inode.
pub(crate) const LOST_FOUND_INODE: u32 = FIRST_INODE;
/// Blocks mke2fs gives lost+found, so e2fsck can reconnect files
/// without allocating.
pub(crate) const LOST_FOUND_BLOCKS: u64 = 4;
/// `EXT4_LINK_MAX`: more names than this a file cannot have; a
/// directory with more subdirectories counts 1 (`dir_nlink`).
const MAX_LINKS: u32 = 65_000;
/// Targets shorter than this live in the inode.
pub(crate) const FAST_SYMLINK: usize = 60;
/// The longest target (one block, less the terminating zero the kernel
/// allows for).
const MAX_SYMLINK: usize = 4095;
/// Logical block numbers are 32-bit.
const MAX_FILE_BLOCKS: u64 = u32::MAX as u64;

/// An EA block and the inodes that share it.
#[derive(Debug)]
pub(crate) struct EaBlock {
    /// What it holds.
    pub(crate) attrs: Vec<Attr>,
    /// How many inodes point at it.
    pub(crate) refcount: u32,
    /// The first node that does (where it is allocated).
    pub(crate) first: usize,
}

/// What the geometry does not change.
#[derive(Debug)]
pub(crate) struct Prepared<'t> {
    pub(crate) tree: &'t Tree,
    /// Per node: its entries.
    pub(crate) children: Vec<Vec<usize>>,
    /// Per node: its directory.
    pub(crate) parent: Vec<usize>,
    /// Per node: its inode.
    pub(crate) ino: Vec<u32>,
    /// Per node: `i_links_count`.
    pub(crate) links: Vec<u16>,
    /// Per node: the blocks of its content (0 for hard links).
    pub(crate) blocks: Vec<u64>,
    /// Per node: its in-inode xattr area (empty for none).
    pub(crate) ibody: Vec<Vec<u8>>,
    /// Per node: its EA block (an index into `ea_blocks`).
    pub(crate) ea: Vec<Option<usize>>,
    pub(crate) ea_blocks: Vec<EaBlock>,
    /// The tree's own `/lost+found`, if it has one.
    pub(crate) own_lost_found: Option<usize>,
    /// The highest inode in use.
    pub(crate) last_ino: u32,
}

impl<'t> Prepared<'t> {
    pub(crate) fn new(tree: &'t Tree) -> Result<Self, Error> {
        let unsupported = |path: &str, reason: String| Error::Unsupported {
            format: "ext4",
            path: path.to_owned(),
            reason,
        };
        let nodes = &tree.nodes;
        if !matches!(nodes.first().map(|n| &n.kind), Some(NodeKind::Dir)) {
            return Err(unsupported("", "the root is not a directory".into()));
        }
        let children = tree.children();
        let mut parent = vec![0; nodes.len()];
        for (p, kids) in children.iter().enumerate() {
            for &c in kids {
                parent[c] = p;
            }
        }
        let own_lost_found = children[0]
            .iter()
            .copied()
            .find(|&c| nodes[c].name() == "lost+found");
        if let Some(l) = own_lost_found
            && nodes[l].kind != NodeKind::Dir
        {
            return Err(unsupported(
                "lost+found",
                "it is not a directory, and ext4 keeps its lost+found there".into(),
            ));
        }

        let mut ino = vec![0u32; nodes.len()];
        let mut next = FIRST_INODE + 1;
        for (i, node) in nodes.iter().enumerate() {
            ino[i] = match node.kind {
                _ if i == 0 => ROOT_INODE,
                _ if Some(i) == own_lost_found => LOST_FOUND_INODE,
                NodeKind::HardLink { target } => ino[target],
                _ => {
                    let n = next;
                    next = next
                        .checked_add(1)
                        .ok_or_else(|| unsupported(&node.path, "more than 2^32 inodes".into()))?;
                    n
                }
            };
        }

        let names = tree.link_counts();
        let mut links = vec![1u16; nodes.len()];
        let mut blocks = vec![0u64; nodes.len()];
        let mut ibody = Vec::with_capacity(nodes.len());
        let mut ea = vec![None; nodes.len()];
        let mut ea_blocks: Vec<EaBlock> = Vec::new();
        // Blocks with room for more users, by content.
        let mut shared: HashMap<Vec<Attr>, usize> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            if node.name().len() > 255 {
                return Err(unsupported(
                    &node.path,
                    "the name is longer than 255 bytes".into(),
                ));
            }
            match &node.kind {
                NodeKind::Dir => {
                    let synthetic = i == 0 && own_lost_found.is_none();
                    let subdirs = children[i]
                        .iter()
                        .filter(|&&c| nodes[c].kind == NodeKind::Dir)
                        .count() as u32
                        + u32::from(synthetic);
                    links[i] = if subdirs + 2 > MAX_LINKS {
                        1
                    } else {
                        (subdirs + 2) as u16
                    };
                    let lens = children[i].iter().map(|&c| nodes[c].name().len());
                    blocks[i] = if synthetic {
                        dir::block_count(std::iter::once("lost+found".len()).chain(lens))
                    } else {
                        dir::block_count(lens)
                    };
                    if Some(i) == own_lost_found {
                        blocks[i] = blocks[i].max(LOST_FOUND_BLOCKS);
                    }
                }
                NodeKind::File { size, .. } => {
                    let n = size.div_ceil(BLOCK_SIZE);
                    if n > MAX_FILE_BLOCKS {
                        return Err(unsupported(
                            &node.path,
                            format!("it has {size} bytes, more than an ext4 file can (16 TiB)"),
                        ));
                    }
                    if names[i] > MAX_LINKS {
                        return Err(unsupported(
                            &node.path,
                            format!("it has {} names, more than ext4 counts", names[i]),
                        ));
                    }
                    blocks[i] = n;
                    links[i] = names[i] as u16;
                }
                NodeKind::Symlink { target } => {
                    if target.len() > MAX_SYMLINK {
                        return Err(unsupported(
                            &node.path,
                            "the link target is longer than 4095 bytes".into(),
                        ));
                    }
                    blocks[i] = u64::from(target.len() >= FAST_SYMLINK);
                }
                _ => {}
            }
            if matches!(node.kind, NodeKind::HardLink { .. }) {
                ibody.push(Vec::new());
                continue;
            }
            let split = xattr::split(node)?;
            ibody.push(split.ibody);
            if split.block.is_empty() {
                continue;
            }
            let at = match shared.get(&split.block) {
                Some(&b) => b,
                None => {
                    ea_blocks.push(EaBlock {
                        attrs: split.block.clone(),
                        refcount: 0,
                        first: i,
                    });
                    shared.insert(split.block, ea_blocks.len() - 1);
                    ea_blocks.len() - 1
                }
            };
            let b = &mut ea_blocks[at];
            b.refcount += 1;
            if b.refcount == xattr::MAX_REFCOUNT {
                shared.retain(|_, v| *v != at);
            }
            ea[i] = Some(at);
        }
        Ok(Self {
            tree,
            children,
            parent,
            ino,
            links,
            blocks,
            ibody,
            ea,
            ea_blocks,
            own_lost_found,
            last_ino: next - 1,
        })
    }

    /// Blocks of content, EA blocks and lost+found: a lower bound of
    /// what an image of this tree uses besides metadata and journal.
    pub(crate) fn content_blocks(&self) -> u64 {
        self.blocks.iter().sum::<u64>() + self.ea_blocks.len() as u64 + LOST_FOUND_BLOCKS
    }
}

/// Where an inode's blocks are.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    /// Its content, in file order.
    pub(crate) extents: Vec<Extent>,
    /// Its extent tree blocks, leaves first.
    pub(crate) tree: Vec<u64>,
}

impl Placement {
    /// Blocks it owns.
    pub(crate) fn blocks(&self) -> u64 {
        self.extents.iter().map(|e| u64::from(e.len)).sum::<u64>() + self.tree.len() as u64
    }
}

/// Everything placed in a geometry.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) geo: Geometry,
    pub(crate) journal: Placement,
    /// lost+found's blocks when the tree has none of its own.
    pub(crate) lost_found: Placement,
    /// Per node.
    pub(crate) nodes: Vec<Placement>,
    /// Per EA block: where it is.
    pub(crate) ea_at: Vec<u64>,
    /// The group allocation stopped in, and the next free block there.
    end_group: u32,
    end_block: u64,
}

impl Plan {
    /// Places `prep` in `geo`; `None` if it does not fit.
    pub(crate) fn new(prep: &Prepared<'_>, geo: Geometry) -> Option<Self> {
        let mut cur = Cursor {
            geo: &geo,
            group: 0,
            next: geo.data_start(0),
        };
        let journal = cur.place(u64::from(geo.journal_blocks))?;
        let mut nodes = Vec::with_capacity(prep.blocks.len());
        let mut ea_at = vec![0; prep.ea_blocks.len()];
        let mut lost_found = Placement::default();
        for (i, &blocks) in prep.blocks.iter().enumerate() {
            if let Some(e) = prep.ea[i]
                && prep.ea_blocks[e].first == i
            {
                ea_at[e] = cur.place(1)?.extents[0].start;
            }
            nodes.push(cur.place(blocks)?);
            if i == 0 && prep.own_lost_found.is_none() {
                lost_found = cur.place(LOST_FOUND_BLOCKS)?;
            }
        }
        let (end_group, end_block) = (cur.group, cur.next);
        Some(Self {
            geo,
            journal,
            lost_found,
            nodes,
            ea_at,
            end_group,
            end_block,
        })
    }

    /// Blocks of group `g` in use: its metadata and what was allocated.
    pub(crate) fn used_in(&self, g: u32) -> u64 {
        let geo = &self.geo;
        let start = geo.data_start(g);
        let allocated = match g.cmp(&self.end_group) {
            std::cmp::Ordering::Less => geo.group_end(g) - start,
            std::cmp::Ordering::Equal => self.end_block - start,
            std::cmp::Ordering::Greater => 0,
        };
        start - group_start(g) + allocated
    }

    /// Blocks in use in the whole filesystem.
    pub(crate) fn used(&self) -> u64 {
        (0..self.geo.groups).map(|g| self.used_in(g)).sum()
    }
}

/// Hands out blocks in order, skipping group metadata.
struct Cursor<'g> {
    geo: &'g Geometry,
    group: u32,
    next: u64,
}

impl Cursor<'_> {
    /// `n` blocks as runs of contiguous blocks; `None` when full.
    fn take(&mut self, mut n: u64) -> Option<Vec<(u64, u64)>> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        while n > 0 {
            let end = self.geo.group_end(self.group);
            if self.next >= end {
                if self.group + 1 >= self.geo.groups {
                    return None;
                }
                self.group += 1;
                self.next = self.geo.data_start(self.group);
                continue;
            }
            let k = n.min(end - self.next);
            match runs.last_mut() {
                Some((start, len)) if *start + *len == self.next => *len += k,
                _ => runs.push((self.next, k)),
            }
            self.next += k;
            n -= k;
        }
        Some(runs)
    }

    /// `n` blocks of content and the extent tree blocks they need.
    fn place(&mut self, n: u64) -> Option<Placement> {
        if n == 0 {
            return Some(Placement::default());
        }
        let extents = extent::from_runs(&self.take(n)?);
        let tree_blocks: usize = extent::levels(extents.len()).iter().sum();
        let tree = self
            .take(tree_blocks as u64)?
            .into_iter()
            .flat_map(|(start, len)| start..start + len)
            .collect();
        Some(Placement { extents, tree })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::tree::Node;

    fn node(path: &str, kind: NodeKind) -> Node {
        Node {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Vec::new(),
        }
    }

    fn file(path: &str, size: u64) -> Node {
        node(
            path,
            NodeKind::File {
                size,
                source: PathBuf::from("/nonexistent"),
            },
        )
    }

    fn tree(nodes: Vec<Node>) -> Tree {
        let mut all = vec![node("", NodeKind::Dir)];
        all.extend(nodes);
        Tree { nodes: all }
    }

    fn refusal(tree: &Tree) -> (String, String) {
        match Prepared::new(tree) {
            Err(Error::Unsupported { path, reason, .. }) => (path, reason),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn inodes_follow_tree_order_and_links_share_them() {
        let t = tree(vec![
            node("a", NodeKind::Dir),
            file("a/f", 10),
            node("a/g", NodeKind::HardLink { target: 2 }),
            node("b", NodeKind::Dir),
            node("b/link", NodeKind::HardLink { target: 2 }),
        ]);
        let p = Prepared::new(&t).unwrap();
        assert_eq!(p.ino, [2, 12, 13, 13, 14, 13]);
        assert_eq!(p.links[2], 3);
        // The root: `.`, its own `..`, a, b and lost+found.
        assert_eq!(p.links[0], 5);
        assert_eq!(p.last_ino, 14);
        assert_eq!(p.blocks, [1, 1, 1, 0, 1, 0]);
    }

    #[test]
    fn the_trees_own_lost_found_is_inode_11() {
        let t = tree(vec![
            node("a", NodeKind::Dir),
            node("lost+found", NodeKind::Dir),
            file("lost+found/x", 1),
        ]);
        let p = Prepared::new(&t).unwrap();
        assert_eq!(p.ino, [2, 12, 11, 13]);
        assert_eq!(p.blocks[2], LOST_FOUND_BLOCKS);
        let t = tree(vec![file("lost+found", 1)]);
        assert_eq!(refusal(&t).0, "lost+found");
    }

    #[test]
    fn a_directory_with_too_many_subdirectories_counts_one_link() {
        let t = tree(
            (0..65_000)
                .map(|i| node(&format!("{i:05}"), NodeKind::Dir))
                .collect(),
        );
        assert_eq!(Prepared::new(&t).unwrap().links[0], 1);
        let t = tree(
            (0..64_997)
                .map(|i| node(&format!("{i:05}"), NodeKind::Dir))
                .collect(),
        );
        assert_eq!(Prepared::new(&t).unwrap().links[0], 65_000);
    }

    #[test]
    fn what_ext4_cannot_hold_is_refused_with_its_path() {
        let long = "n".repeat(256);
        let (path, reason) = refusal(&tree(vec![file(&long, 1)]));
        assert_eq!(path, long);
        assert!(reason.contains("255 bytes"), "{reason}");
        let (path, reason) = refusal(&tree(vec![file("huge", 17 << 40)]));
        assert_eq!(path, "huge");
        assert!(reason.contains("16 TiB"), "{reason}");
        let target = vec![b'x'; 4096];
        let (path, _) = refusal(&tree(vec![node("l", NodeKind::Symlink { target })]));
        assert_eq!(path, "l");
        let mut many = vec![file("f", 1)];
        many.extend((0..65_000).map(|i| node(&format!("l{i}"), NodeKind::HardLink { target: 1 })));
        assert_eq!(refusal(&tree(many)).0, "f");
        let mut odd = tree(vec![file("x", 1)]);
        odd.nodes[1]
            .xattrs
            .push(("system.nfs4_acl".into(), b"v".to_vec()));
        assert_eq!(refusal(&odd).0, "x");
    }

    #[test]
    fn identical_ea_blocks_are_shared_up_to_the_kernels_limit() {
        let big = vec![7u8; 2000];
        let t = tree(
            (0..1500)
                .map(|i| {
                    let mut n = file(&format!("f{i:04}"), 0);
                    n.xattrs.push(("user.big".into(), big.clone()));
                    n
                })
                .collect(),
        );
        let p = Prepared::new(&t).unwrap();
        let counts: Vec<u32> = p.ea_blocks.iter().map(|b| b.refcount).collect();
        assert_eq!(counts, [1024, 476]);
    }
}
