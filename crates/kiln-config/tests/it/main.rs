//! Tests of `kiln-config` through its public API.

mod interpolate;
mod merge;
mod sources;
mod tree_fs;
