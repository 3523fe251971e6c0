//! `--only` and `--skip`.
//!
//! Words are image names or dimension keys. `--only` keeps variants that
//! match every dimension named (any of the keys given for it) and, when
//! images are named, belong to one of them; `--skip` drops variants that
//! are of a named image or hold a named key, and everything built on them.
//! The ancestors of every kept variant stay in the plan: they must be built
//! first.

use std::collections::BTreeMap;

use kiln_config::Tree;
use kiln_config::diagnostic::{Diagnostic, Diagnostics, did_you_mean};

use crate::Plan;

/// Which variants to plan.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `--only` words.
    pub only: Vec<String>,
    /// `--skip` words.
    pub skip: Vec<String>,
}

impl Selection {
    pub(crate) fn check(&self, tree: &Tree, diags: &mut Diagnostics) {
        let mut words: Vec<&str> = tree.images.iter().map(|i| i.name.as_str()).collect();
        words.extend(
            tree.dimensions
                .iter()
                .flat_map(|d| d.keys.iter().map(|k| k.name.as_str())),
        );
        for (flag, list) in [("--only", &self.only), ("--skip", &self.skip)] {
            for w in list {
                if !words.contains(&w.as_str()) {
                    diags.push(
                        Diagnostic::new(format!(
                            "`{flag} {w}`: no image or dimension key is named `{w}`"
                        ))
                        .with_help(
                            match crate::select::suggest(w, &words) {
                                s if s.is_empty() => {
                                    format!("images and keys: {}", words.join(", "))
                                }
                                s => s,
                            },
                        ),
                    );
                }
            }
        }
    }

    pub(crate) fn apply(&self, tree: &Tree, plan: Plan) -> Plan {
        if self.only.is_empty() && self.skip.is_empty() {
            return plan;
        }
        let n = plan.variants.len();
        let dim_of = |key: &str| {
            tree.dimensions
                .iter()
                .find(|d| d.keys.iter().any(|k| k.name == key))
                .map(|d| d.name.as_str())
        };
        let only_images: Vec<&str> = self
            .only
            .iter()
            .map(String::as_str)
            .filter(|w| dim_of(w).is_none())
            .collect();
        // Keys of one dimension are alternatives; every dimension named must match.
        let mut only_keys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for w in &self.only {
            if let Some(d) = dim_of(w) {
                only_keys.entry(d).or_default().push(w);
            }
        }
        let mut keep: Vec<bool> = plan
            .variants
            .iter()
            .map(|v| {
                (only_images.is_empty() || only_images.contains(&v.image.as_str()))
                    && only_keys
                        .values()
                        .all(|alternatives| alternatives.iter().any(|k| v.holds(k)))
            })
            .collect();
        // Skips, and everything built on a skipped variant (parents come first).
        let mut skipped = vec![false; n];
        for (i, v) in plan.variants.iter().enumerate() {
            let own = self.skip.iter().any(|w| v.image == *w || v.holds(w));
            skipped[i] = own || v.parent.is_some_and(|p| skipped[p]);
            if skipped[i] {
                keep[i] = false;
            }
        }
        // Ancestors of kept variants (children come after parents: walk back).
        for i in (0..n).rev() {
            if keep[i] {
                if let Some(p) = plan.variants[i].parent {
                    keep[p] = true;
                }
            }
        }
        let mut new_index = vec![usize::MAX; n];
        let mut variants = Vec::new();
        for (i, v) in plan.variants.into_iter().enumerate() {
            if keep[i] {
                new_index[i] = variants.len();
                let mut v = v;
                v.parent = v.parent.map(|p| new_index[p]);
                variants.push(v);
            }
        }
        Plan { variants }
    }
}

pub(crate) fn suggest(w: &str, words: &[&str]) -> String {
    did_you_mean(w, words.iter().copied())
}
