//! kiln's output writers.
//!
//! A writer turns a built variant — its stack of layers, read through
//! [`kiln_layers::MergedView`] without mounting anything — into one
//! artifact: an archive, a filesystem image, a bootable disk, an OCI
//! image (a layout folder, or the same in one tar). Writers never read the
//! configuration: the CLI maps an image's `outputs` to a [`Spec`] (the
//! format and its options), and [`write_artifact`] writes it to a
//! temporary file (or folder) beside the destination and renames it into
//! place, so a reader never sees half a file and a failed write leaves the
//! previous artifact alone.
//!
//! Every writer is **reproducible**: entries are sorted, mtimes clamped to
//! the build's epoch, inode numbers assigned in tree order, UUIDs and
//! seeds fixed; the same layers and options give the same bytes on any
//! machine. [`Tree`] is the deterministic listing they all start from.
//!
//! ```no_run
//! use kiln_formats::{Compression, Input, Spec, write_artifact};
//! use kiln_layers::LayerStack;
//!
//! let stack = LayerStack::new(vec!["store/layers/base/tree".into()]);
//! let input = Input {
//!     stack: &stack,
//!     layer_ids: &[],
//!     epoch: 1_700_000_000,
//!     threads: 2,
//!     cache_dir: None,
//!     seed: b"key",
//!     cancel: None,
//! };
//! let spec = Spec::Tar { compression: Compression::Zstd { level: 3 } };
//! write_artifact(&spec, &input, "out/base.tar.zst".as_ref())?;
//! # Ok::<(), kiln_formats::Error>(())
//! ```
#![deny(missing_docs)]

mod civil;
mod compress;
pub mod cpio;
mod disk;
mod error;
mod ext4;
pub mod flist;
mod oci;
mod squashfs;
mod tar;
mod tree;
pub mod writer_cache;

use std::fs;
use std::path::{Path, PathBuf};

pub use compress::Compression;
pub use disk::{
    Arch, BootFile, DEFAULT_CMDLINE, DEFAULT_ESP_SIZE, DiskOptions, Firmware, GRUB_MKIMAGE,
};
pub use error::Error;
pub use ext4::Ext4Options;
pub use flist::FlistOptions;
pub use oci::{DEFAULT_PATH, OciOptions, is_docker_reference, rfc3339};
pub use squashfs::{SquashfsCompression, SquashfsOptions};
pub use tree::{Node, NodeKind, OPAQUE_XATTR, Tree, open_source};

use kiln_layers::LayerStack;

/// What a writer reads.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The variant's layers, bottom first; its own layer is the top one.
    pub stack: &'a LayerStack,
    /// What identifies each layer of `stack` (its key in the store), in
    /// the same order, or empty when unknown. Writers that keep one piece
    /// per layer (OCI's layer blobs) cache it under this identity.
    pub layer_ids: &'a [[u8; 32]],
    /// The build's epoch (`SOURCE_DATE_EPOCH`): later mtimes are clamped
    /// to it, and formats that store a creation time store it.
    pub epoch: i64,
    /// How many threads a writer may compress on.
    pub threads: usize,
    /// A folder writers may keep reusable pieces in (squashfs's compressed
    /// blocks, keyed by their content), shared by every build on the
    /// machine; `None` to keep nothing.
    pub cache_dir: Option<&'a Path>,
    /// Bytes that identify the variant's content (its layer key): UUIDs,
    /// hash seeds and the like are derived from them, so they are fixed
    /// for the same content and differ between variants.
    pub seed: &'a [u8],
    /// When set, the writer stops early with [`Error::Cancelled`]:
    /// squashfs between blocks; tar, cpio, OCI layers, ext4 and disks,
    /// and flists between files and every 128 KiB of a file's copy.
    pub cancel: Option<&'a std::sync::atomic::AtomicBool>,
}

/// What writers check between files: the build's cancel flag, if any.
pub(crate) type Cancel<'a> = Option<&'a std::sync::atomic::AtomicBool>;

