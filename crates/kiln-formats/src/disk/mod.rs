//! `raw`, `qcow2`, `vhd`, `vmdk`: bootable disk images of the full root,
//! booted by the image's own boot loaders — nothing comes from the host.
//!
//! The disk is GPT-partitioned (sectors of 512 bytes, partitions aligned
//! to 1 MiB, 128 entries, a backup table in the last 33 sectors, a
//! protective MBR):
//!
//! | partition | type | size | holds |
//! | --- | --- | --- | --- |
//! | 1 `BIOS boot` | `21686148-6449-6E6F-744E-656564454649` | 1 MiB | GRUB's `core.img` |
//! | 2 `ESP` | `C12A7328-F81F-11D2-BA4B-00A0C93EC93B` | `esp_size`, 128 MiB | FAT32: kernel, initrd, systemd-boot, `grub/grub.cfg` |
//! | 3 `root` | Linux root (x86-64 or aarch64) | the rest | ext4 of the tree |
//!
//! The root filesystem is the crate's own ext4 writer's, written straight
//! into partition 3 (`ext4::Planned::write_into`), never copied; `auto`
//! sizes the disk around ext4's `auto` size, a fixed size gives the root
//! what the other partitions leave. The kernel and initrd are the tree's
//! newest `/boot/vmlinuz-<version>` (Debian's version order) and its
//! `/boot/initrd.img-<version>`, copied to the ESP's `/vmlinuz` and
//! `/initrd.img`; the kernel command line is `root=PARTUUID=<partition
//! 3> rw` and [`DiskOptions::cmdline`].
//!
//! UEFI ([`Firmware::Uefi`], [`Firmware::Hybrid`]): the tree's
//! systemd-boot (package `systemd-boot-efi`) as the ESP's removable-media
//! loader `/EFI/BOOT/BOOTX64.EFI` (and `/EFI/systemd/`), with
//! `/loader/loader.conf` and `/loader/entries/kiln.conf`. BIOS
//! ([`Firmware::Bios`], [`Firmware::Hybrid`], x86 only): the tree's GRUB
//! (package `grub-pc-bin`) installed as `grub-bios-setup` would
//! (`bios`): `boot.img`'s code in the MBR pointing at partition 1,
//! `/boot/grub/i386-pc/core.img` — which the build makes with the image's
//! own `grub-mkimage`, its prefix `(hd0,gpt2)/grub` — in partition 1
//! with its block list patched, and `/grub/grub.cfg` on the ESP.
//!
//! Everything is a function of the tree, the options, the epoch and
//! [`Input::seed`]: the disk and partition GUIDs, the FAT volume id, the
//! VHD and VMDK ids are derived from the seed (BLAKE3 key derivation, one
//! context per use, RFC 4122 version-4 bits); every FAT time is the
//! epoch. `qcow2` and `vmdk` (monolithicSparse) are converted from the
//! raw disk, written to a temporary file beside the artifact, by
//! `qemu-img convert` (the one external tool here: their output is
//! deterministic but for the VMDK descriptor's random CID and its copy of
//! the file name, which are rewritten; `qemu-img --version` is part of
//! their identity, so another version makes them again); `vhd` is written natively (the
//! raw disk and a fixed-disk footer, as Azure wants it), since
//! `qemu-img`'s footer holds the time and a random UUID.
//!
//! Modules: `layout` (where the partitions go, the GUIDs, the GPT),
//! `boot` (finding the boot files in the tree), `esp` (the FAT
//! partition), `bios` (GRUB's MBR and core image), `vhd` (the footer),
//! `convert` (`qemu-img`), `kernel` (the `vmlinuz` and `initrd.img`
//! outputs: the same kernel and initrd as files of their own).

mod bios;
mod boot;
mod convert;
mod esp;
mod kernel;
mod layout;
mod vhd;

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::ext4::{self, Ext4Options};
use crate::tree::Tree;
use crate::{Input, Writer};

pub use boot::GRUB_MKIMAGE;
pub(crate) use convert::qemu_img_version;
pub use kernel::BootFile;
pub(crate) use kernel::BootFileWriter;
use layout::{Ids, Layout, MIB};

