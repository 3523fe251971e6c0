//! Artifacts kept with their layer, so that a format whose layers and
//! options did not change is copied, not written again.
//!
//! ```text
//! <store>/layers/<input-hex>/artifacts/<identity-hex>/meta.json
//! <store>/layers/<input-hex>/artifacts/<identity-hex>/<file>
//! ```
//!
//! `<identity-hex>` is the BLAKE3 of the writer's identity (format,
//! options, writer version, epoch): the layers are the layer's own key and
//! its ancestors', which the key already covers. An artifact directory
//! arrives by one rename of a staged directory holding the file and its
//! `meta.json`, so a directory there is complete; it goes with its layer
//! (`gc`, `--revise`).
//!
//! An artifact is a file, or a folder (an OCI image layout): its size is
//! then the sum of its files' sizes and its SHA-256 that of its listing
//! (see [`sha256_of`]).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::digest::InputKey;
use crate::error::Error;
use crate::stage;
use crate::store::Store;

const ARTIFACTS_DIR: &str = "artifacts";

/// An artifact in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    /// The file.
    pub path: PathBuf,
    /// Its `meta.json`.
    pub meta: ArtifactMeta,
}

/// An artifact's `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// The writer's identity it was written with.
    pub identity: String,
    /// The file's name.
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, in hex.
    pub sha256: String,
    /// When it was written, in seconds since the Unix epoch.
    pub created: i64,
    /// The version of kiln that wrote it.
    pub kiln_version: String,
}

impl Store {
    fn artifact_dir(&self, layer: &InputKey, identity: &str) -> PathBuf {
        self.layer_dir(layer)
            .join(ARTIFACTS_DIR)
            .join(&blake3::hash(identity.as_bytes()).to_hex()[..32])
    }

    /// The artifact stored for `layer` with `identity`, if there is one
    /// whose file still has the size recorded (a damaged one is ignored
    /// and replaced by the next [`Store::put_artifact`]).
    pub fn artifact(
        &self,
        layer: &InputKey,
        identity: &str,
    ) -> Result<Option<StoredArtifact>, Error> {
        let dir = self.artifact_dir(layer, identity);
        let meta_path = dir.join(crate::layer::META_FILE);
        let text = match fs::read_to_string(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::ReadMeta {
                    path: meta_path,
                    source,
                });
            }
        };
        let Ok(meta) = serde_json::from_str::<ArtifactMeta>(&text) else {
            return Ok(None);
        };
        let path = dir.join(&meta.file);
        let intact = meta.identity == identity
            && match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => m.len() == meta.size,
                Ok(m) if m.is_dir() => tree_size(&path).is_ok_and(|size| size == meta.size),
                _ => false,
            };
        Ok(intact.then_some(StoredArtifact { path, meta }))
    }

    /// A new empty directory to write an artifact in before
    /// [`Store::put_artifact`]; removed by the next [`Store::open`] if
    /// this process dies first.
    pub fn artifact_scratch(&self) -> Result<PathBuf, Error> {
        stage::unique_dir(&self.stage_dir()).map_err(|source| Error::Stage {
            path: self.stage_dir(),
            source,
        })
    }

    /// Stores the file or folder `written` (inside a directory from
    /// [`Store::artifact_scratch`]) as `layer`'s artifact with `identity`,
    /// under the name `file`; returns it as stored. If another process
    /// stored the same artifact first, that one is kept.
    pub fn put_artifact(
        &self,
        layer: &InputKey,
        identity: &str,
        file: &str,
        written: &Path,
    ) -> Result<StoredArtifact, Error> {
        let read_err = |source| Error::ReadTree {
            path: written.to_owned(),
            source,
        };
        let (size, sha256) = sha256_of(written).map_err(read_err)?;
        let staged = self.artifact_scratch()?;
        let write_err = |source| Error::WriteMeta {
            path: staged.clone(),
            source,
        };
        fs::rename(written, staged.join(file)).map_err(write_err)?;
        let meta = ArtifactMeta {
            identity: identity.to_owned(),
            file: file.to_owned(),
            size,
            sha256,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            kiln_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let json = serde_json::to_vec_pretty(&meta).expect("serializable");
        fs::write(staged.join(crate::layer::META_FILE), json).map_err(write_err)?;
        let dest = self.artifact_dir(layer, identity);
        let parent = dest.parent().expect("under the layer");
        fs::create_dir_all(parent).map_err(write_err)?;
        if dest.exists() {
            // A damaged one (see `artifact`), or a racing writer's: replace
            // it only if it is not intact.
            if let Some(existing) = self.artifact(layer, identity)? {
                let _ = stage::remove_tree(&staged);
                return Ok(existing);
            }
            let old = self.artifact_scratch()?;
            fs::rename(&dest, old.join("old")).map_err(write_err)?;
            let _ = stage::remove_tree(&old);
        }
        match fs::rename(&staged, &dest) {
            Ok(()) => {}
            Err(_) if self.artifact(layer, identity)?.is_some() => {
                let _ = stage::remove_tree(&staged);
            }
            Err(e) => return Err(write_err(e)),
        }
        self.artifact(layer, identity)?
            .ok_or_else(|| Error::ReadMeta {
                path: dest,
                source: std::io::Error::other("the artifact vanished after it was stored"),
            })
    }

    /// Whether the artifact's file still has the size and SHA-256 it was
    /// stored with (reads the whole file).
    #[must_use]
    pub fn artifact_intact(&self, artifact: &StoredArtifact) -> bool {
        sha256_of(&artifact.path)
            .is_ok_and(|(size, sha)| size == artifact.meta.size && sha == artifact.meta.sha256)
    }

    /// Every artifact stored with `layer`.
    pub fn artifacts(&self, layer: &InputKey) -> Result<Vec<StoredArtifact>, Error> {
        let dir = self.layer_dir(layer).join(ARTIFACTS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::List { path: dir, source }),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let meta_path = entry.path().join(crate::layer::META_FILE);
            if let Some(meta) = fs::read_to_string(&meta_path)
                .ok()
                .and_then(|t| serde_json::from_str::<ArtifactMeta>(&t).ok())
            {
                out.push(StoredArtifact {
                    path: entry.path().join(&meta.file),
                    meta,
                });
            }
        }
        out.sort_by(|a, b| a.meta.file.cmp(&b.meta.file));
        Ok(out)
    }
}