/// [`Error::Cancelled`] once `cancel` is set.
pub(crate) fn check(cancel: Cancel<'_>) -> Result<(), Error> {
    if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// Writes one artifact; see the module documentation.
pub trait Writer {
    /// Writes the artifact to `dest`, a new file or folder (the caller
    /// renames it).
    fn write(&self, input: &Input<'_>, dest: &Path) -> Result<(), Error>;
}

/// A format and its options (closed set); [`Spec::writer`] gives its
/// writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A POSIX (pax) tar of the full root.
    Tar {
        /// How it is compressed.
        compression: Compression,
    },
    /// A newc cpio of the full root (an initramfs).
    Cpio {
        /// How it is compressed.
        compression: Compression,
    },
    /// A newc cpio of the variant's own layer, opaque directories turned
    /// into whiteouts, to unpack into an overlayfs upper directory.
    OverlayCpio {
        /// How it is compressed.
        compression: Compression,
    },
    /// A squashfs of the full root.
    Squashfs(SquashfsOptions),
    /// A squashfs of the variant's own layer, whiteouts and opaque marks
    /// kept, to stack as an overlayfs lower directory.
    OverlaySquashfs(SquashfsOptions),
    /// A raw ext4 filesystem image of the full root.
    Ext4(Ext4Options),
    /// An OCI image layout folder (`oci-layout`, `index.json`,
    /// `blobs/sha256/…`), one image layer per layer of the stack.
    Oci(OciOptions),
    /// The same OCI image layout as one tar file (`oci-archive:`).
    OciTar(OciOptions),
    /// A `ThreeFold` flist of the full root (an `SQLite` database as
    /// `rfs pack` writes it), its file content in a block store; see
    /// [`flist`].
    Flist(FlistOptions),
    /// A bootable GPT disk, raw: BIOS boot partition, ESP, ext4 root;
    /// see [`DiskOptions`].
    Raw(DiskOptions),
    /// The same disk as a sparse qcow2.
    Qcow2(DiskOptions),
    /// The same disk as a fixed VHD (Azure's), its size a whole MiB.
    Vhd(DiskOptions),
    /// The same disk as a monolithicSparse VMDK.
    Vmdk(DiskOptions),
    /// The kernel or the initrd the variant boots, as a file of its own.
    BootFile(BootFile),
}

impl Spec {
    /// The writer for this spec.
    #[must_use]
    pub fn writer(&self) -> Box<dyn Writer + '_> {
        match self {
            Spec::Tar { compression } => Box::new(tar::TarWriter {
                compression: *compression,
            }),
            Spec::Cpio { compression } => Box::new(cpio::CpioWriter {
                compression: *compression,
                overlay: false,
            }),
            Spec::OverlayCpio { compression } => Box::new(cpio::CpioWriter {
                compression: *compression,
                overlay: true,
            }),
            Spec::Squashfs(options) => Box::new(squashfs::SquashfsWriter {
                options: options.clone(),
                overlay: false,
            }),
            Spec::OverlaySquashfs(options) => Box::new(squashfs::SquashfsWriter {
                options: options.clone(),
                overlay: true,
            }),
            Spec::Ext4(options) => Box::new(ext4::Ext4Writer {
                options: options.clone(),
            }),
            Spec::Oci(options) => Box::new(oci::OciWriter {
                options: options.clone(),
                archive: false,
            }),
            Spec::OciTar(options) => Box::new(oci::OciWriter {
                options: options.clone(),
                archive: true,
            }),
            Spec::Flist(options) => Box::new(flist::FlistWriter {
                options: options.clone(),
            }),
            Spec::Raw(options) => disk_writer(options, disk::DiskFormat::Raw),
            Spec::Qcow2(options) => disk_writer(options, disk::DiskFormat::Qcow2),
            Spec::Vhd(options) => disk_writer(options, disk::DiskFormat::Vhd),
            Spec::Vmdk(options) => disk_writer(options, disk::DiskFormat::Vmdk),
            Spec::BootFile(file) => Box::new(disk::BootFileWriter { file: *file }),
        }
    }

    /// A stable one-line description of the format, its options and the
    /// writer's version: two artifacts of the same layers and the same
    /// identity are the same bytes, so an artifact stored under it can be
    /// reused.
    #[must_use]
    pub fn identity(&self) -> String {
        match self {
            Spec::Tar { compression } => format!("tar v1 {}", compression.identity()),
            Spec::Cpio { compression } => format!("cpio v1 {}", compression.identity()),
            Spec::OverlayCpio { compression } => {
                format!("overlay.cpio v1 {}", compression.identity())
            }
            Spec::Squashfs(o) => format!("squashfs {}", o.identity()),
            Spec::OverlaySquashfs(o) => format!("overlay.squashfs {}", o.identity()),
            Spec::Ext4(o) => format!("ext4 {}", o.identity()),
            Spec::Oci(o) => format!("oci {}", o.identity()),
            Spec::OciTar(o) => format!("oci.tar {}", o.identity()),
            Spec::Flist(o) => format!("flist {}", o.identity()),
            Spec::Raw(o) => format!("raw {}", o.identity()),
            Spec::Qcow2(o) => format!("qcow2 {} tool={:?}", o.identity(), disk::qemu_img_version()),
            Spec::Vhd(o) => format!("vhd {}", o.identity()),
            Spec::Vmdk(o) => format!("vmdk {} tool={:?}", o.identity(), disk::qemu_img_version()),
            Spec::BootFile(file) => format!("{} v1", file.name()),
        }
    }
}

