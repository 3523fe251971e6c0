//! The one error type of this crate.
//!
//! Every message starts with "Failed to …", names the thing in backticks and
//! keeps the underlying cause as its `source`.

use std::path::PathBuf;

use crate::digest::InputKey;

/// Everything that can go wrong in `kiln-store`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A digest in hex form is malformed.
    #[error("Failed to parse digest `{text}`: expected 64 lower-case hexadecimal digits")]
    InvalidDigest {
        /// The text.
        text: String,
    },
    /// The store's directories could not be created.
    #[error("Failed to create layer store directory `{path}`")]
    CreateStore {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A lock file could not be opened or locked.
    #[error("Failed to lock `{path}`")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A staging directory could not be created.
    #[error("Failed to create staging directory in `{path}`")]
    Stage {
        /// The staging area.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory of a layer tree could not be read.
    #[error("Failed to read `{path}`")]
    ReadTree {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The root of a tree is not a directory.
    #[error("Failed to read tree `{path}`: it is not a directory")]
    NotADirectory {
        /// The path given as the tree.
        path: PathBuf,
    },
    /// A tree contains a mount point (another file system).
    #[error("Failed to read tree: `{path}` is a mount point; unmount it before committing a layer")]
    MountPoint {
        /// The mount point.
        path: PathBuf,
    },
    /// The store's directory listing could not be read.
    #[error("Failed to list `{path}`")]
    List {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `meta.json` could not be written.
    #[error("Failed to write layer metadata `{path}`")]
    WriteMeta {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `meta.json` could not be read.
    #[error("Failed to read layer metadata `{path}`")]
    ReadMeta {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `meta.json` is not valid.
    #[error("Failed to parse layer metadata `{path}`")]
    ParseMeta {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The staged layer could not be renamed into place.
    #[error("Failed to move layer `{input}` into place at `{path}`")]
    Commit {
        /// The layer.
        input: InputKey,
        /// Its final directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A complete layer with this input digest is already in the store.
    #[error(
        "Failed to commit layer `{input}`: the store already holds it; use it, or remove it first"
    )]
    LayerExists {
        /// The layer.
        input: InputKey,
    },
    /// The build lock passed to `commit` is not the stage's.
    #[error("Failed to commit layer `{stage}`: the build lock held is for `{lock}`")]
    LockMismatch {
        /// The input digest of the lock.
        lock: InputKey,
        /// The input digest of the stage.
        stage: InputKey,
    },
    /// The stage passed to `commit` belongs to another store.
    #[error("Failed to commit `{path}`: the stage belongs to another store")]
    ForeignStage {
        /// The stage's directory.
        path: PathBuf,
    },
    /// A layer asked for is not in the store.
    #[error("Failed to use layer `{input}`: it is not in the store; build it first")]
    LayerMissing {
        /// The layer.
        input: InputKey,
    },
    /// A layer or stage directory could not be removed.
    #[error("Failed to remove `{path}`")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
