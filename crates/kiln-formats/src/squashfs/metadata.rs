//! Metadata blocks: the 8 KiB compressed pieces the inode, directory,
//! fragment, id and xattr tables are made of, and the references into
//! them.
//!
//! A table is written front to back; a block is compressed as soon as it
//! is full, so the position of the block being filled is always known
//! (it starts where the compressed output ends) and a reference to
//! anything already written can be given at once.

use super::compressor::Encoder;
use crate::error::Error;

/// The uncompressed size of a metadata block.
pub(crate) const METADATA_SIZE: usize = 8192;
/// The header bit of a block stored uncompressed.
const UNCOMPRESSED: u16 = 0x8000;

/// Where something starts in a table: the compressed block's offset from
/// the table's start, and the offset inside the uncompressed block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MetaRef {
    pub(crate) block: u32,
    pub(crate) offset: u16,
}

impl MetaRef {
    /// The 64-bit form inodes and the superblock store.
    pub(crate) fn packed(self) -> u64 {
        (u64::from(self.block) << 16) | u64::from(self.offset)
    }
}

/// One table being written.
#[derive(Debug)]
pub(crate) struct MetadataWriter {
    out: Vec<u8>,
    buf: Vec<u8>,
    /// The offset of each block written, from the table's start.
    starts: Vec<u32>,
}

impl MetadataWriter {
    pub(crate) fn new() -> Self {
        Self {
            out: Vec::new(),
            buf: Vec::with_capacity(METADATA_SIZE),
            starts: Vec::new(),
        }
    }

    /// Where the next byte written will be.
    pub(crate) fn position(&self) -> Result<MetaRef, Error> {
        Ok(MetaRef {
            block: table_offset(self.out.len())?,
            offset: self.buf.len() as u16,
        })
    }

    /// How many uncompressed bytes were written so far.
    pub(crate) fn uncompressed_len(&self) -> usize {
        self.starts.len() * METADATA_SIZE + self.buf.len()
    }

    pub(crate) fn write(&mut self, enc: &mut Encoder, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            let n = bytes.len().min(METADATA_SIZE - self.buf.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            // Flushed eagerly so that `position` after a full block names
            // the next block, offset 0.
            if self.buf.len() == METADATA_SIZE {
                self.flush(enc)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, enc: &mut Encoder) -> Result<(), Error> {
        self.starts.push(table_offset(self.out.len())?);
        push_block(&mut self.out, enc, &self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// The table's bytes and the offsets of its blocks.
    pub(crate) fn finish(mut self, enc: &mut Encoder) -> Result<(Vec<u8>, Vec<u32>), Error> {
        if !self.buf.is_empty() {
            self.flush(enc)?;
        }
        Ok((self.out, self.starts))
    }
}

/// Appends `raw` as one metadata block (header and payload).
pub(crate) fn push_block(out: &mut Vec<u8>, enc: &mut Encoder, raw: &[u8]) -> Result<(), Error> {
    match enc.compress(raw)? {
        Some(c) => {
            out.extend_from_slice(&(c.len() as u16).to_le_bytes());
            out.extend_from_slice(&c);
        }
        None => {
            out.extend_from_slice(&(raw.len() as u16 | UNCOMPRESSED).to_le_bytes());
            out.extend_from_slice(raw);
        }
    }
    Ok(())
}

/// A table that is a plain array of fixed-size entries (fragments, ids,
/// xattr ids): its metadata blocks, then the absolute location of each,
/// which is where the superblock points. Returns the bytes to write at
/// `at` and the index's absolute offset.
pub(crate) fn indexed_table(
    enc: &mut Encoder,
    entries: &[u8],
    at: u64,
) -> Result<(Vec<u8>, u64), Error> {
    let mut w = MetadataWriter::new();
    w.write(enc, entries)?;
    let (mut out, starts) = w.finish(enc)?;
    let index_at = at + out.len() as u64;
    for s in starts {
        out.extend_from_slice(&(at + u64::from(s)).to_le_bytes());
    }
    Ok((out, index_at))
}

fn table_offset(len: usize) -> Result<u32, Error> {
    u32::try_from(len).map_err(|_| Error::TooLarge {
        format: "squashfs",
        reason: "a metadata table is larger than 4 GiB".into(),
    })
}