fn disk_writer(options: &DiskOptions, format: disk::DiskFormat) -> Box<dyn Writer> {
    Box::new(disk::DiskWriter {
        options: options.clone(),
        format,
    })
}

/// Writes `spec`'s artifact of `input` to `dest` atomically: into a
/// temporary file (or folder, for [`Spec::Oci`]) in the same folder,
/// synced, then renamed over `dest` (exchanged with it, when a folder is
/// involved, so readers see the old or the new artifact and nothing in
/// between). On failure the temporary file is removed and `dest` is
/// untouched.
pub fn write_artifact(spec: &Spec, input: &Input<'_>, dest: &Path) -> Result<(), Error> {
    if input
        .cancel
        .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    {
        return Err(Error::Cancelled);
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let name = dest
        .file_name()
        .map_or_else(|| "artifact".into(), |n| n.to_string_lossy().into_owned());
    let temp: PathBuf = dir.join(format!(".{name}.partial-{}", std::process::id()));
    remove_any(&temp)?;
    let result = spec.writer().write(input, &temp).and_then(|()| {
        let f = fs::File::open(&temp).map_err(|e| Error::io("open", &temp, e))?;
        f.sync_all().map_err(|e| Error::io("sync", &temp, e))?;
        replace(&temp, dest)
    });
    if result.is_err() {
        let _ = remove_any(&temp);
    }
    result
}

/// Renames `temp` to `dest`. A folder cannot be renamed over a folder
/// that has content (nor a file over a folder): when either is one, the
/// two are exchanged and the old one, now at `temp`, removed.
fn replace(temp: &Path, dest: &Path) -> Result<(), Error> {
    let is_dir = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    let dest_exists = fs::symlink_metadata(dest).is_ok();
    if dest_exists && (is_dir(temp) || is_dir(dest)) {
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            temp,
            rustix::fs::CWD,
            dest,
            rustix::fs::RenameFlags::EXCHANGE,
        ) {
            Ok(()) => return remove_any(temp),
            // A filesystem without exchange: move the old one aside first
            // (readers briefly see no artifact, never half of one).
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                let old = temp.with_extension("old");
                remove_any(&old)?;
                fs::rename(dest, &old).map_err(|e| Error::io("rename", dest, e))?;
                if let Err(e) = fs::rename(temp, dest) {
                    let _ = fs::rename(&old, dest);
                    return Err(Error::io("rename", dest, e));
                }
                return remove_any(&old);
            }
            Err(e) => return Err(Error::io("rename", dest, e.into())),
        }
    }
    fs::rename(temp, dest).map_err(|e| Error::io("rename", dest, e))
}

/// Removes the file or folder at `path`, if there is one.
pub(crate) fn remove_any(path: &Path) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => Ok(()),
    }
    .map_err(|e| Error::io("remove", path, e))
}
