//! The layer-blob cache: finished layer blobs kept under
//! `<cache_dir>/oci-blobs/`, keyed by the layer's identity in the store and
//! the way it was written, so the images of a base variant and of all its
//! children compress each shared layer once.
//!
//! An entry is [`MAGIC`], the blob's sha256, the uncompressed tar's
//! sha256, the blob's size (u64, little-endian) and the blob. It is written
//! to a temporary file and renamed into place. Reading one copies the blob
//! out while hashing it: an entry whose blob does not match its digest or
//! size (a torn write, a truncated copy, a flipped bit) is a miss, and the
//! layer is written again and the entry replaced. A hit gives the same
//! bytes the writer would: the key covers everything the bytes depend on.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::oci::layer::LayerBlob;

/// Makes temporary names unique within the process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

const MAGIC: &[u8; 4] = b"KOCB";
const HEADER: usize = MAGIC.len() + 32 + 32 + 8;

/// The blob cache of one machine.
#[derive(Debug)]
pub(crate) struct BlobCache {
    dir: PathBuf,
}

impl BlobCache {
    pub(crate) fn new(cache_dir: &Path) -> Self {
        Self {
            dir: cache_dir.join("oci-blobs"),
        }
    }

    /// The key of the layer stored as `layer_id`, written as `identity`
    /// describes (format version, compression, epoch, position).
    pub(crate) fn key(layer_id: &[u8; 32], identity: &str) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"kiln oci blob cache v1\0");
        h.update(identity.as_bytes());
        h.update(&[0]);
        h.update(layer_id);
        h.finalize()
    }

    /// Where the entry of `key` lives.
    pub(crate) fn path(&self, key: &blake3::Hash) -> PathBuf {
        self.dir.join(key.to_hex().as_str())
    }

    /// Copies the blob of `key` to the new file `dest` if there is an
    /// intact entry; `None` (and no `dest`) otherwise.
    pub(crate) fn get(&self, key: &blake3::Hash, dest: &Path) -> Result<Option<LayerBlob>, Error> {
        let Ok(file) = File::open(self.path(key)) else {
            return Ok(None);
        };
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut header = [0u8; HEADER];
        if r.read_exact(&mut header).is_err() || &header[..4] != MAGIC {
            return Ok(None);
        }
        let blob = LayerBlob {
            digest: header[4..36].try_into().expect("32 bytes"),
            diff_id: header[36..68].try_into().expect("32 bytes"),
            size: u64::from_le_bytes(header[68..76].try_into().expect("8 bytes")),
        };
        let mut out = File::create(dest).map_err(|e| Error::io("create", dest, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        let intact = loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break false,
            };
            hasher.update(&buf[..n]);
            size += n as u64;
            out.write_all(&buf[..n])
                .map_err(|e| Error::io("write", dest, e))?;
        };
        let digest: [u8; 32] = hasher.finalize().into();
        if !intact || size != blob.size || digest != blob.digest {
            drop(out);
            let _ = fs::remove_file(dest);
            return Ok(None);
        }
        out.sync_all().map_err(|e| Error::io("sync", dest, e))?;
        crate::writer_cache::touch(&self.path(key));
        Ok(Some(blob))
    }

    /// Stores the blob at `source` (described by `blob`) under `key`,
    /// replacing whatever is there.
    pub(crate) fn put(
        &self,
        key: &blake3::Hash,
        blob: &LayerBlob,
        source: &Path,
    ) -> Result<(), Error> {
        let path = self.path(key);
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("create", &self.dir, e))?;
        // Two builds may store the same layer at once, in one process too.
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = self.dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = (|| {
            let mut f = File::create(&temp)?;
            f.write_all(MAGIC)?;
            f.write_all(&blob.digest)?;
            f.write_all(&blob.diff_id)?;
            f.write_all(&blob.size.to_le_bytes())?;
            io::copy(&mut File::open(source)?, &mut f)?;
            f.sync_all()?;
            fs::rename(&temp, &path)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&temp);
            Error::io("write the cache entry", &path, e)
        })
    }
}
