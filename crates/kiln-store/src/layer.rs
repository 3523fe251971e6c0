//! A committed layer and its `meta.json`, the store's one wire format.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{ContentDigest, InputKey};
use crate::error::Error;

/// The name of a layer's metadata file, beside its `tree/`.
pub(crate) const META_FILE: &str = "meta.json";
/// The name of a layer's tree directory.
pub(crate) const TREE_DIR: &str = "tree";

/// A complete layer in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The input digest it is stored under.
    pub input: InputKey,
    /// The content digest of its tree, as recorded when it was committed.
    pub content: ContentDigest,
    /// The layer it was built on.
    pub parent: Option<InputKey>,
    /// Its tree, in overlayfs upper-dir form: the directory to use as an
    /// overlay lower dir.
    pub tree: PathBuf,
    /// Its `meta.json`.
    pub meta: LayerMeta,
}

/// A layer's `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    /// The variant it was built for.
    pub variant: String,
    /// The parent layer's input digest, in hex.
    pub parent: Option<String>,
    /// The content digest of its tree, in hex.
    pub content_digest: String,
    /// Bytes its tree takes on disk (`st_blocks * 512`, hard links counted once).
    pub size: u64,
    /// Entries in its tree (files, directories, links, devices, whiteouts).
    pub files: u64,
    /// When it was committed, in seconds since the Unix epoch.
    pub created: i64,
    /// The version of kiln that committed it.
    pub kiln_version: String,
    /// The build's `SOURCE_DATE_EPOCH`: no mtime in the tree is later,
    /// and its artifacts are dated with it. Absent in layers of kilns
    /// that did not record it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// What the builder says about a layer it commits; the store adds the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLayer {
    /// The variant it was built for.
    pub variant: String,
    /// The layer it was built on, if any: it must be in the store.
    pub parent: Option<InputKey>,
    /// The build's `SOURCE_DATE_EPOCH`, recorded in its `meta.json`.
    pub epoch: Option<i64>,
}

/// What is found under `layers/<input>`.
#[derive(Debug)]
pub(crate) enum Found {
    /// Nothing.
    Absent,
    /// A directory that is not a complete layer, and why.
    Incomplete(String),
    /// A complete layer.
    Complete(Box<Layer>),
}

/// Reads the layer directory `dir`, stored under `input`.
pub(crate) fn read(dir: &Path, input: InputKey) -> Result<Found, Error> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Ok(Found::Incomplete("it is not a directory".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(source) => {
            return Err(Error::ReadMeta {
                path: dir.to_owned(),
                source,
            });
        }
    }
    let meta_path = dir.join(META_FILE);
    let text = match std::fs::read(&meta_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found::Incomplete(format!("it has no `{META_FILE}`")));
        }
        Err(source) => {
            return Err(Error::ReadMeta {
                path: meta_path,
                source,
            });
        }
    };
    let meta: LayerMeta = match serde_json::from_slice(&text) {
        Ok(meta) => meta,
        Err(e) => {
            return Ok(Found::Incomplete(format!(
                "its `{META_FILE}` is invalid: {e}"
            )));
        }
    };
    let Ok(content) = ContentDigest::from_hex(&meta.content_digest) else {
        return Ok(Found::Incomplete(format!(
            "its `{META_FILE}` has an invalid content digest"
        )));
    };
    let parent = match meta.parent.as_deref().map(InputKey::from_hex) {
        None => None,
        Some(Ok(parent)) => Some(parent),
        Some(Err(_)) => {
            return Ok(Found::Incomplete(format!(
                "its `{META_FILE}` has an invalid parent"
            )));
        }
    };
    let tree = dir.join(TREE_DIR);
    if !std::fs::symlink_metadata(&tree).is_ok_and(|m| m.is_dir()) {
        return Ok(Found::Incomplete(format!(
            "it has no `{TREE_DIR}` directory"
        )));
    }
    Ok(Found::Complete(Box::new(Layer {
        input,
        content,
        parent,
        tree,
        meta,
    })))
}

/// Writes `meta` as `dir/meta.json` and flushes it.
pub(crate) fn write_meta(dir: &Path, meta: &LayerMeta) -> Result<(), Error> {
    use std::io::Write;
    let path = dir.join(META_FILE);
    let err = |source| Error::WriteMeta {
        path: path.clone(),
        source,
    };
    let mut text = serde_json::to_vec_pretty(meta).map_err(|e| err(e.into()))?;
    text.push(b'\n');
    let mut file = std::fs::File::create_new(&path).map_err(err)?;
    file.write_all(&text).map_err(err)?;
    file.sync_all().map_err(err)
}
