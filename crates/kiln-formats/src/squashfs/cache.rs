//! The compressed-block cache: data and fragment blocks kept under
//! `cache_dir`, keyed by what went into them, so a rebuild that sees the
//! same bytes again copies the block instead of compressing it.
//!
//! An entry is `MAGIC`, a kind byte, the blake3 of the payload and the
//! payload. It is written to a temporary file and renamed into place, so
//! readers never see half an entry; an entry whose hash does not match
//! (a torn disk write, a truncated copy) is treated as missing and
//! rewritten. The cache never decides what is in the image: a hit gives
//! the same bytes the compressor would.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;

const MAGIC: &[u8; 4] = b"KSQB";
const HEADER: usize = MAGIC.len() + 1 + 32;

/// What a block became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Encoded {
    /// Compressed to these bytes.
    Compressed(Vec<u8>),
    /// Stored as it is: compressing did not make it smaller.
    Raw,
}

/// The cache folder of one compressor setting.
#[derive(Debug)]
pub(crate) struct BlockCache {
    dir: PathBuf,
    /// The compressor's identity, hashed into every key.
    identity: String,
    /// Makes temporary names unique between threads.
    counter: AtomicU64,
}

impl BlockCache {
    pub(crate) fn new(cache_dir: &Path, identity: String) -> Self {
        Self {
            dir: cache_dir.join("squashfs-blocks"),
            identity,
            counter: AtomicU64::new(0),
        }
    }

    /// The key of the block whose uncompressed bytes hash to `raw`.
    pub(crate) fn key(&self, raw: &blake3::Hash) -> blake3::Hash {
        let mut h = blake3::Hasher::new();
        h.update(self.identity.as_bytes());
        h.update(&[0]);
        h.update(raw.as_bytes());
        h.finalize()
    }

    fn path(&self, key: &blake3::Hash) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(hex.as_str())
    }

    /// The entry under `key`, if there is an intact one.
    pub(crate) fn get(&self, key: &blake3::Hash) -> Option<Encoded> {
        let path = self.path(key);
        let bytes = fs::read(&path).ok()?;
        if bytes.len() < HEADER || &bytes[..4] != MAGIC {
            return None;
        }
        let payload = &bytes[HEADER..];
        if blake3::hash(payload).as_bytes() != &bytes[5..HEADER] {
            return None;
        }
        let encoded = match bytes[4] {
            0 => Encoded::Compressed(payload.to_vec()),
            1 if payload.is_empty() => Encoded::Raw,
            _ => return None,
        };
        crate::writer_cache::touch(&path);
        Some(encoded)
    }

    /// Stores `encoded` under `key`, replacing whatever is there.
    pub(crate) fn put(&self, key: &blake3::Hash, encoded: &Encoded) -> Result<(), Error> {
        let path = self.path(key);
        let dir = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let (kind, payload): (u8, &[u8]) = match encoded {
            Encoded::Compressed(c) => (0, c),
            Encoded::Raw => (1, &[]),
        };
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let temp = dir.join(format!(".tmp-{}-{n}", std::process::id()));
        let result = (|| {
            let mut f = fs::File::create(&temp)?;
            f.write_all(MAGIC)?;
            f.write_all(&[kind])?;
            f.write_all(blake3::hash(payload).as_bytes())?;
            f.write_all(payload)?;
            fs::rename(&temp, &path)
        })();
        result.map_err(|e| {
            let _ = fs::remove_file(&temp);
            Error::io("write the cache entry", &path, e)
        })
    }
}
