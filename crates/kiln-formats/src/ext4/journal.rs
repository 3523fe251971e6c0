//! The journal (inode 8): a jbd2 v2 superblock in its first block, as
//! mke2fs writes it — clean (`s_start` 0), sequence 1, one user, the
//! filesystem's UUID, no features — and zeros after it. Its size is
//! `layout::journal_blocks`, what mke2fs picks for the filesystem size.

use super::layout::BLOCK;

const MAGIC: u32 = 0xC03B_3998;
const SUPERBLOCK_V2: u32 = 4;

/// The journal superblock of a journal of `blocks` blocks.
pub(crate) fn superblock(blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    // jbd2 is big-endian.
    let mut put = |at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    put(0x00, MAGIC);
    put(0x04, SUPERBLOCK_V2);
    put(0x0C, BLOCK as u32); // s_blocksize
    put(0x10, blocks); // s_maxlen
    put(0x14, 1); // s_first
    put(0x18, 1); // s_sequence
    put(0x40, 1); // s_nr_users
    b[0x30..0x40].copy_from_slice(uuid);
    b
}
