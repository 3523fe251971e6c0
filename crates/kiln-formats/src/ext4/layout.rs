//! The geometry of an image: how many blocks, groups and inodes, and
//! where each group's metadata lies. Pure arithmetic, no I/O.
//!
//! Blocks are 4 KiB, 32768 to a group, the first data block is 0 (the
//! superblock sits 1 KiB into block 0). Groups 0, 1 and the powers of 3,
//! 5 and 7 carry a superblock backup followed by a copy of the group
//! descriptors (`sparse_super`); there are no reserved GDT blocks (no
//! `resize_inode`). Groups are packed 16 to a flex group (`flex_bg`): the
//! block bitmaps, then the inode bitmaps, then the inode tables of all 16
//! sit at the start of the first group of each flex group, right after
//! its superblock backup if it has one. Every group's free space is then
//! one range, from the end of that metadata to the end of the group.

/// Bytes per block.
pub(crate) const BLOCK_SIZE: u64 = 4096;
/// [`BLOCK_SIZE`] as a `usize`, for buffers.
pub(crate) const BLOCK: usize = 4096;
/// Blocks (and bits of a block bitmap) per group.
pub(crate) const BLOCKS_PER_GROUP: u64 = 32768;
/// Bytes per inode.
pub(crate) const INODE_SIZE: usize = 256;
/// Inodes per inode table block.
const INODES_PER_BLOCK: u32 = (BLOCK / INODE_SIZE) as u32;
/// Bytes per group descriptor (`64bit`).
pub(crate) const DESC_SIZE: usize = 64;
/// log2 of the groups per flex group.
pub(crate) const LOG_GROUPS_PER_FLEX: u8 = 4;
/// Groups per flex group.
pub(crate) const GROUPS_PER_FLEX: u32 = 1 << LOG_GROUPS_PER_FLEX;
/// The smallest filesystem mke2fs gives a journal (8 MiB).
pub(crate) const MIN_BLOCKS: u64 = 2048;
/// The first inode that is not reserved (lost+found).
pub(crate) const FIRST_INODE: u32 = 11;
/// Free blocks the last group must have beyond its own metadata, else
/// it is dropped (as mke2fs does).
const LAST_GROUP_SLACK: u64 = 50;

/// Why a geometry cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// Fewer than [`MIN_BLOCKS`] blocks, or a single group too small for
    /// its metadata.
    TooSmall,
    /// The last group (of `rem` blocks) is too small for its metadata;
    /// `short` more blocks would make it fit.
    LastGroup {
        /// The blocks of the last group.
        rem: u64,
        /// What it lacks.
        short: u64,
    },
    /// More than 2^32 inodes or a block count beyond what is supported.
    TooBig,
}

/// The shape of one filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Blocks in the filesystem (`s_blocks_count`).
    pub(crate) blocks: u64,
    /// Block groups.
    pub(crate) groups: u32,
    /// Inodes per group, a multiple of 16.
    pub(crate) inodes_per_group: u32,
    /// Blocks of one group's inode table.
    pub(crate) itable_blocks: u32,
    /// Blocks of the group descriptor table.
    pub(crate) gdt_blocks: u32,
    /// Blocks of the journal.
    pub(crate) journal_blocks: u32,
}

