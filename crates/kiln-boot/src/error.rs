//! The one error type of the boot library.

use std::path::PathBuf;

/// Why a boot server, a machine or a test could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, folder or socket could not be used.
    #[error("failed to {action} `{}`: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// What.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A program the boot needs is not installed.
    #[error("`{program}` is not installed: {help}")]
    Missing {
        /// The program or file.
        program: String,
        /// Where it comes from.
        help: String,
    },
    /// The variant cannot boot the way asked.
    #[error("{variant}: {reason}")]
    NotBootable {
        /// The variant.
        variant: String,
        /// Why not.
        reason: String,
    },
}
