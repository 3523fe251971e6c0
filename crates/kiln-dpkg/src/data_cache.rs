//! Decompressed data archives kept for later builds.
//!
//! Most of the time of unpacking a Debian root goes to xz: the data
//! archives are compressed hard to keep the mirrors small. A package whose
//! [`crate::DebFile::data_cache`] names a file has its data archive kept
//! there after its first unpacking, recompressed with zstd at a fast level
//! (about ten times faster to read back than xz), and read from there by
//! later builds.
//!
//! An entry is `zstd frame(s) ‖ BLAKE3(those bytes)`: written beside its
//! place under a temporary name while the `.deb` is unpacked, the hash
//! appended, then renamed into place; before use the hash is checked, so
//! a torn or corrupt entry is never read (it is removed and made again
//! from the `.deb`). The `.deb` itself was verified against the archive's
//! signed SHA256 before kiln-dpkg saw it; an entry is only ever written
//! from such a verified `.deb`, and it never takes part in deciding what
//! is trusted. A failure to write an entry only means there is none: the
//! build goes on.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::deb::Deb;
use crate::error::Error;

/// zstd level of entries: fast to write, as fast as any level to read.
const LEVEL: i32 = 1;
/// Bytes of the BLAKE3 trailer.
const TRAILER: u64 = 32;

/// The uncompressed data archive of a package, from its cache entry or
/// its `.deb` (then kept as a new entry when it is read to the end and
/// [`DataStream::finish`] is called).
pub(crate) struct DataStream {
    inner: Box<dyn Read + Send>,
    writer: Option<EntryWriter>,
}

impl DataStream {
    /// Opens the data archive of `deb`, from its cache entry if it has a
    /// sound one.
    pub(crate) fn open(deb: &Deb) -> Result<Self, Error> {
        let Some(entry) = deb.data_cache.as_deref() else {
            return Ok(Self {
                inner: deb.data_reader()?,
                writer: None,
            });
        };
        if let Some(inner) = read_entry(entry) {
            return Ok(Self {
                inner,
                writer: None,
            });
        }
        Ok(Self {
            inner: deb.data_reader()?,
            writer: EntryWriter::create(entry).ok(),
        })
    }

    /// Whether the archive comes from a cache entry.
    #[cfg(test)]
    fn cached(&self) -> bool {
        self.writer.is_none()
    }

    /// Reads what is left of the archive (the tar reader stops at its end
    /// marker, not at the end of the stream) and commits the new cache
    /// entry, if one is being written.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if self.writer.is_none() {
            return Ok(());
        }
        io::copy(&mut self, &mut io::sink())?;
        if let Some(writer) = self.writer.take() {
            // A cache entry that cannot be written is no entry.
            let _ = writer.commit();
        }
        Ok(())
    }
}

impl Read for DataStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(writer) = &mut self.writer
            && writer
                .encoder
                .as_mut()
                .is_none_or(|e| e.write_all(&buf[..n]).is_err())
        {
            self.writer = None;
        }
        Ok(n)
    }
}

/// The verified content of the entry at `path`, or `None` (and the entry
/// removed) if there is none or it does not verify.
fn read_entry(path: &Path) -> Option<Box<dyn Read + Send>> {
    let mut file = File::open(path).ok()?;
    let bad = |path: &Path| {
        let _ = fs::remove_file(path);
        None
    };
    let len = file.metadata().ok()?.len();
    if len < TRAILER {
        return bad(path);
    }
    let mut hasher = blake3::Hasher::new();
    if io::copy(&mut (&mut file).take(len - TRAILER), &mut hasher).ok()? != len - TRAILER {
        return bad(path);
    }
    let mut trailer = [0u8; TRAILER as usize];
    file.read_exact(&mut trailer).ok()?;
    if hasher.finalize().as_bytes() != &trailer {
        return bad(path);
    }
    file.seek(SeekFrom::Start(0)).ok()?;
    let decoder = zstd::stream::read::Decoder::new(file.take(len - TRAILER)).ok()?;
    Some(Box::new(decoder))
}

/// A new entry being written under a temporary name.
struct EntryWriter {
    /// `None` once committed.
    encoder: Option<zstd::stream::write::Encoder<'static, Hashing>>,
    temp: PathBuf,
    path: PathBuf,
}

