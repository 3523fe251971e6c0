//! kiln's layers and provisioning.
//!
//! kiln builds each image variant as one **layer**. A bootstrap variant's
//! layer is its whole root. Every other variant is built on its parent's
//! layers, mounted read-only as the lower directories of an overlayfs
//! ([`Overlay`]) with a fresh upper directory; the variant is provisioned
//! ([`provision`]) in the merged view, and then the upper directory *is*
//! the variant's layer: what changed, with deletions as overlayfs
//! whiteouts (character devices 0:0) and directories that replace a lower
//! one wholesale marked opaque (`trusted.overlay.opaque=y`).
//!
//! A [`LayerStack`] names a variant's layers, bottom first. Writers read
//! the result without mounting anything through [`MergedView`], which
//! applies overlayfs's rules to the layers' folders; [`whiteouts`] lists
//! what a layer deletes.
//!
//! ```no_run
//! use kiln_layers::{LayerStack, MergedView};
//!
//! let stack = LayerStack::new(vec!["out/base/layer".into(), "out/app/layer".into()]);
//! for entry in MergedView::new(&stack).walk() {
//!     let entry = entry?;
//!     println!("{} (layer {})", entry.path, entry.layer);
//! }
//! # Ok::<(), kiln_layers::Error>(())
//! ```
//!
//! # Privileges and mounts
//!
//! Mounting and provisioning need root. A process that mounts calls
//! [`private_mount_namespace`] first, while it is single-threaded, so that
//! every mount it makes is invisible to the host and dies with it, even on
//! `SIGKILL`. Commands run in a root (`useradd`, `systemctl`, `run`
//! scripts) get their own mount and PID namespaces with `/proc`, `/sys`
//! and `/dev` mounted only for them, as kiln-dpkg's maintainer scripts do.
//!
//! The library prints nothing: provisioning's log lines go to a callback.
#![deny(missing_docs)]

mod error;
mod merged;
mod namespace;
mod overlay;
mod provision;
mod root;
mod times;

use std::path::PathBuf;

pub use error::Error;
pub use merged::{Entry, MergedView};
pub use overlay::{Overlay, private_mount_namespace, whiteouts};
pub use provision::{
    ProvisionContext, ProvisionReport, STEP_FAILED, STEP_FINISHED, STEP_STARTED, provision,
};
pub use times::clamp_times;

/// The layers of a variant, bottom (the bootstrap variant's root) first,
/// each a folder on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerStack {
    /// The layers' folders, bottom first.
    pub layers: Vec<PathBuf>,
}

impl LayerStack {
    /// A stack of `layers`, bottom first.
    #[must_use]
    pub fn new(layers: Vec<PathBuf>) -> Self {
        Self { layers }
    }

    /// This stack with `layer` on top: a child variant's stack, once its
    /// own layer is built.
    #[must_use]
    pub fn with(&self, layer: PathBuf) -> Self {
        let mut layers = self.layers.clone();
        layers.push(layer);
        Self { layers }
    }
}
