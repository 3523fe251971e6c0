//! Where the partitions go, the GUIDs they get and the GPT that says so
//! (written with `gptman`: primary and backup headers with their CRCs,
//! 128 entries, the protective MBR).

use std::fs::File;
use std::io;
use std::path::Path;

use gptman::{GPT, GPTPartitionEntry};

use super::Arch;
use crate::error::Error;

/// A sector.
pub(crate) const SECTOR: u64 = 512;
/// A MiB, what partitions are aligned to.
pub(crate) const MIB: u64 = 1 << 20;
/// The backup GPT: 32 sectors of entries and the header.
const BACKUP_GPT: u64 = 33 * SECTOR;

/// The BIOS boot partition's type.
pub(crate) const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// The EFI system partition's type.
pub(crate) const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The type of a root partition on x86-64 (the Discoverable Partitions
/// Specification's).
pub(crate) const ROOT_X86_64: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
/// The type of a root partition on aarch64.
pub(crate) const ROOT_AARCH64: &str = "B921B045-1DF0-41C3-AF44-4C6F280D3FAE";

/// A byte range of the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) start: u64,
    pub(crate) len: u64,
}

impl Extent {
    pub(crate) fn first_lba(self) -> u64 {
        self.start / SECTOR
    }

    fn last_lba(self) -> u64 {
        (self.start + self.len) / SECTOR - 1
    }
}

/// The partitions and the disk's size: BIOS boot at 1 MiB (1 MiB), the
/// ESP at 2 MiB, the root right after it, to the last whole MiB before
/// the backup GPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) bios: Extent,
    pub(crate) esp: Extent,
    pub(crate) root: Extent,
    pub(crate) len: u64,
}

impl Layout {
    fn with_root(esp_len: u64, root_len: u64, len: u64) -> Self {
        let bios = Extent {
            start: MIB,
            len: MIB,
        };
        let esp = Extent {
            start: 2 * MIB,
            len: esp_len,
        };
        let root = Extent {
            start: esp.start + esp.len,
            len: root_len,
        };
        Self {
            bios,
            esp,
            root,
            len,
        }
    }

    /// The disk around a root filesystem of `root_len` bytes (whole
    /// MiB): the last MiB holds the backup GPT.
    pub(crate) fn around(esp_len: u64, root_len: u64) -> Self {
        let root_len = root_len.next_multiple_of(MIB);
        Self::with_root(esp_len, root_len, Self::overhead(esp_len) + root_len)
    }

    /// A disk of `size` bytes, or `None` when it leaves no MiB for the
    /// root.
    pub(crate) fn of_size(size: u64, esp_len: u64) -> Option<Self> {
        let root_start = 2 * MIB + esp_len;
        let room = size.checked_sub(BACKUP_GPT)?.checked_sub(root_start)?;
        let root_len = room / MIB * MIB;
        (root_len > 0).then(|| Self::with_root(esp_len, root_len, size))
    }

    /// What a disk has besides its root: the partition tables, the BIOS
    /// boot partition and the ESP, in whole MiB.
    pub(crate) fn overhead(esp_len: u64) -> u64 {
        3 * MIB + esp_len
    }
}

/// Every id of a disk, derived from the seed.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    pub(crate) disk: [u8; 16],
    pub(crate) bios: [u8; 16],
    pub(crate) esp: [u8; 16],
    pub(crate) root: [u8; 16],
    /// The FAT volume id (serial number).
    pub(crate) esp_volume: u32,
}

impl Ids {
    pub(crate) fn derive(seed: &[u8]) -> Self {
        let volume = derive(seed, "ESP volume id");
        Self {
            disk: uuid(seed, "disk GUID"),
            bios: uuid(seed, "BIOS boot partition GUID"),
            esp: uuid(seed, "ESP partition GUID"),
            root: uuid(seed, "root partition GUID"),
            esp_volume: u32::from_le_bytes([volume[0], volume[1], volume[2], volume[3]]),
        }
    }
}

/// 32 bytes derived from `seed` for one use (BLAKE3 key derivation).
pub(crate) fn derive(seed: &[u8], what: &str) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(&format!("kiln disk v1 {what}"));
    h.update(seed);
    *h.finalize().as_bytes()
}

