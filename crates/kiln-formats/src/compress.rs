//! Stream compression on several threads, with output that does not
//! depend on how many threads ran.
//!
//! - gzip: as pigz does it — the input cut into 128 KiB blocks, each
//!   deflated on its own thread with the previous 32 KiB as its
//!   dictionary and ended with a sync flush, the blocks' CRCs combined:
//!   one gzip member, readable by any gunzip, within a few bytes of a
//!   single-threaded deflate.
//! - zstd: libzstd's own multi-threaded mode (deterministic for any
//!   number of workers ≥ 1).
//! - xz: liblzma's multi-threaded encoder with a fixed block size.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not at all.
    None,
    /// gzip (deflate), level 1–9.
    Gzip {
        /// The level.
        level: u32,
    },
    /// Zstandard, level 1–22.
    Zstd {
        /// The level.
        level: i32,
    },
    /// XZ (LZMA2), preset 0–9.
    Xz {
        /// The preset.
        level: u32,
    },
}

impl Compression {
    /// gzip at `gzip`'s default level.
    pub const GZIP: Compression = Compression::Gzip { level: 6 };
    /// zstd at `zstd`'s default level.
    pub const ZSTD: Compression = Compression::Zstd { level: 3 };
    /// xz at `xz`'s default preset.
    pub const XZ: Compression = Compression::Xz { level: 6 };

    pub(crate) fn identity(self) -> String {
        match self {
            Compression::None => "none".into(),
            Compression::Gzip { level } => format!("gzip-v1 level={level}"),
            Compression::Zstd { level } => format!("zstd level={level}"),
            Compression::Xz { level } => format!("xz block=8M level={level}"),
        }
    }

    /// Checks the level against the compressor's range.
    pub fn validate(self) -> Result<(), String> {
        let (name, level, range) = match self {
            Compression::None => return Ok(()),
            Compression::Gzip { level } => ("gzip", i64::from(level), 1..=9),
            Compression::Zstd { level } => ("zstd", i64::from(level), 1..=22),
            Compression::Xz { level } => ("xz", i64::from(level), 0..=9),
        };
        if range.contains(&level) {
            Ok(())
        } else {
            Err(format!(
                "{name} level {level} is out of range ({}–{})",
                range.start(),
                range.end()
            ))
        }
    }
}

/// A writer that must be finished to write its last bytes.
pub(crate) trait FinishWrite: Write + Send {
    /// Writes what is left and flushes the underlying writer.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

struct Plain<W: Write + Send>(W);

impl<W: Write + Send> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> FinishWrite for Plain<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> FinishWrite for zstd::stream::write::Encoder<'static, W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut w = (*self).finish()?;
        w.flush()
    }
}

impl<W: Write + Send> FinishWrite for liblzma::write::XzEncoder<W> {
    fn finish(self: Box<Self>) -> io::Result<()> {
        let mut w = (*self).finish()?;
        w.flush()
    }
}

/// `out`, compressed as asked on up to `threads` threads.
pub(crate) fn compressed<W: Write + Send + 'static>(
    out: W,
    compression: Compression,
    threads: usize,
) -> io::Result<Box<dyn FinishWrite>> {
    let threads = threads.max(1);
    Ok(match compression {
        Compression::None => Box::new(Plain(out)),
        Compression::Zstd { level } => {
            let mut enc = zstd::stream::write::Encoder::new(out, level)?;
            enc.include_checksum(true)?;
            enc.multithread(u32::try_from(threads).unwrap_or(1))?;
            Box::new(enc)
        }
        Compression::Xz { level } => {
            let stream = liblzma::stream::MtStreamBuilder::new()
                .threads(u32::try_from(threads).unwrap_or(1))
                .block_size(8 << 20)
                .preset(level)
                .check(liblzma::stream::Check::Crc64)
                .encoder()
                .map_err(io::Error::other)?;
            Box::new(liblzma::write::XzEncoder::new_stream(out, stream))
        }
        Compression::Gzip { level } => Box::new(ParallelGzip::new(out, level, threads)),
    })
}

/// The block size pigz uses.
const GZIP_BLOCK: usize = 128 * 1024;
/// Deflate's window: the dictionary each block gets from the one before.
const GZIP_WINDOW: usize = 32 * 1024;

struct GzipJob {
    seq: u64,
    dictionary: Vec<u8>,
    data: Vec<u8>,
    last: bool,
}