/// A file writer that hashes what it writes.
struct Hashing {
    file: File,
    hasher: blake3::Hasher,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl EntryWriter {
    fn create(path: &Path) -> io::Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        sweep_stale(dir, &name);
        let temp = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let file = File::create(&temp)?;
        let hashing = Hashing {
            file,
            hasher: blake3::Hasher::new(),
        };
        let encoder = zstd::stream::write::Encoder::new(hashing, LEVEL)?;
        Ok(Self {
            encoder: Some(encoder),
            temp,
            path: path.to_owned(),
        })
    }

    /// Finishes the entry and renames it into place (on failure `Drop`
    /// removes the temporary file).
    fn commit(mut self) -> io::Result<()> {
        let encoder = self.encoder.take().expect("committed once");
        let mut hashing = encoder.finish()?;
        let hash = hashing.hasher.finalize();
        hashing.file.write_all(hash.as_bytes())?;
        drop(hashing);
        fs::rename(&self.temp, &self.path)
    }
}

impl Drop for EntryWriter {
    fn drop(&mut self) {
        // Committed entries were renamed away; an abandoned one goes.
        let _ = fs::remove_file(&self.temp);
    }
}

/// Removes `.<name>.partial-<pid>` files of processes that are gone (a
/// build killed while writing the entry).
fn sweep_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = rustix::process::Pid::from_raw(pid)
            .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
        if !alive {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deb_with_cache(dir: &Path) -> Deb {
        let data = {
            let mut builder = tar::Builder::new(Vec::new());
            let mut header = tar::Header::new_gnu();
            header.set_size(5);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "./hello", &b"hello"[..])
                .unwrap();
            builder.into_inner().unwrap()
        };
        let control = {
            let mut builder = tar::Builder::new(Vec::new());
            let text = b"Package: t\nVersion: 1\nArchitecture: all\n";
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, "./control", &text[..])
                .unwrap();
            builder.into_inner().unwrap()
        };
        let bytes = crate::ar::write(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar", &control),
            ("data.tar", &data),
        ]);
        let path = dir.join("t.deb");
        fs::write(&path, bytes).unwrap();
        let mut deb = crate::read_deb(&path).unwrap();
        deb.data_cache = Some(dir.join("cache/t.tar.zst"));
        deb
    }

    fn read_all(deb: &Deb) -> (Vec<u8>, bool) {
        let mut stream = DataStream::open(deb).unwrap();
        let cached = stream.cached();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).unwrap();
        stream.finish().unwrap();
        (out, cached)
    }

    #[test]
    fn an_entry_is_made_once_then_read_and_a_corrupt_one_is_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let deb = deb_with_cache(dir.path());
        let (first, cached) = read_all(&deb);
        assert!(!cached, "nothing cached at first");
        let entry = deb.data_cache.clone().unwrap();
        assert!(entry.is_file());
        let (second, cached) = read_all(&deb);
        assert!(cached, "read from the entry");
        assert_eq!(first, second);
        // One flipped byte: not used, removed, made again.
        let mut bytes = fs::read(&entry).unwrap();
        bytes[4] ^= 1;
        fs::write(&entry, &bytes).unwrap();
        let (third, cached) = read_all(&deb);
        assert!(!cached, "a corrupt entry is not read");
        assert_eq!(first, third);
        assert_ne!(fs::read(&entry).unwrap(), bytes, "made again");
        // A truncated entry, likewise.
        fs::write(&entry, &bytes[..10]).unwrap();
        assert!(!read_all(&deb).1);
        // No temporary files are left.
        let names: Vec<_> = fs::read_dir(entry.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("t.tar.zst")]);
    }

    #[test]
    fn an_abandoned_read_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let deb = deb_with_cache(dir.path());
        let mut stream = DataStream::open(&deb).unwrap();
        let mut first = [0u8; 10];
        stream.read_exact(&mut first).unwrap();
        drop(stream);
        assert!(!deb.data_cache.as_ref().unwrap().exists());
        let names = fs::read_dir(dir.path().join("cache")).unwrap().count();
        assert_eq!(names, 0, "the temporary file is removed");
    }
}
