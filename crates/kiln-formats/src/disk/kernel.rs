//! `vmlinuz` and `initrd.img`: the kernel a variant boots and its initrd,
//! as files of their own (to hand to a boot server, to `qemu -kernel`, to
//! a micro-VM monitor): the tree's newest `/boot/vmlinuz-<version>` and
//! its `/boot/initrd.img-<version>`, the same pair a disk boots.

use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use super::boot::{Files, newest_kernel};
use crate::error::Error;
use crate::tree::{Tree, open_source};
use crate::{Input, Writer};

/// Which of the two boot files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootFile {
    /// The kernel image, `/boot/vmlinuz-<version>`.
    Vmlinuz,
    /// Its initial RAM disk, `/boot/initrd.img-<version>`.
    Initrd,
}

impl BootFile {
    /// The format's name and file suffix.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            BootFile::Vmlinuz => "vmlinuz",
            BootFile::Initrd => "initrd.img",
        }
    }
}

pub(crate) struct BootFileWriter {
    pub(crate) file: BootFile,
}

impl Writer for BootFileWriter {
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
        let tree = Tree::merged(input.stack, input.epoch)?;
        let format = self.file.name();
        let version = newest_kernel(&tree).ok_or_else(|| Error::Unsupported {
            format,
            path: "/boot/vmlinuz-*".into(),
            reason: "the image has no kernel: set `kernel = true` for it".into(),
        })?;
        let path = match self.file {
            BootFile::Vmlinuz => format!("boot/vmlinuz-{version}"),
            BootFile::Initrd => format!("boot/initrd.img-{version}"),
        };
        let source = Files::new(&tree)
            .regular(&path)
            .ok_or_else(|| Error::Unsupported {
                format,
                path: format!("/{path}"),
                reason: match self.file {
                    BootFile::Vmlinuz => "the kernel is not a regular file".into(),
                    BootFile::Initrd => format!(
                        "the kernel {version} has no initrd: add the package `initramfs-tools` to the image"
                    ),
                },
            })?;
        let mut from = open_source(&source.file)?;
        let out = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, out);
        std::io::copy(&mut from, &mut out).map_err(|e| Error::io("write", dest, e))?;
        out.flush().map_err(|e| Error::io("write", dest, e))
    }
}
