//! `squashfs` and `overlay.squashfs`.

use std::path::Path;

use crate::error::Error;
use crate::{Input, Writer};

/// The compressor of a squashfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SquashfsCompression {
    /// Zstandard (the default).
    Zstd,
    /// XZ.
    Xz,
    /// Gzip (zlib).
    Gzip,
    /// LZ4.
    Lz4,
}

/// Options of a squashfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquashfsOptions {
    /// The compressor.
    pub compression: SquashfsCompression,
    /// Its level (`None`: the compressor's default as mksquashfs uses it).
    pub level: Option<i32>,
    /// The data block size, a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
}

impl Default for SquashfsOptions {
    fn default() -> Self {
        Self {
            compression: SquashfsCompression::Zstd,
            level: None,
            block_size: 128 * 1024,
        }
    }
}

impl SquashfsOptions {
    pub(crate) fn identity(&self) -> String {
        format!(
            "v0 {:?} level={:?} block={}",
            self.compression, self.level, self.block_size
        )
    }
}

pub(crate) struct SquashfsWriter {
    pub(crate) options: SquashfsOptions,
    pub(crate) overlay: bool,
}

impl Writer for SquashfsWriter {
    fn write(&self, _input: &Input<'_>, _dest: &Path) -> Result<(), Error> {
        let _ = (&self.options, self.overlay);
        Err(Error::Unsupported {
            format: "squashfs",
            path: String::new(),
            reason: "being written (placeholder until the squashfs writer lands)".into(),
        })
    }
}
