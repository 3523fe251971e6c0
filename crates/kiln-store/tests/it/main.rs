//! Integration tests of `kiln-store`, one module per topic. They run as
//! root (ownership, device nodes and `trusted.*` xattrs need it).

mod artifacts;
mod commit;
mod digest;
mod du;
mod errors;
mod gc;
mod race;
mod verify;

use std::path::Path;

use kiln_store::{InputKey, Layer, NewLayer, Store};

/// A recognisable input digest.
pub(crate) fn key(n: u8) -> InputKey {
    InputKey([n; 32])
}

/// Builds and commits a layer holding `files` (name, size in bytes).
pub(crate) fn build(
    store: &Store,
    input: InputKey,
    variant: &str,
    parent: Option<InputKey>,
    files: &[(&str, usize)],
) -> Layer {
    let lock = store.lock(&input).unwrap();
    let stage = store.stage(&input).unwrap();
    for (name, size) in files {
        let path = stage.tree().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, pattern(*size)).unwrap();
    }
    store
        .commit(
            &lock,
            stage,
            NewLayer {
                variant: variant.to_owned(),
                parent,
                epoch: None,
            },
        )
        .unwrap()
}

/// `size` bytes that do not compress to nothing.
pub(crate) fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7 % 251) as u8).collect()
}

/// Rewrites a layer's `created` time, so tests can order layers by age.
pub(crate) fn set_created(store: &Store, input: InputKey, created: i64) {
    let path = store
        .dir()
        .join("layers")
        .join(input.to_hex())
        .join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    meta["created"] = created.into();
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// The pid of a process that has exited (and been reaped).
pub(crate) fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Names in a directory, sorted.
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    out.sort();
    out
}
