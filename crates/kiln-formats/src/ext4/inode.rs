//! One 256-byte inode: the classic 128 bytes, 32 extra bytes (high
//! checksum half, nanosecond and epoch bits, creation time) and the
//! in-inode xattr area, with its CRC32C. Every timestamp is the node's
//! (clamped) mtime; the generation, version and project are 0.

use super::checksum::{crc32c, inode_seed};
use super::layout::INODE_SIZE;
use super::xattr::IBODY_AT;

/// `EXT4_EXTENTS_FL`: `i_block` holds an extent tree.
pub(crate) const EXTENTS_FL: u32 = 0x0008_0000;
const EXTRA_ISIZE: u16 = 32;
/// Blocks (4 KiB) in 512-byte units.
const SECTORS_PER_BLOCK: u64 = 8;

/// What an inode says.
#[derive(Debug, Clone)]
pub(crate) struct Inode<'a> {
    /// File type and permission bits (`st_mode`).
    pub(crate) mode: u16,
    /// Owner.
    pub(crate) uid: u32,
    /// Group.
    pub(crate) gid: u32,
    /// Size in bytes.
    pub(crate) size: u64,
    /// atime, ctime, mtime and crtime.
    pub(crate) time: i64,
    /// Names (or, for a directory, `dir_nlink`'s count).
    pub(crate) links: u16,
    /// 4 KiB blocks it owns: data, extent tree and EA block.
    pub(crate) blocks: u64,
    /// `i_flags`.
    pub(crate) flags: u32,
    /// Extent tree, fast symlink target or device number.
    pub(crate) i_block: [u8; 60],
    /// The EA block, or 0.
    pub(crate) file_acl: u64,
    /// The in-inode xattr area (magic and entries), or empty.
    pub(crate) ibody: &'a [u8],
}

impl Inode<'_> {
    /// Writes inode `ino` into `out` (256 bytes, zeroed).
    pub(crate) fn encode(&self, ino: u32, fs_seed: u32, out: &mut [u8]) {
        let (t, extra) = time(self.time);
        let b = &mut out[..INODE_SIZE];
        let put16 =
            |b: &mut [u8], at: usize, v: u16| b[at..at + 2].copy_from_slice(&v.to_le_bytes());
        let put32 =
            |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        let sectors = self.blocks * SECTORS_PER_BLOCK;
        put16(b, 0x00, self.mode);
        put16(b, 0x02, self.uid as u16);
        put32(b, 0x04, self.size as u32);
        put32(b, 0x08, t); // atime
        put32(b, 0x0C, t); // ctime
        put32(b, 0x10, t); // mtime
        put16(b, 0x18, self.gid as u16);
        put16(b, 0x1A, self.links);
        put32(b, 0x1C, sectors as u32);
        put32(b, 0x20, self.flags);
        b[0x28..0x64].copy_from_slice(&self.i_block);
        put32(b, 0x68, self.file_acl as u32);
        put32(b, 0x6C, (self.size >> 32) as u32);
        put16(b, 0x74, (sectors >> 32) as u16);
        put16(b, 0x76, (self.file_acl >> 32) as u16);
        put16(b, 0x78, (self.uid >> 16) as u16);
        put16(b, 0x7A, (self.gid >> 16) as u16);
        put16(b, 0x80, EXTRA_ISIZE);
        put32(b, 0x84, extra); // ctime
        put32(b, 0x88, extra); // mtime
        put32(b, 0x8C, extra); // atime
        put32(b, 0x90, t); // crtime
        put32(b, 0x94, extra);
        b[IBODY_AT..IBODY_AT + self.ibody.len()].copy_from_slice(self.ibody);
        // The checksum, computed with both of its halves zero.
        let sum = crc32c(inode_seed(fs_seed, ino), b);
        put16(b, 0x7C, sum as u16);
        put16(b, 0x82, (sum >> 16) as u16);
    }
}

/// A time as ext4 stores it: the low 32 bits, and the extra field with
/// the epoch bits (nanoseconds are 0). Clamped to what ext4 can hold
/// (1901 to 2446).
pub(crate) fn time(t: i64) -> (u32, u32) {
    let t = t.clamp(-(1 << 31), (1 << 31) - 1 + 3 * (1 << 32));
    let low = t as i32;
    let epoch = u32::try_from(((t - i64::from(low)) >> 32) & 3).unwrap_or_default();
    (u32::from_ne_bytes(low.to_ne_bytes()), epoch)
}

/// `i_block` of a device with these numbers: the old 16-bit encoding
/// when both fit a byte, else the new 32-bit one, as the kernel writes.
pub(crate) fn device(major: u32, minor: u32) -> [u8; 60] {
    let mut b = [0u8; 60];
    if major < 256 && minor < 256 {
        b[0..4].copy_from_slice(&((major << 8) | minor).to_le_bytes());
    } else {
        let dev = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
        b[4..8].copy_from_slice(&dev.to_le_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_carry_epoch_bits_past_2038() {
        assert_eq!(time(1_700_000_000), (1_700_000_000, 0));
        assert_eq!(time(-1), (u32::MAX, 0));
        assert_eq!(time(1 << 32), (0, 1));
        assert_eq!(time((1 << 31) + 5), ((1u32 << 31) + 5, 1));
    }

    #[test]
    fn devices_use_the_kernels_encodings() {
        assert_eq!(&device(1, 3)[..4], &[3, 1, 0, 0]);
        let big = device(300, 70_000);
        assert_eq!(&big[..4], &[0; 4]);
        let dev = u32::from_le_bytes([big[4], big[5], big[6], big[7]]);
        assert_eq!(dev & 0xff, 0x1_1170 & 0xff);
        assert_eq!((dev >> 8) & 0xfff, 300);
        assert_eq!(dev >> 20, 70_000 >> 8);
    }
}
