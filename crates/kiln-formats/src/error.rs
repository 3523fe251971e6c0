//! The one error type of this crate.
//!
//! Every message starts with "Failed to …", names the file or artifact in
//! backticks and keeps the underlying cause as its `source`.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while writing an artifact.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller stopped the writer ([`crate::Input::cancel`]).
    #[error("Writing was stopped: the build was cancelled")]
    Cancelled,
    /// A file of a layer or the artifact could not be read or written.
    #[error("Failed to {action} `{}`", path.display())]
    Io {
        /// What was being done: `read`, `write`, ….
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The layers could not be read as a tree.
    #[error("Failed to read the layers")]
    Layers(#[from] kiln_layers::Error),
    /// Something in the tree cannot be represented in the format.
    #[error("Failed to write `{path}` as {format}: {reason}")]
    Unsupported {
        /// The format's name.
        format: &'static str,
        /// The entry, relative to the root.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The content does not fit the size asked for.
    #[error("Failed to fit the root into {format}: {reason}")]
    TooLarge {
        /// The format's name.
        format: &'static str,
        /// What is wrong, with the sizes.
        reason: String,
    },
    /// The format's options are not valid.
    #[error("Failed to use the {format} options: {reason}")]
    Options {
        /// The format's name.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A compressor failed on a block.
    #[error("Failed to compress a block with {compressor}: {reason}")]
    Compress {
        /// The compressor.
        compressor: &'static str,
        /// What it said.
        reason: String,
    },
    /// An flist's `SQLite` database could not be created, written or read.
    #[error("Failed to {action} the flist `{}`", path.display())]
    Database {
        /// What was being done: `create`, `write the inodes of`, ….
        action: &'static str,
        /// The flist.
        path: PathBuf,
        /// `SQLite`'s error.
        #[source]
        source: rusqlite::Error,
    },
    /// An flist holds something this crate cannot use (an entry that is
    /// not there, a malformed row).
    #[error("Failed to read the flist `{}`: {reason}", path.display())]
    Flist {
        /// The flist.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A block read from a store does not match its id or key.
    #[error("Failed to verify the block `{}`: {reason}", path.display())]
    BadBlock {
        /// The block's file in the store.
        path: PathBuf,
        /// What does not match.
        reason: String,
    },
    /// An external tool (`mkfs.ext4`, …) failed.
    #[error("Failed to run `{tool}` ({status}): {output}")]
    Tool {
        /// The command.
        tool: String,
        /// How it ended.
        status: String,
        /// The last lines it printed.
        output: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
