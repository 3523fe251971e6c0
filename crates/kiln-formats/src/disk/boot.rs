//! The boot files, found in the tree — the image's own packages, never
//! the host's: the newest kernel and its initrd, systemd-boot, GRUB's
//! `boot.img` and the `core.img` the build made with `grub-mkimage`.
//! Whatever is missing is an error that names the package to add.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use super::{Arch, Firmware};
use crate::error::Error;
use crate::tree::{NodeKind, Tree};

/// GRUB's MBR code, in the tree.
pub(crate) const BOOT_IMG: &str = "usr/lib/grub/i386-pc/boot.img";
/// GRUB's core image as the build makes it.
pub(crate) const CORE_IMG: &str = "boot/grub/i386-pc/core.img";
/// The command that makes [`CORE_IMG`] in the image.
pub const GRUB_MKIMAGE: &str = "grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img -p '(hd0,gpt2)/grub' biosdisk part_gpt fat normal linux echo configfile search test";

/// A regular file of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// Its file in its layer.
    pub(crate) file: PathBuf,
    pub(crate) size: u64,
}

/// GRUB's two images.
#[derive(Debug, Clone)]
pub(crate) struct Grub {
    pub(crate) boot_img: Vec<u8>,
    pub(crate) core_img: Vec<u8>,
}

/// What boots the disk.
#[derive(Debug, Clone)]
pub(crate) struct BootFiles {
    pub(crate) kernel: Source,
    pub(crate) initrd: Source,
    /// systemd-boot's EFI binary, for UEFI.
    pub(crate) systemd_boot: Option<Source>,
    /// For BIOS.
    pub(crate) grub: Option<Grub>,
    /// The image's `PRETTY_NAME` (os-release), for the boot menu.
    pub(crate) title: String,
}

impl BootFiles {
    pub(crate) fn find(
        tree: &Tree,
        firmware: Firmware,
        arch: Arch,
        format: &'static str,
    ) -> Result<Self, Error> {
        let files = Files::new(tree);
        let missing = |path: &str, reason: String| Error::Unsupported {
            format,
            path: format!("/{path}"),
            reason,
        };
        let version = newest_kernel(tree).ok_or_else(|| {
            missing(
                "boot/vmlinuz-*",
                "the image has no kernel to boot: set `kernel = true` for it (a disk boots the image's own kernel)".into(),
            )
        })?;
        let kernel_path = format!("boot/vmlinuz-{version}");
        let kernel = files
            .regular(&kernel_path)
            .ok_or_else(|| missing(&kernel_path, "the kernel is not a regular file".into()))?;
        let initrd_path = format!("boot/initrd.img-{version}");
        let initrd = files.regular(&initrd_path).ok_or_else(|| {
            missing(
                &initrd_path,
                format!("the kernel {version} has no initrd: add the package `initramfs-tools` to the image"),
            )
        })?;
        let systemd_boot = if firmware.uefi() {
            let efi = match arch {
                Arch::Amd64 => "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
                Arch::Arm64 => "usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
            };
            Some(files.regular(efi).ok_or_else(|| {
                missing(
                    efi,
                    format!(
                        "UEFI boot needs systemd-boot: add the package `systemd-boot-efi` to the image (or boot with firmware `bios`, now `{}`)",
                        firmware.name()
                    ),
                )
            })?)
        } else {
            None
        };
        let grub = if firmware.bios() && arch == Arch::Amd64 {
            let need = |path: &str, what: &str| {
                let source = files.regular(path).ok_or_else(|| {
                    missing(
                        path,
                        format!(
                            "BIOS boot needs GRUB's {what}: add the package `grub-pc-bin` to the image and run `{GRUB_MKIMAGE}` in it (or boot with firmware `uefi`, now `{}`)",
                            firmware.name()
                        ),
                    )
                })?;
                fs::read(&source.file).map_err(|e| Error::io("read", &source.file, e))
            };
            let boot_img = need(BOOT_IMG, "boot.img")?;
            let core_img = need(CORE_IMG, "core.img")?;
            if boot_img.len() != 512 || boot_img[510..] != [0x55, 0xAA] {
                return Err(missing(
                    BOOT_IMG,
                    format!("it is not an MBR boot sector ({} bytes)", boot_img.len()),
                ));
            }
            // diskboot.img ends with its block list: 0x820, the segment the
            // rest of core.img loads at.
            if core_img.len() < 1024 || core_img[510..512] != [0x20, 0x08] {
                return Err(missing(
                    CORE_IMG,
                    format!("it is not an i386-pc core image made by `{GRUB_MKIMAGE}`"),
                ));
            }
            Some(Grub { boot_img, core_img })
        } else {
            None
        };
        Ok(Self {
            kernel,
            initrd,
            systemd_boot,
            grub,
            title: files.title().unwrap_or_else(|| "kiln".into()),
        })
    }
}

