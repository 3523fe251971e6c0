//! Tests of planning through the public API: real trees on disk, loaded by
//! `kiln-config`, planned here.

// Test helpers are called for their effects; single letters mirror the
// matrix's dimensions (version, arch, firmware, bootstrap, cloud).
#![allow(clippy::must_use_candidate, clippy::many_single_char_names)]

mod digest;
mod fuzz;
mod matrix;

use std::path::Path;

use kiln_config::{LoadOptions, Tree};
use kiln_plan::{Plan, Selection};

/// Writes files below `root`.
pub fn write(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
}

/// Loads a tree that must be valid.
pub fn load(root: &Path) -> Tree {
    match kiln_config::load(
        root,
        &LoadOptions {
            host_root: root.join("no-host"),
        },
    ) {
        Ok(t) => t,
        Err(f) => panic!("tree does not load: {:#?}", f.diagnostics),
    }
}

/// Plans a tree that must be valid.
pub fn plan(root: &Path) -> Plan {
    let tree = load(root);
    match kiln_plan::plan(&tree, &Selection::default()) {
        Ok(p) => p,
        Err(d) => panic!("tree does not plan: {d:#?}"),
    }
}

pub const SOURCES: &str =
    "[[sources]]\nuris = [\"http://mirror.invalid/debian\"]\nsuites = [\"bookworm\"]\n";
