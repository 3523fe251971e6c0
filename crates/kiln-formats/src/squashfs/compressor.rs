//! The block compressors squashfs knows, configured as mksquashfs and the
//! kernel expect them: their on-disk id, their options record and one
//! encoder per thread.
//!
//! A block is stored uncompressed when compressing does not make it
//! smaller, as mksquashfs does; [`Encoder::compress`] says so by
//! returning `None`.

use flate2::{Compress, FlushCompress, Status};
use liblzma::stream::{Action, Check, Filters, LzmaOptions, Stream};

use super::{SquashfsCompression, SquashfsOptions};
use crate::error::Error;

/// mksquashfs's default zstd level.
const ZSTD_DEFAULT_LEVEL: i32 = 15;
/// mksquashfs's default gzip level.
const GZIP_DEFAULT_LEVEL: i32 = 9;
/// liblzma's default preset, what mksquashfs's xz uses.
const XZ_DEFAULT_PRESET: i32 = 6;

/// A checked compressor choice, shared by every thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Codec {
    kind: SquashfsCompression,
    level: i32,
    /// xz's dictionary is the block size, as mksquashfs sets it.
    block_size: u32,
}

impl Codec {
    /// Checks `options` (level range, block size) and resolves the
    /// default level.
    pub(crate) fn new(options: &SquashfsOptions) -> Result<Self, Error> {
        let bs = options.block_size;
        if !bs.is_power_of_two() || !(4096..=1024 * 1024).contains(&bs) {
            return Err(invalid(format!(
                "the block size {bs} is not a power of two from 4096 to 1048576"
            )));
        }
        let (default, range) = match options.compression {
            SquashfsCompression::Zstd => (ZSTD_DEFAULT_LEVEL, 1..=22),
            SquashfsCompression::Gzip => (GZIP_DEFAULT_LEVEL, 1..=9),
            SquashfsCompression::Xz => (XZ_DEFAULT_PRESET, 0..=9),
            // lz4_flex has no high-compression mode: only the plain
            // level, which needs no number.
            SquashfsCompression::Lz4 => (0, 0..=0),
        };
        let level = options.level.unwrap_or(default);
        if !range.contains(&level) {
            return Err(invalid(format!(
                "{} level {level} is out of range ({}–{})",
                options.compression.name(),
                range.start(),
                range.end()
            )));
        }
        Ok(Self {
            kind: options.compression,
            level,
            block_size: bs,
        })
    }

    /// The superblock's compression id.
    pub(crate) fn id(self) -> u16 {
        match self.kind {
            SquashfsCompression::Gzip => 1,
            SquashfsCompression::Xz => 4,
            SquashfsCompression::Lz4 => 5,
            SquashfsCompression::Zstd => 6,
        }
    }

    /// The compressor options record, when the readers need one: only
    /// for non-default settings, and always for lz4 (the kernel refuses
    /// lz4 without it).
    pub(crate) fn options_record(self) -> Option<Vec<u8>> {
        match self.kind {
            SquashfsCompression::Zstd if self.level != ZSTD_DEFAULT_LEVEL => {
                Some(self.level.to_le_bytes().to_vec())
            }
            SquashfsCompression::Gzip if self.level != GZIP_DEFAULT_LEVEL => {
                let mut r = self.level.to_le_bytes().to_vec();
                r.extend_from_slice(&15u16.to_le_bytes()); // window bits
                r.extend_from_slice(&0u16.to_le_bytes()); // strategies
                Some(r)
            }
            // Version 1 ("legacy" frame-less blocks), no flags.
            SquashfsCompression::Lz4 => Some([1u32.to_le_bytes(), 0u32.to_le_bytes()].concat()),
            // xz's dictionary is the block size and no filters: the
            // defaults, whatever the preset.
            _ => None,
        }
    }

    /// What makes a compressed block differ: the cache key's prefix.
    pub(crate) fn identity(self) -> String {
        format!(
            "squashfs-block v1 {} level={} block={}",
            self.kind.name(),
            self.level,
            self.block_size
        )
    }

    /// A new encoder for one thread.
    pub(crate) fn encoder(self) -> Result<Encoder, Error> {
        let state = match self.kind {
            SquashfsCompression::Zstd => State::Zstd(Box::new(
                zstd::bulk::Compressor::new(self.level).map_err(|e| compress_err(self, &e))?,
            )),
            SquashfsCompression::Gzip => State::Gzip(Box::new(Compress::new(
                flate2::Compression::new(self.level.unsigned_abs()),
                true,
            ))),
            SquashfsCompression::Xz => {
                let mut opts = LzmaOptions::new_preset(self.level.unsigned_abs())
                    .map_err(|e| compress_err(self, &e))?;
                opts.dict_size(self.block_size);
                let mut filters = Filters::new();
                filters.lzma2(&opts);
                State::Xz(Box::new(filters))
            }
            SquashfsCompression::Lz4 => State::Lz4,
        };
        Ok(Encoder { codec: self, state })
    }
}

enum State {
    Zstd(Box<zstd::bulk::Compressor<'static>>),
    Gzip(Box<Compress>),
    Xz(Box<Filters>),
    Lz4,
}

/// One thread's compressor, reused across blocks.
pub(crate) struct Encoder {
    codec: Codec,
    state: State,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// `raw` compressed, or `None` when that is not smaller.
    pub(crate) fn compress(&mut self, raw: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let codec = self.codec;
        let out = match &mut self.state {
            State::Zstd(c) => c.compress(raw).map_err(|e| compress_err(codec, &e))?,
            State::Gzip(c) => {
                c.reset();
                let mut out = Vec::with_capacity(raw.len());
                match c.compress_vec(raw, &mut out, FlushCompress::Finish) {
                    Ok(Status::StreamEnd) => out,
                    // The output did not fit in the input's size.
                    Ok(_) => return Ok(None),
                    Err(e) => return Err(compress_err(codec, &e)),
                }
            }
            State::Xz(filters) => {
                let mut stream = Stream::new_stream_encoder(filters, Check::Crc32)
                    .map_err(|e| compress_err(codec, &e))?;
                let mut out = Vec::with_capacity(raw.len());
                match stream.process_vec(raw, &mut out, Action::Finish) {
                    Ok(liblzma::stream::Status::StreamEnd) => out,
                    Ok(_) => return Ok(None),
                    Err(e) => return Err(compress_err(codec, &e)),
                }
            }
            State::Lz4 => lz4_flex::block::compress(raw),
        };
        Ok((out.len() < raw.len()).then_some(out))
    }
}

impl SquashfsCompression {
    fn name(self) -> &'static str {
        match self {
            SquashfsCompression::Zstd => "zstd",
            SquashfsCompression::Xz => "xz",
            SquashfsCompression::Gzip => "gzip",
            SquashfsCompression::Lz4 => "lz4",
        }
    }
}

fn invalid(reason: String) -> Error {
    Error::Options {
        format: "squashfs",
        reason,
    }
}

fn compress_err(codec: Codec, e: &dyn std::fmt::Display) -> Error {
    Error::Compress {
        compressor: codec.kind.name(),
        reason: e.to_string(),
    }
}
