//! The group metadata: the superblock (the same in every backup but for
//! `s_block_group_nr` and its checksum), the group descriptors and the
//! block and inode bitmaps, all with their `metadata_csum` checksums.

use super::checksum::crc32c;
use super::layout::{
    BLOCK, BLOCK_SIZE, BLOCKS_PER_GROUP, DESC_SIZE, FIRST_INODE, Geometry, INODE_SIZE,
    LOG_GROUPS_PER_FLEX,
};

/// `s_feature_compat`: `has_journal ext_attr dir_index`.
const COMPAT: u32 = 0x0004 | 0x0008 | 0x0020;
/// `s_feature_incompat`: `filetype extent 64bit flex_bg`.
const INCOMPAT: u32 = 0x0002 | 0x0040 | 0x0080 | 0x0200;
/// `s_feature_ro_compat`: `sparse_super large_file huge_file dir_nlink
/// extra_isize metadata_csum`.
const RO_COMPAT: u32 = 0x0001 | 0x0002 | 0x0008 | 0x0020 | 0x0040 | 0x0400;
/// Group flags.
pub(crate) const INODE_UNINIT: u16 = 0x1;
pub(crate) const ITABLE_ZEROED: u16 = 0x4;
/// The journal's inode.
pub(crate) const JOURNAL_INODE: u32 = 8;
/// Reserved for root, as mke2fs's default: 5 %.
const RESERVED_PERCENT: u64 = 5;

/// One group's counts, as its descriptor holds them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Group {
    pub(crate) free_blocks: u32,
    pub(crate) free_inodes: u32,
    pub(crate) used_dirs: u32,
    pub(crate) itable_unused: u32,
    pub(crate) flags: u16,
    pub(crate) block_bitmap_csum: u32,
    pub(crate) inode_bitmap_csum: u32,
}

/// Everything the superblock says beyond the geometry.
#[derive(Debug, Clone)]
pub(crate) struct Super<'a> {
    pub(crate) geo: &'a Geometry,
    pub(crate) free_blocks: u64,
    pub(crate) free_inodes: u64,
    pub(crate) uuid: [u8; 16],
    pub(crate) hash_seed: [u8; 16],
    pub(crate) label: [u8; 16],
    /// Creation, write, mount and check time.
    pub(crate) time: i64,
    /// The journal inode's `i_block` and size, backed up in the
    /// superblock.
    pub(crate) journal_i_block: [u8; 60],
    pub(crate) journal_size: u64,
}

impl Super<'_> {
    /// The superblock as group `group` holds it (1024 bytes).
    pub(crate) fn encode(&self, group: u32) -> Vec<u8> {
        let geo = self.geo;
        let mut b = vec![0u8; 1024];
        let put16 =
            |b: &mut [u8], at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let t = u64::try_from(self.time).unwrap_or(0);
        let (t, t_hi) = (t as u32, (t >> 32) as u8);
        let reserved = geo.blocks * RESERVED_PERCENT / 100;
        put32(&mut b, 0x00, geo.inodes() as u32);
        put32(&mut b, 0x04, geo.blocks as u32);
        put32(&mut b, 0x08, reserved as u32);
        put32(&mut b, 0x0C, self.free_blocks as u32);
        put32(&mut b, 0x10, self.free_inodes as u32);
        put32(&mut b, 0x14, 0); // s_first_data_block
        put32(&mut b, 0x18, 2); // log2(block size) - 10
        put32(&mut b, 0x1C, 2); // clusters are blocks
        put32(&mut b, 0x20, BLOCKS_PER_GROUP as u32);
        put32(&mut b, 0x24, BLOCKS_PER_GROUP as u32);
        put32(&mut b, 0x28, geo.inodes_per_group);
        put32(&mut b, 0x2C, t); // s_mtime
        put32(&mut b, 0x30, t); // s_wtime
        put16(&mut b, 0x36, u16::MAX); // s_max_mnt_count: -1
        put16(&mut b, 0x38, 0xEF53);
        put16(&mut b, 0x3A, 1); // clean
        put16(&mut b, 0x3C, 1); // errors: continue
        put32(&mut b, 0x40, t); // s_lastcheck
        put32(&mut b, 0x4C, 1); // dynamic revision
        put32(&mut b, 0x54, FIRST_INODE);
        put16(&mut b, 0x58, INODE_SIZE as u16);
        put16(&mut b, 0x5A, group as u16);
        put32(&mut b, 0x5C, COMPAT);
        put32(&mut b, 0x60, INCOMPAT);
        put32(&mut b, 0x64, RO_COMPAT);
        b[0x68..0x78].copy_from_slice(&self.uuid);
        b[0x78..0x88].copy_from_slice(&self.label);
        put32(&mut b, 0xE0, JOURNAL_INODE);
        b[0xEC..0xFC].copy_from_slice(&self.hash_seed);
        b[0xFC] = 1; // half_md4
        b[0xFD] = 1; // the journal's blocks are backed up below
        put16(&mut b, 0xFE, DESC_SIZE as u16);
        put32(&mut b, 0x100, 0x0004 | 0x0008); // user_xattr acl
        put32(&mut b, 0x108, t); // s_mkfs_time
        b[0x10C..0x148].copy_from_slice(&self.journal_i_block);
        put32(&mut b, 0x148, (self.journal_size >> 32) as u32);
        put32(&mut b, 0x14C, self.journal_size as u32);
        put32(&mut b, 0x150, (geo.blocks >> 32) as u32);
        put32(&mut b, 0x154, (reserved >> 32) as u32);
        put32(&mut b, 0x158, (self.free_blocks >> 32) as u32);
        put16(&mut b, 0x15C, 32); // s_min_extra_isize
        put16(&mut b, 0x15E, 32); // s_want_extra_isize
        put32(&mut b, 0x160, 1); // signed directory hash
        b[0x174] = LOG_GROUPS_PER_FLEX;
        b[0x175] = 1; // crc32c
        b[0x274] = t_hi; // s_wtime_hi
        b[0x275] = t_hi; // s_mtime_hi
        b[0x276] = t_hi; // s_mkfs_time_hi
        b[0x277] = t_hi; // s_lastcheck_hi
        let sum = crc32c(!0, &b[..0x3FC]);
        put32(&mut b, 0x3FC, sum);
        b
    }
}

