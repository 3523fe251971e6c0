//! Turns a loaded [`Tree`] into a [`Plan`]: every image variant, linked to
//! the variant it builds on, in build order, each with an [`InputDigest`].
//!
//! Architecture invariant: this crate does no I/O. Everything it needs from
//! the file system (file contents, modes) was read by `kiln-config`'s loader
//! into the [`Tree`]; a plan is a pure function of the tree and the
//! selection, which is what makes the digests testable and fast.
#![deny(missing_docs)]

mod digest;
mod graph;
mod matrix;
mod select;

pub use digest::{DOMAIN as DIGEST_DOMAIN, InputDigest};
pub use select::Selection;

use kiln_config::diagnostic::{Diagnostic, Diagnostics};
use kiln_config::settings::{Base, ImageSettings};
use kiln_config::{Table, Tree};

/// An index into [`Plan::variants`].
pub type VariantId = usize;

/// One image variant: an image with one key per dimension it varies by.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Its name, from the name template (unique in the plan).
    pub name: String,
    /// The image it is a variant of.
    pub image: String,
    /// `(dimension, key)` pairs in dimension order.
    pub keys: Vec<(String, String)>,
    /// The variant it builds on, for images `from` another image.
    pub parent: Option<VariantId>,
    /// The merged, interpolated configuration.
    pub config: Table,
    /// The typed configuration.
    pub settings: ImageSettings,
    /// What its build depends on.
    pub digest: InputDigest,
}

impl Variant {
    /// True for variants bootstrapped from packages.
    #[must_use]
    pub fn is_bootstrap(&self) -> bool {
        matches!(self.settings.base, Base::Bootstrap { .. })
    }

    /// True if the variant holds this dimension key.
    #[must_use]
    pub fn holds(&self, key: &str) -> bool {
        self.keys.iter().any(|(_, k)| k == key)
    }
}

/// The variants of a tree in build order: every parent before its children.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The variants.
    pub variants: Vec<Variant>,
}

impl Plan {
    /// The variant with this name.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The chain from a variant up to its bootstrap root, the variant first.
    #[must_use]
    pub fn ancestry(&self, id: VariantId) -> Vec<VariantId> {
        let mut chain = vec![id];
        let mut cur = id;
        while let Some(p) = self.variants[cur].parent {
            chain.push(p);
            cur = p;
        }
        chain
    }
}

/// Expands, links, orders and digests every variant of `tree`, then keeps
/// the ones `selection` picks (and their ancestors).
pub fn plan(tree: &Tree, selection: &Selection) -> Result<Plan, Vec<Diagnostic>> {
    let mut diags = Diagnostics::default();
    selection.check(tree, &mut diags);
    let mut expanded = Vec::new();
    for i in 0..tree.images.len() {
        expanded.extend(matrix::expand(tree, i, &mut diags));
    }
    let plan = graph::build(tree, expanded, &mut diags);
    if !diags.is_empty() {
        return Err(diags.into_vec());
    }
    if tree.images.is_empty() {
        // On a partial tree, unreadable images were reported already.
        if tree.broken_images.is_empty() {
            return Err(vec![Diagnostic::new(format!("no images in `{}`", tree.root.display())).with_help(
                "an image is a folder below the root holding an `image.toml`; `kiln init` writes an example",
            )]);
        }
        return Ok(plan);
    }
    let plan = selection.apply(tree, plan);
    if plan.variants.is_empty() {
        return Err(vec![Diagnostic::new("the selection matches no variant").with_help(
            "`--only` keeps variants of the named images holding the named keys; `--skip` drops variants holding any; run `kiln plan` without them to see every variant",
        )]);
    }
    Ok(plan)
}
