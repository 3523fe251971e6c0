//! The one error type of the service library.

use std::path::PathBuf;

/// Why the service could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `serve.toml` is wrong at `file:line:column`.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Config {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A file or folder could not be read or written.
    #[error("failed to {action} `{}`: {error}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// What.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The database failed.
    #[error("the database `{}`: {source}", path.display())]
    Database {
        /// Its file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}

impl Error {
    /// Whether the configuration is at fault (the CLI exits 2).
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config { .. })
    }
}