/// The group descriptor table (whole blocks).
pub(crate) fn descriptors(geo: &Geometry, groups: &[Group], fs_seed: u32) -> Vec<u8> {
    let mut out = vec![0u8; geo.gdt_blocks as usize * BLOCK];
    for (g, (d, desc)) in groups
        .iter()
        .zip(out.chunks_exact_mut(DESC_SIZE))
        .enumerate()
    {
        let g = g as u32;
        let put16 = |b: &mut [u8], at: usize, v: u32| {
            b[at..at + 2].copy_from_slice(&(v as u16).to_le_bytes());
        };
        let put32 = |b: &mut [u8], at: usize, v: u64| {
            b[at..at + 4].copy_from_slice(&(v as u32).to_le_bytes());
        };
        let (bb, ib, it) = (geo.block_bitmap(g), geo.inode_bitmap(g), geo.inode_table(g));
        put32(desc, 0x00, bb);
        put32(desc, 0x04, ib);
        put32(desc, 0x08, it);
        put16(desc, 0x0C, d.free_blocks);
        put16(desc, 0x0E, d.free_inodes);
        put16(desc, 0x10, d.used_dirs);
        put16(desc, 0x12, u32::from(d.flags));
        put16(desc, 0x18, d.block_bitmap_csum);
        put16(desc, 0x1A, d.inode_bitmap_csum);
        put16(desc, 0x1C, d.itable_unused);
        put32(desc, 0x20, bb >> 32);
        put32(desc, 0x24, ib >> 32);
        put32(desc, 0x28, it >> 32);
        put16(desc, 0x2C, d.free_blocks >> 16);
        put16(desc, 0x2E, d.free_inodes >> 16);
        put16(desc, 0x30, d.used_dirs >> 16);
        put16(desc, 0x32, d.itable_unused >> 16);
        put16(desc, 0x38, d.block_bitmap_csum >> 16);
        put16(desc, 0x3A, d.inode_bitmap_csum >> 16);
        // The checksum, over the group number and the descriptor with
        // the checksum field zero.
        let sum = crc32c(crc32c(fs_seed, &g.to_le_bytes()), desc);
        put16(desc, 0x1E, sum);
    }
    out
}

/// A bitmap block with bits `[0, used)` and `[len, 32768)` set (the
/// padding past the end of a short group).
pub(crate) fn bitmap(used: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    let set = |b: &mut [u8], from: u64, to: u64| {
        let mut bit = from;
        while bit < to {
            if bit % 8 == 0 && to - bit >= 8 {
                let end = (to / 8) as usize;
                b[(bit / 8) as usize..end].fill(0xFF);
                bit = to / 8 * 8;
            } else {
                b[(bit / 8) as usize] |= 1 << (bit % 8);
                bit += 1;
            }
        }
    };
    set(&mut b, 0, used);
    set(&mut b, len, BLOCK_SIZE * 8);
    b
}

/// A bitmap's checksum over its first `bits` bits.
pub(crate) fn bitmap_csum(bitmap: &[u8], bits: u64, fs_seed: u32) -> u32 {
    crc32c(fs_seed, &bitmap[..(bits / 8) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_set_the_used_prefix_and_the_padding() {
        let b = bitmap(13, 32760);
        assert_eq!(&b[..3], &[0xFF, 0x1F, 0]);
        assert_eq!(b[4094], 0);
        assert_eq!(b[4095], 0xFF);
        let b = bitmap(0, 8195);
        assert_eq!(b[1024], 0xF8);
        assert!(b[1025..].iter().all(|&x| x == 0xFF));
        assert!(bitmap(32768, 32768).iter().all(|&x| x == 0xFF));
    }
}
