//! kiln's content-addressed layer store.
//!
//! Every image variant is built as one layer over its parent's layers. A
//! layer is a directory tree in overlayfs upper-dir form (deletions are
//! whiteouts, character devices 0:0; opaque directories carry
//! `trusted.overlay.opaque=y`), stored under the variant's input digest
//! ([`InputKey`]) with the [`ContentDigest`] of its tree and a
//! [`LayerMeta`].
//!
//! Building a layer:
//!
//! ```
//! use kiln_store::{InputKey, NewLayer, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path())?;
//! let input = InputKey([7; 32]);
//!
//! // Another process building the same variant waits here...
//! let lock = store.lock(&input)?;
//! // ...and then finds the layer.
//! if store.get(&input)?.is_none() {
//!     let stage = store.stage(&input)?;
//!     std::fs::write(stage.tree().join("hello"), "hi\n")?;
//!     let layer = store.commit(&lock, stage, NewLayer { variant: "base".into(), parent: None, epoch: None })?;
//!     assert_eq!(layer.meta.files, 1);
//! }
//! drop(lock);
//!
//! // While a layer serves as an overlay lower dir, gc leaves it alone.
//! let in_use = store.use_layers(&[input])?;
//! assert!(in_use.layers()[0].tree.join("hello").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: a directory under `layers/` is a complete layer
//! (it arrived by one rename, with its `meta.json`); a killed process leaves
//! at most a staging directory, which the next [`Store::open`] removes.
//!
//! Architecture invariant: this crate knows nothing of images, plans or
//! packages, and prints nothing; input digests come from `kiln-plan`.
#![deny(missing_docs)]

mod artifact;
mod atomic;
mod digest;
mod error;
mod gc;
mod layer;
mod lock;
mod stage;
mod store;
mod tree;
mod usage;
mod verify;

pub use artifact::{ArtifactMeta, StoredArtifact, sha256_of};
pub use atomic::write_atomic;
pub use digest::{ContentDigest, InputKey};
pub use error::Error;
pub use gc::{GcPolicy, GcReport};
pub use layer::{Layer, LayerMeta, NewLayer};
pub use lock::{BuildLock, UseGuard};
pub use stage::Stage;
pub use store::Store;
pub use tree::{DOMAIN as CONTENT_DIGEST_DOMAIN, content_digest};
pub use usage::{LayerUsage, Usage};
pub use verify::Problem;