impl Geometry {
    /// The geometry of `blocks` blocks with at least `inodes` inodes, as
    /// far as they fit (at most what a group's inode bitmap and the flex
    /// group's room allow: check [`Geometry::inodes`]).
    pub(crate) fn new(blocks: u64, inodes: u64) -> Result<Self, Misfit> {
        if blocks < MIN_BLOCKS {
            return Err(Misfit::TooSmall);
        }
        // 2^28 groups of 16 inodes is the most inodes an ext4 counts.
        if blocks > (1 << 28) * BLOCKS_PER_GROUP {
            return Err(Misfit::TooBig);
        }
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP) as u32;
        let gdt_blocks = (u64::from(groups) * DESC_SIZE as u64).div_ceil(BLOCK_SIZE) as u32;
        // All 16 groups' bitmaps and tables must fit into the first group
        // of their flex group, after its superblock backup.
        let room = BLOCKS_PER_GROUP as u32 - 1 - gdt_blocks;
        let max_itable = room / GROUPS_PER_FLEX - 2;
        let max_per_group = (max_itable * INODES_PER_BLOCK).min(BLOCKS_PER_GROUP as u32);
        let per_group = inodes
            .div_ceil(u64::from(groups))
            .next_multiple_of(u64::from(INODES_PER_BLOCK))
            .clamp(u64::from(INODES_PER_BLOCK), u64::from(max_per_group))
            as u32;
        if u64::from(per_group) * u64::from(groups) > u64::from(u32::MAX) {
            return Err(Misfit::TooBig);
        }
        let geo = Self {
            blocks,
            groups,
            inodes_per_group: per_group,
            itable_blocks: per_group / INODES_PER_BLOCK,
            gdt_blocks,
            journal_blocks: journal_blocks(blocks),
        };
        let last = groups - 1;
        let rem = blocks - group_start(last);
        let need = geo.super_blocks(last)
            + if flex_first(last) == last {
                2 + u64::from(geo.itable_blocks)
            } else {
                0
            }
            + LAST_GROUP_SLACK;
        if rem < need {
            if groups == 1 {
                return Err(Misfit::TooSmall);
            }
            return Err(Misfit::LastGroup {
                rem,
                short: need - rem,
            });
        }
        Ok(geo)
    }

    /// Inodes in the filesystem.
    pub(crate) fn inodes(&self) -> u64 {
        u64::from(self.inodes_per_group) * u64::from(self.groups)
    }

    /// The block after the last one of group `g`.
    pub(crate) fn group_end(&self, g: u32) -> u64 {
        (group_start(g) + BLOCKS_PER_GROUP).min(self.blocks)
    }

    /// Blocks of the superblock and descriptor copy at the start of `g`.
    pub(crate) fn super_blocks(&self, g: u32) -> u64 {
        if has_super(g) {
            1 + u64::from(self.gdt_blocks)
        } else {
            0
        }
    }

    fn flex_len(&self, first: u32) -> u64 {
        u64::from(GROUPS_PER_FLEX.min(self.groups - first))
    }

    fn flex_base(&self, first: u32) -> u64 {
        group_start(first) + self.super_blocks(first)
    }

    /// Where group `g`'s block bitmap is.
    pub(crate) fn block_bitmap(&self, g: u32) -> u64 {
        let first = flex_first(g);
        self.flex_base(first) + u64::from(g - first)
    }

    /// Where group `g`'s inode bitmap is.
    pub(crate) fn inode_bitmap(&self, g: u32) -> u64 {
        let first = flex_first(g);
        self.flex_base(first) + self.flex_len(first) + u64::from(g - first)
    }

    /// Where group `g`'s inode table starts.
    pub(crate) fn inode_table(&self, g: u32) -> u64 {
        let first = flex_first(g);
        self.flex_base(first)
            + 2 * self.flex_len(first)
            + u64::from(g - first) * u64::from(self.itable_blocks)
    }

    /// The first block of group `g` that is not metadata: its free space
    /// is from here to [`Geometry::group_end`].
    pub(crate) fn data_start(&self, g: u32) -> u64 {
        let first = flex_first(g);
        if g == first {
            self.flex_base(first) + self.flex_len(first) * (2 + u64::from(self.itable_blocks))
        } else {
            group_start(g) + self.super_blocks(g)
        }
    }

    /// The group inode `ino` belongs to, and its index there.
    pub(crate) fn inode_group(&self, ino: u32) -> (u32, u32) {
        (
            (ino - 1) / self.inodes_per_group,
            (ino - 1) % self.inodes_per_group,
        )
    }
}