/// A version-4 UUID (RFC 4122 byte order) derived from `seed`.
pub(crate) fn uuid(seed: &[u8], what: &str) -> [u8; 16] {
    let mut u = [0u8; 16];
    u.copy_from_slice(&derive(seed, what)[..16]);
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    u
}

/// `u` as text, lower case (as `blkid` shows a PARTUUID).
pub(crate) fn to_string(u: &[u8; 16]) -> String {
    let hex = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The UUID written as `text` (RFC 4122 byte order).
fn parse(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    assert_eq!(hex.len(), 32, "a GUID: {text}");
    let mut u = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let digits = std::str::from_utf8(pair).unwrap_or_default();
        u[i] = u8::from_str_radix(digits, 16).unwrap_or_else(|_| panic!("a GUID: {text}"));
    }
    u
}

/// `u` as GPT stores a GUID: the first three fields little-endian.
fn on_disk(u: &[u8; 16]) -> [u8; 16] {
    let mut g = *u;
    g[..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// Writes the protective MBR (its partition entry and signature, not the
/// boot code) and both GPTs into `file` (`path` in errors), already at
/// its full size.
pub(crate) fn write_gpt(
    file: &File,
    path: &Path,
    layout: &Layout,
    ids: &Ids,
    arch: Arch,
) -> Result<(), Error> {
    let fail =
        |e: gptman::Error| Error::io("write the partition table of", path, io::Error::other(e));
    let mut f = file;
    let mut gpt = GPT::new_from(&mut f, SECTOR, on_disk(&ids.disk)).map_err(fail)?;
    let root_type = match arch {
        Arch::Amd64 => ROOT_X86_64,
        Arch::Arm64 => ROOT_AARCH64,
    };
    let entry = |kind: &str, id: &[u8; 16], at: Extent, name: &str| GPTPartitionEntry {
        partition_type_guid: on_disk(&parse(kind)),
        unique_partition_guid: on_disk(id),
        starting_lba: at.first_lba(),
        ending_lba: at.last_lba(),
        attribute_bits: 0,
        partition_name: name.into(),
    };
    gpt[1] = entry(BIOS_BOOT, &ids.bios, layout.bios, "BIOS boot");
    gpt[2] = entry(ESP, &ids.esp, layout.esp, "ESP");
    gpt[3] = entry(root_type, &ids.root, layout.root, "root");
    debug_assert!(layout.root.last_lba() <= gpt.header.last_usable_lba);
    gpt.write_into(&mut f).map_err(fail)?;
    GPT::write_protective_mbr_into(&mut f, SECTOR).map_err(fail)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_written_as_gpt_stores_them() {
        let esp = parse(ESP);
        assert_eq!(to_string(&esp), ESP.to_lowercase());
        // 28 73 2A C1 1F F8 D2 11 BA 4B 00 A0 C9 3E C9 3B on disk.
        assert_eq!(
            on_disk(&esp),
            [
                0x28, 0x73, 0x2A, 0xC1, 0x1F, 0xF8, 0xD2, 0x11, 0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E,
                0xC9, 0x3B
            ]
        );
        let u = uuid(b"seed", "x");
        assert_eq!(&to_string(&u)[14..15], "4");
        assert_ne!(uuid(b"seed", "x"), uuid(b"seed", "y"));
        assert_ne!(uuid(b"seed", "x"), uuid(b"other", "x"));
    }

    #[test]
    fn layouts_align_to_mib_and_leave_room_for_the_backup() {
        let l = Layout::around(128 * MIB, 100 * MIB);
        assert_eq!(l.root.start, 130 * MIB);
        assert_eq!(l.len, 231 * MIB);
        let f = Layout::of_size(231 * MIB, 128 * MIB).unwrap();
        assert_eq!(f, l);
        // Not a whole MiB: the root still ends on one.
        let f = Layout::of_size(231 * MIB + 4096, 128 * MIB).unwrap();
        assert_eq!(f.root.len, 100 * MIB);
        assert!(Layout::of_size(131 * MIB, 128 * MIB).is_none());
        assert!(Layout::of_size(10, 128 * MIB).is_none());
    }
}
