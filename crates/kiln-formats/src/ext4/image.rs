//! Writes a [`Plan`] out: first the metadata of each flex group (the
//! superblock and descriptor copies, bitmaps, the used part of the inode
//! tables), then the content in allocation order — the journal
//! superblock, and each node's EA block, directory blocks or file data
//! (streamed from its layer) and extent tree blocks — so both passes
//! move forward through the file.

use std::fs::File;
use std::path::Path;

use super::checksum::{fs_seed, inode_seed};
use super::dir::{self, Entry, file_type};
use super::extent::{self, Extent};
use super::inode::{EXTENTS_FL, Inode, device};
use super::journal;
use super::layout::{
    BLOCK, BLOCK_SIZE, BLOCKS_PER_GROUP, GROUPS_PER_FLEX, INODE_SIZE, group_start, has_super,
};
use super::output::Image;
use super::plan::{
    FAST_SYMLINK, LOST_FOUND_BLOCKS, LOST_FOUND_INODE, Placement, Plan, Prepared, ROOT_INODE,
};
use super::superblock::{
    Group, INODE_UNINIT, ITABLE_ZEROED, JOURNAL_INODE, Super, bitmap, bitmap_csum, descriptors,
};
use super::xattr;
use crate::error::Error;
use crate::tree::{NodeKind, open_source};

/// What identifies the filesystem.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) uuid: [u8; 16],
    pub(crate) hash_seed: [u8; 16],
    pub(crate) label: [u8; 16],
    /// The time of everything that is not a node (superblock, journal,
    /// lost+found when the tree has none).
    pub(crate) epoch: i64,
}

/// Writes the image of `prep` as `plan` places it into `file` (`path` in
/// errors), `offset` bytes in, where it reads as zeros.
pub(crate) fn write(
    prep: &Prepared<'_>,
    plan: &Plan,
    id: &Identity,
    file: &File,
    path: &Path,
    offset: u64,
    cancel: crate::Cancel<'_>,
) -> Result<(), Error> {
    let w = ImageWriter {
        prep,
        plan,
        id,
        seed: fs_seed(&id.uuid),
        by_ino: by_ino(prep),
        cancel,
    };
    let mut img = Image::new(file, path, offset);
    w.metadata(&mut img)?;
    w.content(&mut img)?;
    img.finish()
}

/// For each inode from 12 up, its node.
fn by_ino(prep: &Prepared<'_>) -> Vec<usize> {
    let mut out = vec![0; (prep.last_ino - LOST_FOUND_INODE) as usize];
    for (i, &ino) in prep.ino.iter().enumerate() {
        let link = matches!(prep.tree.nodes[i].kind, NodeKind::HardLink { .. });
        if ino > LOST_FOUND_INODE && !link {
            out[(ino - LOST_FOUND_INODE - 1) as usize] = i;
        }
    }
    out
}

struct ImageWriter<'a> {
    prep: &'a Prepared<'a>,
    plan: &'a Plan,
    id: &'a Identity,
    seed: u32,
    by_ino: Vec<usize>,
    cancel: crate::Cancel<'a>,
}