/// The ESP's size when [`DiskOptions::esp_size`] is not set.
pub const DEFAULT_ESP_SIZE: u64 = 128 << 20;
/// The kernel arguments when [`DiskOptions::cmdline`] is not set.
pub const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0,115200";

/// Options of a disk image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskOptions {
    /// A fixed size of the whole disk in bytes (a multiple of 512;
    /// rounded up to a whole MiB for `vhd`); `None` for `auto`: the
    /// root's own `auto` ext4 size (with `headroom`) plus the other
    /// partitions and the partition tables.
    pub size: Option<u64>,
    /// Free space in the root filesystem with `auto`, as
    /// [`Ext4Options::headroom`].
    pub headroom: Option<u64>,
    /// The root filesystem's label, at most 16 bytes.
    pub label: Option<String>,
    /// The EFI system partition's size in bytes, a whole number of MiB,
    /// at least 64 MiB (`None`: [`DEFAULT_ESP_SIZE`]).
    pub esp_size: Option<u64>,
    /// Which firmware boots it.
    pub firmware: Firmware,
    /// Kernel arguments after `root=PARTUUID=… rw` (`None`:
    /// [`DEFAULT_CMDLINE`]).
    pub cmdline: Option<String>,
    /// The image's CPU architecture.
    pub arch: Arch,
}

/// Which firmware boots a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// A PC BIOS (`SeaBIOS`, legacy boot): GRUB from the MBR.
    Bios,
    /// UEFI: systemd-boot from the ESP.
    Uefi,
    /// Both, so the same disk boots either way (BIOS only on x86).
    #[default]
    Hybrid,
}

/// The CPU architecture of a disk's image, named as Debian names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arch {
    /// x86-64.
    #[default]
    Amd64,
    /// 64-bit ARM (UEFI only).
    Arm64,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl Firmware {
    fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::Hybrid => "hybrid",
        }
    }

    fn bios(self) -> bool {
        matches!(self, Firmware::Bios | Firmware::Hybrid)
    }

    fn uefi(self) -> bool {
        matches!(self, Firmware::Uefi | Firmware::Hybrid)
    }
}

impl DiskOptions {
    pub(crate) fn identity(&self) -> String {
        format!(
            "v1 size={:?} headroom={:?} label={:?} esp_size={:?} firmware={} cmdline={:?} arch={}",
            self.size,
            self.headroom,
            self.label,
            self.esp_size,
            self.firmware.name(),
            self.cmdline,
            self.arch.name()
        )
    }

    fn esp_len(&self, format: &'static str) -> Result<u64, Error> {
        let len = self.esp_size.unwrap_or(DEFAULT_ESP_SIZE);
        if len % MIB != 0 || len < 64 * MIB {
            return Err(Error::Options {
                format,
                reason: format!(
                    "the ESP size {len} is not a whole number of MiB of at least 64 MiB"
                ),
            });
        }
        Ok(len)
    }

    /// The kernel command line.
    fn kernel_cmdline(&self, root: &str) -> String {
        let extra = self.cmdline.as_deref().unwrap_or(DEFAULT_CMDLINE).trim();
        if extra.is_empty() {
            format!("root=PARTUUID={root} rw")
        } else {
            format!("root=PARTUUID={root} rw {extra}")
        }
    }

    /// Checks what does not need the tree.
    fn check(&self, format: &'static str) -> Result<(), Error> {
        if self.firmware == Firmware::Bios && self.arch != Arch::Amd64 {
            return Err(Error::Options {
                format,
                reason: format!(
                    "BIOS boot is for x86 only, not {}: set the firmware to `uefi`",
                    self.arch.name()
                ),
            });
        }
        if let Some(cmdline) = &self.cmdline
            && cmdline.contains(['\n', '\r'])
        {
            return Err(Error::Options {
                format,
                reason: format!("the kernel command line {cmdline:?} has more than one line"),
            });
        }
        if let Some(size) = self.size
            && size % layout::SECTOR != 0
        {
            return Err(Error::Options {
                format,
                reason: format!("the disk size {size} is not a whole number of 512-byte sectors"),
            });
        }
        Ok(())
    }
}

