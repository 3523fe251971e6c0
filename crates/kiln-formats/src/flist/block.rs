//! Blocks as rfs encodes them, and the directory store that holds them.
//!
//! A block is at most [`BLOCK_SIZE`] bytes of a file. Its **key** is the
//! BLAKE2b-256 of the plain bytes; the bytes are compressed with raw
//! (unframed) Snappy and sealed with AES-256-GCM under that key, the
//! key's first 12 bytes as nonce (so the same plain block always gives
//! the same ciphertext and stores deduplicate it); its **id** is the
//! BLAKE2b-256 of the ciphertext (with the GCM tag). The `block` table
//! records `(id, key)`; the store keeps the ciphertext under the id, at
//! `<store>/<first two hex digits of the id>/<hex id>`.
//!
//! This module does no SQL; it knows bytes and files only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

use crate::error::Error;

/// The size of a file's blocks (the last one may be shorter), as
/// `rfs pack` cuts them.
pub const BLOCK_SIZE: usize = 512 * 1024;

/// A block as the `block` table records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// BLAKE2b-256 of the stored (compressed, encrypted) bytes: the name
    /// of the block in a store.
    pub id: [u8; 32],
    /// BLAKE2b-256 of the plain bytes: the AES-256-GCM key, its first 12
    /// bytes the nonce.
    pub key: [u8; 32],
}

impl BlockRef {
    /// The id in lowercase hex, as stores name the block.
    #[must_use]
    pub fn hex_id(&self) -> String {
        hex(&self.id)
    }
}

