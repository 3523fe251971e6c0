//! Integration tests of `kiln-layers`, one module per topic. Tests that
//! mount need root (they return early otherwise); each calls
//! `private_mount_namespace` in its own thread, so its mounts are its own.

mod inputs;
mod merged;
mod overlay;
mod provision;
mod support;