impl ImageWriter<'_> {
    /// Inodes of group `g` in use (all up to the last are).
    fn inodes_used(&self, g: u32) -> u32 {
        let ipg = u64::from(self.plan.geo.inodes_per_group);
        (u64::from(self.prep.last_ino).saturating_sub(u64::from(g) * ipg)).min(ipg) as u32
    }

    fn block_bitmap(&self, g: u32) -> Vec<u8> {
        let geo = &self.plan.geo;
        bitmap(self.plan.used_in(g), geo.group_end(g) - group_start(g))
    }

    fn inode_bitmap(&self, g: u32) -> Vec<u8> {
        bitmap(
            u64::from(self.inodes_used(g)),
            u64::from(self.plan.geo.inodes_per_group),
        )
    }

    fn groups(&self) -> Vec<Group> {
        let geo = &self.plan.geo;
        let ipg = geo.inodes_per_group;
        let mut dirs = vec![0u32; geo.groups as usize];
        for (i, node) in self.prep.tree.nodes.iter().enumerate() {
            if node.kind == NodeKind::Dir {
                dirs[geo.inode_group(self.prep.ino[i]).0 as usize] += 1;
            }
        }
        if self.prep.own_lost_found.is_none() {
            dirs[0] += 1;
        }
        (0..geo.groups)
            .map(|g| {
                let used = self.inodes_used(g);
                let len = geo.group_end(g) - group_start(g);
                let uninit = used == 0;
                Group {
                    free_blocks: (len - self.plan.used_in(g)) as u32,
                    free_inodes: ipg - used,
                    used_dirs: dirs[g as usize],
                    itable_unused: ipg - used,
                    flags: ITABLE_ZEROED | if uninit { INODE_UNINIT } else { 0 },
                    block_bitmap_csum: bitmap_csum(
                        &self.block_bitmap(g),
                        BLOCKS_PER_GROUP,
                        self.seed,
                    ),
                    inode_bitmap_csum: if uninit {
                        0
                    } else {
                        bitmap_csum(&self.inode_bitmap(g), u64::from(ipg), self.seed)
                    },
                }
            })
            .collect()
    }

    /// The superblocks, descriptors, bitmaps and inode tables.
    fn metadata(&self, img: &mut Image) -> Result<(), Error> {
        let geo = &self.plan.geo;
        let groups = self.groups();
        let (journal_i_block, _) = self.tree(JOURNAL_INODE, &self.plan.journal);
        let sb = Super {
            geo,
            free_blocks: groups.iter().map(|g| u64::from(g.free_blocks)).sum(),
            free_inodes: groups.iter().map(|g| u64::from(g.free_inodes)).sum(),
            uuid: self.id.uuid,
            hash_seed: self.id.hash_seed,
            label: self.id.label,
            time: self.id.epoch,
            journal_i_block,
            journal_size: u64::from(geo.journal_blocks) * BLOCK_SIZE,
        };
        let gdt = descriptors(geo, &groups, self.seed);
        for g in 0..geo.groups {
            if has_super(g) {
                let mut first = vec![0u8; BLOCK];
                // The primary is 1 KiB into block 0; backups start their block.
                let at = if g == 0 { 1024 } else { 0 };
                first[at..at + 1024].copy_from_slice(&sb.encode(g));
                img.put(group_start(g), &first)?;
                img.put(group_start(g) + 1, &gdt)?;
            }
            if g % GROUPS_PER_FLEX == 0 {
                // The first group of a flex group: everyone's bitmaps and
                // inode tables.
                let members = g..(g + GROUPS_PER_FLEX).min(geo.groups);
                for h in members.clone() {
                    img.put(geo.block_bitmap(h), &self.block_bitmap(h))?;
                }
                for h in members.clone() {
                    if self.inodes_used(h) > 0 {
                        img.put(geo.inode_bitmap(h), &self.inode_bitmap(h))?;
                    }
                }
                for h in members {
                    self.inode_table(img, h)?;
                }
            }
        }
        Ok(())
    }

    /// The used part of group `g`'s inode table.
    fn inode_table(&self, img: &mut Image, g: u32) -> Result<(), Error> {
        let used = self.inodes_used(g) as usize;
        if used == 0 {
            return Ok(());
        }
        let geo = &self.plan.geo;
        let mut table = vec![0u8; (used * INODE_SIZE).next_multiple_of(BLOCK)];
        let first = g * geo.inodes_per_group + 1;
        for (k, slot) in table.chunks_exact_mut(INODE_SIZE).take(used).enumerate() {
            let ino = first + k as u32;
            self.inode(ino, slot);
        }
        img.put(geo.inode_table(g), &table)
    }

    /// Encodes inode `ino` into `out` (zeroed), if it is in use.
    fn inode(&self, ino: u32, out: &mut [u8]) {
        let tree = &self.prep.tree.nodes;
        let node = match ino {
            ROOT_INODE => 0,
            JOURNAL_INODE => {
                let p = &self.plan.journal;
                Inode {
                    mode: (libc::S_IFREG | 0o600) as u16,
                    uid: 0,
                    gid: 0,
                    size: u64::from(self.plan.geo.journal_blocks) * BLOCK_SIZE,
                    time: self.id.epoch,
                    links: 1,
                    blocks: p.blocks(),
                    flags: EXTENTS_FL,
                    i_block: self.tree(ino, p).0,
                    file_acl: 0,
                    ibody: &[],
                }
                .encode(ino, self.seed, out);
                return;
            }
            LOST_FOUND_INODE => match self.prep.own_lost_found {
                Some(i) => i,
                None => {
                    let p = &self.plan.lost_found;
                    Inode {
                        mode: (libc::S_IFDIR | 0o700) as u16,
                        uid: 0,
                        gid: 0,
                        size: LOST_FOUND_BLOCKS * BLOCK_SIZE,
                        time: self.id.epoch,
                        links: 2,
                        blocks: p.blocks(),
                        flags: EXTENTS_FL,
                        i_block: self.tree(ino, p).0,
                        file_acl: 0,
                        ibody: &[],
                    }
                    .encode(ino, self.seed, out);
                    return;
                }
            },
            ..LOST_FOUND_INODE => return,
            _ => self.by_ino[(ino - LOST_FOUND_INODE - 1) as usize],
        };
        let n = &tree[node];
        let p = &self.plan.nodes[node];
        let ea_block = self.prep.ea[node].map(|e| self.plan.ea_at[e]);
        let extents = || self.tree(ino, p).0;
        let (size, flags, i_block) = match &n.kind {
            NodeKind::Dir => (self.prep.blocks[node] * BLOCK_SIZE, EXTENTS_FL, extents()),
            NodeKind::File { size, .. } => (*size, EXTENTS_FL, extents()),
            NodeKind::Symlink { target } if target.len() < FAST_SYMLINK => {
                let mut b = [0u8; 60];
                b[..target.len()].copy_from_slice(target);
                (target.len() as u64, 0, b)
            }
            NodeKind::Symlink { target } => (target.len() as u64, EXTENTS_FL, extents()),
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                (0, 0, device(*major, *minor))
            }
            NodeKind::Whiteout => (0, 0, device(0, 0)),
            NodeKind::Fifo | NodeKind::Socket | NodeKind::HardLink { .. } => (0, 0, [0; 60]),
        };
        Inode {
            mode: n.st_mode() as u16,
            uid: n.uid,
            gid: n.gid,
            size,
            time: n.mtime,
            links: self.prep.links[node],
            blocks: p.blocks() + u64::from(ea_block.is_some()),
            flags,
            i_block,
            file_acl: ea_block.unwrap_or(0),
            ibody: &self.prep.ibody[node],
        }
        .encode(ino, self.seed, out);
    }

    /// The extent tree of inode `ino` placed at `p`.
    fn tree(&self, ino: u32, p: &Placement) -> ([u8; 60], extent::TreeBlocks) {
        extent::encode(&p.extents, &p.tree, inode_seed(self.seed, ino))
    }

    /// The journal, then every node's blocks, in allocation order.
    fn content(&self, img: &mut Image) -> Result<(), Error> {
        let plan = self.plan;
        let prep = self.prep;
        let journal = &plan.journal;
        img.put(
            journal.extents[0].start,
            &journal::superblock(plan.geo.journal_blocks, &self.id.uuid),
        )?;
        self.put_tree(img, JOURNAL_INODE, journal)?;
        let mut buf = Vec::new();
        for (i, node) in prep.tree.nodes.iter().enumerate() {
            let ino = prep.ino[i];
            if let Some(e) = prep.ea[i]
                && prep.ea_blocks[e].first == i
            {
                let b = &prep.ea_blocks[e];
                let at = plan.ea_at[e];
                img.put(at, &xattr::block(&b.attrs, b.refcount, at, self.seed))?;
            }
            let p = &plan.nodes[i];
            match &node.kind {
                NodeKind::Dir => {
                    buf.clear();
                    let min = if Some(i) == prep.own_lost_found {
                        LOST_FOUND_BLOCKS
                    } else {
                        0
                    };
                    let synthetic = (i == 0 && prep.own_lost_found.is_none()).then_some(Entry {
                        ino: LOST_FOUND_INODE,
                        kind: file_type::DIR,
                        name: b"lost+found",
                    });
                    let entries = prep.children[i].iter().map(|&c| Entry {
                        ino: prep.ino[c],
                        kind: kind_of(&prep.tree.nodes[c].kind),
                        name: prep.tree.nodes[c].name().as_bytes(),
                    });
                    let parent = prep.ino[prep.parent[i]];
                    dir::encode(
                        ino,
                        parent,
                        synthetic.into_iter().chain(entries),
                        min,
                        inode_seed(self.seed, ino),
                        &mut buf,
                    );
                    debug_assert_eq!(buf.len() as u64, prep.blocks[i] * BLOCK_SIZE);
                    put_blocks(img, &p.extents, &buf)?;
                }
                NodeKind::File { size, source } if *size > 0 => {
                    crate::check(self.cancel)?;
                    let mut f = open_source(source)?;
                    for e in &p.extents {
                        crate::check(self.cancel)?;
                        let offset = u64::from(e.logical) * BLOCK_SIZE;
                        let n = (size - offset).min(u64::from(e.len) * BLOCK_SIZE);
                        img.copy(e.start, &mut f, offset, n, source)?;
                    }
                }
                NodeKind::Symlink { target } if target.len() >= FAST_SYMLINK => {
                    let mut b = vec![0u8; BLOCK];
                    b[..target.len()].copy_from_slice(target);
                    put_blocks(img, &p.extents, &b)?;
                }
                _ => {}
            }
            self.put_tree(img, ino, p)?;
            if i == 0 && prep.own_lost_found.is_none() {
                buf.clear();
                dir::encode(
                    LOST_FOUND_INODE,
                    ROOT_INODE,
                    [],
                    LOST_FOUND_BLOCKS,
                    inode_seed(self.seed, LOST_FOUND_INODE),
                    &mut buf,
                );
                put_blocks(img, &plan.lost_found.extents, &buf)?;
                self.put_tree(img, LOST_FOUND_INODE, &plan.lost_found)?;
            }
        }
        Ok(())
    }

    fn put_tree(&self, img: &mut Image, ino: u32, p: &Placement) -> Result<(), Error> {
        if p.tree.is_empty() {
            return Ok(());
        }
        for (at, block) in self.tree(ino, p).1 {
            img.put(at, &block)?;
        }
        Ok(())
    }
}

/// Writes `bytes` (whole blocks, in file order) where `extents` put them.
fn put_blocks(img: &mut Image, extents: &[Extent], bytes: &[u8]) -> Result<(), Error> {
    for e in extents {
        let from = e.logical as usize * BLOCK;
        img.put(e.start, &bytes[from..from + e.len as usize * BLOCK])?;
    }
    Ok(())
}

/// The directory entry type of a node.
fn kind_of(kind: &NodeKind) -> u8 {
    match kind {
        NodeKind::Dir => file_type::DIR,
        NodeKind::File { .. } | NodeKind::HardLink { .. } => file_type::REGULAR,
        NodeKind::Symlink { .. } => file_type::SYMLINK,
        NodeKind::CharDevice { .. } | NodeKind::Whiteout => file_type::CHAR,
        NodeKind::BlockDevice { .. } => file_type::BLOCK,
        NodeKind::Fifo => file_type::FIFO,
        NodeKind::Socket => file_type::SOCKET,
    }
}