/// `BLAKE2b` with a 32-byte digest (the digest length is a parameter of
/// `BLAKE2b`, so this is not a truncated `BLAKE2b-512`).
fn blake2b256(bytes: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(bytes).into()
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Encodes one plain block: its reference and the bytes a store keeps.
pub fn encode_block(plain: &[u8]) -> Result<(BlockRef, Vec<u8>), Error> {
    encode_with(&mut snap::raw::Encoder::new(), plain)
}

/// [`encode_block`] with a reusable Snappy encoder (one per thread).
pub(crate) fn encode_with(
    snappy: &mut snap::raw::Encoder,
    plain: &[u8],
) -> Result<(BlockRef, Vec<u8>), Error> {
    let key = blake2b256(plain);
    let compressed = snappy.compress_vec(plain).map_err(|e| Error::Compress {
        compressor: "snappy",
        reason: e.to_string(),
    })?;
    let cipher = Aes256Gcm::new(&key.into());
    let sealed = cipher
        .encrypt(Nonce::from_slice(&key[..12]), compressed.as_slice())
        .map_err(|_| Error::Compress {
            compressor: "aes-256-gcm",
            reason: "encryption failed".into(),
        })?;
    let id = blake2b256(&sealed);
    Ok((BlockRef { id, key }, sealed))
}

/// Decodes a block's stored bytes back to the plain bytes, checking the
/// id against the stored bytes and the key against the plain bytes.
/// `what` names the block in errors (its file).
pub fn decode_block(block: &BlockRef, stored: &[u8], what: &Path) -> Result<Vec<u8>, Error> {
    let bad = |reason: &str| Error::BadBlock {
        path: what.to_path_buf(),
        reason: reason.to_owned(),
    };
    if blake2b256(stored) != block.id {
        return Err(bad("its content does not hash to its id"));
    }
    let cipher = Aes256Gcm::new(&block.key.into());
    let compressed = cipher
        .decrypt(Nonce::from_slice(&block.key[..12]), stored)
        .map_err(|_| bad("it does not decrypt with its key"))?;
    let plain = snap::raw::Decoder::new()
        .decompress_vec(&compressed)
        .map_err(|e| bad(&format!("it is not valid Snappy ({e})")))?;
    if blake2b256(&plain) != block.key {
        return Err(bad("its plain content does not hash to its key"));
    }
    Ok(plain)
}

/// The file a directory store keeps block `id` in:
/// `<store>/<hex id[..2]>/<hex id>`, as rfs's `dir` store names it.
#[must_use]
pub fn block_path(store_dir: &Path, id: &[u8; 32]) -> PathBuf {
    let name = hex(id);
    store_dir.join(&name[..2]).join(name)
}

/// Reads block `block` from the directory store at `store_dir` and
/// decodes it. Like rfs, falls back to the flat layout of older stores
/// (`<store>/<hex id>`) when the sharded folder does not exist.
pub fn fetch_block(store_dir: &Path, block: &BlockRef) -> Result<Vec<u8>, Error> {
    let sharded = block_path(store_dir, &block.id);
    let path = match sharded.parent() {
        Some(dir) if !dir.exists() => store_dir.join(block.hex_id()),
        _ => sharded,
    };
    let stored = fs::read(&path).map_err(|e| Error::io("read the block", &path, e))?;
    decode_block(block, &stored, &path)
}

/// Distinguishes the temporary files of one process's threads.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Puts a block's stored bytes into the directory store, unless a file of
/// that size is already there (blocks are named by their content, so it
/// holds the same bytes; a short file left by a crash is replaced).
/// Writes a temporary file and renames it, so readers never see half a
/// block and concurrent writers of the same block do not collide.
/// Returns whether it wrote the file.
pub(crate) fn store_block(store_dir: &Path, id: &[u8; 32], stored: &[u8]) -> Result<bool, Error> {
    let path = block_path(store_dir, id);
    if let Ok(meta) = fs::symlink_metadata(&path)
        && meta.is_file()
        && meta.len() == stored.len() as u64
    {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(store_dir);
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let temp = dir.join(format!(
        ".{}.{}-{}.partial",
        hex(id),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(stored)?;
        drop(file);
        fs::rename(&temp, &path)
    })();
    match result {
        Ok(()) => Ok(true),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(Error::io("write the block", &path, e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_are_deterministic() {
        let plain: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (a, sealed) = encode_block(&plain).unwrap();
        let (b, again) = encode_block(&plain).unwrap();
        assert_eq!((a, &sealed), (b, &again));
        assert_eq!(a.key, blake2b256(&plain));
        assert_eq!(a.id, blake2b256(&sealed));
        let back = decode_block(&a, &sealed, Path::new("test")).unwrap();
        assert_eq!(back, plain);
    }

    #[test]
    fn damaged_blocks_are_refused() {
        let (block, mut sealed) = encode_block(b"some content").unwrap();
        sealed[3] ^= 1;
        let err = decode_block(&block, &sealed, Path::new("b")).unwrap_err();
        assert!(err.to_string().contains("does not hash to its id"), "{err}");
        // Right bytes, wrong key: the id matches but decryption fails.
        let (block, sealed) = encode_block(b"some content").unwrap();
        let wrong = BlockRef {
            key: [7; 32],
            ..block
        };
        let err = decode_block(&wrong, &sealed, Path::new("b")).unwrap_err();
        assert!(err.to_string().contains("does not decrypt"), "{err}");
    }

    /// Pins the encoding: if a dependency update changes these bytes
    /// (another Snappy output), block ids change and stored flists no
    /// longer match what a new write gives; bump `FlistOptions`'
    /// identity version then.
    #[test]
    fn the_encoding_is_pinned() {
        let (block, sealed) = encode_block(b"kiln flist block\n").unwrap();
        // Computed independently (Python's hashlib.blake2b with
        // digest_size=32, a hand-made Snappy literal, `cryptography`'s
        // AESGCM).
        assert_eq!(
            hex(&block.key),
            "bd50918e22070b679a37e6f88285bc1a305cc8746951303ba64424b158f02fed"
        );
        assert_eq!(
            block.hex_id(),
            "7c128cf525c4bf0845102e4c4f435fd9d86e99420f1aa4d8dbb8aea7de50591d"
        );
        assert_eq!(sealed.len(), 17 + 2 + 16);
    }

    #[test]
    fn the_store_is_sharded_by_the_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        let (block, sealed) = encode_block(b"x").unwrap();
        assert!(store_block(dir.path(), &block.id, &sealed).unwrap());
        assert!(!store_block(dir.path(), &block.id, &sealed).unwrap());
        let hex_id = block.hex_id();
        let path = dir.path().join(&hex_id[..2]).join(&hex_id);
        assert_eq!(fs::read(&path).unwrap(), sealed);
        assert_eq!(fetch_block(dir.path(), &block).unwrap(), b"x");
        // A truncated file (a crash before the data reached the disk) is
        // replaced.
        fs::write(&path, b"").unwrap();
        assert!(store_block(dir.path(), &block.id, &sealed).unwrap());
        assert_eq!(fs::read(&path).unwrap(), sealed);
    }
}
