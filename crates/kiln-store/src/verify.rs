//! `verify`: every layer's tree re-hashed against the content digest its
//! `meta.json` recorded. Reports problems as data; changes nothing.

use std::fmt;
use std::path::PathBuf;

use crate::digest::{ContentDigest, InputKey};
use crate::layer::{self, Found};
use crate::lock;
use crate::store::Store;
use crate::tree;

/// Something wrong with one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The tree no longer has the content it was committed with.
    Changed {
        /// The layer.
        input: InputKey,
        /// Its variant.
        variant: String,
        /// The content digest in `meta.json`.
        recorded: ContentDigest,
        /// The content digest of the tree now.
        actual: ContentDigest,
    },
    /// A directory under `layers/` that is no complete layer (no or invalid
    /// `meta.json`, no tree); ignored by lookups, replaced by a commit,
    /// removed by `gc`.
    Incomplete {
        /// Its directory.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The tree could not be read.
    Unreadable {
        /// The layer.
        input: InputKey,
        /// Its variant.
        variant: String,
        /// The error, with its causes.
        reason: String,
    },
    /// An artifact kept with the layer no longer has the SHA-256 it was
    /// stored with (the next build that needs it writes it again).
    ArtifactChanged {
        /// The layer.
        input: InputKey,
        /// Its variant.
        variant: String,
        /// The artifact's file.
        path: PathBuf,
    },
    /// The parent the layer records is not in the store.
    MissingParent {
        /// The layer.
        input: InputKey,
        /// Its variant.
        variant: String,
        /// The parent's input digest.
        parent: InputKey,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Changed {
                input,
                variant,
                recorded,
                actual,
            } => write!(
                f,
                "layer `{}` ({variant}) has changed: content digest `{}`, recorded `{}`",
                input.short(),
                actual.short(),
                recorded.short()
            ),
            Problem::Incomplete { path, reason } => {
                write!(f, "`{}` is no complete layer: {reason}", path.display())
            }
            Problem::Unreadable {
                input,
                variant,
                reason,
            } => write!(
                f,
                "layer `{}` ({variant}) cannot be read: {reason}",
                input.short()
            ),
            Problem::ArtifactChanged {
                input,
                variant,
                path,
            } => write!(
                f,
                "artifact `{}` of layer `{}` ({variant}) has changed since it was stored",
                path.display(),
                input.short()
            ),
            Problem::MissingParent {
                input,
                variant,
                parent,
            } => write!(
                f,
                "layer `{}` ({variant}) has parent `{}`, which is not in the store",
                input.short(),
                parent.short()
            ),
        }
    }
}

impl Store {
    /// Re-hashes every layer's tree and compares it with the content digest
    /// recorded at commit; also reports incomplete layer directories and
    /// missing parents. Waits for layers other threads are building or
    /// removing.
    pub fn verify(&self) -> Result<Vec<Problem>, crate::Error> {
        let mut problems = Vec::new();
        for (input, dir) in self.layer_dirs()? {
            let _shared = lock::shared(&self.lock_path(&input))?;
            let layer = match layer::read(&dir, input)? {
                Found::Absent => continue,
                Found::Incomplete(reason) => {
                    problems.push(Problem::Incomplete { path: dir, reason });
                    continue;
                }
                Found::Complete(layer) => *layer,
            };
            if let Some(parent) = layer.parent {
                if self.get(&parent)?.is_none() {
                    problems.push(Problem::MissingParent {
                        input,
                        variant: layer.meta.variant.clone(),
                        parent,
                    });
                }
            }
            for artifact in self.artifacts(&input)? {
                if !self.artifact_intact(&artifact) {
                    problems.push(Problem::ArtifactChanged {
                        input,
                        variant: layer.meta.variant.clone(),
                        path: artifact.path,
                    });
                }
            }
            match tree::content_digest(&layer.tree) {
                Ok(actual) if actual == layer.content => {}
                Ok(actual) => problems.push(Problem::Changed {
                    input,
                    variant: layer.meta.variant,
                    recorded: layer.content,
                    actual,
                }),
                Err(e) => problems.push(Problem::Unreadable {
                    input,
                    variant: layer.meta.variant,
                    reason: with_causes(&e),
                }),
            }
        }
        Ok(problems)
    }
}

fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
