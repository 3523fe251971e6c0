//! GRUB for a PC BIOS, installed as GRUB 2.06's `grub-bios-setup`
//! installs it on a GPT disk with a BIOS boot partition (without
//! Reed-Solomon codes): `boot.img`'s code in the MBR, told where
//! `core.img` starts, and `core.img` in partition 1, its first sector
//! (`diskboot.img`) told where the rest is.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::boot::{CORE_IMG, Grub};
use super::layout::{Layout, SECTOR};
use crate::error::Error;

// Offsets in boot.img (GRUB's include/grub/i386/pc/boot.h).
/// The BIOS parameter block, which `grub-bios-setup` keeps from the disk
/// (zeros on a new one).
const BPB: std::ops::Range<usize> = 0x03..0x5A;
/// `kernel_sector`: the LBA of core.img's first sector (u64).
const KERNEL_SECTOR: usize = 0x5C;
/// `boot_drive`: 0xFF, the drive the BIOS booted from.
const BOOT_DRIVE: usize = 0x64;
/// `boot_drive_check`: a `jmp` over the workaround for BIOSes that pass a
/// bogus drive; a hard disk gets two `nop`s instead.
const DRIVE_CHECK: usize = 0x66;
/// Where the disk's own bytes start: the disk signature, the partition
/// table (`GRUB_BOOT_MACHINE_WINDOWS_NT_MAGIC`).
pub(crate) const MBR_CODE: usize = 0x1B8;

/// A block list entry of diskboot.img: start LBA (u64), sectors (u16),
/// segment (u16); the first is the sector's last 12 bytes, the next ones
/// go down from there, a zero length ends them.
const LIST_ENTRY: usize = 12;
/// The segment the sectors after the first load at (0x800 + 512 / 16).
const SEGMENT: u16 = 0x820;

/// Writes the MBR's boot code and core.img into `file` (`path` in
/// errors), after the GPT: the partition table stays.
pub(crate) fn install(file: &File, path: &Path, grub: &Grub, layout: &Layout) -> Result<(), Error> {
    let core_lba = layout.bios.first_lba();
    let core = core_image(&grub.core_img, core_lba);
    if core.len() as u64 > layout.bios.len {
        return Err(Error::Unsupported {
            format: "a BIOS boot partition",
            path: format!("/{CORE_IMG}"),
            reason: format!(
                "it has {} bytes, more than the {} of the BIOS boot partition",
                grub.core_img.len(),
                layout.bios.len
            ),
        });
    }
    let write = |bytes: &[u8], at: u64| {
        file.write_all_at(bytes, at)
            .map_err(|e| Error::io("write", path, e))
    };
    write(&mbr_code(&grub.boot_img, core_lba), 0)?;
    write(&core, layout.bios.start)
}

/// boot.img's code (the MBR up to the disk signature) pointing at
/// `core_lba`.
pub(crate) fn mbr_code(boot_img: &[u8], core_lba: u64) -> [u8; MBR_CODE] {
    let mut code = [0u8; MBR_CODE];
    code.copy_from_slice(&boot_img[..MBR_CODE]);
    code[BPB].fill(0);
    code[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&core_lba.to_le_bytes());
    code[BOOT_DRIVE] = 0xFF;
    code[DRIVE_CHECK] = 0x90;
    code[DRIVE_CHECK + 1] = 0x90;
    code
}

/// core.img, padded to whole sectors, as it goes to `core_lba`: one
/// block list entry for the sectors after the first, which follow it.
pub(crate) fn core_image(core_img: &[u8], core_lba: u64) -> Vec<u8> {
    let sectors = core_img.len().div_ceil(SECTOR as usize);
    let mut core = core_img.to_vec();
    core.resize(sectors * SECTOR as usize, 0);
    // Clear the lists grub-mkimage left, as grub-bios-setup does.
    let mut at = SECTOR as usize - LIST_ENTRY;
    while at > 0 && core[at + 8..at + 10] != [0, 0] {
        core[at..at + LIST_ENTRY].fill(0);
        at -= LIST_ENTRY;
    }
    let first = SECTOR as usize - LIST_ENTRY;
    if sectors > 1 {
        let entry = &mut core[first..first + LIST_ENTRY];
        entry[..8].copy_from_slice(&(core_lba + 1).to_le_bytes());
        entry[8..10].copy_from_slice(&((sectors - 1) as u16).to_le_bytes());
        entry[10..].copy_from_slice(&SEGMENT.to_le_bytes());
        // The terminator.
        core[first - LIST_ENTRY..first].fill(0);
    }
    core
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_images_get_one_block_list_entry() {
        let mut img = vec![0xAAu8; 3 * 512 + 7];
        // What grub-mkimage writes: start 2, 0 sectors... here a stale list.
        img[500..512].copy_from_slice(&[2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0x20, 0x08]);
        img[488..500].copy_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x20, 0x09]);
        img[476..488].fill(0);
        let core = core_image(&img, 2048);
        assert_eq!(core.len(), 4 * 512);
        assert_eq!(
            &core[500..512],
            &[0x01, 0x08, 0, 0, 0, 0, 0, 0, 3, 0, 0x20, 0x08]
        );
        assert!(core[488..500].iter().all(|&b| b == 0));
        assert_eq!(core[476], 0);
        assert!(core[3 * 512 + 7..].iter().all(|&b| b == 0));
        assert_eq!(&core[512..3 * 512], &img[512..3 * 512]);
    }

    #[test]
    fn the_mbr_points_at_the_core_image() {
        let mut boot = vec![0x11u8; 512];
        boot[0x66] = 0xEB;
        let code = mbr_code(&boot, 2048);
        assert_eq!(&code[0x5C..0x64], &2048u64.to_le_bytes());
        assert_eq!(code[0x64], 0xFF);
        assert_eq!(&code[0x66..0x68], &[0x90, 0x90]);
        assert!(code[3..0x5A].iter().all(|&b| b == 0));
        assert_eq!(&code[..3], &[0x11; 3]);
        assert_eq!(code[0x68], 0x11);
    }
}
