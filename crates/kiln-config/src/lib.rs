//! Reads a kiln image tree.
//!
//! A tree is a folder with a `kiln.toml` (package sources, output settings,
//! defaults, the variant matrix) and, anywhere below it, one folder per image
//! holding an `image.toml`. [`load`] reads all of it, checks every fragment
//! against the schema and returns a [`Tree`], or every problem it found.
//!
//! This crate knows the file formats and the merge rules; it knows nothing
//! about variants, graphs or builds (that is `kiln-plan`), and it prints
//! nothing.
#![deny(missing_docs)]

pub mod diagnostic;
pub mod interpolate;
pub mod merge;
pub mod netboot;
pub mod output;
pub mod reference;
pub mod schema;
pub mod settings;
pub mod source;
pub mod tree;
pub mod tree_fs;
pub mod value;

pub use diagnostic::{Diagnostic, Diagnostics, FileId, Origin, SourceMap};
pub use output::OutputFormat;
pub use settings::ImageSettings;
pub use source::{Distribution, Keyring, PackageSource};
pub use tree::{
    Dimension, DimensionKey, FileEntry, FileKind, ImageDef, LinkTarget, LoadFailure, LoadOptions,
    MatrixRule, Tree, load,
};
pub use tree_fs::{InputError, TreeInputs, TreeRoot};
pub use value::{Kind, Table, Value};
