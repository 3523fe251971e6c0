//! The image: a range of a file (the whole of an `ext4` artifact, or a
//! partition of a disk) that already reads as zeros — created sparse at
//! its full length — written block by block at planned positions through
//! one large buffer, so blocks that follow each other on disk go out in
//! one `pwrite`. Blocks of zeros are never written: the range already
//! reads as zeros there, which keeps the journal, unused inode tables and
//! files full of zeros as holes.

#[cfg(test)]
use std::fs;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::SeekFrom;

use super::layout::{BLOCK, BLOCK_SIZE};
use crate::error::Error;

/// Bytes gathered before they are written.
const BUFFER: usize = 8 << 20;
/// Files from this size on are asked where their holes are.
const SPARSE_FROM: u64 = 1 << 20;

/// The image being written.
#[derive(Debug)]
pub(crate) struct Image<'f> {
    file: &'f File,
    path: PathBuf,
    /// Where the image starts in `file`.
    base: u64,
    buf: Vec<u8>,
    /// The byte offset of `buf[0]` in the image.
    at: u64,
}

impl<'f> Image<'f> {
    /// The image that starts `base` bytes into `file` (called `path` in
    /// errors); its blocks must read as zeros.
    pub(crate) fn new(file: &'f File, path: &Path, base: u64) -> Self {
        Self {
            file,
            path: path.to_path_buf(),
            base,
            buf: Vec::with_capacity(BUFFER + BLOCK),
            at: 0,
        }
    }

    /// Makes `block` the next place the buffer continues at.
    fn seek(&mut self, block: u64) -> Result<(), Error> {
        let offset = block * BLOCK_SIZE;
        if self.at + self.buf.len() as u64 != offset {
            self.flush()?;
            self.at = offset;
        } else if self.buf.len() >= BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes whole blocks at `block`.
    pub(crate) fn put(&mut self, block: u64, bytes: &[u8]) -> Result<(), Error> {
        debug_assert_eq!(bytes.len() % BLOCK, 0);
        self.seek(block)?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes `len` bytes of `src` from `offset` (a multiple of the
    /// block size; 0 only on a file just opened) at `block`, zero-padded
    /// to whole blocks. Of a large piece, whole blocks in holes (as its
    /// filesystem reports them) are not read: they are zeros, which are
    /// not written anyway.
    pub(crate) fn copy(
        &mut self,
        block: u64,
        src: &mut File,
        offset: u64,
        len: u64,
        source: &Path,
    ) -> Result<(), Error> {
        self.seek(block)?;
        let end = offset + len;
        let mut pos = offset;
        let io = |e: io::Error| Error::io("read", source, e);
        if offset > 0 {
            // A later piece of a file: looking for holes may have moved.
            src.seek(std::io::SeekFrom::Start(offset)).map_err(io)?;
        }
        while pos < end {
            let mut upto = end;
            if len >= SPARSE_FROM {
                let data = match rustix::fs::seek(&*src, SeekFrom::Data(pos)) {
                    Ok(data) => data.min(end),
                    Err(rustix::io::Errno::NXIO) => end,
                    Err(e) => return Err(io(e.into())),
                };
                let hole = (data - pos) / BLOCK_SIZE * BLOCK_SIZE;
                if hole > 0 {
                    self.flush()?;
                    self.at += hole;
                    pos += hole;
                    continue;
                }
                let next_hole =
                    rustix::fs::seek(&*src, SeekFrom::Hole(pos)).map_err(|e| io(e.into()))?;
                // Whole blocks, so `pos` stays on a block boundary.
                upto = (offset + (next_hole.max(pos + 1) - offset).next_multiple_of(BLOCK_SIZE))
                    .min(end);
                src.seek(std::io::SeekFrom::Start(pos)).map_err(io)?;
            }
            self.read(src, upto - pos, source)?;
            pos = upto;
        }
        let padded = self.buf.len().next_multiple_of(BLOCK);
        self.buf.resize(padded, 0);
        Ok(())
    }

    /// Appends `n` bytes read from `src`'s position.
    fn read(&mut self, src: &mut File, n: u64, source: &Path) -> Result<(), Error> {
        let mut left = n;
        while left > 0 {
            if self.buf.len() >= BUFFER {
                self.flush()?;
            }
            let chunk = left.min((BUFFER - self.buf.len()).max(BLOCK) as u64);
            // `read_to_end` reads into the spare capacity directly.
            let got = src
                .by_ref()
                .take(chunk)
                .read_to_end(&mut self.buf)
                .map_err(|e| Error::io("read", source, e))?;
            if (got as u64) < chunk {
                return Err(Error::io(
                    "read",
                    source,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the file shrank while it was being read",
                    ),
                ));
            }
            left -= chunk;
        }
        Ok(())
    }

    /// Writes out the buffer, leaving out blocks of zeros.
    fn flush(&mut self) -> Result<(), Error> {
        let mut run: Option<usize> = None;
        let blocks = self.buf.len().div_ceil(BLOCK);
        for i in 0..=blocks {
            let zero =
                i == blocks || is_zero(&self.buf[i * BLOCK..((i + 1) * BLOCK).min(self.buf.len())]);
            match (zero, run) {
                (false, None) => run = Some(i),
                (true, Some(from)) => {
                    let end = (i * BLOCK).min(self.buf.len());
                    self.file
                        .write_all_at(
                            &self.buf[from * BLOCK..end],
                            self.base + self.at + (from * BLOCK) as u64,
                        )
                        .map_err(|e| Error::io("write", &self.path, e))?;
                    run = None;
                }
                _ => {}
            }
        }
        self.at += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is left.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        self.flush()
    }
}

fn is_zero(b: &[u8]) -> bool {
    let words = b.chunks_exact(16);
    let rest = words.remainder();
    words
        .map(|w| u128::from_ne_bytes(w.try_into().unwrap_or_default()))
        .all(|w| w == 0)
        && rest.iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    #[test]
    fn pieces_of_a_sparse_file_land_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        // Data, a 3 MiB hole, data: in two pieces, the first ending in
        // the hole, the second too small to look for holes in.
        let len = (3 << 20) + 3 * BLOCK_SIZE;
        f.set_len(len).unwrap();
        f.write_all_at(b"first", 10).unwrap();
        f.write_all_at(b"second", len - 100).unwrap();
        drop(f);
        let split = (3 << 20) + BLOCK_SIZE;
        let image = dir.path().join("image");
        let out = File::create(&image).unwrap();
        out.set_len(5 << 20).unwrap();
        // One MiB in, as a partition of a disk.
        let mut img = Image::new(&out, &image, 1 << 20);
        let mut f = File::open(&src).unwrap();
        img.copy(0, &mut f, 0, split, &src).unwrap();
        img.copy(split / BLOCK_SIZE, &mut f, split, len - split, &src)
            .unwrap();
        img.finish().unwrap();
        let got = fs::read(&image).unwrap();
        let want = fs::read(&src).unwrap();
        assert!(got[..1 << 20].iter().all(|&b| b == 0));
        assert_eq!(&got[1 << 20..(1 << 20) + want.len()], &want[..]);
    }
}