/// The first block of group `g`.
pub(crate) fn group_start(g: u32) -> u64 {
    u64::from(g) * BLOCKS_PER_GROUP
}

/// Whether group `g` holds a superblock (the primary or a backup).
pub(crate) fn has_super(g: u32) -> bool {
    fn power_of(mut n: u32, base: u32) -> bool {
        while n > 1 && n % base == 0 {
            n /= base;
        }
        n == 1
    }
    g <= 1 || power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
}

fn flex_first(g: u32) -> u32 {
    g & !(GROUPS_PER_FLEX - 1)
}

/// Bytes of filesystem per inode for one of `blocks` blocks: mke2fs's
/// `inode_ratio` for its size type (`small` below 512 MiB, the default
/// below 4 TiB, `big` below 16 TiB, `huge` above).
pub(crate) fn inode_ratio(blocks: u64) -> u64 {
    match blocks * BLOCK_SIZE {
        0..0x2000_0000 => 4096,
        0x2000_0000..0x400_0000_0000 => 16384,
        0x400_0000_0000..0x1000_0000_0000 => 32768,
        _ => 65536,
    }
}

/// The journal size mke2fs picks for a filesystem of `blocks` 4 KiB
/// blocks (`ext2fs_default_journal_size`).
pub(crate) fn journal_blocks(blocks: u64) -> u32 {
    match blocks {
        0..32_768 => 1024,
        32_768..262_144 => 4096,
        262_144..524_288 => 8192,
        524_288..4_194_304 => 16_384,
        4_194_304..8_388_608 => 32_768,
        8_388_608..16_777_216 => 65_536,
        16_777_216..33_554_432 => 131_072,
        _ => 262_144,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_are_in_groups_0_1_and_powers_of_3_5_7() {
        let with: Vec<u32> = (0..4000).filter(|&g| has_super(g)).collect();
        assert_eq!(
            with,
            [
                0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343, 625, 729, 2187, 2401, 3125
            ]
        );
    }

    #[test]
    fn like_mke2fs_for_one_gib() {
        // mkfs.ext4 -b 4096 of 1 GiB: 8 groups of 8192 inodes, a 32 MiB
        // journal, bitmaps at 1+1 (no reserved GDT blocks here).
        let geo = Geometry::new(262_144, 262_144 * BLOCK_SIZE / inode_ratio(262_144)).unwrap();
        assert_eq!(geo.groups, 8);
        assert_eq!(geo.inodes_per_group, 8192);
        assert_eq!(geo.itable_blocks, 512);
        assert_eq!(geo.journal_blocks, 8192);
        assert_eq!(geo.block_bitmap(0), 2);
        assert_eq!(geo.inode_bitmap(0), 10);
        assert_eq!(geo.inode_table(1), 18 + 512);
        assert_eq!(geo.data_start(0), 18 + 8 * 512);
        assert_eq!(geo.data_start(1), BLOCKS_PER_GROUP + 2);
        assert_eq!(geo.data_start(2), 2 * BLOCKS_PER_GROUP);
    }

    #[test]
    fn a_last_group_too_small_for_its_metadata_is_reported() {
        // 16 full groups and a sliver that starts a flex group.
        let r = Geometry::new(16 * BLOCKS_PER_GROUP + 10, 16 * 8192);
        assert!(matches!(r, Err(Misfit::LastGroup { rem: 10, .. })), "{r:?}");
        assert_eq!(Geometry::new(100, 16), Err(Misfit::TooSmall));
    }

    #[test]
    fn flex_metadata_fits_even_with_the_most_inodes() {
        let geo = Geometry::new(64 * BLOCKS_PER_GROUP, u64::MAX / 4).unwrap();
        for g in 0..geo.groups {
            assert!(geo.data_start(g) <= geo.group_end(g), "group {g}");
        }
        assert!(geo.inodes_per_group <= 32768);
    }
}
