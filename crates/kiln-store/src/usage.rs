//! `du`: what the store takes on disk, per layer and in total, against
//! what full copies of every variant's root would take.

use std::collections::{HashMap, HashSet};

use crate::digest::InputKey;
use crate::error::Error;
use crate::layer::Layer;
use crate::store::Store;

/// One layer's share of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerUsage {
    /// The layer.
    pub input: InputKey,
    /// Its variant.
    pub variant: String,
    /// Its parent.
    pub parent: Option<InputKey>,
    /// When it was committed (Unix seconds).
    pub created: i64,
    /// Bytes its own tree takes on disk.
    pub size: u64,
    /// Bytes its ancestors' trees take: what it shares through its parent
    /// chain instead of copying.
    pub shared: u64,
    /// Entries in its tree.
    pub files: u64,
    /// Whether the plan passed to [`Store::du`] lists it.
    pub referenced: bool,
}

/// What [`Store::du`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Every complete layer, oldest first.
    pub layers: Vec<LayerUsage>,
    /// Bytes all layers take.
    pub total: u64,
    /// Bytes they would take as full copies: each layer's size plus its
    /// ancestors'.
    pub full_copies: u64,
    /// Bytes of referenced layers and their ancestors: what `gc` keeps.
    pub referenced: u64,
    /// Bytes of the other layers: what `gc` may remove.
    pub unreferenced: u64,
}

impl Usage {
    /// Bytes saved by sharing parents: `full_copies - total`.
    #[must_use]
    pub fn saved(&self) -> u64 {
        self.full_copies.saturating_sub(self.total)
    }
}

impl Store {
    /// Sizes of every layer and totals; `referenced` are the input digests
    /// of the current plan's variants.
    pub fn du(&self, referenced: &[InputKey]) -> Result<Usage, Error> {
        let layers = self.layers()?;
        let by_input: HashMap<InputKey, &Layer> = layers.iter().map(|l| (l.input, l)).collect();
        let listed: HashSet<InputKey> = referenced.iter().copied().collect();
        let kept = with_ancestors(&by_input, referenced);
        let mut usage = Usage::default();
        for layer in &layers {
            let shared: u64 = ancestors(&by_input, layer.input)
                .iter()
                .map(|a| by_input[a].meta.size)
                .sum();
            usage.total += layer.meta.size;
            usage.full_copies += layer.meta.size + shared;
            if kept.contains(&layer.input) {
                usage.referenced += layer.meta.size;
            } else {
                usage.unreferenced += layer.meta.size;
            }
            usage.layers.push(LayerUsage {
                input: layer.input,
                variant: layer.meta.variant.clone(),
                parent: layer.parent,
                created: layer.meta.created,
                size: layer.meta.size,
                shared,
                files: layer.meta.files,
                referenced: listed.contains(&layer.input),
            });
        }
        Ok(usage)
    }
}

/// The ancestors of `input` that are in the store, nearest first; stops at
/// a missing parent or a cycle.
pub(crate) fn ancestors(by_input: &HashMap<InputKey, &Layer>, input: InputKey) -> Vec<InputKey> {
    let mut out = Vec::new();
    let mut seen = HashSet::from([input]);
    let mut next = by_input.get(&input).and_then(|l| l.parent);
    while let Some(parent) = next {
        if !seen.insert(parent) {
            break;
        }
        let Some(layer) = by_input.get(&parent) else {
            break;
        };
        out.push(parent);
        next = layer.parent;
    }
    out
}

/// `inputs` in the store and all their ancestors.
pub(crate) fn with_ancestors(
    by_input: &HashMap<InputKey, &Layer>,
    inputs: &[InputKey],
) -> HashSet<InputKey> {
    let mut out = HashSet::new();
    for input in inputs {
        if by_input.contains_key(input) {
            out.insert(*input);
            out.extend(ancestors(by_input, *input));
        }
    }
    out
}
