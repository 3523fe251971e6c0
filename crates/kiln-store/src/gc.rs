//! `gc`: removes layers the plan no longer references.
//!
//! Never removed: a referenced layer, an ancestor of a referenced layer, a
//! layer with a child that stays (so every kept layer keeps its whole
//! chain), and a layer someone holds a lock on (in use as a lower dir, or
//! being built or removed): `gc` only tries the exclusive lock and skips
//! what it cannot get. Removal is a rename into `stage/` and then a delete,
//! so an interrupted `gc` leaves nothing half-removed under `layers/`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::digest::InputKey;
use crate::error::Error;
use crate::layer::{self, Found, Layer};
use crate::lock;
use crate::store::Store;
use crate::tree;
use crate::usage::with_ancestors;

/// Which unreferenced layers `gc` removes. With neither limit set, all of
/// them; with `keep_last`, all but the N most recent; with `max_size`, the
/// oldest first until the store fits; with both, the oldest first until the
/// store fits, never one of the N most recent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcPolicy {
    /// Keep the N most recent (by `created`) unreferenced layers.
    pub keep_last: Option<usize>,
    /// Remove unreferenced layers, oldest first, until the layers take at
    /// most this many bytes.
    pub max_size: Option<u64>,
}

/// What [`Store::gc`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// The layers removed, in the order they were removed.
    pub removed: Vec<Layer>,
    /// Incomplete layer directories removed.
    pub removed_incomplete: Vec<PathBuf>,
    /// Bytes freed (removed layers and incomplete directories).
    pub freed: u64,
    /// Layers the policy would have removed but someone holds a lock on.
    pub in_use: Vec<InputKey>,
    /// Bytes all complete layers took before.
    pub size_before: u64,
    /// Bytes all complete layers take now.
    pub size_after: u64,
}

impl Store {
    /// Removes layers that `referenced` does not list, oldest first, as
    /// `policy` allows (see [`GcPolicy`]), and incomplete layer directories.
    pub fn gc(&self, referenced: &[InputKey], policy: &GcPolicy) -> Result<GcReport, Error> {
        let layers = self.layers()?;
        let by_input: HashMap<InputKey, &Layer> = layers.iter().map(|l| (l.input, l)).collect();
        let mut children: HashMap<InputKey, Vec<InputKey>> = HashMap::new();
        for l in &layers {
            if let Some(parent) = l.parent {
                children.entry(parent).or_default().push(l.input);
            }
        }
        let protected = with_ancestors(&by_input, referenced);
        // Oldest first, as `layers()` returns them.
        let candidates: Vec<&Layer> = layers
            .iter()
            .filter(|l| !protected.contains(&l.input))
            .collect();
        let keep = policy.keep_last.unwrap_or(0).min(candidates.len());
        let removable = &candidates[..candidates.len() - keep];

        let mut report = GcReport {
            size_before: layers.iter().map(|l| l.meta.size).sum(),
            ..GcReport::default()
        };
        let mut size = report.size_before;
        let mut gone: HashSet<InputKey> = HashSet::new();
        let mut in_use: HashSet<InputKey> = HashSet::new();
        // A layer becomes removable once its children are gone, so repeat
        // until a pass removes nothing.
        'passes: loop {
            let mut progress = false;
            for layer in removable {
                if gone.contains(&layer.input) || in_use.contains(&layer.input) {
                    continue;
                }
                if policy.max_size.is_some_and(|max| size <= max) {
                    break 'passes;
                }
                let has_live_child = children
                    .get(&layer.input)
                    .is_some_and(|c| c.iter().any(|c| !gone.contains(c)));
                if has_live_child {
                    continue;
                }
                let Some(_lock) = lock::try_exclusive(&self.lock_path(&layer.input), layer.input)?
                else {
                    in_use.insert(layer.input);
                    continue;
                };
                let dir = self.layer_dir(&layer.input);
                gone.insert(layer.input);
                size -= layer.meta.size;
                progress = true;
                // Looked at again under the lock: someone may have removed
                // or replaced it since the listing.
                if let Found::Complete(now) = layer::read(&dir, layer.input)? {
                    self.discard(&dir)?;
                    report.freed += now.meta.size;
                    report.removed.push(*now);
                }
            }
            if !progress {
                break;
            }
        }
        report.size_after = size;
        report.in_use = in_use.into_iter().collect();
        report.in_use.sort_unstable();

        for (input, dir) in self.layer_dirs()? {
            let Some(_lock) = lock::try_exclusive(&self.lock_path(&input), input)? else {
                continue;
            };
            if let Found::Incomplete(_) = layer::read(&dir, input)? {
                let bytes = tree::disk_usage(&dir);
                self.discard(&dir)?;
                report.freed += bytes;
                report.removed_incomplete.push(dir);
            }
        }
        Ok(report)
    }
}