/// The size and SHA-256 (hex) of a file; of a folder, the sum of its
/// files' sizes and the SHA-256 of its listing: a line `<path> <size>
/// <sha256>` per file and `<path>/` per folder, relative paths in byte
/// order, so the same content gives the same digest wherever it lies.
pub fn sha256_of(path: &Path) -> std::io::Result<(u64, String)> {
    if fs::symlink_metadata(path)?.is_dir() {
        let mut listing = String::new();
        let mut size = 0;
        for (rel, file) in walk(path)? {
            match file {
                Some(file) => {
                    let (len, sha) = sha256_of(&file)?;
                    size += len;
                    listing.push_str(&format!("{rel} {len} {sha}\n"));
                }
                None => listing.push_str(&format!("{rel}/\n")),
            }
        }
        return Ok((size, hex(&sha2::Sha256::digest(listing.as_bytes()))));
    }
    let mut f = fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex(&hasher.finalize())))
}

fn hex(digest: &[u8]) -> String {
    hex::encode(digest)
}

/// The entries below the folder `root`, sorted by relative path: each
/// with its path on the host when it is a file, `None` for a folder.
/// Anything else (a link) is an error: artifacts hold files and folders.
fn walk(root: &Path) -> std::io::Result<Vec<(String, Option<PathBuf>)>> {
    let mut out = Vec::new();
    let mut pending = vec![(String::new(), root.to_path_buf())];
    while let Some((rel, dir)) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                out.push((child.clone(), None));
                pending.push((child, entry.path()));
            } else if kind.is_file() {
                out.push((child, Some(entry.path())));
            } else {
                return Err(std::io::Error::other(format!(
                    "`{}` is neither a file nor a folder",
                    entry.path().display()
                )));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The sum of the sizes of the files below the folder `root`.
fn tree_size(root: &Path) -> std::io::Result<u64> {
    walk(root)?
        .iter()
        .filter_map(|(_, file)| file.as_ref())
        .try_fold(0, |sum, file| Ok(sum + fs::metadata(file)?.len()))
}
