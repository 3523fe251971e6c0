//! The one error type of the build library.

use std::path::PathBuf;

use kiln_config::{Diagnostic, SourceMap};

/// Why a build (or opening a tree for one) could not go on. A variant
/// that fails does not make the build fail: it is reported in the
/// [`crate::BuildReport`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The tree or its plan has problems, each at its `file:line:column`:
    /// render `diagnostics` with `files`.
    #[error("the tree has {} problem(s)", diagnostics.len())]
    Tree {
        /// The files the diagnostics point into.
        files: SourceMap,
        /// Every problem found.
        diagnostics: Vec<Diagnostic>,
    },
    /// A setting (a flag, `SOURCE_DATE_EPOCH`, `kiln.toml`) is wrong; the
    /// message names it and says how to fix it.
    #[error("{message}")]
    Config {
        /// What is wrong, with a `help:` line where one helps.
        message: String,
    },
    /// The store could not be opened.
    #[error("failed to open the store in `{}`", path.display())]
    Store {
        /// The store's folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: kiln_store::Error,
    },
    /// A file or folder of the build could not be made or written.
    #[error("failed to {action} `{}`: {error}", path.display())]
    Io {
        /// What was being done: `create`, `write`.
        action: &'static str,
        /// What.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// `kiln.lock` could not be read (or, with `write`, written).
    #[error("{source}")]
    Lock {
        /// Why (it names the file).
        #[source]
        source: kiln_debian::Error,
        /// Whether writing failed (not the configuration's fault).
        write: bool,
    },
    /// A variant's packages could not be resolved (for `kiln lock`).
    #[error("{message}")]
    Variant {
        /// The variant.
        variant: String,
        /// What went wrong, with its causes (it names the variant).
        message: String,
        /// Whether the configuration caused it.
        config: bool,
    },
}

impl Error {
    /// Whether the user's input caused it (the CLI exits 2, not 1).
    #[must_use]
    pub fn is_config(&self) -> bool {
        match self {
            Error::Tree { .. } | Error::Config { .. } => true,
            Error::Lock { write, .. } => !write,
            Error::Variant { config, .. } => *config,
            Error::Store { .. } | Error::Io { .. } => false,
        }
    }
}

/// Text of an error and its causes, one `caused by:` line each.
#[must_use]
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!("\n  caused by: {c}"));
        cur = c.source();
    }
    s
}
