//! Directories: linear blocks of `ext4_dir_entry_2` records (`.` and
//! `..` first, then the entries in tree order), the last record of each
//! block stretched to the 12-byte checksum tail that ends it. No hash
//! index: e2fsck and the kernel read linear directories of any size, and
//! the kernel indexes one when it next grows past a block.

use super::checksum::crc32c;
use super::layout::BLOCK;

/// The checksum tail at the end of every block.
const TAIL: usize = 12;
/// Room for records in a block.
const ROOM: usize = BLOCK - TAIL;

/// The `file_type` of a directory entry.
pub(crate) mod file_type {
    /// A regular file.
    pub(crate) const REGULAR: u8 = 1;
    /// A directory.
    pub(crate) const DIR: u8 = 2;
    /// A character device.
    pub(crate) const CHAR: u8 = 3;
    /// A block device.
    pub(crate) const BLOCK: u8 = 4;
    /// A named pipe.
    pub(crate) const FIFO: u8 = 5;
    /// A socket.
    pub(crate) const SOCKET: u8 = 6;
    /// A symbolic link.
    pub(crate) const SYMLINK: u8 = 7;
}

/// One name in a directory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// Its inode.
    pub(crate) ino: u32,
    /// One of [`file_type`].
    pub(crate) kind: u8,
    /// The name, at most 255 bytes.
    pub(crate) name: &'a [u8],
}

fn record_len(name_len: usize) -> usize {
    (8 + name_len).next_multiple_of(4)
}

/// Where records go: a new block when the next one does not fit.
#[derive(Default)]
struct Packer {
    blocks: usize,
    used: usize,
}

impl Packer {
    /// Places a record of `len` bytes; whether it starts a new block.
    fn place(&mut self, len: usize) -> bool {
        if self.blocks == 0 || self.used + len > ROOM {
            self.blocks += 1;
            self.used = len;
            true
        } else {
            self.used += len;
            false
        }
    }
}

/// The blocks of a directory whose entries (besides `.` and `..`) have
/// names of these lengths.
pub(crate) fn block_count(name_lens: impl IntoIterator<Item = usize>) -> u64 {
    let mut p = Packer::default();
    p.place(record_len(1));
    p.place(record_len(2));
    for len in name_lens {
        p.place(record_len(len));
    }
    p.blocks as u64
}

/// Appends the blocks of directory `ino` (`parent` for `..`) to `out`:
/// the entries, then empty blocks up to `min_blocks` (lost+found's
/// preallocated room). `seed` is the directory inode's checksum seed.
pub(crate) fn encode<'a>(
    ino: u32,
    parent: u32,
    entries: impl IntoIterator<Item = Entry<'a>>,
    min_blocks: u64,
    seed: u32,
    out: &mut Vec<u8>,
) {
    let dot = [
        Entry {
            ino,
            kind: file_type::DIR,
            name: b".",
        },
        Entry {
            ino: parent,
            kind: file_type::DIR,
            name: b"..",
        },
    ];
    let mut p = Packer::default();
    // Where the current block and its last record start in `out`.
    let mut block_at = out.len();
    let mut last_at = 0;
    for e in dot.into_iter().chain(entries) {
        let len = record_len(e.name.len());
        if p.place(len) {
            if p.blocks > 1 {
                finish(out, block_at, last_at, seed);
            }
            block_at = out.len();
            out.resize(block_at + BLOCK, 0);
        }
        last_at = block_at + p.used - len;
        let r = &mut out[last_at..last_at + len];
        r[0..4].copy_from_slice(&e.ino.to_le_bytes());
        r[4..6].copy_from_slice(&(len as u16).to_le_bytes());
        r[6] = e.name.len() as u8;
        r[7] = e.kind;
        r[8..8 + e.name.len()].copy_from_slice(e.name);
    }
    finish(out, block_at, last_at, seed);
    for _ in p.blocks as u64..min_blocks {
        let at = out.len();
        out.resize(at + BLOCK, 0);
        // One unused record over the whole block.
        finish(out, at, at, seed);
    }
}

/// Stretches the block's last record to the tail and writes the tail.
fn finish(out: &mut [u8], block_at: usize, last_at: usize, seed: u32) {
    let block = &mut out[block_at..block_at + BLOCK];
    let last = last_at - block_at;
    block[last + 4..last + 6].copy_from_slice(&((ROOM - last) as u16).to_le_bytes());
    let tail = &mut block[ROOM..];
    tail[4..6].copy_from_slice(&(TAIL as u16).to_le_bytes());
    tail[7] = 0xDE;
    let sum = crc32c(seed, &block[..ROOM]);
    block[ROOM + 8..].copy_from_slice(&sum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("entry-{i:05}")).collect()
    }

    #[test]
    fn the_count_matches_what_is_encoded() {
        for n in [0, 1, 100, 339, 340, 341, 5000] {
            let names = names(n);
            let mut out = Vec::new();
            let entries = names.iter().map(|s| Entry {
                ino: 12,
                kind: file_type::REGULAR,
                name: s.as_bytes(),
            });
            encode(12, 2, entries, 0, 0, &mut out);
            let count = block_count(names.iter().map(String::len));
            assert_eq!(out.len() as u64, count * BLOCK as u64, "{n} names");
        }
    }

    #[test]
    fn records_cover_each_block_up_to_its_tail() {
        let names = names(1000);
        let mut out = Vec::new();
        let entries = names.iter().map(|s| Entry {
            ino: 99,
            kind: file_type::REGULAR,
            name: s.as_bytes(),
        });
        encode(12, 2, entries, 0, 0, &mut out);
        let mut seen = 0;
        for block in out.chunks(BLOCK) {
            let mut at = 0;
            while at < ROOM {
                let len = u16::from_le_bytes([block[at + 4], block[at + 5]]) as usize;
                assert!(len >= 12 && at + len <= ROOM);
                seen += 1;
                at += len;
            }
            assert_eq!(at, ROOM);
            assert_eq!(block[ROOM + 7], 0xDE);
        }
        assert_eq!(seen, 1002);
    }

    #[test]
    fn preallocated_blocks_are_empty_records() {
        let mut out = Vec::new();
        encode(11, 2, [], 4, 0, &mut out);
        assert_eq!(out.len(), 4 * BLOCK);
        assert_eq!(&out[BLOCK..BLOCK + 6], &[0, 0, 0, 0, 0xF4, 0x0F]);
    }
}