/// The file a disk is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DiskFormat {
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
}

impl DiskFormat {
    pub(crate) fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Vmdk => "vmdk",
        }
    }
}

pub(crate) struct DiskWriter {
    pub(crate) options: DiskOptions,
    pub(crate) format: DiskFormat,
}

impl Writer for DiskWriter {
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
        let name = self.format.name();
        match self.format {
            DiskFormat::Raw => write_raw(&self.options, input, dest, name, false).map(|_| ()),
            DiskFormat::Vhd => {
                let len = write_raw(&self.options, input, dest, name, true)?;
                vhd::append_footer(dest, len, input.epoch, input.seed)
            }
            DiskFormat::Qcow2 | DiskFormat::Vmdk => {
                let raw = beside(dest, "raw");
                let result = write_raw(&self.options, input, &raw, name, false)
                    .and_then(|_| convert::qemu_img(&raw, dest, self.format, input.seed));
                let _ = std::fs::remove_file(&raw);
                result
            }
        }
    }
}

/// A temporary file next to `dest`.
fn beside(dest: &Path, what: &str) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{what}"));
    dest.with_file_name(name)
}

/// Writes the raw disk of `input` to `dest` (a new file) and returns its
/// size; `whole_mib` rounds a fixed size up to a MiB.
fn write_raw(
    options: &DiskOptions,
    input: &Input<'_>,
    dest: &Path,
    format: &'static str,
    whole_mib: bool,
) -> Result<u64, Error> {
    options.check(format)?;
    let esp_len = options.esp_len(format)?;
    let tree = Tree::merged(input.stack, input.epoch)?;
    // Everything the boot needs is found before anything is written.
    let files = boot::BootFiles::find(&tree, options.firmware, options.arch, format)?;
    let ids = Ids::derive(input.seed);
    let ext4_options = |size| Ext4Options {
        size,
        headroom: options.headroom,
        label: options.label.clone(),
    };
    let root_seed = layout::derive(input.seed, "root filesystem seed");
    let (layout, root) = match options.size {
        None => {
            let root = ext4::Planned::new(&tree, &ext4_options(None), &root_seed, input.epoch)?;
            (Layout::around(esp_len, root.len()), root)
        }
        Some(size) => {
            let size = if whole_mib {
                size.next_multiple_of(MIB)
            } else {
                size
            };
            let layout = Layout::of_size(size, esp_len).ok_or_else(|| Error::TooLarge {
                format,
                reason: format!(
                    "a disk of {size} bytes has no room for a root partition after the {} MiB of partition tables, BIOS boot partition and ESP",
                    Layout::overhead(esp_len) >> 20
                ),
            })?;
            let root = ext4::Planned::new(
                &tree,
                &ext4_options(Some(layout.root.len)),
                &root_seed,
                input.epoch,
            )
            .map_err(|e| match e {
                Error::TooLarge { reason, .. } => Error::TooLarge {
                    format,
                    reason: format!(
                        "a disk of {size} bytes leaves {} bytes for the root partition, and for the root's ext4 {reason}",
                        layout.root.len
                    ),
                },
                e => e,
            })?;
            (layout, root)
        }
    };
    let esp = esp::Content::new(&files, options, &ids);
    // Read too: the GPT and FAT writers read back what they wrote.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dest)
        .map_err(|e| Error::io("create", dest, e))?;
    file.set_len(layout.len)
        .map_err(|e| Error::io("write", dest, e))?;
    layout::write_gpt(&file, dest, &layout, &ids, options.arch)?;
    if let Some(grub) = &files.grub {
        bios::install(&file, dest, grub, &layout)?;
    }
    esp.write(
        &file,
        dest,
        &layout.esp,
        ids.esp_volume,
        input.epoch,
        format,
    )?;
    root.write_into(&file, dest, layout.root.start, input.cancel)?;
    Ok(layout.len)
}