struct GzipDone {
    seq: u64,
    deflated: io::Result<Vec<u8>>,
    crc: crc32fast::Hasher,
    len: u64,
}

/// pigz's scheme on a pool of threads; see the module documentation.
pub(crate) struct ParallelGzip<W: Write + Send> {
    out: W,
    level: u32,
    buffer: Vec<u8>,
    /// The last [`GZIP_WINDOW`] bytes handed to a job.
    window: Vec<u8>,
    jobs: Option<mpsc::SyncSender<GzipJob>>,
    done: mpsc::Receiver<GzipDone>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, GzipDone>,
    crc: crc32fast::Hasher,
    len: u64,
    header_written: bool,
    in_flight: usize,
    max_in_flight: usize,
}

impl<W: Write + Send> ParallelGzip<W> {
    fn new(out: W, level: u32, threads: usize) -> Self {
        let (job_tx, job_rx) = mpsc::sync_channel::<GzipJob>(threads * 2);
        let (done_tx, done_rx) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&job_rx);
                let tx = done_tx.clone();
                std::thread::spawn(move || {
                    loop {
                        let job = {
                            let Ok(rx) = rx.lock() else { return };
                            match rx.recv() {
                                Ok(job) => job,
                                Err(_) => return,
                            }
                        };
                        let mut crc = crc32fast::Hasher::new();
                        crc.update(&job.data);
                        let deflated = deflate_block(level, &job.dictionary, &job.data, job.last);
                        if tx
                            .send(GzipDone {
                                seq: job.seq,
                                deflated,
                                crc,
                                len: job.data.len() as u64,
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                })
            })
            .collect();
        Self {
            out,
            level,
            buffer: Vec::with_capacity(GZIP_BLOCK),
            window: Vec::new(),
            jobs: Some(job_tx),
            done: done_rx,
            workers,
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            crc: crc32fast::Hasher::new(),
            len: 0,
            header_written: false,
            in_flight: 0,
            max_in_flight: threads * 4,
        }
    }

    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(GZIP_BLOCK));
        let dictionary = std::mem::take(&mut self.window);
        let keep = data.len().min(GZIP_WINDOW);
        let mut window = dictionary[dictionary.len().saturating_sub(GZIP_WINDOW - keep)..].to_vec();
        window.extend_from_slice(&data[data.len() - keep..]);
        self.window = window;
        let job = GzipJob {
            seq: self.next_seq,
            dictionary,
            data,
            last,
        };
        self.next_seq += 1;
        while self.in_flight >= self.max_in_flight {
            self.receive_one()?;
        }
        self.jobs
            .as_ref()
            .expect("not finished")
            .send(job)
            .map_err(|_| io::Error::other("a gzip worker stopped"))?;
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for one finished block and writes whatever is in order.
    fn receive_one(&mut self) -> io::Result<()> {
        let done = self
            .done
            .recv()
            .map_err(|_| io::Error::other("a gzip worker stopped"))?;
        self.in_flight -= 1;
        self.pending.insert(done.seq, done);
        while let Some(done) = self.pending.remove(&self.next_out) {
            if !self.header_written {
                let xfl = match self.level {
                    9 => 2,
                    1 => 4,
                    _ => 0,
                };
                // No name, mtime 0, OS = Unix: nothing of the host.
                self.out
                    .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
                self.header_written = true;
            }
            self.out.write_all(&done.deflated?)?;
            self.crc.combine(&done.crc);
            self.len += done.len;
            self.next_out += 1;
        }
        Ok(())
    }
}

impl<W: Write + Send> Write for ParallelGzip<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZIP_BLOCK - self.buffer.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == GZIP_BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send> FinishWrite for ParallelGzip<W> {
    fn finish(mut self: Box<Self>) -> io::Result<()> {
        self.submit(true)?;
        while self.in_flight > 0 {
            self.receive_one()?;
        }
        self.jobs = None;
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.len as u32).to_le_bytes())?;
        self.out.flush()
    }
}

impl<W: Write + Send> Drop for ParallelGzip<W> {
    fn drop(&mut self) {
        self.jobs = None;
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
    }
}

/// Raw deflate of one block with `dictionary`, ended by a sync flush (or
/// the final block).
fn deflate_block(level: u32, dictionary: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dictionary.is_empty() {
        c.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(data.len() / 4 + 1024);
        }
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done_input = c.total_in() as usize == data.len();
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError if !last && done_input && out.capacity() > out.len() => {
                break;
            }
            _ => {}
        }
    }
    Ok(out)
}