/// The newest `<version>` of the tree's `/boot/vmlinuz-<version>` files.
pub(crate) fn newest_kernel(tree: &Tree) -> Option<String> {
    tree.nodes
        .iter()
        .filter(|n| n.parent_path() == "boot")
        .filter(|n| matches!(n.kind, NodeKind::File { .. } | NodeKind::HardLink { .. }))
        .filter_map(|n| n.name().strip_prefix("vmlinuz-"))
        .filter(|v| !v.is_empty())
        .max_by(|a, b| compare_versions(a, b))
        .map(str::to_owned)
}

/// Paths of the tree, resolved as the image would (symlinks followed,
/// inside the root).
pub(crate) struct Files<'t> {
    tree: &'t Tree,
    index: HashMap<&'t str, usize>,
}

impl<'t> Files<'t> {
    pub(crate) fn new(tree: &'t Tree) -> Self {
        let index = tree
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.path.as_str(), i))
            .collect();
        Self { tree, index }
    }

    /// The node `path` (no leading `/`) names, every symlink on the way
    /// followed, never out of the root.
    fn resolve(&self, path: &str) -> Option<usize> {
        let mut todo: Vec<String> = path.split('/').rev().map(str::to_owned).collect();
        let mut at: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = todo.pop() {
            match part.as_str() {
                "" | "." => {}
                ".." => {
                    at.pop();
                }
                name => {
                    let mut next = at.join("/");
                    if !next.is_empty() {
                        next.push('/');
                    }
                    next.push_str(name);
                    let node = &self.tree.nodes[*self.index.get(next.as_str())?];
                    if let NodeKind::Symlink { target } = &node.kind {
                        hops += 1;
                        if hops > 40 {
                            return None;
                        }
                        let target = std::str::from_utf8(target).ok()?;
                        if target.starts_with('/') {
                            at.clear();
                        }
                        todo.extend(target.split('/').rev().map(str::to_owned));
                    } else {
                        at.push(name.to_owned());
                    }
                }
            }
        }
        self.index.get(at.join("/").as_str()).copied()
    }

    /// The regular file at `path`.
    pub(crate) fn regular(&self, path: &str) -> Option<Source> {
        let mut i = self.resolve(path)?;
        if let NodeKind::HardLink { target } = self.tree.nodes[i].kind {
            i = target;
        }
        match &self.tree.nodes[i].kind {
            NodeKind::File { size, source } => Some(Source {
                file: source.clone(),
                size: *size,
            }),
            _ => None,
        }
    }

    /// `PRETTY_NAME` of the image's os-release.
    fn title(&self) -> Option<String> {
        let source = self
            .regular("etc/os-release")
            .or_else(|| self.regular("usr/lib/os-release"))?;
        if source.size > 64 << 10 {
            return None;
        }
        let text = fs::read_to_string(&source.file).ok()?;
        text.lines().find_map(|l| {
            let v = l.strip_prefix("PRETTY_NAME=")?.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            let v: String = v.chars().filter(|c| !c.is_control()).collect();
            (!v.is_empty()).then_some(v)
        })
    }
}

/// Compares two version strings as dpkg does (`verrevcmp`): runs of
/// non-digits by character, letters before other characters and `~`
/// before everything, even the end; runs of digits by value.
pub(crate) fn compare_versions(left: &str, right: &str) -> Ordering {
    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    let (a, b) = (left.as_bytes(), right.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (here, there) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if here != there {
                return here.cmp(&there);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first = Ordering::Equal;
        while i < a.len() && a[i].is_ascii_digit() && j < b.len() && b[j].is_ascii_digit() {
            if first == Ordering::Equal {
                first = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first != Ordering::Equal {
            return first;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_dpkg_compares_them() {
        use Ordering::{Equal, Greater, Less};
        for (a, b, want) in [
            ("6.1.0-18-amd64", "6.1.0-9-amd64", Greater),
            ("6.1.0-18-amd64", "6.10.0-1-amd64", Less),
            ("6.12.6-amd64", "6.12.6-amd64", Equal),
            ("6.1.0-rc1", "6.1.0", Greater),
            ("6.1.0~rc1", "6.1.0", Less),
            ("5.10.0-28-cloud-amd64", "5.10.0-28-amd64", Greater),
            ("1.002", "1.2", Equal),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }
}
