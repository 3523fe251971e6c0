//! `vhd`: a fixed VHD, as Azure takes it — the raw disk (a whole number
//! of MiB) and a 512-byte footer (Microsoft's VHD specification 1.0),
//! its time the epoch and its unique id derived from the seed.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::layout::uuid;
use crate::error::Error;

/// Seconds from 1970 to 2000-01-01 00:00 UTC, the VHD epoch.
const VHD_EPOCH: i64 = 946_684_800;
/// A footer's size.
pub(crate) const FOOTER: usize = 512;

/// Appends the footer of a fixed disk of `len` bytes to `path`, which
/// holds those bytes.
pub(crate) fn append_footer(path: &Path, len: u64, epoch: i64, seed: &[u8]) -> Result<(), Error> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    file.write_all_at(&footer(len, epoch, seed), len)
        .map_err(|e| Error::io("write", path, e))
}

/// The footer of a fixed disk of `len` bytes.
pub(crate) fn footer(len: u64, epoch: i64, seed: &[u8]) -> [u8; FOOTER] {
    let mut f = [0u8; FOOTER];
    f[0..8].copy_from_slice(b"conectix");
    // Features: reserved, always set.
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    // Data offset: none, a fixed disk.
    f[16..24].copy_from_slice(&u64::MAX.to_be_bytes());
    let time = u32::try_from((epoch - VHD_EPOCH).max(0)).unwrap_or(u32::MAX);
    f[24..28].copy_from_slice(&time.to_be_bytes());
    f[28..32].copy_from_slice(b"kiln");
    f[32..36].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[36..40].copy_from_slice(b"Lnux");
    f[40..48].copy_from_slice(&len.to_be_bytes());
    f[48..56].copy_from_slice(&len.to_be_bytes());
    let (cylinders, heads, sectors) = geometry(len);
    f[56..58].copy_from_slice(&cylinders.to_be_bytes());
    f[58] = heads;
    f[59] = sectors;
    // Disk type: fixed.
    f[60..64].copy_from_slice(&2u32.to_be_bytes());
    f[68..84].copy_from_slice(&uuid(seed, "VHD unique id"));
    let sum = f.iter().fold(0u32, |s, &b| s.wrapping_add(u32::from(b)));
    f[64..68].copy_from_slice(&(!sum).to_be_bytes());
    f
}

/// The CHS geometry of `len` bytes, as the specification's appendix
/// computes it.
pub(crate) fn geometry(len: u64) -> (u16, u8, u8) {
    let total = (len / 512).min(65_535 * 16 * 255);
    let (sectors, heads, cyl_heads) = if total >= 65_535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut sectors = 17;
        let mut cyl_heads = total / sectors;
        let mut heads = cyl_heads.div_ceil(1024).max(4);
        if cyl_heads >= heads * 1024 || heads > 16 {
            sectors = 31;
            heads = 16;
            cyl_heads = total / sectors;
        }
        if cyl_heads >= heads * 1024 {
            sectors = 63;
            heads = 16;
            cyl_heads = total / sectors;
        }
        (sectors, heads, cyl_heads)
    };
    ((cyl_heads / heads) as u16, heads as u8, sectors as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometries_are_the_specifications() {
        // qemu-img's own for these sizes.
        assert_eq!(geometry(64 << 20), (963, 8, 17));
        assert_eq!(geometry(1 << 30), (2080, 16, 63));
        assert_eq!(geometry(200 << 30), (65535, 16, 255));
    }

    #[test]
    fn the_checksum_is_the_ones_complement_of_the_byte_sum() {
        let f = footer(64 << 20, 1_700_000_000, b"seed");
        let sum: u32 = f
            .iter()
            .enumerate()
            .filter(|(i, _)| !(64..68).contains(i))
            .map(|(_, &b)| u32::from(b))
            .sum();
        assert_eq!(u32::from_be_bytes(f[64..68].try_into().unwrap()), !sum);
        assert_eq!(
            u32::from_be_bytes(f[24..28].try_into().unwrap()),
            1_700_000_000 - 946_684_800
        );
    }
}
