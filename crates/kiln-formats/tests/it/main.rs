//! kiln-formats' integration tests: artifacts checked with the field's own
//! tools against the tree they were written from.

mod squashfs;
