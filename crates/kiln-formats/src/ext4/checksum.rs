//! The checksums of `metadata_csum`: CRC32C (Castagnoli) as ext4 and
//! e2fsprogs compute it — seeded, and not inverted at the end — and the
//! per-inode seed that inode, extent and directory checksums start from.

/// The CRC32C of `data`, continuing from `seed` the way ext4's
/// `ext4_chksum` does (no final inversion).
pub(crate) fn crc32c(seed: u32, data: &[u8]) -> u32 {
    // The crate's CRC inverts on the way in and out; undo both.
    !crc32c::crc32c_append(!seed, data)
}

/// The filesystem's checksum seed: the CRC32C of its UUID.
pub(crate) fn fs_seed(uuid: &[u8; 16]) -> u32 {
    crc32c(!0, uuid)
}

/// The seed of everything that belongs to inode `ino` (its own
/// checksum, its extent blocks, its directory blocks): the filesystem's
/// seed, the inode number and its generation (always 0 here).
pub(crate) fn inode_seed(fs_seed: u32, ino: u32) -> u32 {
    let seed = crc32c(fs_seed, &ino.to_le_bytes());
    crc32c(seed, &0u32.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_crc32c_when_seeded_like_it() {
        // The standard check value of CRC-32C ("123456789"), which
        // starts from !0 and inverts at the end.
        assert_eq!(!crc32c(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn continues_across_pieces() {
        let whole = crc32c(7, b"hello, world");
        assert_eq!(crc32c(crc32c(7, b"hello"), b", world"), whole);
    }
}
